"""Stand-in model files that ComfyUI's STOCK loaders detect as real architectures.

Random weights, real layouts, built from ComfyUI's own classes (a ``comfy.supported_models``
config's ``get_model``, ``comfy.sd1_clip.SD1ClipModel``, ``comfy.taesd.taesd.TAESD``) at the
smallest size the loader's detection accepts, filled by the zoo's deterministic initialiser
(harness/zoo.py ``initialise``, seeded per component), saved with safetensors. Generated on demand
into $NEGGUIDE_CACHE/standins/<host> (default: .cache/standins/<host> in this checkout,
git-ignored; <host> names the ComfyUI release that made them, so a file one host wrote is never
served to another), written atomically (temporary file, then rename) after checking that the
file holds what the recipe built and the diffusion-model keys the stock loader needs, never
committed, regenerated only when missing. File names carry FORMAT_VERSION (bump it when a recipe
changes) and, for stand-ins cut from zoo weights, a digest of zoo.py.

Host differences are handled by capability, never by version number (see
shapes_world/host_compat.py): ``BaseModel.state_dict_for_saving`` takes the UNet state dict as
its first argument on newer hosts and reads it itself on older ones (``_checkpoint``); Flux's
parameter dataclass gained required fields (``complete_params``) and its QK-norm weights went
from ``*_norm.scale`` to ``*_norm.weight`` (the files keep the ``.scale`` names of real Flux
files, which every host's loader maps onto its model, ``_flux_file``); newer hosts dropped the
``t5xxl_scaled_fp8`` model option, so the scaled-fp8 T5 layout is written from the plain model.

    from negguide.harness import standins
    path = standins.ensure("sd15")            # generated once, then served from the cache
    standins.STANDINS["sd15"].folder          # "checkpoints": the ComfyUI models/ folder
    ComfyServer(models={"checkpoints": [path]})

What the stock loaders need (ComfyUI 0.3.75, comfy/model_detection.py + supported_models.py):
  sd3      UNETLoader: MMDiT is detected at any size (hidden = 64 * depth). This file IS the zoo's
           SD3 model (seed 0): NegGuideTestZooLoader("sd3")'s text encoder conditions it, and
           stock-loaded and zoo-built models give identical images. 1.8 M values, 7 MB.
  sd15     CheckpointLoaderSimple: model_channels 320, context 768, no linear projection; the
           rest is free (one level, one res block, one transformer, no middle block: 13.6 M).
           The loader builds the checkpoint's text encoder at the FIXED full CLIP-L size and
           raises on a tiny one (size mismatch), and without text-encoder keys it returns CLIP
           None; so the file carries a full random CLIP-L (123 M). Its VAE may be tiny: a TAESD
           under first_stage_model.taesd_* is detected. fp16, 139 M values, 266 MB.
           CheckpointLoaderSimple -> CLIPTextEncode -> KSampler -> VAEDecode runs, stock only.
  sdxl     CheckpointLoaderSimple: 320 ch, context 2048, adm 2816 and transformer_depth exactly
           [0,0,2,2,10,10]; channel_mult [1,1,1] keeps those 24 blocks at 320 ch (132 M). No text
           encoder (CLIP-L + CLIP-G are fixed at 817 M): the loader returns CLIP None, so it
           needs a 2048-wide conditioning (pooled 1280) from elsewhere. TAESD VAE. fp16, 256 MB.
  flux     UNETLoader: hidden 3072 (24 heads of 128, fixed by the detected axes_dim [16,56,56]);
           one double and one single block; text/vector inputs 64 wide like the zoo's Flux text
           encoder, so NegGuideTestZooLoader("flux")'s CLIP conditions it. fp16, 531 M, 1 GB.
  taesd4 / taesd16   VAELoader (models/vae/): the zoo's TAESD of sd15 / sd3 (taesd_encoder.* /
           taesd_decoder.* keys).
Generation / stock-loader load / peak RSS of the loading process, measured on the 2-core dev
machine under load: sd3 1.4 s (with the zoo build); sd15 3.5 s / 1-2 s / 1.0 GB (its fp16 CLIP-L
encodes in ~3 s on CPU); sdxl 5.4 s / 2.2 s / 1.2 GB; flux 12 s / 4.6 s / 3.5 GB. sdxl and flux
are for one-off checks, not for the default test run.

Stand-ins for the real model files of the bundled workflows (harness/workflows.py maps each
real file name to one of these; the workflow graph stays the same, only the file differs):
  clip_l / clip_g   DualCLIPLoader / TripleCLIPLoader (models/text_encoders/): full-size random
           CLIP-L (123 M) and CLIP-G (694 M) text models in the HF layout of clip_l.safetensors /
           clip_g.safetensors; fp16, 246 MB / 1.4 GB. Their sizes are fixed by the loaders.
  t5xxl_fp8  the full T5-XXL encoder (4.76 B values, fixed by the loaders) in ComfyUI's scaled-fp8
           format (fp8 e4m3fn weights, a scale_weight per linear, the scaled_fp8 marker) like
           t5xxl_fp8_e4m3fn_scaled.safetensors; 4.9 GB. Generated in ~50 s (5.6 GB peak RSS).
           One encode on this 2-core CPU takes ~44 s whatever the prompt length (casting 4.76 B fp8
           weights to fp32 dominates), and the loaded encoder holds ~10 GB RSS.
  sdxl_base  CheckpointLoaderSimple: the sdxl recipe plus the full random CLIP-L + CLIP-G pair that
           real SDXL checkpoints carry (the loader builds them at full size); fp16, 1.9 GB.
           ~12 s per model evaluation at 1024x1024 on this CPU.
  sd35_large CheckpointLoaderSimple: an SD3.5-style MMDiT (depth 2, hidden 128) with the real
           conditioning widths (T5/CLIP context 4096, pooled 2048) and a 192 x 192 position table
           (SD3.5 Large's, so 1024 x 1024 fits) + TAESD (16 ch); no text encoders, like
           sd3.5_large_turbo.safetensors. Fast; its T5 is the expensive part.
  flux1_dev / flux1_schnell  UNETLoader: the flux recipe with the real conditioning widths (T5
           context 4096, CLIP-L pooled 768), with / without the guidance embedding; fp16, 1 GB
           each; ~24 s per model evaluation at 1024x1024 on this CPU.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .host import REPO_ROOT, boot_library_mode, comfyui_root, host_name

CACHE_ENV = "NEGGUIDE_CACHE"
FORMAT_VERSION = 2
SEED = 20240601
STALE_SECONDS = 3600

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The stand-ins folder, shared by all hosts (each has its own subfolder in it)."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured) if configured else REPO_ROOT / ".cache"
    return root / "standins"


def host_cache_key() -> str:
    """The ComfyUI release of the host in use (its comfyui_version.py, read as text, so the
    key is right even when $COMFYUI_PATH points elsewhere than the host name says), else
    ``host_name()``; safe as a folder name."""
    key = host_name()
    try:
        text = (comfyui_root() / "comfyui_version.py").read_text()
    except (OSError, RuntimeError):
        text = ""
    found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    if found:
        key = found.group(1)
    return "comfyui-" + re.sub(r"[^A-Za-z0-9._+-]", "_", key)


def cache_dir() -> Path:
    """Where this host's stand-ins live: a stand-in is built from the host's own classes, so
    one made by another host is never reused."""
    return cache_root() / host_cache_key()


# --------------------------------------------------------------------------- building
def _zoo():
    boot_library_mode()
    from . import zoo

    return zoo


def zoo_fingerprint() -> str:
    """Short digest of harness/zoo.py: stand-ins taken from zoo weights carry it in their file
    name, so editing the zoo regenerates them (they are small) instead of serving stale ones."""
    return hashlib.sha256((Path(__file__).parent / "zoo.py").read_bytes()).hexdigest()[:10]


def _initialised(module, component: str):
    """``module`` filled by the zoo's deterministic initialiser, seeded by (SEED, component)."""
    import torch

    digest = hashlib.sha256(f"negguide-standin/{component}/{SEED}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    _zoo().initialise(module, generator)
    return module


def _cpu_state_dict(module) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _config(config_cls, unet_config: dict, dtype):
    config = config_cls(dict(unet_config))
    config.set_inference_dtype(dtype, None)
    return config


def _build_model(config_cls, unet_config: dict, dtype):
    """The initialised BaseModel of a comfy.supported_models class."""
    model = _config(config_cls, unet_config, dtype).get_model({})
    _initialised(model.diffusion_model, f"{config_cls.__name__}/diffusion_model")
    return model


def _meta_model(config_cls, unet_config: dict):
    """The same BaseModel on the meta device (no memory, no initialisation): its key layout."""
    import torch

    with torch.device("meta"):
        return _config(config_cls, unet_config, torch.float16).get_model({})


def _checkpoint_unet_keys(model) -> set[str]:
    """The diffusion-model keys of ``model`` as a checkpoint stores them."""
    keys = dict.fromkeys(model.diffusion_model.state_dict())
    return set(model.model_config.process_unet_state_dict_for_saving(keys))


def _checkpoint(model, clip: dict | None = None, vae: dict | None = None) -> dict:
    """``model``'s checkpoint state dict (UNet, text encoder, VAE) by the host's own
    ``state_dict_for_saving``, whichever form it has: newer hosts take the UNet state dict as
    ``unet_state_dict`` (first argument, before the CLIP one), older ones read it themselves.
    Decided by the method's parameter names; raises when the result lacks UNet keys."""
    save = model.state_dict_for_saving
    params = inspect.signature(save).parameters
    kwargs = {}
    for name, value in (("clip_state_dict", clip), ("vae_state_dict", vae)):
        if name not in params:
            raise TypeError(f"{type(model).__name__}.state_dict_for_saving{inspect.signature(save)} "
                            f"has no {name} parameter: the stand-in recipe needs updating")
        kwargs[name] = value
    if "unet_state_dict" in params:
        kwargs["unet_state_dict"] = _cpu_state_dict(model.diffusion_model)
    sd = save(**kwargs)
    missing = _checkpoint_unet_keys(model) - sd.keys()
    if missing:
        raise RuntimeError(f"state_dict_for_saving{inspect.signature(save)} left out {len(missing)} "
                           f"diffusion-model keys (e.g. {sorted(missing)[:3]})")
    return sd


def _taesd(latent_channels: int, dtype):
    import comfy.taesd.taesd

    return _initialised(comfy.taesd.taesd.TAESD(latent_channels=latent_channels).to(dtype), f"taesd{latent_channels}")


SD15_UNET = {
    "context_dim": 768, "model_channels": 320, "use_linear_in_transformer": False,
    "adm_in_channels": None, "use_temporal_attention": False, "in_channels": 4, "out_channels": 4,
    "use_spatial_transformer": True, "legacy": False, "num_heads": 8, "num_head_channels": -1,
    "channel_mult": [1], "num_res_blocks": [1], "transformer_depth": [1],
    "transformer_depth_output": [0, 0], "transformer_depth_middle": -2, "image_size": 32,
}

SDXL_UNET = {
    "context_dim": 2048, "model_channels": 320, "use_linear_in_transformer": True,
    "adm_in_channels": 2816, "num_classes": "sequential", "use_temporal_attention": False,
    "in_channels": 4, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_head_channels": 64, "channel_mult": [1, 1, 1], "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0] * 9,
    "transformer_depth_middle": -2, "image_size": 32,
}

