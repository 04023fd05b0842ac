"""Qwen-Image and Qwen-Image-Edit (comfy/ldm/qwen_image/model.py).

Joint attention, text first (joint_query = [txt ; img]), q/k/v as [B, H, L, D] (skip_reshape),
patch 2. Qwen-Image-Edit's reference latents are patchified and appended after the image tokens
(ref_latents), so they are image-side tokens of the text-first layout. 0.33 passes img_slice to
attn1 patches only, not to the attention override.
"""

from __future__ import annotations

from .text_first import TextFirstAdapter


class QwenImageAdapter(TextFirstAdapter):
    family = "qwen_image"
    default_patch_size = 2


QWEN_IMAGE = QwenImageAdapter()
