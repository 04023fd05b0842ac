"""NegGuideNegToMe: Negative Token Merging.

The node validates the mode and reference inputs and attaches the hooks of
attention_patches/negtome_hooks.py to a clone (all reversible): an APPLY_MODEL wrapper and,
where the family adapter says NegToMe merges (families/base.py negtome_point), the UNet
attn1_output_patch or the attention override (a single slot: an override already there is
chained). With NegGuideVSF on the same model NegToMe always ends up on top (it edits the finished
attention output). Math: attention_patches/negtome.py.
"""

from __future__ import annotations

import copy
import logging

import torch

import comfy.patcher_extension
from comfy_api.latest import io

from ..attention_patches.families.base import SELF_ATTENTION_OUTPUT_PATCH, FamilyAdapter
from ..attention_patches.negtome_hooks import HOOK_KEY, NegToMeHooks
from ..attention_patches.override_chain import OVERRIDE_SLOT
from .model_family import family_adapter_of
from .node_text import current_prompt_id, node_text, send_node_text
from .schedule import SigmaWindow

LOG = logging.getLogger(__name__)
SUPPORTED_FAMILIES = ("unet", "mmdit", "flux", "flux2", "qwen_image", "wan", "z_image", "hidream", "hunyuan_video")
MODE_DIVERSITY = "batch diversity"
MODE_REFERENCE = "reference image"
MODES = (MODE_DIVERSITY, MODE_REFERENCE)


def single_image_reporter(node_id: str | None):
    """What NegToMe's hooks call when batch diversity meets one image per group (only sampling
    sees the batch): a warning in the log and on the node, once per prompt."""
    reported_for = None
    reported = False

    def report() -> None:
        nonlocal reported_for, reported
        prompt = current_prompt_id()
        if reported and reported_for == prompt:
            return
        reported_for, reported = prompt, True
        message = ("NegToMe does nothing here: batch diversity needs a batch of 2 or more images (it pushes each "
                   "image away from the first one); this batch has 1. Raise batch_size, or use reference-image mode.")
        LOG.warning("NegGuideNegToMe: %s", message)
        send_node_text(node_id, message)

    return report


def apply_negtome(model, adapter: FamilyAdapter, alpha: float, threshold: float, window: SigmaWindow,
                  reference: torch.Tensor | None = None, reference_mask: torch.Tensor | None = None,
                  seed: int = 0, node_id: str | None = None):
    """A clone of ``model`` (a ModelPatcher) with NegToMe attached. ``reference`` [1, C, (T,) H, W]
    (VAE latent space) selects reference-image mode; None is batch-diversity mode."""
    patched = model.clone()
    transformer_options = patched.model_options.setdefault("transformer_options", {})
    hooks = NegToMeHooks(
        adapter, alpha, threshold,
        window=window,
        reference=None if reference is None else reference.detach().cpu(),
        reference_mask=None if reference_mask is None else reference_mask.detach().cpu(),
        seed=seed,
        on_single_image=single_image_reporter(node_id),
        previous_override=transformer_options.get(OVERRIDE_SLOT),
    )
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY, hooks.apply_model_wrapper)
    if adapter.negtome_point == SELF_ATTENTION_OUTPUT_PATCH:
        patched.set_model_attn1_output_patch(hooks.unet_attn1_output)
    else:
        transformer_options[OVERRIDE_SLOT] = hooks.attention_override
    return patched


def negtome_on_top(model) -> NegToMeHooks | None:
    """The NegToMe hooks whose override fills ``model``'s attention slot right now, if any."""
    slot = model.model_options.get("transformer_options", {}).get(OVERRIDE_SLOT)
    hooks = getattr(slot, "__self__", None)
    return hooks if isinstance(hooks, NegToMeHooks) else None


def restack_negtome_above(patched, hooks: NegToMeHooks, inner_override) -> None:
    """Stack NegToMe on top of a NegGuide hook attached below it (``inner_override`` now chains
    what NegToMe chained before): NegToMe's override wraps it again, and its APPLY_MODEL wrapper
    moves inside, where it sees the text context the other hook extended."""
    restacked = copy.copy(hooks)
    restacked.previous_override = inner_override
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY, restacked.apply_model_wrapper)
    patched.model_options["transformer_options"][OVERRIDE_SLOT] = restacked.attention_override


