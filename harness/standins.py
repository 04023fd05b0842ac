"""Stand-in model files that ComfyUI's STOCK loaders detect as real architectures.

Random weights, real layouts, built from ComfyUI's own classes (a ``comfy.supported_models``
config's ``get_model``, ``comfy.sd1_clip.SD1ClipModel``, ``comfy.taesd.taesd.TAESD``) at the
smallest size the loader's detection accepts, filled by the zoo's deterministic initialiser
(harness/zoo.py ``initialise``, seeded per component), saved with safetensors. Generated on demand
into $NEGGUIDE_CACHE/standins (default: .cache/standins in this checkout, git-ignored), written
atomically (temporary file, then rename), never committed, regenerated only when missing. File
names carry FORMAT_VERSION (bump it when a recipe changes) and, for stand-ins cut from zoo
weights, a digest of zoo.py.

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
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .host import REPO_ROOT, boot_library_mode

CACHE_ENV = "NEGGUIDE_CACHE"
FORMAT_VERSION = 1
SEED = 20240601
STALE_SECONDS = 3600

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured) if configured else REPO_ROOT / ".cache"
    return root / "standins"


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


def _build_model(config_cls, unet_config: dict, dtype):
    """The initialised BaseModel of a comfy.supported_models class."""
    config = config_cls(dict(unet_config))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    _initialised(model.diffusion_model, f"{config_cls.__name__}/diffusion_model")
    return model


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
    return model.state_dict_for_saving(_cpu_state_dict(clip), _cpu_state_dict(_taesd(4, torch.float16)))


def sdxl_checkpoint() -> dict:
    import torch
    import comfy.supported_models

    model = _build_model(comfy.supported_models.SDXL, SDXL_UNET, torch.float16)
    return model.state_dict_for_saving(None, _cpu_state_dict(_taesd(4, torch.float16)))


def flux_diffusion_model() -> dict:
    import torch
    import comfy.supported_models

    return _cpu_state_dict(_build_model(comfy.supported_models.Flux, FLUX_UNET, torch.float16).diffusion_model)


FLUX_REAL_TE = {**FLUX_UNET, "context_in_dim": 4096, "vec_in_dim": 768}


def flux1_diffusion_model(guidance_embed: bool) -> dict:
    """Flux dev (guidance_embed) or Schnell at the smallest detectable size, conditioned by the
    real CLIP-L + T5-XXL pair (DualCLIPLoader type flux)."""
    import torch
    import comfy.supported_models

    config_cls = comfy.supported_models.Flux if guidance_embed else comfy.supported_models.FluxSchnell
    unet_config = {**FLUX_REAL_TE, "guidance_embed": guidance_embed}
    return _cpu_state_dict(_build_model(config_cls, unet_config, torch.float16).diffusion_model)


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
    return model.state_dict_for_saving(None, _cpu_state_dict(_taesd(16, torch.float16)))


def sdxl_full_checkpoint() -> dict:
    """The sdxl recipe plus a full random CLIP-L + CLIP-G, as real SDXL checkpoints have."""
    import torch
    import comfy.sdxl_clip
    import comfy.supported_models

    model = _build_model(comfy.supported_models.SDXL, SDXL_UNET, torch.float16)
    clip = _initialised(comfy.sdxl_clip.SDXLClipModel(dtype=torch.float16), "SDXL/clip")
    return model.state_dict_for_saving(_cpu_state_dict(clip), _cpu_state_dict(_taesd(4, torch.float16)))


def clip_text_model(kind: str) -> dict:
    """A full-size random CLIP-L ("l") or CLIP-G ("g") text model, keys as in clip_l.safetensors."""
    import torch
    import comfy.sd1_clip
    import comfy.sdxl_clip

    cls = comfy.sd1_clip.SDClipModel if kind == "l" else comfy.sdxl_clip.SDXLClipG
    return _cpu_state_dict(_initialised(cls(dtype=torch.float16), f"clip_{kind}").transformer)


def t5xxl_scaled_fp8() -> dict:
    """The full T5-XXL encoder in ComfyUI's scaled-fp8 layout: fp8 weights ~ N(0, 1) with
    scale_weight = fan_in ** -0.5 (so the effective weights match the zoo's initialiser), fp16
    embeddings, layer norms at one. Built tensor by tensor (never 4.76 B fp32 values at once)."""
    import torch
    import comfy.text_encoders.sd3_clip

    fp8 = torch.float8_e4m3fn
    with torch.device("meta"):
        shapes = comfy.text_encoders.sd3_clip.T5XXLModel(
            dtype=torch.float16, model_options={"t5xxl_scaled_fp8": fp8}).transformer.state_dict()
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
                "the zoo's SD3 MMDiT (depth 2), bit-identical to NegGuideTestZooLoader('sd3', 0)", True),
        StandIn("sd15", "checkpoints", "CheckpointLoaderSimple", sd15_checkpoint,
                "SD1.5 UNet (320 ch, ctx 768, 13.6 M) + full random CLIP-L (123 M) + TAESD VAE"),
        StandIn("sdxl", "checkpoints", "CheckpointLoaderSimple", sdxl_checkpoint,
                "SDXL UNet (320 ch, ctx 2048, adm 2816, 132 M) + TAESD VAE; no text encoder"),
        StandIn("flux", "diffusion_models", "UNETLoader", flux_diffusion_model,
                "Flux dev (hidden 3072, 1 double + 1 single block); txt 64 / vec 64 like the zoo's"),
        StandIn("sdxl_base", "checkpoints", "CheckpointLoaderSimple", sdxl_full_checkpoint,
                "the sdxl stand-in plus a full random CLIP-L + CLIP-G, like real SDXL checkpoints"),
        StandIn("sd35_large", "checkpoints", "CheckpointLoaderSimple", sd35_checkpoint,
                "SD3.5-style MMDiT (depth 2, context 4096, pooled 2048, 192^2 positions) + TAESD VAE"),
        StandIn("flux1_dev", "diffusion_models", "UNETLoader", lambda: flux1_diffusion_model(True),
                "Flux dev (hidden 3072, 1 + 1 blocks) for the real CLIP-L + T5-XXL widths"),
        StandIn("flux1_schnell", "diffusion_models", "UNETLoader", lambda: flux1_diffusion_model(False),
                "Flux Schnell (no guidance embedding), otherwise as flux1_dev"),
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
        generate(name)
    return dest


def generate(name: str) -> dict:
    """Build one stand-in and write it atomically (a temporary file renamed over the target);
    older versions of it in the cache are removed. Returns {"path", "bytes", "values",
    "seconds"} and logs them."""
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
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    # Older versions of this stand-in; left alone for a while in case another test run that
    # started before zoo.py changed still uses one.
    for old in dest.parent.glob(f"negguide-{name}-v*.safetensors"):
        if old != dest and time.time() - old.stat().st_mtime > STALE_SECONDS:
            old.unlink(missing_ok=True)
    seconds = time.monotonic() - start
    info = {"path": dest, "bytes": dest.stat().st_size, "seconds": seconds,
            "values": sum(t.numel() for t in sd.values())}
    log.info("stand-in %s: %.1f MB, %.1f M values, generated in %.1f s", name,
             info["bytes"] / 2**20, info["values"] / 1e6, seconds)
    return info
