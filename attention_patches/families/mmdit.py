"""SD3 / SD3.5 MMDiT (comfy/ldm/modules/diffusionmodules/mmdit.py).

One joint sequence per block, context (text) first (_block_mixing), patch 2; q/k/v arrive as
[B, L, H*D]. SD3.5 Medium adds image-only self-attention in its first blocks (x_block_self_attn:
q = k = the image tokens), which VSF and NegToMe leave alone. No block_index in
transformer_options. The layout is the text-first one (families/text_first.py).
"""

from __future__ import annotations

from .text_first import TextFirstAdapter


class MMDiTAdapter(TextFirstAdapter):
    family = "mmdit"
    default_patch_size = 2


MMDIT = MMDiTAdapter()
