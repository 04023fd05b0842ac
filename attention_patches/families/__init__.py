"""One token-layout adapter per architecture family, behind one small interface (no ComfyUI import).

A method's hooks (attention_patches/vsf_hooks.py, negtome_hooks.py) never branch on the family:
per model call they ask the family's adapter for a :class:`CallLayout`, and per attention call
they ask that layout what the call is and where its tokens sit. Adding a family is one module
here (an adapter and, where the generic layouts do not fit, its own CallLayout), one entry in
:data:`ADAPTERS`, one zoo model (harness/zoo.py) and the model class in nodes/model_family.py;
the parametrised tests pick it up.

The interface
-------------
``FamilyAdapter``  (families/base.py)
    ``family``, ``negtome_point`` (where NegToMe merges: the attention override's output, or on
    UNets the self-attention output patch), ``marks_cross_attention`` (UNets: an attn2 patch
    marks each cross-attention call), ``supports(diffusion_model)`` (the config check: a model
    class shared by two layouts, e.g. Lumina 2 and Z-Image), ``patch_size(diffusion_model)``,
    ``call_layout(diffusion_model, latent_shape, text_len, negative_len, conds, method,
    extra_negative_lens)``, ``extra_text_inputs`` (text inputs beside the context that VSF appends
    N to: HiDream's Llama hidden states), ``text_positions_patch(diffusion_model)`` (the patch
    point where VSF gives N its own text positions: Flux.2's post_input) and
    ``pool_companion(context, negative_len)`` (tokens after N that keep a pooled mean of the
    context the positive's: Hunyuan Video's token refiner).
``CallLayout``  (what call_layout returns, one per model call)
    ``kind(q_len, k_len)``: JOINT, CROSS, SELF, TEXT_ONLY, IMAGE_ONLY or None (a call this
    layout does not know: left alone); may count calls (Z-Image's refiners come in order), so
    each hook asks once per attention call. ``vsf_groups(kind, q_len)``: the VSF query groups
    of a joint-type call ([] where VSF leaves it alone). ``image_span(q_len, k_len)``: the real
    image tokens NegToMe merges in that call's output, or None (pure). ``negative_columns``:
    N's column ranges in the keys of the calls VSF acts on (one range, or one per text part). ``image``: the real image tokens in a joint
    call ((0, I) on cross-attention models). ``grid``: (frames, height, width) of the image
    tokens. ``patch_size``: the model's spatial patch size.
"""

from __future__ import annotations

from .base import CROSS, IMAGE_ONLY, JOINT, SELF, TEXT_ONLY, FamilyAdapter
from .flux import FLUX, FLUX2
from .hidream import HIDREAM
from .hunyuan_video import HUNYUAN_VIDEO
from .mmdit import MMDIT
from .qwen_image import QWEN_IMAGE
from .unet import UNET
from .wan import WAN
from .z_image import Z_IMAGE

ADAPTERS: dict[str, FamilyAdapter] = {adapter.family: adapter for adapter in (UNET, MMDIT, FLUX, FLUX2, QWEN_IMAGE, WAN, Z_IMAGE,
                                                                              HIDREAM, HUNYUAN_VIDEO)}
"""Every family NegGuide's attention methods know, by name."""

__all__ = ["ADAPTERS", "CROSS", "IMAGE_ONLY", "JOINT", "SELF", "TEXT_ONLY", "FamilyAdapter"]
