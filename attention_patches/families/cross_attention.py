"""The layout of cross-attention models (SD1.x / SDXL UNets, Wan): image tokens attend to the
text context in their own call, keys [P ; N] with VSF's negative appended to the context."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..vsf import OneNegativeRange, QueryGroup
from .base import CROSS, SELF


@dataclass
class CrossAttentionCall(OneNegativeRange):
    text_len: int
    """Text context tokens: P, or P + N with VSF's negative appended."""
    negative_len: int
    image_len: int
    grid: tuple[int, int, int]
    patch_size: int
    marked: bool
    """True where a patch marks each cross-attention call (UNet attn2_patch); else a call is a
    cross-attention when its keys have the text context's length (Wan)."""
    method: str
    expect_cross_attention: bool = field(default=False)

    @property
    def negative(self) -> tuple[int, int]:
        return self.text_len - self.negative_len, self.text_len

    @property
    def image(self) -> tuple[int, int]:
        return 0, self.image_len

    def mark_cross_attention(self) -> None:
        """The attn2 patch saw the next attention call's block: that call is a cross-attention."""
        self.expect_cross_attention = True

    def kind(self, q_len: int, k_len: int) -> str | None:
        if self.marked:
            if not self.expect_cross_attention:
                return SELF if q_len == k_len else None
            self.expect_cross_attention = False
            if k_len != self.text_len:
                raise ValueError(
                    f"{self.method}: a cross-attention saw {k_len} text tokens instead of {self.text_len}; another node changes "
                    "the text context inside attention. Apply {self.method} after it.")
            return CROSS
        if k_len == self.text_len and q_len != k_len:
            return CROSS
        return SELF if q_len == k_len == self.image_len else None

    def image_span(self, q_len: int, k_len: int) -> tuple[int, int] | None:
        """A block's self-attention over the image tokens (Wan; UNets merge in their output patch)."""
        return self.image if not self.marked and q_len == k_len == self.image_len else None

    def vsf_groups(self, kind: str | None, q_len: int) -> list[QueryGroup]:
        """Cross-attention VSF is the single-softmax form (vsf_cross_attention), not query groups."""
        return []
