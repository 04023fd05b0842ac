"""The shapes world's models in ComfyUI's own classes and file formats.

Files (``shapes_world/weights/``, committed, reproduced by ``scripts/train_shapes_world.py``):

- ``negguide_shapes_taesd.safetensors``: a TAESD (16 latent channels, ``taesd_encoder.*`` /
  ``taesd_decoder.*`` keys), loads with the stock VAELoader. Its ``vae_scale`` / ``vae_shift`` are
  set so that the SD3 latent format's ``process_in`` gives latents of mean 0 and std 1.
- ``negguide_shapes_clip_l.safetensors``: a CLIP-L text model (hidden 64, 3 layers, the real
  49408-token CLIP tokenizer), keys like a ``clip_l.safetensors``. Pretrained on the world's
  captions with linear probes (``train.train_text_encoder``), then frozen while the diffusion
  models learn to read it (the vocabulary is what makes it 6 MB).
- ``negguide_shapes_sd3.safetensors``: an SD3 MMDiT (depth 2, hidden 128), a plain diffusion-model
  file: the stock UNETLoader detects and loads it. Text: CLIP-L only (SD3's text encoder without
  CLIP-G and T5: 4096-wide context, 1344-wide pooled vector).
- ``negguide_shapes_sd15.safetensors``: an SD1.5 UNet (64 channels, two levels, cross-attention
  to CLIP-L), trained as a rectified-flow model (discrete flow, shift 1: the SD1.5 EPS
  parameterisation did not learn the scenes in the CPU training budget). The stock loaders cannot
  detect a UNet this small, so :func:`load` builds it (``NegGuideShapesWorldLoader``).
- ``negguide_shapes_flux.safetensors``: a Flux-schnell-style DiT (hidden 128, 2 double + 2 single
  blocks, no guidance embedding, patch size 1 like Flux.2: 64 image tokens), built by
  :func:`load` as well. It reads the CLIP-L text model directly (77 text tokens; real Flux uses
  T5). The SD3 MMDiT keeps patch size 2 (16 image tokens): ComfyUI's MMDiT crops its positional
  table for patch 2 only (``cropped_pos_embed``).

All three diffusion models work in the VAE's 16-channel latent space with the SD3 latent format
(the SD1.5 and Flux config classes here differ from ComfyUI's only in that). Model sampling is
SD3 discrete flow with shift 3 (the stock SD3 config), the SD1.5 UNet discrete flow with shift 1,
Flux schnell flow (shift 1). Everything was trained with 10% empty-caption dropout, so CFG, DNS and DNG work.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .host_compat import complete_params, fit_state_dict_names

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FAMILIES: tuple[str, ...] = ("sd3", "sd15", "flux")
VAE_FILE = "negguide_shapes_taesd.safetensors"
TEXT_ENCODER_FILE = "negguide_shapes_clip_l.safetensors"
JUDGE_FILE = "negguide_shapes_judge.safetensors"
LATENT_CHANNELS = 16
CLIP_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
               "num_hidden_layers": 3, "projection_dim": 64}
CLIP_WIDTH = CLIP_CONFIG["hidden_size"]


def diffusion_file(family: str) -> str:
    return f"negguide_shapes_{family}.safetensors"


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown shapes-world family {family!r}; choose one of {', '.join(FAMILIES)}")


# ----------------------------------------------------------------------------------------------
# Diffusion-model configurations


def _sd3_unet_config() -> dict:
    depth, max_size = 2, 16
    hidden = 64 * depth
    return {
        "in_channels": LATENT_CHANNELS, "patch_size": 2, "out_channels": LATENT_CHANNELS, "depth": depth,
        "input_size": None, "adm_in_channels": CLIP_WIDTH + 1280,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": hidden}},
        "num_patches": max_size * max_size, "pos_embed_max_size": max_size, "pos_embed_scaling_factor": None,
        "qk_norm": None, "x_block_self_attn_layers": [],
    }


def _sd15_unet_config() -> dict:
    return {
        "use_checkpoint": False, "image_size": 32, "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
        "model_channels": 64, "num_res_blocks": [1, 1], "channel_mult": [1, 1], "transformer_depth": [1, 1],
        "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1, "use_spatial_transformer": True,
        "legacy": False, "context_dim": CLIP_WIDTH, "adm_in_channels": None, "use_linear_in_transformer": False,
        "use_temporal_attention": False, "use_temporal_resblock": False, "num_heads": 2, "num_head_channels": -1,
    }


def _flux_unet_config() -> dict:
    import comfy.ldm.flux.model

    return complete_params({
        "image_model": "flux", "guidance_embed": False, "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS, "vec_in_dim": CLIP_WIDTH, "context_in_dim": CLIP_WIDTH,
        "hidden_size": 128, "num_heads": 2, "axes_dim": [16, 24, 24], "depth": 2, "depth_single_blocks": 2,
        "mlp_ratio": 4.0, "theta": 10000, "patch_size": 1, "qkv_bias": True,
    }, comfy.ldm.flux.model.FluxParams)


def _config(family: str):
    """A ``comfy.supported_models`` config object for ``family`` (16-channel SD3 latent format)."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models

    class ShapesWorldSD15(comfy.supported_models.SD15):
        latent_format = comfy.latent_formats.SD3
        unet_extra_config = {}
        sampling_settings = {"shift": 1.0}

        def model_type(self, state_dict, prefix=""):  # rectified flow, like SD3 (see the module docstring)
            return comfy.model_base.ModelType.FLOW

        def inpaint_model(self):  # SD15 takes in_channels > 4 to mean an inpainting UNet
            return False

    class ShapesWorldFlux(comfy.supported_models.FluxSchnell):
        latent_format = comfy.latent_formats.SD3

    classes = {"sd3": (comfy.supported_models.SD3, _sd3_unet_config),
               "sd15": (ShapesWorldSD15, _sd15_unet_config),
               "flux": (ShapesWorldFlux, _flux_unet_config)}
    config_cls, unet_config = classes[family]
    return config_cls(unet_config())