FLUX_UNET = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "hidden_size": 3072, "num_heads": 24, "axes_dim": [16, 56, 56], "theta": 10000,
    "mlp_ratio": 4.0, "qkv_bias": True, "guidance_embed": True,
    "vec_in_dim": 64, "context_in_dim": 64, "depth": 1, "depth_single_blocks": 1,
}


def sd3_diffusion_model() -> dict:
    """The zoo's SD3 MMDiT (seed 0), as UNETLoader reads it."""
    return _cpu_state_dict(_zoo().build("sd3", 0).model.model.diffusion_model)


def zoo_taesd(architecture: str) -> dict:
    """The zoo's TAESD of ``architecture`` (seed 0), with taesd_encoder.* / taesd_decoder.* keys."""
    return _cpu_state_dict(_zoo().build(architecture, 0).vae.first_stage_model)


def sd15_checkpoint() -> dict:
    import torch
    import comfy.sd1_clip
    import comfy.supported_models

    model = _build_model(comfy.supported_models.SD15, SD15_UNET, torch.float16)
    clip = _initialised(comfy.sd1_clip.SD1ClipModel(dtype=torch.float16), "SD15/clip_l")
    return _checkpoint(model, _cpu_state_dict(clip), _cpu_state_dict(_taesd(4, torch.float16)))


