"""Which architecture family a ComfyUI model belongs to, with errors that name it: the model
class says the family, the family's adapter (attention_patches/families/) checks the config."""

from __future__ import annotations

import comfy.model_base

from ..attention_patches.families import ADAPTERS, FamilyAdapter

# Most specific classes first: Flux2 and Chroma subclass Flux, SDXL subclasses BaseModel, WAN22
# subclasses WAN21. A class this host does not have is left out (getattr), so every host gets the
# families it can load.
_FAMILY_OF_MODEL_CLASS = tuple((cls, family) for cls, family in (
    (getattr(comfy.model_base, "Flux2", None), "flux2"),
    (comfy.model_base.Flux, "flux"),
    (comfy.model_base.SD3, "mmdit"),
    (comfy.model_base.QwenImage, "qwen_image"),
    (comfy.model_base.WAN21, "wan"),
    (getattr(comfy.model_base, "Lumina2", None), "z_image"),  # Z-Image; its adapter refuses other NextDiTs
    (getattr(comfy.model_base, "HiDream", None), "hidream"),
    (getattr(comfy.model_base, "HunyuanVideo", None), "hunyuan_video"),  # 1.0 and its subclass 1.5
    (getattr(comfy.model_base, "HunyuanImage21", None), "hunyuan_video"),  # and its refiner subclass
) if cls is not None)
_UNET_BASED = comfy.model_base.BaseModel

_REFUSED = tuple((cls, name, verdict, why) for cls, name, verdict, why in (
    (getattr(comfy.model_base, "ErnieImage", None), "ERNIE-Image", "cannot act on",
     "its attention calls do not pass transformer_options, so neither ComfyUI's attention override nor any "
     "attention patch ever sees them"),
) if cls is not None)
"""Families refused with the reason (class, name, verdict, why): no public hook reaches their
attention. Checked only for a model no family above claims."""


def _family_of(base_model) -> str | None:
    for cls, family in _FAMILY_OF_MODEL_CLASS:
        if isinstance(base_model, cls):
            return family
    if type(base_model.diffusion_model).__name__ == "UNetModel" and isinstance(base_model, _UNET_BASED):
        return "unet"
    return None


def family_adapter_of(model, method: str, supported: tuple[str, ...]) -> FamilyAdapter:
    """The family adapter of ``model`` (a ModelPatcher) if ``method`` supports its family, else a
    ValueError naming the model class and what to use instead."""
    base_model = model.model
    family = _family_of(base_model)
    for cls, name, verdict, why in _REFUSED:
        if family is None and isinstance(base_model, cls):
            raise ValueError(
                f"{method} {verdict} {name} models: {why}. Use CFG with a negative prompt, or "
                "NegGuideDNG / NegGuideDNS, which act on the model's predictions, not inside its attention."
            )
    adapter = ADAPTERS.get(family)
    if adapter is None or adapter.family not in supported or not adapter.supports(base_model.diffusion_model):
        names = ", ".join(supported)
        raise ValueError(
            f"{method} does not support {type(base_model).__name__} models "
            f"({type(base_model.diffusion_model).__name__}). Supported families: {names}. "
            "Use a supported model, or CFG with a negative prompt on this one."
        )
    return adapter
