"""Which architecture family a ComfyUI model belongs to, with errors that name it."""

from __future__ import annotations

import comfy.model_base

from ..attention_patches.architectures import ARCHITECTURES, Architecture

# Most specific classes first: Chroma subclasses Flux, SDXL subclasses BaseModel.
_FAMILY_OF_MODEL_CLASS = (
    (comfy.model_base.Flux, "flux"),
    (comfy.model_base.SD3, "mmdit"),
    (comfy.model_base.QwenImage, "qwen_image"),
    (comfy.model_base.WAN21, "wan"),
)
_UNET_BASED = comfy.model_base.BaseModel


def architecture_of(model, method: str, supported: tuple[str, ...]) -> Architecture:
    """The Architecture of ``model`` (a ModelPatcher) if ``method`` supports it, else a
    ValueError naming the model class and what to use instead."""
    base_model = model.model
    family = None
    for cls, name in _FAMILY_OF_MODEL_CLASS:
        if isinstance(base_model, cls):
            family = name
            break
    if family is None and type(base_model.diffusion_model).__name__ == "UNetModel" and isinstance(base_model, _UNET_BASED):
        family = "unet"
    if family not in supported:
        names = ", ".join(supported)
        raise ValueError(
            f"{method} does not support {type(base_model).__name__} models "
            f"({type(base_model.diffusion_model).__name__}). Supported families: {names}. "
            "Use a supported model, or CFG with a negative prompt on this one."
        )
    return ARCHITECTURES[family]