def sdxl_checkpoint() -> dict:
    import torch
    import comfy.supported_models

    model = _build_model(comfy.supported_models.SDXL, SDXL_UNET, torch.float16)
    return _checkpoint(model, None, _cpu_state_dict(_taesd(4, torch.float16)))


FLUX_REAL_TE = {**FLUX_UNET, "context_in_dim": 4096, "vec_in_dim": 768}
_FLUX_QK_NORM = re.compile(r"\.(query_norm|key_norm)\.weight$")


def _flux_config(guidance_embed: bool = True, real_te: bool = False):
    """(config class, unet config) of a Flux stand-in, completed with the fields this host's
    FluxParams requires (host_compat.complete_params)."""
    import comfy.ldm.flux.model
    import comfy.supported_models

    from ..shapes_world.host_compat import complete_params

    config_cls = comfy.supported_models.Flux if guidance_embed else comfy.supported_models.FluxSchnell
    unet_config = {**(FLUX_REAL_TE if real_te else FLUX_UNET), "guidance_embed": guidance_embed}
    return config_cls, complete_params(unet_config, comfy.ldm.flux.model.FluxParams)


def _flux_file(model, state_dict: dict) -> dict:
    """A Flux diffusion-model state dict under the names of real Flux files (QK norms
    ``*_norm.scale``), when this host's loader maps those onto its model (hosts whose model
    names them ``*_norm.weight`` rename them on load); else under the model's own names."""
    from ..shapes_world.host_compat import fit_state_dict_names

    real = {_FLUX_QK_NORM.sub(r".\1.scale", k): v for k, v in state_dict.items()}
    if set(model.model_config.process_unet_state_dict(dict(real))) == set(state_dict):
        return real
    return fit_state_dict_names(real, state_dict.keys())


