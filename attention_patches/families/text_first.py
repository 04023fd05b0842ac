"""The joint layout of SD3's MMDiT, Flux, Flux.2 and Qwen-Image: one sequence, text first.

    [ P ; N ; I ; R ]    P positive text, N VSF's negative (appended to the text context),
                         I the image tokens, R reference-image tokens (Kontext, Qwen-Image-Edit)

Every attention call of a joint block is self-attention over that sequence (q, k, v of one
length, at least text + image). Reference tokens are image-side: for VSF they are image queries
(they read N flipped, as the image does), never text; NegToMe merges the generated image tokens
I only, leaving the reference as the model encoded it. Image-only calls (SD3.5 Medium's extra
self-attention, q = k = I) are neither joint nor merged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..vsf import JointLayout, OneNegativeRange, QueryGroup
from .base import IMAGE_ONLY, JOINT, FamilyAdapter, token_grid


@dataclass(frozen=True)
class TextFirstCall(OneNegativeRange):
    text_len: int
    """Text tokens in the sequence: P, or P + N with VSF's negative appended."""
    negative_len: int
    image_len: int
    grid: tuple[int, int, int]
    patch_size: int

    @property
    def negative(self) -> tuple[int, int]:
        return self.text_len - self.negative_len, self.text_len

    @property
    def image(self) -> tuple[int, int]:
        return self.text_len, self.text_len + self.image_len

    def kind(self, q_len: int, k_len: int) -> str | None:
        if q_len != k_len:
            return None
        if self.text_len > 0 and q_len >= self.text_len + self.image_len:
            return JOINT
        return IMAGE_ONLY if q_len == self.image_len else None

    def image_span(self, q_len: int, k_len: int) -> tuple[int, int] | None:
        return self.image if self.kind(q_len, k_len) == JOINT else None

    def vsf_groups(self, kind: str | None, q_len: int) -> list[QueryGroup]:
        """The paper's visibility (JointLayout.query_groups), references among the image queries."""
        if kind != JOINT or self.negative_len == 0:
            return []
        return JointLayout.text_first(self.negative[0], self.negative_len, q_len - self.text_len).query_groups()


class TextFirstAdapter(FamilyAdapter):
    """A family whose joint calls are [text ; image ; references] (families/text_first.py)."""

    def call_layout(self, diffusion_model, latent_shape, text_len, negative_len, conds, method,
                    extra_negative_lens=None) -> TextFirstCall:
        patch = self.patch_size(diffusion_model)
        grid = token_grid(latent_shape, patch)
        return TextFirstCall(text_len, negative_len, math.prod(grid), grid, patch)