def _sd3_pos_embed(model) -> None:
    """Fill the MMDiT pos_embed buffer (torch.empty in ComfyUI) with SD3's 2D sin-cos table."""
    import numpy as np

    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit

    dm = model.diffusion_model
    table = mmdit.get_2d_sincos_pos_embed(dm.pos_embed.shape[-1], dm.pos_embed_max_size)
    dm.pos_embed.copy_(torch.from_numpy(np.asarray(table, dtype=np.float32)).reshape(dm.pos_embed.shape))


def new_diffusion_model(family: str, dtype: torch.dtype = torch.float32):
    """An untrained ``comfy.model_base`` model of ``family`` (weights torch.empty except the
    SD3 positional table); the trainer initialises it."""
    _check_family(family)
    config = _config(family)
    config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    if family == "sd3":
        with torch.no_grad():
            _sd3_pos_embed(model)
    return model


def _patcher(model):
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def load_diffusion_model(family: str, path: Path | None = None):
    """The trained ``family`` model in a ModelPatcher. SD3 goes through ComfyUI's own detection
    (exactly what the stock UNETLoader does); SD1.5 and Flux are built from their configs."""
    import comfy.sd
    import comfy.utils

    _check_family(family)
    path = path or WEIGHTS_DIR / diffusion_file(family)
    if family == "sd3":
        return comfy.sd.load_diffusion_model(str(path))
    import comfy.model_management as mm

    model = new_diffusion_model(family, mm.unet_dtype())
    state_dict = fit_state_dict_names(comfy.utils.load_torch_file(str(path), safe_load=True),
                                      model.diffusion_model.state_dict().keys())
    missing, unexpected = model.diffusion_model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path.name} does not fit the shapes-world {family} model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return _patcher(model)


# ----------------------------------------------------------------------------------------------
# Text encoder and VAE


def _clip_target(family: str):
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.sd3_clip

    if family == "sd3":
        return comfy.supported_models_base.ClipTarget(
            comfy.text_encoders.sd3_clip.SD3Tokenizer,
            comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=False, t5=False))
    return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)


def new_clip(family: str):
    """A ``comfy.sd.CLIP`` for ``family`` around an (uninitialised) tiny CLIP-L text model."""
    import comfy.sd

    _check_family(family)
    return comfy.sd.CLIP(_clip_target(family), model_options={"clip_l_model_config": CLIP_CONFIG})


def clip_text_model(clip) -> torch.nn.Module:
    """The CLIP-L text transformer inside a CLIP made by :func:`new_clip` (its file's keys)."""
    return clip.cond_stage_model.clip_l.transformer


def load_clip(family: str, path: Path | None = None):
    import comfy.utils

    clip = new_clip(family)
    state_dict = comfy.utils.load_torch_file(str(path or WEIGHTS_DIR / TEXT_ENCODER_FILE), safe_load=True)
    missing, unexpected = clip_text_model(clip).load_state_dict(state_dict, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise ValueError(f"the text-encoder file does not fit the shapes-world CLIP-L (missing {missing[:3]})")
    return clip


def load_vae(path: Path | None = None):
    """The shapes-world TAESD as a ``comfy.sd.VAE`` (what the stock VAELoader builds)."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path or WEIGHTS_DIR / VAE_FILE), safe_load=True))


def load(family: str, weights_dir: Path | None = None):
    """(MODEL, CLIP, VAE) of the trained shapes-world ``family``."""
    folder = weights_dir or WEIGHTS_DIR
    return (load_diffusion_model(family, folder / diffusion_file(family)),
            load_clip(family, folder / TEXT_ENCODER_FILE),
            load_vae(folder / VAE_FILE))