class NegGuideNegToMe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideNegToMe",
            display_name="NegToMe (Negative Token Merging)",
            category="model_patches/negguide",
            description=(
                "Negative token merging: inside self-attention, each image token that closely matches a token of "
                "another image is pushed away from it. 'batch diversity' makes the images of one batch differ "
                "more; 'reference image' steers away from a reference (e.g. a look you do not want copied)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch: SD1.5/SDXL, SD3/SD3.5, Flux, Flux.2, Chroma, Qwen-Image, Wan 2.1/2.2, Z-Image, HiDream, Hunyuan Video 1.5 / 1.0, HunyuanImage 2.1."),
                io.Float.Input("alpha", default=0.9, min=-5.0, max=5.0, step=0.05, round=0.01,
                               tooltip="Merge strength: matched tokens move by alpha*(token - match). 0 = off; "
                                       "typical 0.9 (SDXL demos up to 1.5-1.9); negative values pull toward the match."),
                io.Float.Input("threshold", default=0.65, min=-1.0, max=1.0, step=0.01,
                               tooltip="tau: only tokens whose best cosine similarity is strictly above this are merged. "
                                       "Flux 0.65, SDXL 0.7."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of the active window, as a fraction of the schedule (0 = first step)."),
                io.Float.Input("end_percent", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="End of the active window. NegToMe acts early: SDXL 0.2; Flux 0.26 (sigma >= 0.9 at the default shift)."),
                io.Combo.Input("mode", options=list(MODES), default=MODE_DIVERSITY,
                               tooltip="batch diversity: images of one batch push away from the first image. "
                                       "reference image: every image pushes away from the reference."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="Reference mode: the image to steer away from (first image of the batch; needs vae)."),
                io.Vae.Input("vae", optional=True, tooltip="Reference mode: the VAE of this model, to encode reference_image."),
                io.Latent.Input("reference_latent", optional=True,
                                tooltip="Reference mode: the reference as a latent of this model (instead of reference_image + vae)."),
                io.Mask.Input("reference_mask", optional=True,
                              tooltip="Reference mode: only the masked part of the reference counts (white = counts)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, optional=True,
                             tooltip="Reference mode: seed of the fixed noise that re-noises the reference to each step's sigma."),
            ],
            outputs=[io.Model.Output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, alpha, threshold, start_percent, end_percent, mode, reference_image=None, vae=None,
                reference_latent=None, reference_mask=None, seed=0) -> io.NodeOutput:
        if mode not in MODES:
            raise ValueError(f"NegGuideNegToMe: unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        adapter = family_adapter_of(model, "NegGuideNegToMe", SUPPORTED_FAMILIES)
        window = SigmaWindow.from_percents(model, start_percent, end_percent, "NegGuideNegToMe")
        reference = None
        if mode == MODE_REFERENCE:
            if reference_latent is not None:
                reference = reference_latent["samples"][:1]
            elif reference_image is not None:
                if vae is None:
                    raise ValueError("NegGuideNegToMe: reference_image needs the vae input (connect this model's VAE).")
                reference = vae.encode(reference_image[:1, :, :, :3])
            else:
                raise ValueError("NegGuideNegToMe: reference image mode needs reference_image + vae or reference_latent.")
            if reference_latent is not None and reference_latent["samples"].shape[0] > 1 or (
                    reference_latent is None and reference_image.shape[0] > 1):
                LOG.warning("NegGuideNegToMe: only the first reference of the batch is used.")
            if reference_mask is not None:
                shape = tuple(reference_mask.shape)
                if reference_mask.ndim not in (2, 3) or 0 in shape:
                    raise ValueError(
                        f"NegGuideNegToMe: reference_mask has shape {shape}; expected a MASK [height, width] or "
                        "[batch, height, width] (e.g. from LoadImage's mask output or a SolidMask/ImageToMask node)."
                    )
                if reference_mask.ndim == 3:
                    if shape[0] > 1:
                        LOG.warning("NegGuideNegToMe: only the first mask of the reference_mask batch is used.")
                    reference_mask = reference_mask[0]
        elif any(v is not None for v in (reference_image, reference_latent, reference_mask)):
            LOG.warning("NegGuideNegToMe: the reference inputs are ignored in batch diversity mode.")
        if alpha == 0:
            LOG.warning("NegGuideNegToMe: alpha is 0; the model is returned unchanged.")
            return io.NodeOutput(model, ui=node_text("NegToMe is off: alpha is 0; the model is returned unchanged."))
        if model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY):
            raise ValueError("NegGuideNegToMe is already applied to this model: use one NegGuideNegToMe node.")
        patched = apply_negtome(model, adapter, alpha, threshold, window,
                                reference=reference, reference_mask=reference_mask if reference is not None else None,
                                seed=seed, node_id=cls.hidden.unique_id if cls.hidden is not None else None)
        return io.NodeOutput(patched)