def _flux_diffusion_model(guidance_embed: bool, real_te: bool) -> dict:
    import torch

    model = _build_model(*_flux_config(guidance_embed, real_te), torch.float16)
    return _flux_file(model, _cpu_state_dict(model.diffusion_model))


def _flux_file_keys(guidance_embed: bool, real_te: bool) -> set[str]:
    model = _meta_model(*_flux_config(guidance_embed, real_te))
    return set(_flux_file(model, dict.fromkeys(model.diffusion_model.state_dict())))


def flux_diffusion_model() -> dict:
    return _flux_diffusion_model(True, False)


def flux1_diffusion_model(guidance_embed: bool) -> dict:
    """Flux dev (guidance_embed) or Schnell at the smallest detectable size, conditioned by the
    real CLIP-L + T5-XXL pair (DualCLIPLoader type flux)."""
    return _flux_diffusion_model(guidance_embed, True)


SD35_MAX_SIZE = 192  # SD3.5 Large's pos_embed_max_size
SD35_UNET = {
    "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None,
    "adm_in_channels": 2048,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
    "num_patches": SD35_MAX_SIZE ** 2, "pos_embed_max_size": SD35_MAX_SIZE,
    "pos_embed_scaling_factor": None, "qk_norm": None, "x_block_self_attn_layers": [],
}


