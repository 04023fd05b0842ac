"""The adapter interface every family implements (see families/__init__.py) and what all share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

JOINT, CROSS, SELF, TEXT_ONLY, IMAGE_ONLY = "joint", "cross", "self", "text-only", "image-only"
"""What an attention call is: text and image in one sequence; image queries over text keys;
image tokens only in a block's self-attention; a text-only or image-only refiner call."""

ATTENTION_OUTPUT, SELF_ATTENTION_OUTPUT_PATCH = "attention output", "self-attention output patch"
"""Where NegToMe merges: the output of the attention override's call, or (UNets) the
attn1_output_patch after to_out, the reference SDXL point."""


@dataclass(frozen=True)
class ExtraTextInput:
    """A text input a model takes beside its main text context (HiDream's Llama hidden states),
    to which VSF appends the negative as well: along its token axis (-2), like the context."""

    tokenizer: str
    """Key of the tokenizer's output (``clip.tokenize``) whose tokens feed it."""
    encoder_output: str
    """Key of the text encoder's output (a CONDITIONING entry) that carries it."""
    model_input: str
    """Keyword of the model call (the APPLY_MODEL wrapper's kwargs) that receives it."""


def spatial_patch_size(diffusion_model, default: int) -> int:
    """The patch size ``diffusion_model`` uses over height and width (an int, or the last entry of
    a (t, h, w) tuple: Wan), else ``default`` (a checkpoint of a family may differ from the
    family's usual size, so the model's own value wins)."""
    patch = getattr(diffusion_model, "patch_size", None)
    if isinstance(patch, (tuple, list)) and patch:
        patch = patch[-1]
    return patch if isinstance(patch, int) and patch > 0 else default


def nonempty(*ranges: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """The ``ranges`` that hold at least one token."""
    return tuple(r for r in ranges if r[1] > r[0])


def attended(mask, *shape: int):
    """A block of ``shape`` in ``mask``'s dtype that lets every query attend: True for a bool
    mask, 1 for an integer (keep) mask, 0 for a float (additive bias) mask."""
    keep = True if mask.dtype == torch.bool else 0 if mask.is_floating_point() else 1
    return torch.full(shape, keep, dtype=mask.dtype, device=mask.device)


def token_grid(latent_shape: tuple[int, ...], patch_size: int) -> tuple[int, int, int]:
    """(frames, height, width) of the image tokens of a [B, C, H, W] (or video [B, C, T, H, W])
    latent after patchification (ComfyUI pads a partial patch); frames are not patched."""
    frames = math.prod(latent_shape[2:-2])
    return frames, math.ceil(latent_shape[-2] / patch_size), math.ceil(latent_shape[-1] / patch_size)


class FamilyAdapter:
    """Base of the per-family adapters: the facts a method's hooks need, read off the model
    duck-typed (no ComfyUI import). Subclasses set the class attributes and ``call_layout``."""

    family: str
    attention: str = "joint"
    """"joint": text and image share one sequence; "cross": text enters through cross-attention."""
    default_patch_size: int = 1
    negtome_point: str = ATTENTION_OUTPUT
    marks_cross_attention: bool = False
    pads_text: bool = False
    """True where the model pads the text itself inside its forward (Z-Image): VSF's N is appended
    before that padding, so the padding moves with N's length."""
    extra_text_inputs: tuple[ExtraTextInput, ...] = ()
    """Text inputs beside the context (HiDream's Llama hidden states): VSF appends N to each."""

    def pool_companion(self, context, negative_len: int):
        """Tokens ([B, k, D]) VSF appends after N to a model call's text ``context`` (whose last
        ``negative_len`` tokens are N) so that what the model pools over its whole context stays
        the positive's (Hunyuan Video's token refiner); None: the model pools no context."""
        return None

    def attention_mask_with_negative(self, mask, text_len: int, added: int, method: str):
        """The model call's text attention mask ``mask`` ([B, text_len]: 1 / True = a real token,
        0 / False = padding; a float mask is an additive bias, 0 = attend, as Qwen-Image and Hunyuan
        Video read it) for the context after VSF appended ``added`` tokens (N and any pooling
        companion) to its ``text_len`` tokens: those tokens are attended. Families whose models
        take a mask of another shape override this; any other mask is refused with the reason."""
        if mask.ndim != 2 or mask.shape[-1] != text_len:
            raise ValueError(
                f"{method}: this {self.family} model was given an attention mask of shape "
                f"[{', '.join(map(str, mask.shape))}], not one entry per text token ({text_len}), so the negative "
                "cannot be placed in it. Remove the node that sets that mask, or apply the negative with CFG.")
        return torch.cat([mask, attended(mask, mask.shape[0], added)], dim=-1)

    def supports(self, diffusion_model) -> bool:
        """Whether ``diffusion_model`` has this family's layout (the model class alone says so for
        most families)."""
        return True

    def text_positions_patch(self, diffusion_model) -> str | None:
        """Where ``diffusion_model`` numbers its text tokens along a RoPE axis (so N appended to
        the text would take positions after the positive's): the name of its public patch point
        (``transformer_options["patches"][name]``) that is handed those positions as ``txt_ids``
        [B, L, axes] and may return new ones. There VSF gives N the positions of the text's first
        tokens, those of a prompt of its own. None: the family has no such positions."""
        return None

    def patch_size(self, diffusion_model) -> int:
        return spatial_patch_size(diffusion_model, self.default_patch_size)

    def call_layout(self, diffusion_model, latent_shape: tuple[int, ...], text_len: int, negative_len: int,
                    conds: dict, method: str, extra_negative_lens: dict[str, int] | None = None):
        """The layout of one model call: ``text_len`` text tokens enter the model (the last
        ``negative_len`` of them VSF's negative N), the latent has ``latent_shape``, ``conds`` are
        the model call's extra inputs (reference latents, the :attr:`extra_text_inputs` with N
        appended...), ``extra_negative_lens`` N's length in each of those (by model input);
        errors name ``method``."""
        raise NotImplementedError
