"""Flux / Chroma and Flux.2 (dev, Klein) (comfy/ldm/flux, comfy/ldm/chroma).

One joint sequence in every double and single block, text first (flux/layers.py), q/k/v arriving
RoPE'd as [B, H, L, D] (skip_reshape). Kontext reference latents extend the image side
(transformer_options["reference_image_num_tokens"]). 0.33 publishes block_type ("double" /
"single"), block_index and, in the single blocks, img_slice = [text tokens, sequence length]
(flux/model.py:272-276), which tests/library/test_attention_layout.py checks against this layout.

Flux.2 uses the same blocks with patch size 1 over 128-channel latents (the VAE's 2x2 patches are
folded into the channels), text positions along one RoPE axis (txt_ids_dims [3]: text token j
at position j, the image at 0) and a text context padded to 512 tokens by its encoder: VSF's
negative is appended after that padding, so the model would number N's tokens 512, 513, ...,
positions no text ever had in training. VSF's ``post_input`` patch (Flux's public hook for the
text and image ids, flux/model.py:184-190) gives them 0..n-1 instead, the positions of N as a
prompt of its own. Flux.1 puts every text token at 0 (txt_ids_dims []), and hosts without
txt_ids_dims (0.3.75, whose post_input patches get no transformer_options) number no text
tokens: no patch there.

The only mask a Flux model is given is a square one over the whole joint sequence [text ; image]
(model_base.Flux forwards it when the conditioning carries ``attention_mask_img_shape``: Redux's
``attn_bias`` strength, nodes.py StyleModelApply). VSF opens N's rows and columns in it.
"""

from __future__ import annotations

import torch

from .base import attended
from .text_first import TextFirstAdapter


class _FluxBlocksAdapter(TextFirstAdapter):
    def attention_mask_with_negative(self, mask, text_len: int, added: int, method: str):
        """A square joint-sequence mask [B, T + I, T + I] with ``added`` attended rows and columns
        inserted after its ``text_len`` text tokens, where VSF put N; text masks as every family."""
        if mask.ndim != 3 or mask.shape[1] != mask.shape[2] or mask.shape[1] <= text_len:
            return super().attention_mask_with_negative(mask, text_len, added, method)
        batch, length = mask.shape[0], mask.shape[1] + added
        columns = torch.cat([mask[..., :text_len], attended(mask, batch, mask.shape[1], added), mask[..., text_len:]], -1)
        return torch.cat([columns[:, :text_len], attended(mask, batch, added, length), columns[:, text_len:]], 1)

    def text_positions_patch(self, diffusion_model) -> str | None:
        params = getattr(diffusion_model, "params", None)
        return "post_input" if getattr(params, "txt_ids_dims", None) else None


class FluxAdapter(_FluxBlocksAdapter):
    family = "flux"
    default_patch_size = 2


class Flux2Adapter(_FluxBlocksAdapter):
    family = "flux2"
    default_patch_size = 1


FLUX = FluxAdapter()
FLUX2 = Flux2Adapter()
