"""Token layouts of the architecture families, as seen by ComfyUI's attention override.

One small interface for every family: where the text and image tokens sit in an attention call,
and how to recognise the calls a method acts on. Facts checked against ComfyUI 0.3.75 by
tests/library/test_attention_layout.py:

- ``unet`` (SD1.x, SDXL): self-attention (attn1) over image tokens, cross-attention (attn2) with
  keys/values from the text context. q/k/v arrive as [B, L, H*D].
- ``mmdit`` (SD3, SD3.5): one joint sequence, context (text) first, then image tokens, patch 2;
  q/k/v arrive as [B, L, H*D]. SD3.5 Medium also has image-only self-attention blocks.
- ``flux`` (Flux, Chroma): one joint sequence in every double and single block, text first;
  q/k/v arrive RoPE'd as [B, H, L, D] (skip_reshape). Reference latents (Kontext) extend the
  image part.
- ``flux2`` (Flux.2 dev / Klein): the Flux blocks and layout, but patch size 1 over 128-channel
  latents (the VAE's 2x2 patches are already folded into the channels), text positions along
  one RoPE axis, and a text context padded to 512 tokens.
- ``qwen_image`` (Qwen-Image): joint, text first, [B, H, L, D] (skip_reshape), patch 2.
- ``wan`` (Wan 2.1): self-attention over video tokens, cross-attention to the text context
  ([B, L, H*D]); image-to-video models attend to the CLIP image context in a separate call.
- ``z_image`` (Z-Image Turbo, NextDiT): joint, text first, [B, H, L, D] (skip_reshape), patch 2,
  caption and image each padded to a multiple of 32, text-only and image-only refiner calls
  before the joint layers: its layout lives in its adapter, families/z_image.py.

A family whose calls need more than these fields has an ``adapter`` (attention_patches/families/):
the node hooks ask it for the layout of each model call instead of using the generic rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .families import z_image


@dataclass(frozen=True)
class Architecture:
    family: str
    attention: str
    """"cross": text enters through cross-attention; "joint": text and image share one sequence."""
    patch_size: int = 1
    image_only_attention: bool = False
    """True when some attention calls see image tokens only (SD3.5 Medium's extra blocks)."""
    cross_attention_marked: bool = False
    """True when a patch marks each cross-attention call (UNet attn2_patch); otherwise a
    cross-attention is the call whose keys have the text context's length."""
    adapter: object | None = field(default=None, compare=False)
    """The family's layout adapter (attention_patches/families/), or None for the generic rules."""

    def image_tokens(self, latent_shape: tuple[int, ...]) -> int:
        """Image tokens of a [B, C, H, W] (or video [B, C, T, H, W]) latent after patchification;
        frames are not patched."""
        frames = math.prod(latent_shape[2:-2])
        height, width = latent_shape[-2:]
        return frames * math.ceil(height / self.patch_size) * math.ceil(width / self.patch_size)


ARCHITECTURES = {
    "unet": Architecture("unet", "cross", cross_attention_marked=True),
    "mmdit": Architecture("mmdit", "joint", patch_size=2, image_only_attention=True),
    "flux": Architecture("flux", "joint", patch_size=2),
    "flux2": Architecture("flux2", "joint", patch_size=1),
    "qwen_image": Architecture("qwen_image", "joint", patch_size=2),
    "wan": Architecture("wan", "cross", patch_size=2),
    "z_image": Architecture("z_image", "joint", patch_size=2, image_only_attention=True, adapter=z_image.ADAPTER),
}


def sequence_dims(skip_reshape: bool, skip_output_reshape: bool) -> tuple[int, int]:
    """(input, output) sequence axes of a ComfyUI attention call: q/k/v are [B, H, L, D] with
    skip_reshape and [B, L, H*D] without; the output is [B, H, L, D] only with
    skip_output_reshape."""
    return (2 if skip_reshape else 1), (2 if skip_output_reshape else 1)


def chunk_groups(batch: int, cond_or_uncond: Sequence[int] | None) -> list[range]:
    """The rows of each cond/uncond chunk of a ComfyUI model call: ``cond_or_uncond`` (from
    transformer_options) has one entry per chunk (0 cond, 1 uncond), each chunk
    ``batch // len(cond_or_uncond)`` rows. Without it: one group."""
    chunks = len(cond_or_uncond) if cond_or_uncond else 1
    if batch % chunks:
        raise ValueError(f"batch {batch} does not split into {chunks} cond/uncond chunks")
    size = batch // chunks
    return [range(i * size, (i + 1) * size) for i in range(chunks)]


def cond_rows(batch: int, cond_or_uncond: Sequence[int] | None) -> torch.Tensor:
    """[batch] bool: True on the rows of the conditional (positive) chunks. Without
    ``cond_or_uncond`` every row is conditional."""
    rows = torch.ones(batch, dtype=torch.bool)
    for kind, group in zip(cond_or_uncond or [], chunk_groups(batch, cond_or_uncond)):
        rows[group.start:group.stop] = kind == 0
    return rows
