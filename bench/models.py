"""Models of "real width, reduced depth" built from ComfyUI's own classes, and real-size inputs.

Each builder takes the ``supported_models`` class ComfyUI would detect for the real checkpoint,
gives it the real checkpoint's ``unet_config`` except for the number of blocks, sets the inference
dtype the way ``comfy.sd.load_diffusion_model_state_dict`` does, calls ``get_model``, fills the
weights deterministically (``comfy.ops`` layers are created with ``torch.empty`` weights and there is
no checkpoint to load) and wraps the model in a ``ModelPatcher`` with ``comfy.model_management``'s
load and offload devices. So every layer a method touches (attention, its ``transformer_options``,
the sampler, CFG batching) is ComfyUI's code at the real hidden size, head count and head size; only
the number of repeated blocks is smaller.

Inputs are real-size too: an empty latent of the requested resolution (1024 -> 128x128 latent,
4096 image tokens for Flux/SD3) and CONDITIONING lists built directly from random tensors of the
real text-encoder shapes, so no text encoder is needed.

The functions import ``comfy`` lazily: importing this module is free, but boot ComfyUI first
(``_pack.boot()``) before calling ``build``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

# Text lengths: the reference pipelines' defaults (diffusers: Flux dev max_sequence_length=512,
# schnell 256; SD3 77 CLIP tokens + 256 T5 tokens). ComfyUI's own tokenizers pad short prompts
# less (Flux T5 to 256, SD3 T5 to 77 so 77+77=154 tokens), so these are the realistic upper case.
ARCHS: dict[str, dict[str, Any]] = {
    "flux": {
        "family": "flux", "schnell": False, "depth": "1,1", "full_depth": "19,38",
        "text_tokens": 512, "cfg": 1.0, "about": "Flux.1-dev: hidden 3072, 24 heads x 128, T5 512x4096",
    },
    "flux-schnell": {
        "family": "flux", "schnell": True, "depth": "1,1", "full_depth": "19,38",
        "text_tokens": 256, "cfg": 1.0, "about": "Flux.1-schnell: as dev, no guidance embed, T5 256x4096",
    },
    "sd3": {
        "family": "sd3", "width_depth": 38, "depth": "2", "full_depth": "38",
        "text_tokens": 333, "cfg": 4.5, "about": "SD3.5 Large: hidden 2432, 38 heads x 64, 77+256 tokens x 4096",
    },
    "sd35-medium": {
        "family": "sd3", "width_depth": 24, "depth": "2", "full_depth": "24",
        "text_tokens": 333, "cfg": 4.5,
        "about": "SD3.5 Medium (MMDiT-X): hidden 1536, 24 heads x 64, x-block self-attention in blocks 0-12",
    },
    "flux2-klein": {
        "family": "flux2", "depth": "1,1", "full_depth": "5,20", "text_tokens": 512, "cfg": 1.0,
        "about": "Flux.2 Klein 4B: hidden 3072, 24 heads x 128, patch 1 over 128-ch latents, Qwen3 512x7680",
    },
    "z-image": {
        "family": "z_image", "depth": "1", "full_depth": "30", "text_tokens": 128, "cfg": 1.0,
        "about": "Z-Image Turbo: hidden 3840, 30 heads x 128, 2+2 refiner layers, Qwen3 captions x2560",
    },
    "sdxl": {
        "family": "sdxl", "depth": "2,1", "full_depth": "10,2",
        "text_tokens": 77, "cfg": 6.0,
        "about": "SDXL UNet: channels 320/640/1280, heads of 64, context 77x2048, adm 2816",
    },
}
ARCHS["sd35-large"] = ARCHS["sd3"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BenchModel:
    """A built model with inputs for one sampling run."""

    arch: str
    patcher: Any  # comfy.model_patcher.ModelPatcher
    positive: list
    negative: list
    latent: dict
    cfg: float
    sampler_name: str = "euler"
    scheduler: str = "simple"
    info: dict[str, Any] = field(default_factory=dict)

    def sample(self, model=None, *, steps: int, seed: int = 0, cfg: float | None = None,
               positive: list | None = None, negative: list | None = None) -> torch.Tensor:
        """One ``nodes.common_ksampler`` run (what the KSampler node does); returns the latent."""
        import nodes

        (out,) = nodes.common_ksampler(
            self.patcher if model is None else model,
            seed,
            steps,
            self.cfg if cfg is None else cfg,
            self.sampler_name,
            self.scheduler,
            self.positive if positive is None else positive,
            self.negative if negative is None else negative,
            self.latent,
        )
        return out["samples"]


# ----------------------------------------------------------------------------- weights


def init_weights(module: torch.nn.Module, seed: int = 0, buffers: tuple[str, ...] = ()) -> int:
    """Fill ``module``'s parameters (and the named uninitialised buffers) deterministically:
    matrices/kernels ~ N(0, 1/fan_in) (activations keep unit scale, no overflow or denormals),
    biases 0, other vectors (norm scales) 1. Each tensor's generator is seeded from ``seed`` and
    its name, so the result does not depend on iteration order or device. Returns the parameter
    count."""
    count = 0
    with torch.no_grad():
        named = list(module.named_parameters()) + [
            (n, b) for n, b in module.named_buffers() if n.split(".")[-1] in buffers
        ]
        for name, t in named:
            if not t.is_floating_point():
                continue
            gen = torch.Generator(device=t.device).manual_seed(
                (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)
            )
            if name.split(".")[-1] in buffers:
                t.normal_(0.0, 0.5, generator=gen)  # stands in for a sin-cos position table
            elif t.ndim >= 2:
                t.normal_(0.0, t[0].numel() ** -0.5, generator=gen)
            elif name.endswith("bias"):
                t.zero_()
            else:
                t.fill_(1.0)
            if isinstance(t, torch.nn.Parameter):
                count += t.numel()
    return count


# ----------------------------------------------------------------------------- unet configs


def _parse_depth(spec: str | int | tuple | None, default: str) -> tuple[int, ...]:
    if spec is None:
        spec = default
    if isinstance(spec, int):
        return (spec,)
    if isinstance(spec, (tuple, list)):
        return tuple(int(x) for x in spec)
    return tuple(int(x) for x in str(spec).split(","))


def flux_unet_config(double: int, single: int, schnell: bool) -> dict:
    # What comfy.model_detection.detect_unet_config returns for flux1-dev / flux1-schnell,
    # except depth / depth_single_blocks (real: 19 / 38); fields the host requires on top
    # (0.33: txt_ids_dims) as its detection sets them.
    import comfy.ldm.flux.model

    from negguide.shapes_world.host_compat import complete_params

    return complete_params({
        "image_model": "flux",
        "in_channels": 16,
        "out_channels": 16,
        "vec_in_dim": 768,
        "context_in_dim": 4096,
        "hidden_size": 3072,
        "mlp_ratio": 4.0,
        "num_heads": 24,
        "depth": double,
        "depth_single_blocks": single,
        "axes_dim": [16, 56, 56],
        "theta": 10000,
        "patch_size": 2,
        "qkv_bias": True,
        "guidance_embed": not schnell,
    }, comfy.ldm.flux.model.FluxParams)


def flux2_klein_unet_config(double: int, single: int) -> dict:
    # What comfy.model_detection.detect_unet_config returns for flux-2-klein-4b (0.33), except
    # depth / depth_single_blocks (real: 5 / 20).
    import comfy.ldm.flux.model

    from negguide.shapes_world.host_compat import complete_params

    return complete_params({
        "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
        "context_in_dim": 7680, "hidden_size": 3072, "mlp_ratio": 3.0, "num_heads": 24,
        "depth": double, "depth_single_blocks": single, "axes_dim": [32, 32, 32, 32], "theta": 2000,
        "patch_size": 1, "qkv_bias": False, "guidance_embed": False, "txt_ids_dims": [3],
        "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
        "default_ref_method": "index", "ref_index_scale": 10.0,
    }, comfy.ldm.flux.model.FluxParams)


def z_image_unet_config(layers: int) -> dict:
    # What comfy.model_detection.detect_unet_config returns for z_image_turbo (dim 3840), except
    # n_layers (real: 30); the 2 + 2 refiner layers are real.
    return {
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560,
        "n_layers": layers, "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "qk_norm": True,
        "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
        "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
        "pad_tokens_multiple": 32,
    }


def sd3_unet_config(width_depth: int, blocks: int) -> dict:
    # MMDiT derives its width from `depth` (hidden = 64*depth, heads = depth); `num_blocks` sets
    # how many joint blocks are built, so real width with fewer blocks is depth=38 num_blocks=2.
    hidden = 64 * width_depth
    pos_max = 192 if width_depth == 38 else 384  # SD3.5 Large / Medium checkpoints' pos_embed
    config = {
        "in_channels": 16,
        "out_channels": 16,
        "patch_size": 2,
        "depth": width_depth,
        "num_blocks": blocks,
        "input_size": None,
        "adm_in_channels": 2048,
        "context_embedder_config": {
            "target": "torch.nn.Linear",
            "params": {"in_features": 4096, "out_features": hidden},
        },
        "num_patches": pos_max * pos_max,
        "pos_embed_max_size": pos_max,
        "qk_norm": "rms",
        "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": [],
    }
    if width_depth == 24:  # SD3.5 Medium: MMDiT-X, extra x-block self-attention in blocks 0..12
        config["x_block_self_attn_layers"] = [i for i in range(13) if i < blocks]
    return config


def sdxl_unet_config(depth: int, res_blocks: int) -> dict:
    # comfy.model_detection's SDXL config with `depth` transformer blocks per SpatialTransformer at
    # the 1280-channel level and in the middle (real: 10), max(1, round(depth/5)) at the
    # 640-channel level (real: 2), and `res_blocks` ResBlocks per level (real: 2). depth=10,
    # res_blocks=2 is exactly SDXL base.
    d1 = max(1, round(depth / 5))
    levels = [0, d1, depth]
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "num_classes": "sequential",
        "adm_in_channels": 2816,
        "in_channels": 4,
        "model_channels": 320,
        "num_res_blocks": [res_blocks] * 3,
        "transformer_depth": [d for d in levels for _ in range(res_blocks)],
        "channel_mult": [1, 2, 4],
        "transformer_depth_middle": depth,
        "use_linear_in_transformer": True,
        "context_dim": 2048,
        "num_head_channels": 64,
        "transformer_depth_output": [d for d in levels for _ in range(res_blocks + 1)],
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


# ----------------------------------------------------------------------------- building


def _resolve_dtype(dtype: str | torch.dtype | None, supported: list) -> torch.dtype:
    import comfy.model_management as mm

    if dtype in (None, "auto"):
        return mm.unet_dtype(supported_dtypes=supported)
    if isinstance(dtype, torch.dtype):
        return dtype
    return DTYPES[dtype]


def _host_class(module, name: str, arch: str):
    cls = getattr(module, name, None)
    if cls is None:
        raise RuntimeError(f"{arch}: this ComfyUI host has no {module.__name__}.{name}; run it on the 0.33 host")
    return cls


def build(
    arch: str,
    *,
    resolution: int = 1024,
    depth: str | int | tuple | None = None,
    dtype: str | torch.dtype | None = "auto",
    text_tokens: int | None = None,
    batch_size: int = 1,
    cfg: float | None = None,
    seed: int = 0,
) -> BenchModel:
    """Build ``arch`` (a key of ARCHS) at real width with ``depth`` blocks (see ARCHS[arch]
    ["depth"] for the format and default; ARCHS[arch]["full_depth"] is the real model), plus an
    empty latent of ``resolution`` x ``resolution`` pixels and CONDITIONING of the real text
    shapes (``text_tokens`` overrides the length)."""
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm

    if arch not in ARCHS:
        raise KeyError(f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHS))}")
    spec = ARCHS[arch]
    family = spec["family"]
    blocks = _parse_depth(depth, spec["depth"])
    tokens = spec["text_tokens"] if text_tokens is None else text_tokens
    cfg = spec["cfg"] if cfg is None else cfg
    multiple = 64 if family == "sdxl" else 16
    if resolution % multiple:
        raise ValueError(f"{arch}: resolution must be a multiple of {multiple}, got {resolution}")

    info: dict[str, Any] = {"arch": arch, "about": spec["about"], "resolution": resolution}
    if family in ("flux", "flux2"):
        double, single = (blocks * 2)[:2] if len(blocks) == 1 else blocks[:2]
        if family == "flux":
            config_cls = sm.FluxSchnell if spec["schnell"] else sm.Flux
            unet_config = flux_unet_config(double, single, spec["schnell"])
        else:
            config_cls = _host_class(sm, "Flux2", arch)
            unet_config = flux2_klein_unet_config(double, single)
        info.update(double_blocks=double, single_blocks=single, attention_calls_per_model_call=double + single)
        info["blocks"] = f"{double} double + {single} single (full: {spec['full_depth'].replace(',', ' + ')})"
    elif family == "z_image":
        (n,) = blocks[:1]
        config_cls = _host_class(sm, "ZImage", arch)
        unet_config = z_image_unet_config(n)
        info.update(layers=n, attention_calls_per_model_call=n + 4)
        info["blocks"] = f"{n} main layer(s) + 2 caption and 2 image refiner layers (full: 30 + 2 + 2)"
    elif family == "sd3":
        (n,) = blocks[:1]
        config_cls = sm.SD3
        unet_config = sd3_unet_config(spec["width_depth"], n)
        calls = n + len(unet_config["x_block_self_attn_layers"])
        info.update(joint_blocks=n, attention_calls_per_model_call=calls)
        info["blocks"] = f"{n} joint blocks, last one context-pre-only (full: {spec['full_depth']})"
    else:
        d, r = (blocks + (1,))[:2]
        config_cls = sm.SDXL
        unet_config = sdxl_unet_config(d, r)
        n_tf = (sum(unet_config["transformer_depth"]) + unet_config["transformer_depth_middle"]
                + sum(unet_config["transformer_depth_output"]))
        info.update(transformer_blocks=n_tf, attention_calls_per_model_call=2 * n_tf)
        info["blocks"] = (f"{n_tf} transformer blocks (depth {d} at 1280 ch, {max(1, round(d / 5))} at 640 ch), "
                          f"{r} res block(s) per level (full: 70 transformer blocks, 2 res blocks)")

    latent_channels = unet_config["in_channels"]
    model_config = config_cls(unet_config)
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    supported = list(model_config.supported_inference_dtypes)
    unet_dtype = _resolve_dtype(dtype, supported)
    manual_cast = mm.unet_manual_cast(unet_dtype, load_device, supported)
    model_config.set_inference_dtype(unet_dtype, manual_cast)

    model = model_config.get_model({}, "")
    model = model.to(offload_device)
    n_params = init_weights(model.diffusion_model, seed, buffers=("pos_embed",))
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)

    gen = torch.Generator().manual_seed(seed + 1)
    lat = resolution // 8

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    if family == "flux":
        def cond():
            extra = {"pooled_output": rand(batch_size, 768)}
            if not spec["schnell"]:
                extra["guidance"] = 3.5
            return [[rand(batch_size, tokens, 4096, scale=0.25), extra]]
        image_tokens = (lat // 2) ** 2
    elif family == "flux2":
        def cond():  # the Klein encoder's 3 stacked Qwen3-4B layers; Flux2.extra_conds pads to 512
            return [[rand(batch_size, tokens, 7680, scale=0.25), {}]]
        image_tokens = (lat // 2) ** 2  # patch 1 over the 2x-folded 128-channel latent
    elif family == "z_image":
        def cond():
            return [[rand(batch_size, tokens, 2560, scale=0.25), {}]]
        image_tokens = (lat // 2) ** 2
    elif family == "sd3":
        def cond():
            return [[rand(batch_size, tokens, 4096, scale=0.25), {"pooled_output": rand(batch_size, 2048)}]]
        image_tokens = (lat // 2) ** 2
    else:
        def cond():
            return [[rand(batch_size, tokens, 2048), {
                "pooled_output": rand(batch_size, 1280),
                "width": resolution, "height": resolution,
                "target_width": resolution, "target_height": resolution,
            }]]
        image_tokens = lat * lat  # latent pixels at the first level; attention runs at 1/4 and 1/16

    positive, negative = cond(), cond()
    side = lat // 2 if family == "flux2" else lat  # Flux.2 latents are 16x (the VAE's 2x2 patches in the channels)
    latent = {"samples": torch.zeros(batch_size, latent_channels, side, side)}
    info.update(
        params=n_params,
        weight_dtype=str(unet_dtype).replace("torch.", ""),
        manual_cast_dtype=None if manual_cast is None else str(manual_cast).replace("torch.", ""),
        load_device=str(load_device),
        latent=list(latent["samples"].shape),
        image_tokens=image_tokens,
        text_tokens=tokens,
        cfg=cfg,
        batch_per_model_call=batch_size * (1 if cfg == 1.0 else 2),
    )
    if family == "sdxl":
        info["attention_tokens"] = [(lat // 2) ** 2, (lat // 4) ** 2]
    return BenchModel(arch, patcher, positive, negative, latent, cfg, info=info)
