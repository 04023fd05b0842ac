"""SD1.x / SDXL UNets (comfy/ldm/modules/diffusionmodules/openaimodel.py, BasicTransformerBlock in
comfy/ldm/modules/attention.py).

Every transformer block runs self-attention (attn1) over the image tokens of its resolution level
and cross-attention (attn2) with keys and values from the text context; q/k/v arrive as
[B, L, H*D]. Several resolution levels, so image-token counts vary per block: an attn2 patch
marks each cross-attention call instead of guessing it from lengths. NegToMe merges attn1's output
after to_out (attn1_output_patch), where the reference SDXL code merges.
"""

from __future__ import annotations

from .base import SELF_ATTENTION_OUTPUT_PATCH, FamilyAdapter, token_grid
from .cross_attention import CrossAttentionCall


class UNetAdapter(FamilyAdapter):
    family = "unet"
    attention = "cross"
    negtome_point = SELF_ATTENTION_OUTPUT_PATCH
    marks_cross_attention = True

    def call_layout(self, diffusion_model, latent_shape, text_len, negative_len, conds, method,
                    extra_negative_lens=None) -> CrossAttentionCall:
        grid = token_grid(latent_shape, 1)
        return CrossAttentionCall(text_len, negative_len, grid[1] * grid[2], grid, 1, marked=True, method=method)


UNET = UNetAdapter()
