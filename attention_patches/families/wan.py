"""Wan 2.1 / 2.2 (comfy/ldm/wan/model.py): video DiT with cross-attention.

Each block runs self-attention over the video tokens (patch (1, 2, 2): frames are not patched)
and cross-attention to the text context; q/k/v arrive as [B, L, H*D]. No patch marks the
cross-attention, so it is the call whose keys have the text context's length: at a latent size
where video and text token counts are equal the two cannot be told apart, and the layout
refuses it. Image-to-video models attend to the CLIP image context (257 tokens) in a separate
call, which is neither. 0.33 also publishes block_type / block_index (wan/model.py:606-609).
"""

from __future__ import annotations

import math

from .base import FamilyAdapter, token_grid
from .cross_attention import CrossAttentionCall


class WanAdapter(FamilyAdapter):
    family = "wan"
    attention = "cross"
    default_patch_size = 2

    def call_layout(self, diffusion_model, latent_shape, text_len, negative_len, conds, method,
                    extra_negative_lens=None) -> CrossAttentionCall:
        patch = self.patch_size(diffusion_model)
        grid = token_grid(latent_shape, patch)
        image_len = math.prod(grid)
        if image_len == text_len:
            raise ValueError(
                f"{method}: at this latent size the Wan model has as many video tokens as text tokens, so its "
                "self-attention cannot be told from its cross-attention. Change the width or height by one step.")
        return CrossAttentionCall(text_len, negative_len, image_len, grid, patch, marked=False, method=method)


WAN = WanAdapter()
