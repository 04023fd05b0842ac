"""Hunyuan Video 1.5, Hunyuan Video 1.0 and HunyuanImage 2.1: one DiT class
(comfy/ldm/hunyuan_video/model.py; model_base.HunyuanVideo15, HunyuanVideo, HunyuanImage21).

Facts (ComfyUI 0.33.0 line numbers; 0.3.75 builds the same parts), pinned down by
tests/library/test_hunyuan_video.py:

- The text context (Qwen2.5-VL hidden states, template cropped) first passes the token refiner
  ``txt_in`` (:354): two self-attention calls over the context alone (q = k = context tokens,
  [B, H, L, D] with skip_reshape), conditioned on ``c`` = the plain mean of ALL context tokens
  (TokenRefiner.forward :162-165: no mask in the mean).
- The refined context is then joined by the glyph tokens (byT5, ``txt_byt5``, only for quoted
  text in the prompt) and, for image-to-video, the SigLIP vision tokens (``clip_fea``), each put
  in front (:366, :377): text = [vision ; byT5 ; context]. Models without the condition-type
  embedding (1.0, HunyuanImage 2.1) put byT5 after the context (:367): [vision ; context ; byT5].
  1.0 conditions the refiner the same way; its pooled vector is CLIP-L's, not the context's.
- Every double and single block attends over one sequence of text and image, with the image side
  = [reference latent tokens ; video tokens] (:326). 0.33 puts the text first ([text ; image],
  :416 and flux/layers.py's DoubleStreamBlock); 0.3.75 puts it last (``flipped_img_txt`` on the
  double blocks, ``torch.cat((img, txt))`` in the single ones). The adapter reads the order off
  the blocks (a ``flipped_img_txt`` attribute that is True), never off a version.
- A text attention mask is passed only where the encoder padded (model_base.HunyuanVideo15 and
  HunyuanImage21 drop an all-ones mask; HunyuanVideo passes any the encoder gives); VSF's N and z enter it as attended tokens (FamilyAdapter.attention_mask_with_negative),
  and the mask the model builds from it is kept in every call VSF splits.

VSF appends N to the context, and after it ONE companion token z = (n + 1) mean(P) - sum(N): the
refiner's mean over [P ; N ; z] is then exactly mean(P), so P is refined under the same ``c`` as
without a negative (N is refined under the positive's ``c`` too, as Flux's N is modulated by the
positive's pooled vector). z is hidden from every query in every call; nobody reads it.

    refiner calls  P: P only;  N (and z): N only
    joint calls    image side: everything but z, N flipped (-alpha V_N, bias -beta)
                   vision, byT5, P: everything but N and z
                   N (and z): N and the image side

NegToMe merges the generated video tokens of the joint calls (not the reference latent's); the
refiner calls are text only and left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..vsf import OneNegativeRange, QueryGroup
from .base import JOINT, TEXT_ONLY, FamilyAdapter, nonempty, token_grid


@dataclass(frozen=True)
class HunyuanVideoCall(OneNegativeRange):
    """Where every token group sits in the attention calls of one Hunyuan Video model call."""

    vision_len: int
    byt5_len: int
    context_len: int
    """Tokens of the context as the model call gets it: [P ; N ; z] (the refiner calls' length)."""
    negative_len: int
    reference_len: int
    image_len: int
    image_first: bool
    grid: tuple[int, int, int]
    patch_size: int
    byt5_first: bool = True
    """Hunyuan Video 1.5: text = [vision ; byT5 ; context]; 1.0 and HunyuanImage 2.1: [vision ;
    context ; byT5]."""

    @property
    def companion_len(self) -> int:
        """The pooling companion z follows N wherever there is one."""
        return 1 if self.negative_len else 0

    @property
    def positive_len(self) -> int:
        return self.context_len - self.negative_len - self.companion_len

    @property
    def text_len(self) -> int:
        return self.vision_len + self.byt5_len + self.context_len

    @property
    def length(self) -> int:
        return self.text_len + self.reference_len + self.image_len

    @property
    def _text_start(self) -> int:
        return self.reference_len + self.image_len if self.image_first else 0

    @property
    def _image_side(self) -> tuple[int, int]:
        start = 0 if self.image_first else self.text_len
        return start, start + self.reference_len + self.image_len

    @property
    def context_start(self) -> int:
        """Where the context [P ; N ; z] starts in a joint call."""
        return self._text_start + self.vision_len + (self.byt5_len if self.byt5_first else 0)

    @property
    def positive_columns(self) -> tuple[tuple[int, int], ...]:
        """Vision, byT5 and P tokens of a joint call: one range, or two where byT5 follows the
        context (1.0, HunyuanImage 2.1)."""
        start, positive_end = self._text_start, self.context_start + self.positive_len
        if self.byt5_first:
            return nonempty((start, positive_end))
        after_context = self.context_start + self.context_len
        return nonempty((start, positive_end), (after_context, after_context + self.byt5_len))

    @property
    def negative(self) -> tuple[int, int]:
        """N's columns in a joint call."""
        start = self.context_start + self.positive_len
        return start, start + self.negative_len

    @property
    def companion(self) -> tuple[int, int]:
        return self.negative[1], self.negative[1] + self.companion_len

    @property
    def image(self) -> tuple[int, int]:
        """The generated video tokens of a joint call (after the reference latent's)."""
        lo, hi = self._image_side
        return lo + self.reference_len, hi

    def kind(self, q_len: int, k_len: int) -> str | None:
        if q_len != k_len:
            return None
        if q_len == self.length:
            return JOINT
        return TEXT_ONLY if q_len == self.context_len else None

    def image_span(self, q_len: int, k_len: int) -> tuple[int, int] | None:
        return self.image if self.kind(q_len, k_len) == JOINT else None

    def vsf_groups(self, kind: str | None, q_len: int) -> list[QueryGroup]:
        """The VSF query groups of a call of ``kind`` (see the module docstring); [] where VSF
        leaves the call alone."""
        if kind not in (JOINT, TEXT_ONLY) or self.negative_len == 0:
            return []
        if kind == TEXT_ONLY:
            p, n = self.positive_len, self.negative_len
            positive, negative, companion = (0, p), (p, p + n), (p + n, self.context_len)
            return [QueryGroup((positive,), hidden=(negative, companion)),
                    QueryGroup((negative, companion), hidden=(positive, companion))]
        positive, negative, companion = self.positive_columns, self.negative, self.companion
        return [
            QueryGroup((self._image_side,), hidden=(companion,), flipped=True),
            QueryGroup(positive, hidden=(negative, companion)),
            QueryGroup((negative, companion), hidden=(*positive, companion)),
        ]


class HunyuanVideoAdapter(FamilyAdapter):
    """Reads the layout parameters off a Hunyuan Video DiT (1.0, 1.5, HunyuanImage 2.1) and the
    model call's inputs."""

    family = "hunyuan_video"
    default_patch_size = 1

    def pool_companion(self, context: torch.Tensor, negative_len: int) -> torch.Tensor:
        """z = (n + 1) mean(P) - sum(N) per row ([B, 1, D]): the token refiner's mean over
        [P ; N ; z] is then mean(P) (module docstring)."""
        wide = context.to(torch.promote_types(context.dtype, torch.float32))  # bf16 / fp16 contexts: sum in fp32
        positive, negative = wide[:, :-negative_len], wide[:, -negative_len:]
        companion = (negative_len + 1) * positive.mean(1, keepdim=True) - negative.sum(1, keepdim=True)
        return companion.to(context.dtype)

    def call_layout(self, diffusion_model, latent_shape, text_len, negative_len, conds, method,
                    extra_negative_lens=None) -> HunyuanVideoCall:
        patch = self.patch_size(diffusion_model)
        grid = token_grid(latent_shape, patch)
        vision = conds.get("clip_fea")
        byt5 = conds.get("txt_byt5")
        reference = conds.get("ref_latent")
        blocks = getattr(diffusion_model, "double_blocks", None) or [None]
        return HunyuanVideoCall(
            vision_len=vision.shape[1] if vision is not None and diffusion_model.vision_in is not None else 0,
            byt5_len=byt5.shape[1] if byt5 is not None and diffusion_model.byt5_in is not None else 0,
            context_len=text_len,
            negative_len=negative_len,
            reference_len=math.prod(token_grid(tuple(reference.shape), patch)) if reference is not None else 0,
            image_len=math.prod(grid),
            image_first=getattr(blocks[0], "flipped_img_txt", False) is True,
            grid=grid,
            patch_size=patch,
            byt5_first=getattr(diffusion_model, "cond_type_embedding", None) is not None,
        )


HUNYUAN_VIDEO = HunyuanVideoAdapter()
