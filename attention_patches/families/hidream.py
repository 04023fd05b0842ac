"""HiDream-I1 (Full / Dev / Fast) (comfy/ldm/hidream/model.py, HiDreamImageTransformer2DModel).

Facts (ComfyUI 0.33.0; 0.3.75 has the same forward), pinned down by tests/library/test_hidream.py
(on 0.3.75: the zoo model needs a tokenizer file the 0.33.0 snapshot lacks):

- Two text inputs: the T5 context (``context``, one [B, T, D] tensor) and the hidden states of
  every Llama-3.1 layer (``encoder_hidden_states_llama3``, [B, layers, L, D]). The model projects
  the T5 context and the layers it reads (``llama_layers``, one per block) to its width.
- Every attention call is one self-attention over one sequence, IMAGE FIRST:

      [ I ; T5 ; Llama_last ; Llama_k ]     I image tokens (patch 2, row-major, at the start)
                                            T5 the T5 context, Llama_last the last read layer,
                                            Llama_k the layer of block k (a new one per block)

  The double blocks split it into an image and a text stream (``[I ; text]``) and keep the
  updated [T5 ; Llama_last] part for the next block; the single blocks see the same sequence.
  So every call of a model call has the same length and the same positions; only the content of
  the Llama_k part changes from block to block. q/k/v arrive as [B, L, H*D] (the module's
  ``attention`` helper flattens the heads), no attention mask, RoPE with every text position at 0
  (appending tokens moves no position).
- Image-conditioned HiDream (E1 edit, ``image_cond``) concatenates the condition image beside the
  latent along the width, so its tokens interleave with the generated ones row by row: refused.

VSF appends the negative N at the end of the T5 context and at the end of every Llama layer
(NegGuideVSF encodes both: :data:`LLAMA_INPUT`), so each of the three text parts is [P_i ; N_i]:

    image queries   I, every P_i, every N_i flipped (-alpha V_N, bias -beta)
    P queries       I and every P_i;   N queries: I and every N_i

(the paper's joint visibility, with the text in three parts). Padding (T5 pads to 128 tokens,
the Llama encoder to 128) is part of P, as without a negative. NegToMe merges the image tokens
[0, I) of every call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..vsf import QueryGroup, Ranges
from .base import JOINT, ExtraTextInput, FamilyAdapter, token_grid

LLAMA_INPUT = ExtraTextInput(tokenizer="llama", encoder_output="conditioning_llama3",
                             model_input="encoder_hidden_states_llama3")
"""HiDream's second text input: the Llama hidden states (the text encoder's
``conditioning_llama3``, the model's ``encoder_hidden_states_llama3``)."""


@dataclass(frozen=True)
class HiDreamCall:
    image_len: int
    positive_columns: Ranges
    negative_columns: Ranges
    """N's part of each text part (empty ranges left out)."""
    grid: tuple[int, int, int]
    patch_size: int

    @classmethod
    def of(cls, grid: tuple[int, int, int], t5_len: int, t5_negative: int, llama_len: int, llama_negative: int,
           patch_size: int = 2) -> "HiDreamCall":
        """``t5_len`` T5 and ``llama_len`` Llama tokens per layer enter the model, the last
        ``t5_negative`` / ``llama_negative`` of each VSF's N."""
        image_len = math.prod(grid)
        positive, negative, start = [], [], image_len
        for length, negative_len in ((t5_len, t5_negative), (llama_len, llama_negative), (llama_len, llama_negative)):
            split = start + length - negative_len
            positive.append((start, split))
            negative.append((split, start + length))
            start += length
        return cls(image_len, *(tuple(r for r in ranges if r[1] > r[0]) for ranges in (positive, negative)), grid, patch_size)

    @property
    def image(self) -> tuple[int, int]:
        return 0, self.image_len

    @property
    def length(self) -> int:
        return max(hi for _, hi in (self.image, *self.positive_columns, *self.negative_columns))

    def kind(self, q_len: int, k_len: int) -> str | None:
        return JOINT if q_len == k_len == self.length else None

    def image_span(self, q_len: int, k_len: int) -> tuple[int, int] | None:
        return self.image if self.kind(q_len, k_len) == JOINT else None

    def vsf_groups(self, kind: str | None, q_len: int) -> list[QueryGroup]:
        if kind != JOINT or not self.negative_columns:
            return []
        return [
            QueryGroup((self.image,), flipped=True),
            QueryGroup(self.positive_columns, hidden=self.negative_columns),
            QueryGroup(self.negative_columns, hidden=self.positive_columns),
        ]


class HiDreamAdapter(FamilyAdapter):
    family = "hidream"
    default_patch_size = 2
    extra_text_inputs = (LLAMA_INPUT,)

    def call_layout(self, diffusion_model, latent_shape, text_len, negative_len, conds, method,
                    extra_negative_lens=None) -> HiDreamCall:
        if conds.get("image_cond") is not None:
            raise ValueError(
                f"{method} does not support image-conditioned HiDream (E1 edit) yet: the condition image's tokens "
                "interleave with the generated ones. Use it on text-to-image HiDream-I1.")
        llama = conds.get(LLAMA_INPUT.model_input)
        if llama is None:
            raise ValueError(f"{method}: this HiDream model call has no Llama text input; encode the prompt with "
                             "the HiDream text encoders (QuadrupleCLIPLoader).")
        patch = self.patch_size(diffusion_model)
        return HiDreamCall.of(token_grid(latent_shape, patch), text_len, negative_len, llama.shape[-2],
                              (extra_negative_lens or {}).get(LLAMA_INPUT.model_input, 0), patch)


HIDREAM = HiDreamAdapter()
