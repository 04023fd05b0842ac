"""Z-Image (Turbo): the token layout of ComfyUI's NextDiT (comfy/ldm/lumina/model.py).

Facts (ComfyUI 0.33.0; 0.3.75 builds the same sequences in older code), pinned down by
tests/library/test_attention_layout.py:

- The caption (the text encoder's tokens, after ``cap_embedder``) is padded to a multiple of
  ``pad_tokens_multiple`` (32) with copies of the learned ``cap_pad_token``; the image tokens
  (patch 2, row-major) likewise with ``x_pad_token`` (``pad_zimage``, model.py:414-416, used at
  :659 and :709). Padding always goes at the END of each part. No attention mask is passed
  (``cap_mask = None`` :721, ``mask = None`` :813): every token, padding included, is attended.
- Per model call the attention override sees, in this order: ``len(context_refiner)`` text-only
  calls over the padded caption (:774-775), ``len(noise_refiner)`` image-only calls over the
  padded image (:799-800), then one joint call per main layer over
  ``[caption ; pad | image ; pad]`` (text first, :807, :861-863). All are self-attention
  (q, k, v of one length), [B, H, L, D] with skip_reshape, output [B, L, H*D]
  (JointAttention.forward :178). transformer_options gets block_type "double", block_index and
  total_blocks only for the main layers (:858-862), so the refiners are told apart by length and
  order (the text-only ones come first; the padded caption and image can be equally long).
- RoPE: caption positions 1..C on the first axis, image tokens at C + 1 (C = padded caption
  length) with their row/column on the other two (:664-665, :707): appending N to the caption
  moves the image by a multiple of 32 on the text axis whenever the padded length grows.

VSF (the paper's visibility, attention_patches/vsf.py) on this layout, with the negative N
appended to the caption BEFORE the model pads it, so the caption is [P ; N ; pad] and N's
positions follow P's: the model's own padding lands after N and is never taken for text.

    joint calls      image tokens: everything, N flipped (-alpha V_N, bias -beta)
                     P, caption padding, image padding: everything but N
                     N: N and the image part (its tokens and their padding); not P, not padding
    text-only calls  P and caption padding: P and padding;  N: N only
    image-only calls untouched

So padding belongs to the positive side (as it does without a negative): it never reads N, and
N never reads it, so in the text-only refiner P (and its padding) and N are refined apart.
Inactive rows (the uncond branch at cfg > 1) see no N at all; they are not bitwise the plain
model, because the padding now fills [p + n, C) instead of [p, C0) (C0 = padded P alone).

NegToMe merges exactly the real image tokens [C, C + I) of the joint calls; not the text, not
either padding, and not the image-only refiner calls (like SD3.5's image-only blocks, they are
not the joint/self-attention blocks the method is defined on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..vsf import OneNegativeRange, QueryGroup
from .base import IMAGE_ONLY, JOINT, TEXT_ONLY, FamilyAdapter, nonempty, token_grid


def padded(length: int, multiple: int | None) -> int:
    """``length`` rounded up to a multiple of ``multiple`` (NextDiT's pad_zimage rule)."""
    return length + (-length) % multiple if multiple else length


@dataclass
class ZImageCall(OneNegativeRange):
    """Where every token group sits in the attention calls of one NextDiT model call. Mutable:
    it counts the text-only refiner calls, which come first."""

    positive: tuple[int, int]
    negative: tuple[int, int]
    caption_padding: tuple[int, int]
    image: tuple[int, int]
    image_padding: tuple[int, int]
    text_only_calls_left: int
    grid: tuple[int, int, int]
    patch_size: int

    @classmethod
    def of(cls, text_len: int, negative_len: int, grid: tuple[int, int, int], multiple: int | None,
           text_only_calls: int, patch_size: int = 2) -> "ZImageCall":
        """``text_len`` caption tokens entering the model (P, or P + N with the negative
        appended), the last ``negative_len`` of them N; ``grid`` the real image tokens."""
        p = text_len - negative_len
        image_len = math.prod(grid)
        caption = padded(text_len, multiple)
        image_end = caption + image_len
        return cls((0, p), (p, text_len), (text_len, caption), (caption, image_end),
                   (image_end, caption + padded(image_len, multiple)), text_only_calls, grid, patch_size)

    @property
    def caption(self) -> int:
        return self.caption_padding[1]

    @property
    def length(self) -> int:
        return self.image_padding[1]

    @property
    def image_part(self) -> int:
        return self.length - self.caption

    def kind(self, q_len: int, k_len: int) -> str | None:
        """JOINT, TEXT_ONLY or IMAGE_ONLY for one attention call (counting the text-only
        ones), or None for a call of another length."""
        if q_len != k_len:
            return None
        if q_len == self.length:
            return JOINT
        if q_len == self.caption and self.text_only_calls_left > 0:
            self.text_only_calls_left -= 1
            return TEXT_ONLY
        if q_len == self.image_part:
            return IMAGE_ONLY
        return None

    def image_span(self, q_len: int, k_len: int) -> tuple[int, int] | None:
        """The real image tokens of a joint call (what NegToMe merges), else None. Pure: does
        not count calls, so any number of hooks may ask."""
        return self.image if q_len == k_len == self.length else None

    def vsf_groups(self, kind: str | None, q_len: int) -> list[QueryGroup]:
        """The VSF query groups of a call of ``kind`` (see the module docstring); [] where VSF
        leaves the call alone."""
        if kind not in (JOINT, TEXT_ONLY) or self.negative[1] == self.negative[0]:
            return []
        positive_side = (self.positive, self.caption_padding)
        negative = QueryGroup(nonempty(self.negative), hidden=nonempty(*positive_side))
        if kind == TEXT_ONLY:
            return [QueryGroup(nonempty(*positive_side), hidden=(self.negative,)), negative]
        return [
            QueryGroup(nonempty(self.image), flipped=True),
            QueryGroup(nonempty(*positive_side, self.image_padding), hidden=(self.negative,)),
            negative,
        ]


class ZImageAdapter(FamilyAdapter):
    """Reads the layout parameters off a NextDiT (duck-typed: this module imports no ComfyUI)."""

    family = "z_image"
    default_patch_size = 2
    pads_text = True

    def supports(self, diffusion_model) -> bool:
        """Z-Image's NextDiT: padded caption/image parts (Lumina Image 2.0 pads nothing and
        Z-Image pixel-space is another class: neither is covered)."""
        return type(diffusion_model).__name__ == "NextDiT" and getattr(diffusion_model, "pad_tokens_multiple", None)

    def call_layout(self, diffusion_model, latent_shape: tuple[int, ...], text_len: int, negative_len: int,
                    conds: dict, method: str, extra_negative_lens=None) -> ZImageCall:
        if conds.get("ref_latents") or conds.get("siglip_feats") or conds.get("ref_contexts"):
            raise ValueError(
                f"{method} does not support Z-Image reference images (Z-Image Omni / edit conditioning) yet: "
                "their tokens join the sequence in another layout. Use it on text-to-image Z-Image (Turbo).")
        patch = self.patch_size(diffusion_model)
        return ZImageCall.of(text_len, negative_len, token_grid(latent_shape, patch), diffusion_model.pad_tokens_multiple,
                             len(diffusion_model.context_refiner), patch)


Z_IMAGE = ZImageAdapter()