def sd35_checkpoint() -> dict:
    """An SD3.5-style checkpoint (MMDiT + VAE, no text encoders) for the real text-encoder widths."""
    import numpy as np
    import torch
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.supported_models

    config = comfy.supported_models.SD3(dict(SD35_UNET))
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model({})
    hidden = SD35_UNET["context_embedder_config"]["params"]["out_features"]
    table = np.asarray(mmdit.get_2d_sincos_pos_embed(hidden, SD35_MAX_SIZE), dtype=np.float32)
    digest = hashlib.sha256(f"negguide-standin/sd35_large/{SEED}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    _zoo().initialise(model.diffusion_model, generator,
                      special={"pos_embed": lambda t: torch.from_numpy(table).reshape(t.shape)})
    return _checkpoint(model, None, _cpu_state_dict(_taesd(16, torch.float16)))


def sdxl_full_checkpoint() -> dict:
    """The sdxl recipe plus a full random CLIP-L + CLIP-G, as real SDXL checkpoints have."""
    import torch
    import comfy.sdxl_clip
    import comfy.supported_models

    model = _build_model(comfy.supported_models.SDXL, SDXL_UNET, torch.float16)
    clip = _initialised(comfy.sdxl_clip.SDXLClipModel(dtype=torch.float16), "SDXL/clip")
    return _checkpoint(model, _cpu_state_dict(clip), _cpu_state_dict(_taesd(4, torch.float16)))


def _checkpoint_keys(config_cls, unet_config: dict) -> set[str]:
    return _checkpoint_unet_keys(_meta_model(config_cls, unet_config))


def _supported(name: str):
    import comfy.supported_models

    return getattr(comfy.supported_models, name)


def _sd3_keys() -> set[str]:
    return set(_zoo().build("sd3", 0).model.model.diffusion_model.state_dict())


def clip_text_model(kind: str) -> dict:
    """A full-size random CLIP-L ("l") or CLIP-G ("g") text model, keys as in clip_l.safetensors."""
    import torch
    import comfy.sd1_clip
    import comfy.sdxl_clip

    cls = comfy.sd1_clip.SDClipModel if kind == "l" else comfy.sdxl_clip.SDXLClipG
    return _cpu_state_dict(_initialised(cls(dtype=torch.float16), f"clip_{kind}").transformer)


def _scaled_fp8_layout(module, fp8) -> dict:
    """The meta state dict of ``module`` in ComfyUI's scaled-fp8 file layout (the one of
    t5xxl_fp8_e4m3fn_scaled.safetensors): every Linear weight in ``fp8`` with a ``scale_weight``
    beside it, everything else as it is, and the ``scaled_fp8`` marker. Derived from the plain
    model, since only some hosts still build that layout themselves (``t5xxl_scaled_fp8``)."""
    import torch

    shapes = dict(module.state_dict())
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear):
            weight = f"{name}.weight"
            shapes[weight] = torch.empty(shapes[weight].shape, dtype=fp8, device="meta")
            shapes[f"{name}.scale_weight"] = torch.empty((), dtype=torch.float32, device="meta")
    shapes["scaled_fp8"] = torch.empty((0,), dtype=fp8, device="meta")
    return shapes


