"""NegGuideNegToMe: Negative Token Merging (math: attention_patches/negtome.py).

How it hooks into ComfyUI (all on a clone, all reversible):
- an APPLY_MODEL wrapper checks the sigma window and records the token layout of this model call
  (cond/uncond groups, text length, image-token count, reference rows) in transformer_options;
  in reference-image mode it also appends, to every cond/uncond chunk of the batch, one row
  holding the reference latent re-noised to the current sigma (fixed noise from ``seed``), with
  that chunk's conditioning, and strips those rows from the model output;
- UNet (SD1.x/SDXL): an attn1_output_patch merges the self-attention output (after to_out,
  before the residual: the reference SDXL point);
- DiTs (SD3, Flux/Chroma, Qwen-Image, Wan 2.1): transformer_options["optimized_attention_override"]
  (a single slot: an override already there is chained) merges the image tokens of each block's
  self/joint attention output (before the output projection, which is affine, so the
  extrapolation commutes with it; only the matching sees pre-projection features). Joint models:
  text first, sliced off by the real text length (the length of c_crossattn).
Groups follow transformer_options["cond_or_uncond"]: cond and uncond rows never mix, and a call
holding only one of them (ComfyUI splits prompts of different lengths) is its own group.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import torch

import comfy.patcher_extension
from comfy_api.latest import io

from ..attention_patches.architectures import Architecture, chunk_groups, sequence_dims
from ..attention_patches.override_chain import OVERRIDE_SLOT, OverrideReach, call_chained
from ..attention_patches.negtome import diversity_merge, reference_merge
from .model_family import architecture_of
from .node_text import current_prompt_id, node_text, send_node_text
from .schedule import SigmaWindow

LOG = logging.getLogger(__name__)
HOOK_KEY = "negguide_negtome"
SUPPORTED_FAMILIES = ("unet", "mmdit", "flux", "flux2", "qwen_image", "wan", "z_image")
MODE_DIVERSITY = "batch diversity"
MODE_REFERENCE = "reference image"
MODES = (MODE_DIVERSITY, MODE_REFERENCE)


@dataclass
class _CallLayout:
    """What the attention hooks need to know about one model call."""

    groups: list
    reference_rows: list | None  # reference mode: the appended row of each group
    text_len: int
    image_len: int
    grid: tuple[int, int, int]  # (frames, height, width) of the image tokens of DiTs
    reach: OverrideReach = field(default_factory=OverrideReach)
    segments: object | None = None  # the family adapter's layout of this call (Architecture.adapter)


def _insert_rows(value, groups: list[range], batch: int):
    """``value`` with, after each group's rows, a copy of that group's first row (per-row tensors
    and lists of them; anything else is returned unchanged)."""
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
        parts = []
        for group in groups:
            parts += [value[group.start:group.stop], value[group.start:group.start + 1]]
        return torch.cat(parts)
    if isinstance(value, list) and value and all(torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == batch for v in value):
        return [_insert_rows(v, groups, batch) for v in value]
    return value


def _resize_latent(latent: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``latent`` [1, C, (T,) H, W] resized (bilinear) to the spatial size of ``shape``."""
    if latent.ndim != len(shape) or latent.shape[1] != shape[1]:
        raise ValueError(
            f"NegGuideNegToMe: the reference latent {tuple(latent.shape)} does not fit this model's latents "
            f"{tuple(shape)}. Encode the reference with this model's VAE."
        )
    if latent.ndim == 5 and latent.shape[2] != shape[2]:
        latent = latent[:, :, :1].expand(-1, -1, shape[2], -1, -1)  # a still image for every frame
    if tuple(latent.shape[-2:]) == tuple(shape[-2:]):
        return latent
    flat = latent.reshape(1, -1, *latent.shape[-2:])
    flat = torch.nn.functional.interpolate(flat, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    return flat.reshape(*latent.shape[:-2], *shape[-2:])


class NegToMeHooks:
    """The APPLY_MODEL wrapper and the attention hooks that NegGuideNegToMe attaches."""

    def __init__(self, architecture: Architecture, alpha: float, threshold: float, window: SigmaWindow,
                 reference: torch.Tensor | None = None, reference_mask: torch.Tensor | None = None,
                 seed: int = 0, previous_override=None, node_id: str | None = None):
        self.architecture = architecture
        self.alpha = alpha
        self.threshold = threshold
        self.window = window
        self.reference = reference  # [1, C, (T,) H, W] in the VAE's latent space, or None
        self.reference_mask = reference_mask  # [H, W] in [0, 1], or None
        self.seed = seed
        self.previous_override = previous_override
        self._mask_cache: dict = {}
        self.node_id = node_id  # the NegGuideNegToMe node's UNIQUE_ID: where its status text goes
        self._batch_warned_for: tuple | None = None

    # ------------------------------------------------------------------ per model call
    def active(self, sigma: float) -> bool:
        return sigma in self.window

    def apply_model_wrapper(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        if self.alpha == 0 or not self.active(float(t.max())):
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        batch = x.shape[0]
        groups = chunk_groups(batch, transformer_options.get("cond_or_uncond"))
        text_len = 0 if c_crossattn is None else c_crossattn.shape[1]
        arch = self.architecture
        image_len = arch.image_tokens(x.shape)
        grid = (math.prod(x.shape[2:-2]), math.ceil(x.shape[-2] / arch.patch_size), math.ceil(x.shape[-1] / arch.patch_size))
        if arch.family == "wan" and image_len == text_len:
            raise ValueError(
                "NegGuideNegToMe: at this latent size the Wan model has as many video tokens as text tokens, so "
                "its self-attention cannot be told from its cross-attention. Change the width or height by one step."
            )
        segments = None if arch.adapter is None else arch.adapter.call_layout(
            executor.class_obj.diffusion_model, tuple(x.shape), text_len, 0, kwargs, "NegGuideNegToMe")
        if self.reference is None:
            if all(len(group) < 2 for group in groups):
                self._warn_single_image()
            layout = _CallLayout(groups, None, text_len, image_len, grid, segments=segments)
            out = executor(x, t, c_concat, c_crossattn, control, {**transformer_options, HOOK_KEY: layout}, **kwargs)
            self._check_reached(layout, transformer_options)
            return out

        if control is not None:
            raise ValueError("NegGuideNegToMe: reference-image mode does not work together with a ControlNet yet.")
        base_model = executor.class_obj
        reference = self._noised_reference(base_model, x, t, groups)
        parts, new_groups, reference_rows, row = [], [], [], 0
        for group, ref in zip(groups, reference):
            parts += [x[group.start:group.stop], ref]
            new_groups.append(range(row, row + len(group) + 1))
            reference_rows.append(row + len(group))
            row += len(group) + 1
        x_in = torch.cat(parts)
        t_in = _insert_rows(t, groups, batch)
        layout = _CallLayout(new_groups, reference_rows, text_len, image_len, grid, segments=segments)
        options = {**transformer_options, HOOK_KEY: layout}
        if torch.is_tensor(options.get("sigmas")) and options["sigmas"].shape[0] == batch:
            options["sigmas"] = _insert_rows(options["sigmas"], groups, batch)
        kwargs = {key: _insert_rows(value, groups, batch) for key, value in kwargs.items()}
        out = executor(x_in, t_in, _insert_rows(c_concat, groups, batch), _insert_rows(c_crossattn, groups, batch),
                       control, options, **kwargs)
        self._check_reached(layout, transformer_options)
        keep = [r for group in new_groups for r in group if r not in reference_rows]
        return out[keep]

    def _warn_single_image(self) -> None:
        """Batch diversity with one image per cond/uncond group: nothing to merge. Only sampling
        sees the batch, so this is reported from here, once per prompt, in the log and on the node."""
        key = (current_prompt_id(),)
        if self._batch_warned_for == key:
            return
        self._batch_warned_for = key
        message = ("NegToMe does nothing here: batch diversity needs a batch of 2 or more images (it pushes each "
                   "image away from the first one); this batch has 1. Raise batch_size, or use reference-image mode.")
        LOG.warning("NegGuideNegToMe: %s", message)
        send_node_text(self.node_id, message)

    def _check_reached(self, layout: _CallLayout, transformer_options: dict) -> None:
        """DiTs merge inside the attention override: it must have run (UNets use attn1_output_patch)."""
        if self.architecture.family != "unet":
            layout.reach.check("NegGuideNegToMe", transformer_options)

    def _noised_reference(self, base_model, x, t, groups) -> list[torch.Tensor]:
        """The reference latent at each group's sigma: the same seeded noise at every step."""
        latent = _resize_latent(self.reference, x.shape).to(x.device, torch.float32)
        latent = base_model.process_latent_in(latent)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn(latent.shape, generator=generator, dtype=torch.float32).to(x.device)
        sampling = base_model.model_sampling
        return [sampling.noise_scaling(t[g.start:g.start + 1].float(), noise, latent).to(x.dtype) for g in groups]

    # ------------------------------------------------------------------ the merge
    def _mask_for(self, grid: tuple[int, int, int], device) -> torch.Tensor | None:
        """The reference mask on a (frames, h, w) token grid, flattened: tokens whose area is
        more than half inside the mask count."""
        if self.reference_mask is None:
            return None
        key = (grid, str(device))
        if key not in self._mask_cache:
            frames, h, w = grid
            mask = self.reference_mask.float().reshape(1, 1, *self.reference_mask.shape[-2:])
            small = torch.nn.functional.interpolate(mask, size=(h, w), mode="area")[0, 0] > 0.5
            self._mask_cache[key] = small.reshape(-1).repeat(frames).to(device)
        return self._mask_cache[key]

    def _merge(self, tokens: torch.Tensor, layout: _CallLayout, grid, in_place: bool) -> torch.Tensor:
        """Merge image tokens [B, I, D] of one call (in place, or into a new tensor)."""
        if layout.reference_rows is None:
            return diversity_merge(tokens, layout.groups, self.alpha, self.threshold, in_place=in_place)
        mask = self._mask_for(grid, tokens.device)
        if mask is not None and mask.shape[0] != tokens.shape[1]:
            raise ValueError(f"NegGuideNegToMe: reference mask on {mask.shape[0]} tokens, attention has {tokens.shape[1]}")
        return reference_merge(tokens, layout.groups, layout.reference_rows, self.alpha, self.threshold, mask,
                               in_place=in_place)

    def unet_attn1_output(self, n, extra_options):
        """attn1_output_patch: n [B, L, C] is the self-attention output after to_out."""
        layout = extra_options.get(HOOK_KEY)
        if layout is None:
            return n
        shape = extra_options.get("activations_shape")
        grid = (1, shape[-2], shape[-1]) if shape is not None and len(shape) == 4 else (1, 1, n.shape[1])
        if grid[1] * grid[2] != n.shape[1]:
            grid = (1, 1, n.shape[1])
        return self._merge(n, layout, grid, in_place=False)  # n may be another patch's tensor

    def attention_override(self, func, q, k, v, heads, mask=None, **kwargs):
        out = call_chained(self.previous_override, func, q, k, v, heads, mask=mask, **kwargs)
        layout = kwargs.get("transformer_options", {}).get(HOOK_KEY)
        if layout is None:
            return out
        layout.reach.calls += 1
        seq_dim, out_dim = sequence_dims(kwargs.get("skip_reshape", False), kwargs.get("skip_output_reshape", False))
        span = self._image_span(layout, q.shape[seq_dim], k.shape[seq_dim])
        if span is None:
            return out
        lo, hi = span
        if out_dim == 2:  # [B, H, L, D]: features are all heads concatenated
            b, h, _, d = out.shape
            image = out[:, :, lo:hi].permute(0, 2, 1, 3).reshape(b, hi - lo, h * d)
            merged = self._merge(image, layout, layout.grid, in_place=True)
            out[:, :, lo:hi] = merged.view(b, hi - lo, h, d).permute(0, 2, 1, 3)
            return out
        # [B, L, H*D]: the image tokens are merged in place, as a view (this call's fresh output)
        self._merge(out[:, lo:hi], layout, layout.grid, in_place=True)
        return out

    def _image_span(self, layout: _CallLayout, q_len: int, k_len: int) -> tuple[int, int] | None:
        """Where the image tokens sit in this attention call's output, or None when the call is
        not the self/joint attention of a block."""
        if layout.segments is not None:  # a family with a layout adapter: its joint calls' real image tokens
            return layout.segments.image_span(q_len, k_len)
        if q_len != k_len:
            return None
        if self.architecture.attention == "joint":
            end = layout.text_len + layout.image_len
            return (layout.text_len, end) if q_len >= end and layout.text_len > 0 else None
        return (0, layout.image_len) if q_len == layout.image_len else None  # wan self-attention


def apply_negtome(model, architecture: Architecture, alpha: float, threshold: float, window: SigmaWindow,
                  reference: torch.Tensor | None = None, reference_mask: torch.Tensor | None = None,
                  seed: int = 0, node_id: str | None = None):
    """A clone of ``model`` (a ModelPatcher) with NegToMe attached. ``reference`` [1, C, (T,) H, W]
    (VAE latent space) selects reference-image mode; None is batch-diversity mode."""
    patched = model.clone()
    transformer_options = patched.model_options.setdefault("transformer_options", {})
    hooks = NegToMeHooks(
        architecture, alpha, threshold,
        window=window,
        reference=None if reference is None else reference.detach().cpu(),
        reference_mask=None if reference_mask is None else reference_mask.detach().cpu(),
        seed=seed,
        node_id=node_id,
        previous_override=transformer_options.get(OVERRIDE_SLOT),
    )
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY, hooks.apply_model_wrapper)
    if architecture.family == "unet":
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
                io.Model.Input("model", tooltip="The diffusion model to patch: SD1.5/SDXL, SD3/SD3.5, Flux, Chroma, Qwen-Image, Wan 2.1."),
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
        architecture = architecture_of(model, "NegGuideNegToMe", SUPPORTED_FAMILIES)
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
        patched = apply_negtome(model, architecture, alpha, threshold, window,
                                reference=reference, reference_mask=reference_mask if reference is not None else None,
                                seed=seed, node_id=cls.hidden.unique_id if cls.hidden is not None else None)
        return io.NodeOutput(patched)
