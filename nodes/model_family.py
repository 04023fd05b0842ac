"""Which architecture family a ComfyUI model belongs to, with errors that name it."""

from __future__ import annotations

import dataclasses

import comfy.model_base

from ..attention_patches.architectures import ARCHITECTURES, Architecture

# Most specific classes first: Flux2 and Chroma subclass Flux, SDXL subclasses BaseModel. A class
# this host does not have is left out (getattr), so every host gets the families it can load.
_FAMILY_OF_MODEL_CLASS = tuple((cls, family) for cls, family in (
    (getattr(comfy.model_base, "Flux2", None), "flux2"),
    (comfy.model_base.Flux, "flux"),
    (comfy.model_base.SD3, "mmdit"),
    (comfy.model_base.QwenImage, "qwen_image"),
    (comfy.model_base.WAN21, "wan"),
    (getattr(comfy.model_base, "Lumina2", None), "z_image"),  # Z-Image; its adapter refuses other NextDiTs
) if cls is not None)
_UNET_BASED = comfy.model_base.BaseModel

_UNREACHABLE = tuple((cls, name, why) for cls, name, why in (
    (getattr(comfy.model_base, "ErnieImage", None), "ERNIE-Image",
     "its attention calls do not pass transformer_options, so neither ComfyUI's attention override nor any "
     "attention patch ever sees them"),
) if cls is not None)
"""Families whose attention no public hook reaches (class, name, why): refused with the reason."""


def _spatial_patch_size(diffusion_model) -> int | None:
    """The patch size the diffusion model itself uses over height and width (an int, or the last
    entry of a (t, h, w) tuple), or None when it does not say."""
    patch = getattr(diffusion_model, "patch_size", None)
    if isinstance(patch, (tuple, list)) and patch:
        patch = patch[-1]
    return patch if isinstance(patch, int) and patch > 0 else None


def architecture_of(model, method: str, supported: tuple[str, ...]) -> Architecture:
    """The Architecture of ``model`` (a ModelPatcher) if ``method`` supports it, else a
    ValueError naming the model class and what to use instead. The patch size is the model's own
    where it states one (a checkpoint of a family may differ from the family's usual one)."""
    base_model = model.model
    for cls, name, why in _UNREACHABLE:
        if isinstance(base_model, cls):
            raise ValueError(
                f"{method} cannot act on {name} models: {why}. Use CFG with a negative prompt, or "
                "NegGuideDNG / NegGuideDNS, which act on the model's predictions, not inside its attention."
            )
    family = None
    for cls, name in _FAMILY_OF_MODEL_CLASS:
        if isinstance(base_model, cls):
            family = name
            break
    if family is None and type(base_model.diffusion_model).__name__ == "UNetModel" and isinstance(base_model, _UNET_BASED):
        family = "unet"
    adapter = ARCHITECTURES[family].adapter if family in ARCHITECTURES else None
    if adapter is not None and not adapter.supports(base_model.diffusion_model):
        family = None  # e.g. Lumina Image 2.0 shares Z-Image's model class but not its layout
    if family not in supported:
        names = ", ".join(supported)
        raise ValueError(
            f"{method} does not support {type(base_model).__name__} models "
            f"({type(base_model.diffusion_model).__name__}). Supported families: {names}. "
            "Use a supported model, or CFG with a negative prompt on this one."
        )
    architecture = ARCHITECTURES[family]
    patch = _spatial_patch_size(base_model.diffusion_model)
    if patch is not None and patch != architecture.patch_size:
        architecture = dataclasses.replace(architecture, patch_size=patch)
    return architecture