def t5xxl_scaled_fp8() -> dict:
    """The full T5-XXL encoder in ComfyUI's scaled-fp8 layout: fp8 weights ~ N(0, 1) with
    scale_weight = fan_in ** -0.5 (so the effective weights match the zoo's initialiser), fp16
    embeddings, layer norms at one. Built tensor by tensor (never 4.76 B fp32 values at once)."""
    import torch
    import comfy.text_encoders.sd3_clip

    fp8 = torch.float8_e4m3fn
    with torch.device("meta"):
        shapes = _scaled_fp8_layout(
            comfy.text_encoders.sd3_clip.T5XXLModel(dtype=torch.float16).transformer, fp8)
    digest = hashlib.sha256(f"negguide-standin/t5xxl/{SEED}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    out = {}
    for key in sorted(shapes):
        meta = shapes[key]
        if key == "scaled_fp8":
            out[key] = torch.tensor([], dtype=fp8)
        elif key.endswith(".scale_weight"):
            out[key] = torch.tensor(shapes[key[:-len("scale_weight")] + "weight"].shape[1] ** -0.5)
        elif "layer_norm" in key:
            out[key] = torch.ones(meta.shape, dtype=meta.dtype)
        else:  # fp8 linear weights and fp16 embeddings (token, relative position)
            out[key] = torch.randn(meta.shape, generator=generator).to(meta.dtype)
    return out


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class StandIn:
    name: str
    folder: str  # the ComfyUI models/ folder it belongs in (ComfyServer(models={folder: [path]}))
    loader: str  # the stock node that loads it
    build: Callable[[], dict]
    description: str = ""
    from_zoo: bool = False  # built from zoo weights: the file name carries zoo_fingerprint()
    # The diffusion-model keys the written file must hold (as stored in it); None: no
    # diffusion model (text encoders, VAEs).
    diffusion_keys: Callable[[], set[str]] | None = None

    @property
    def filename(self) -> str:
        zoo_part = f"-zoo{zoo_fingerprint()}" if self.from_zoo else ""
        return f"negguide-{self.name}-v{FORMAT_VERSION}{zoo_part}.safetensors"

    @property
    def path(self) -> Path:
        return cache_dir() / self.filename


STANDINS: dict[str, StandIn] = {
    s.name: s for s in (
        StandIn("sd3", "diffusion_models", "UNETLoader", sd3_diffusion_model,
                "the zoo's SD3 MMDiT (depth 2), bit-identical to NegGuideTestZooLoader('sd3', 0)", True,
                _sd3_keys),
        StandIn("sd15", "checkpoints", "CheckpointLoaderSimple", sd15_checkpoint,
                "SD1.5 UNet (320 ch, ctx 768, 13.6 M) + full random CLIP-L (123 M) + TAESD VAE",
                diffusion_keys=lambda: _checkpoint_keys(_supported("SD15"), SD15_UNET)),
        StandIn("sdxl", "checkpoints", "CheckpointLoaderSimple", sdxl_checkpoint,
                "SDXL UNet (320 ch, ctx 2048, adm 2816, 132 M) + TAESD VAE; no text encoder",
                diffusion_keys=lambda: _checkpoint_keys(_supported("SDXL"), SDXL_UNET)),
        StandIn("flux", "diffusion_models", "UNETLoader", flux_diffusion_model,
                "Flux dev (hidden 3072, 1 double + 1 single block); txt 64 / vec 64 like the zoo's",
                diffusion_keys=lambda: _flux_file_keys(True, False)),
        StandIn("sdxl_base", "checkpoints", "CheckpointLoaderSimple", sdxl_full_checkpoint,
                "the sdxl stand-in plus a full random CLIP-L + CLIP-G, like real SDXL checkpoints",
                diffusion_keys=lambda: _checkpoint_keys(_supported("SDXL"), SDXL_UNET)),
        StandIn("sd35_large", "checkpoints", "CheckpointLoaderSimple", sd35_checkpoint,
                "SD3.5-style MMDiT (depth 2, context 4096, pooled 2048, 192^2 positions) + TAESD VAE",
                diffusion_keys=lambda: _checkpoint_keys(_supported("SD3"), SD35_UNET)),
        StandIn("flux1_dev", "diffusion_models", "UNETLoader", lambda: flux1_diffusion_model(True),
                "Flux dev (hidden 3072, 1 + 1 blocks) for the real CLIP-L + T5-XXL widths",
                diffusion_keys=lambda: _flux_file_keys(True, True)),
        StandIn("flux1_schnell", "diffusion_models", "UNETLoader", lambda: flux1_diffusion_model(False),
                "Flux Schnell (no guidance embedding), otherwise as flux1_dev",
                diffusion_keys=lambda: _flux_file_keys(False, True)),
        StandIn("clip_l", "text_encoders", "DualCLIPLoader", lambda: clip_text_model("l"),
                "full-size random CLIP-L text model (123 M)"),
        StandIn("clip_g", "text_encoders", "TripleCLIPLoader", lambda: clip_text_model("g"),
                "full-size random CLIP-G text model (694 M)"),
        StandIn("t5xxl_fp8", "text_encoders", "DualCLIPLoader", t5xxl_scaled_fp8,
                "full-size random T5-XXL encoder (4.76 B), scaled fp8"),
        StandIn("taesd4", "vae", "VAELoader", lambda: zoo_taesd("sd15"),
                "the zoo's TAESD with 4 latent channels (sd15)", True),
        StandIn("taesd16", "vae", "VAELoader", lambda: zoo_taesd("sd3"),
                "the zoo's TAESD with 16 latent channels (sd3)", True),
    )
}


def ensure(name: str) -> Path:
    """The stand-in's file, generated first when it is missing."""
    dest = STANDINS[name].path
    if not dest.is_file():
        # The path generate() wrote: a zoo stand-in's name follows zoo.py, which may change
        # while it is being built.
        dest = generate(name)["path"]
    return dest


def verify_file(name: str, path: Path, built: dict | None = None) -> None:
    """Raise unless the safetensors file at ``path`` holds every key of ``built`` (what the
    recipe made, when given) and every diffusion-model key the stand-in's loader needs (so a
    host difference can never again drop the UNet silently)."""
    from safetensors import safe_open

    standin = STANDINS[name]
    with safe_open(str(path), framework="pt") as handle:
        written = set(handle.keys())
    problems = []
    if built is not None and set(built) != written:
        lost, extra = set(built) - written, written - set(built)
        problems.append(f"{len(lost)} built keys not written (e.g. {sorted(lost)[:3]}), "
                        f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})")
    if standin.diffusion_keys is not None:
        expected = standin.diffusion_keys()
        missing = expected - written
        if not expected or missing:
            problems.append(f"{len(missing)} of {len(expected)} diffusion-model keys missing "
                            f"(e.g. {sorted(missing)[:3]})")
    if problems:
        raise RuntimeError(f"stand-in {name} ({path.name}, {standin.loader}): " + "; ".join(problems))


