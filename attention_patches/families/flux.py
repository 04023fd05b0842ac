"""Flux / Chroma and Flux.2 (dev, Klein) (comfy/ldm/flux, comfy/ldm/chroma).

One joint sequence in every double and single block, text first (flux/layers.py), q/k/v arriving
RoPE'd as [B, H, L, D] (skip_reshape). Kontext reference latents extend the image side
(transformer_options["reference_image_num_tokens"]). 0.33 publishes block_type ("double" /
"single"), block_index and, in the single blocks, img_slice = [text tokens, sequence length]
(flux/model.py:272-276), which tests/library/test_attention_layout.py checks against this layout.

Flux.2 uses the same blocks with patch size 1 over 128-channel latents (the VAE's 2x2 patches are
folded into the channels), text positions along one RoPE axis (txt_ids_dims) and a text context
padded to 512 tokens by its encoder: VSF's negative is appended after that padding.
"""

from __future__ import annotations

from .text_first import TextFirstAdapter


class FluxAdapter(TextFirstAdapter):
    family = "flux"
    default_patch_size = 2


class Flux2Adapter(TextFirstAdapter):
    family = "flux2"
    default_patch_size = 1


FLUX = FluxAdapter()
FLUX2 = Flux2Adapter()