def generate(name: str) -> dict:
    """Build one stand-in, check the written file (``verify_file``) and move it into place
    atomically (a temporary file renamed over the target; a file that fails the check never
    reaches the cache); older versions of it in the cache are removed. Returns {"path",
    "bytes", "values", "seconds"} and logs them."""
    import safetensors.torch

    boot_library_mode()
    standin = STANDINS[name]
    dest = standin.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    sd = standin.build()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        safetensors.torch.save_file(sd, str(tmp), metadata={
            "negguide_standin": name, "format_version": str(FORMAT_VERSION)})
        verify_file(name, tmp, sd)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    # Older versions of this stand-in (and ones from before the cache had per-host folders);
    # left alone for a while in case another test run that started before zoo.py changed still
    # uses one.
    for folder in (dest.parent, cache_root()):
        for old in folder.glob(f"negguide-{name}-v*.safetensors"):
            if old != dest and time.time() - old.stat().st_mtime > STALE_SECONDS:
                old.unlink(missing_ok=True)
    seconds = time.monotonic() - start
    info = {"path": dest, "bytes": dest.stat().st_size, "seconds": seconds,
            "values": sum(t.numel() for t in sd.values())}
    log.info("stand-in %s: %.1f MB, %.1f M values, generated in %.1f s", name,
             info["bytes"] / 2**20, info["values"] / 1e6, seconds)
    return info
