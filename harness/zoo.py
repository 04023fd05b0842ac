"""A zoo of tiny random-weight models built from ComfyUI's OWN architecture classes.

Every model here is a real ``comfy.supported_models`` config class given a small ``unet_config``,
turned into a real ``comfy.model_base`` model by ``get_model`` and wrapped in a real
``comfy.model_patcher.ModelPatcher``; text encoders are real ``comfy.sd.CLIP`` objects around
ComfyUI's own text-encoder classes with the tokenizers ComfyUI ships, and VAEs are real
``comfy.sd.VAE`` objects built from a state dict exactly like the stock VAELoader does. Nothing is
mocked: only the sizes are small and the weights are random (but deterministic).

``build(name, seed)`` returns a :class:`ZooModel`. Built models are cached per (name, seed); every
call returns fresh ``ModelPatcher.clone()`` / ``CLIP.clone()`` objects of the cached ones, so
callers may patch them freely (object patches, model_options, wrappers, weight patches). Do not
write into the shared weight tensors in place.

Weights: one ``torch.Generator`` per (architecture, component, seed), seeded from a SHA-256 of
those, walks the named parameters of the component (and the buffers ComfyUI leaves as
torch.empty) in sorted name order: norm weights 1 and norm biases 0; Linear/Conv weights
~ N(0, 1/fan_in); embedding tables ~ N(0, 1); other biases ~ N(0, 0.02^2); other tensors of
rank >= 2 (e.g. Wan's ``modulation``) ~ N(0, 0.1^2); scalars and computed buffers keep the value
the constructor gave them, except the MMDiT ``pos_embed`` buffer (torch.empty in ComfyUI), which
gets the 2D sin-cos table SD3 checkpoints ship. Output layers are NOT zeroed, so every model gives
non-trivial, input-dependent outputs. Components: "diffusion_model", "text_encoder", "vae".
Same seed -> bitwise-identical weights in any process.

Architectures (measured on the ComfyUI 0.3.75 tree; flux2 and flux2_dev on 0.33). Parameter counts of
diffusion model / text encoder / VAE; "4 steps" = nodes.common_ksampler, euler/simple, 4 steps,
cfg 1, one 64x64-pixel image, warm, best of 3, with torch.set_num_threads(1) on the 2-core CPU
dev machine while other sessions loaded it (load average ~5); "decode" = nodes.VAEDecode of that
latent. With torch's default 2 threads on the same loaded machine the same runs took 0.7-3.4 s
(OpenMP threads fighting over busy cores): run tiny models single-threaded.

==========  ==========  =========  =========  =========  =======  ======  ==============================
name        family      diffusion  text enc.  VAE        4 steps  decode  latent / VAE
==========  ==========  =========  =========  =========  =======  ======  ==============================
sd15        unet        1.08 M     3.27 M     2.45 M     0.13 s   0.08 s  [B,4,H,W] TAESD
sdxl        unet        1.24 M     4.88 M     2.45 M     0.11 s   0.07 s  [B,4,H,W] TAESD
sd3         mmdit       1.63 M     6.54 M     2.46 M     0.08 s   0.08 s  [B,16,H,W] TAESD
flux        flux        0.49 M     5.41 M     2.46 M     0.13 s   0.07 s  [B,16,H,W] TAESD
chroma      flux        0.39 M     2.14 M     2.46 M     0.08 s   0.08 s  [B,16,H,W] TAESD
flux2       flux2       0.43 M     5.50 M     37.56 M    0.13 s   0.08 s  [B,128,H,W] Flux.2 VAE (16x)
flux2_dev   flux2       0.45 M     0.70 M     37.56 M    0.05 s   0.03 s  [B,128,H,W] Flux.2 VAE (16x)
wan21       wan         0.16 M     1.05 M     0.92 M     0.06 s   0.16 s  [B,16,T,H,W] Wan 2.1 VAE
wan22       wan         0.18 M     1.05 M     11.42 M    0.04 s   0.05 s  [B,48,T,H,W] TAEHV (16x)
qwen_image  qwen_image  0.34 M     5.01 M     0.92 M     0.06 s   0.13 s  [B,16,1,H,W] Wan 2.1 VAE
z_image     z_image     6.41 M     4.93 M     2.46 M     0.06 s   0.02 s  [B,16,H,W] TAESD (Flux latents)
hidream     hidream     0.23 M     8.44 M     2.46 M     0.10 s   0.09 s  [B,16,H,W] TAESD (Flux latents)
hunyuan_v.  hunyuan_v.  7.70 M     5.04 M     11.37 M    0.01 s   0.02 s  [B,32,T,H,W] lighttae_hv15 (16x)
==========  ==========  =========  =========  =========  =======  ======  ==============================

A build takes 0.5-2 s (mostly loading the tokenizer vocabularies, done once per process).
Text-encoder sizes are dominated by the real vocabularies (49408 CLIP, 32128 T5, 128256 Llama 3, 152064 Qwen2.5,
151936 Qwen3; flux2_dev's generated tekken vocabulary has 583 tokens). The flux2 row was measured on
ComfyUI 0.33 (the only supported host with Flux.2 Klein), same settings, one 64x64-pixel image = a
[1, 128, 4, 4] latent; its VAE count is mostly the encoder, whose width ComfyUI fixes (see below).
The flux2_dev row was measured later on 0.33 with the machine nearly idle (load average ~1.4),
where flux2 took 0.05 s / 0.03 s in the same run: compare it with that, not with the rows above.

Per architecture (what is real, what is shrunk, what deviates):

- sd15: SD15 UNet (32/64 channels, one res block per level, a transformer at both levels and in
  the middle, 2 heads of 16/32), CLIP-L text model (hidden 64, 3 layers) with the real CLIP
  tokenizer: 77 tokens per chunk, cross-attention context dim 64. TAESD VAE.
- sdxl: SDXL UNet (head width 16; like SDXL, NO transformer at the highest-resolution level, so
  with a 64x64 image attention only runs on the 4x4 level and the middle block), CLIP-L (hidden
  32) + CLIP-G (hidden 64, projection 64), both with layer -2 like SDXL; context = [l | g] = 96
  wide; adm = pooled G (64) + 6 * 256 size embeddings = 1600. TAESD VAE.
- sd3: SD3 (medium layout) MMDiT, depth 2 (hidden 128, 2 heads of 64: MMDiT fixes head width
  64), pos_embed_max_size 32 (latents up to 64x64, i.e. images up to 512x512 px). Text encoder: CLIP-L + CLIP-G (no T5):
  ComfyUI pads [l | g] to 4096 channels and hard-codes that width, so a tiny T5 cannot be
  concatenated to a tiny CLIP pair; the zoo keeps the CLIP pair because it gives a real,
  prompt-dependent pooled vector (y, 64 + 64 = 128 wide). 77 text tokens. TAESD (16 ch) VAE.
- flux: Flux dev-like (guidance_embed True), hidden 64, 2 heads, axes_dim [8,12,12], 2 double + 2
  single blocks. Text encoder: CLIP-L (hidden 64, pooled -> vec_in_dim 64) + T5-XXL class (d_model
  64, 2 layers) with the real T5 tokenizer: 256 text tokens (Flux pads T5 to 256). TAESD VAE.
- chroma: Chroma (Flux blocks without per-block modulation, the distilled-guidance Approximator:
  2 layers, hidden 128), same sizes as flux; T5-only text encoder via ComfyUI's PixArt T5 class
  (no padding: text length = prompt tokens + EOS). TAESD (16 ch) VAE.
- flux2: Flux.2 Klein layout (comfy.supported_models.Flux2 -> model_base.Flux2): patch size 1 over
  128-channel latents, hidden 64, 2 heads of 32, axes_dim [8,8,8,8], theta 2000, mlp_ratio 3,
  global modulation, SiLU-gated MLP, no qkv/op biases, txt_ids_dims [3] (text positions on the
  4th RoPE axis), no guidance embedding (Klein is distilled), no pooled vector; 2 double + 2
  single blocks. Text encoder: ComfyUI's Klein encoder (klein_te: Qwen3-4B class, hidden 32,
  1 head, 1 KV head; head_dim 128 and the vocabulary are fixed by ComfyUI) with KleinTokenizer
  (the shipped qwen25_tokenizer and Klein's chat template), 512 tokens. The encoder returns the
  hidden states before layers 9, 18 and 27 concatenated (context_in_dim 3 x 32 = 96); ComfyUI
  takes a list of layers only where the layer exists, so the tiny Qwen3 keeps 28 layers (the
  fewest that reach layer 27 with its real input). VAE: the Flux.2 VAE as comfy.sd.VAE
  detects it from its keys (KL autoencoder, z 32, a batch-norm over 2x2-folded latents: 128
  channels, 16x downscale). ComfyUI reads only the decoder width from the state dict, so the
  decoder is 32 wide (the least its GroupNorm(32) allows) and the encoder keeps ComfyUI's fixed
  width 128 (34.4 M of its 37.6 M parameters; a 64x64 encode takes ~0.15 s). A build takes
  ~1 s (2 s with the Qwen vocabulary load) and one prompt encode ~0.14 s (28 layers x 512
  tokens): the slowest of the zoo. ``empty_latent`` matches
  EmptyFlux2LatentImage: [B, 128, H/16, W/16]. Needs the Klein classes (ComfyUI 0.33; 0.3.75
  has Flux.2 but no Klein/Qwen3 encoder): ``unavailable_reason("flux2")`` names what a host
  lacks, ``build`` raises it, and tests/library/conftest.py skips every test parametrised with
  an unavailable architecture with that reason.
- flux2_dev: Flux.2 dev, what ComfyUI builds for it: the flux2 DiT (the same
  comfy.supported_models.Flux2 config: comfy/model_detection.py tells dev from Klein only by the
  widths and the guidance embedder) WITH the guidance embedding (dev is guidance-distilled;
  model_base.Flux passes guidance 3.5 unless FluxGuidance sets it), context_in_dim 3 x 32 = 96. Text
  encoder: ComfyUI's Flux.2 dev encoder (flux2_te: Mistral3_24BModel -> llama.Mistral3Small24B,
  hidden 32, 1 head, 1 KV head; head_dim 128 fixed by ComfyUI) returning the hidden states before
  layers 10, 20 and 30 concatenated. It is built pruned, as ComfyUI loads pruned Flux.2 dev encoder
  files: 30 layers and no final norm (ComfyUI drops it below 40 layers and then takes layer 30's
  input from the last layer's output), which gives exactly the states a 40-layer model gives
  (checked against one). Tokenizer: Flux2Tokenizer (Mistral3Tokenizer: start token 1, pad 11 on the
  left, min_length 1, so no padding; Flux.2's system-prompt chat template: text length = prompt
  tokens + 32). DEVIATION: real encoder files carry their tokenizer (a Mistral "tekken" JSON, ~131k
  tokens) as a tensor, and ComfyUI ships none, so :func:`tekken_json` generates a tiny valid one
  (Mistral's 20 special tokens at their usual ranks, the 256 bytes, whole-word tokens for the
  template's words and a few common prompt words; 583 ids, the encoder's vocab_size) and the zoo
  hands it to the tokenizer as comfy.sd does (tokenizer_data["tekken_model"], a uint8 tensor that
  Mistral3Tokenizer.state_dict, and so CLIP.get_sd, returns; CLIP.clone shares the tokenizer). Other
  words split into word prefixes and bytes, so their token counts are not a real vocabulary's.
  model_base.Flux2 left-pads the shorter Mistral context with zeros to 512 tokens, as with real dev
  prompts. VAE: flux2's. A build takes ~0.3 s and one prompt encode ~0.015 s. Needs a host whose
  Flux.2 dev tokenizer reads a tekken vocabulary: ComfyUI 0.33 parses it itself
  (bpe_tokenizer.from_tekken_json); 0.3.75 converts it with transformers'
  MistralConverter(vocab=..., additional_special_tokens=...), an API the installed transformers 5
  replaced (it takes a tekken file path), so real Flux.2 dev text encoders do not load there either:
  ``unavailable_reason("flux2_dev")`` gives the error the probe gets.
- wan21: Wan 2.1 t2v (1.3B-style cross-attention DiT): dim 64, ffn 128, 2 heads of 32, 2 blocks,
  patch (1,2,2). Text encoder: ComfyUI's UMT5-XXL class (d_model 32, 2 layers, masked padding
  zeroed like Wan) fed 512 tokens like Wan, BUT tokenized with ComfyUI's shipped T5 vocabulary:
  Wan's real tokenizer is the UMT5 SentencePiece model that ships only inside umt5 checkpoints and
  needs the ``sentencepiece`` package, which the host does not install. The zoo therefore uses
  ``sd1_clip.SDTokenizer`` with exactly UMT5XXlTokenizer's settings (no start token, EOS 1, pad 0,
  min_length 512) over ``text_encoders/t5_tokenizer``. VAE: the real Wan 2.1 VAE class
  (comfy.ldm.wan.vae.WanVAE, detected by comfy.sd.VAE from its keys) with base width 8.
  Latents are video latents [B, 16, T, H/8, W/8]; ``empty_latent`` gives one frame (T = 1).
- wan22: Wan 2.2 TI2V 5B (comfy.supported_models.WAN22_T2V -> model_base.WAN22, image_to_video):
  the wan21 blocks over 48-channel latents at 16x (patch (1,2,2)), same text encoder. VAE: TAEHV
  with 48 latent channels (the taew2_2 layout comfy.sd.VAE detects on both hosts; ComfyUI
  passes its output through unclamped); the full Wan 2.2 VAE has widths ComfyUI fixes (160/256).
  Row measured on the 0.33 tree. The 14B high/low-noise pair is the Wan 2.1 architecture (wan21).
- qwen_image: Qwen-Image MMDiT (60 -> 2 joint blocks, 2 heads of 32, axes (8,12,12)); text
  encoder: ComfyUI's Qwen2.5-VL-7B class (hidden 32, 2 layers; head_dim 128 and the 152064-token
  vocabulary are fixed by ComfyUI) with the real Qwen2.5 tokenizer and chat template (the template
  prefix is dropped by ComfyUI, so text length = prompt tokens + 5). ComfyUI hard-codes the
  Qwen2.5-VL vision tower at full size (~630 M parameters, only used for image-edit prompts); the
  zoo swaps it, right after construction, for a 2-layer ``Qwen2VLVisionTransformer`` of the same
  class. VAE: tiny Wan 2.1 VAE (Qwen-Image uses the Wan 2.1 VAE). The latent format is 3-D, so
  ``empty_latent`` gives [B, 16, 1, H/8, W/8] (what sampling returns anyway).
- z_image: Z-Image (Turbo) (comfy.supported_models.ZImage -> model_base.Lumina2 -> NextDiT): the
  real layout (z_image_modulation, qk-norm, RoPE axes [32, 48, 48] theta 256, time scale 1000,
  caption and image padded to multiples of 32 with learned pad tokens, 2 context_refiner + 2
  noise_refiner layers as in Z-Image) with 2 heads, 2 main layers and dim 256, the least NextDiT
  allows with z_image_modulation (its timestep embedder always outputs 256 features; hence the
  6.4 M parameters, the zoo's largest DiT). Text encoder: ComfyUI's Z-Image encoder (Qwen3-4B
  class, hidden 32, 1 head, 1 KV head, 3 layers: Z-Image reads layer -2) with ZImageTokenizer
  (the shipped Qwen2.5 vocabulary and Z-Image's chat template; no padding: text length = prompt
  tokens + 8 template tokens). VAE: Z-Image uses the Flux VAE latents (latent_formats.Flux,
  16 channels, 8x); the zoo gives it a 16-channel TAESD like flux. Row measured on the 0.33 tree
  (unloaded machine: compare with care); builds on 0.3.75 too (both have ZImage).
- hidream: HiDream-I1 (comfy.supported_models.HiDream -> model_base.HiDream ->
  HiDreamImageTransformer2DModel): 1 double + 1 single block, 2 heads of 16, 2 routed experts (1
  active) plus the shared one, RoPE axes (8, 4, 4), llama_layers [0, 1, 2]. Text encoder:
  ComfyUI's HiDream encoder with all four parts tiny: CLIP-L and CLIP-G (hidden 32 each: the
  pooled vector, 64 wide), T5-XXL class (d_model 32, 2 layers; the context, padded to 128) and
  the Llama 3.1 class (hidden 32, 3 layers, 1 head; head_dim 128 and the 128256-token vocabulary
  fixed by ComfyUI; every layer's states padded to 128 tokens: conditioning_llama3 [B, 3, 128, 32]),
  with the tokenizers ComfyUI ships. VAE: the Flux latents (16 channels) on a TAESD like flux.
  Needs ``comfy/text_encoders/llama_tokenizer/tokenizer.json``, which the 0.33.0 snapshot lacks:
  it builds on 0.3.75 only (``unavailable_reason("hidream")`` says so). Row measured on 0.3.75.

- hunyuan_video15: Hunyuan Video 1.5 (comfy.supported_models.HunyuanVideo15 ->
  model_base.HunyuanVideo15): hidden 64, 2 heads, one double and one single block, RoPE axes
  (8, 12, 12), patch (1, 1, 1), 65 input channels (latent + image condition + mask, as the real
  T2V/I2V checkpoint), the token refiner, the condition-type embedding, a 48-wide vision
  projection and the real byT5 mapper (its 1472 -> 2048 widths are fixed in ComfyUI: most of the
  7.70 M). Text: Qwen2.5-VL (hidden 32, 3 layers) with the shipped qwen25_tokenizer and HV 1.5's
  template, built WITHOUT the byT5 glyph encoder (its config is fixed at full width); tests feed
  conditioning_byt5small directly. VAE: TAEHV with 32 channels, which comfy.sd.VAE detects as
  lighttae_hv15 (16x, HunyuanVideo15 latent format). The "hunyuan_v." row (name hunyuan_video15,
  family hunyuan_video) was measured on 0.33 with a NegBench run loading the other core.

Every other architecture builds on ComfyUI 0.3.75 and 0.33; flux2 and flux2_dev build on 0.33 only,
hidream on 0.3.75 only.
Where text and image tokens sit in each one's attention calls is pinned down by
tests/library/test_attention_layout.py.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from typing import Any, Callable

import torch

from ..shapes_world.host_compat import complete_params

ARCHITECTURES: tuple[str, ...] = ("sd15", "sdxl", "sd3", "flux", "chroma", "flux2", "flux2_dev", "wan21", "wan22",
                                  "qwen_image", "z_image", "hidream", "hunyuan_video15")

FAMILIES: dict[str, str] = {
    "sd15": "unet",
    "sdxl": "unet",
    "sd3": "mmdit",
    "flux": "flux",
    "chroma": "flux",
    "flux2": "flux2",
    "flux2_dev": "flux2",
    "wan21": "wan",
    "wan22": "wan",
    "qwen_image": "qwen_image",
    "z_image": "z_image",
    "hidream": "hidream",
    "hunyuan_video15": "hunyuan_video",
}

# Architectures whose latent format is 3-D (video latents [B, C, T, H, W]).
VIDEO_LATENT: frozenset[str] = frozenset({"wan21", "wan22", "qwen_image", "hunyuan_video15"})

# Latent channels per architecture (the latent_format's latent_channels).
LATENT_CHANNELS: dict[str, int] = {
    "sd15": 4, "sdxl": 4, "sd3": 16, "flux": 16, "chroma": 16, "flux2": 128, "flux2_dev": 128, "wan21": 16,
    "wan22": 48, "qwen_image": 16, "z_image": 16, "hidream": 16, "hunyuan_video15": 32,
}

# Pixels per latent cell along height and width (the latent_format's spacial_downscale_ratio).
LATENT_DOWNSCALE: dict[str, int] = {name: 16 if name in ("flux2", "flux2_dev", "wan22", "hunyuan_video15") else 8
                                    for name in ARCHITECTURES}

# The ComfyUI classes each architecture is built from that some supported host may lack, as
# (module, attribute) pairs: an architecture is available exactly when its host has all of them.
_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "flux2": (("comfy.supported_models", "Flux2"), ("comfy.model_base", "Flux2"),
              ("comfy.latent_formats", "Flux2"), ("comfy.text_encoders.flux", "KleinTokenizer"),
              ("comfy.text_encoders.flux", "klein_te"), ("comfy.text_encoders.llama", "Qwen3_4B")),
    "flux2_dev": (("comfy.supported_models", "Flux2"), ("comfy.model_base", "Flux2"),
                  ("comfy.latent_formats", "Flux2"), ("comfy.text_encoders.flux", "Flux2Tokenizer"),
                  ("comfy.text_encoders.flux", "flux2_te"), ("comfy.text_encoders.llama", "Mistral3Small24B")),
    "z_image": (("comfy.supported_models", "ZImage"), ("comfy.model_base", "Lumina2"),
                ("comfy.text_encoders.z_image", "ZImageTokenizer"), ("comfy.text_encoders.z_image", "te"),
                ("comfy.text_encoders.llama", "Qwen3_4B")),
}


# The data files of the ComfyUI tree an architecture's tokenizers read, relative to the comfy
# package (the 0.33.0 snapshot in shared/hosts lacks the Llama tokenizer's tokenizer.json).
_NEEDS_FILES: dict[str, tuple[str, ...]] = {
    "hidream": ("text_encoders/llama_tokenizer/tokenizer.json",),
}


def unavailable_reason(name: str) -> str | None:
    """Why architecture ``name`` cannot be built on this ComfyUI host (the classes or tokenizer
    files it lacks, or what fails when its _NEEDS_WORKING probe tries it), or None when it can.
    Decided by what the host has and does, never by its version."""
    import importlib
    from pathlib import Path

    missing = []
    for module_name, attribute in _NEEDS.get(name, ()):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
        if not hasattr(module, attribute):
            missing.append(f"{module_name}.{attribute}")
    if missing:
        return f"zoo architecture {name!r} needs ComfyUI classes this host lacks: {', '.join(missing)}"
    comfy_root = Path(importlib.import_module("comfy.model_base").__file__).parent
    absent = [f"comfy/{path}" for path in _NEEDS_FILES.get(name, ()) if not (comfy_root / path).is_file()]
    if absent:
        return (f"zoo architecture {name!r} needs tokenizer files this ComfyUI tree lacks: {', '.join(absent)} "
                "(the real tokenizer, which no stand-in replaces)")
    if name in _NEEDS_WORKING:
        needed, probe = _NEEDS_WORKING[name]
        failure = probe()
        if failure is not None:
            return f"zoo architecture {name!r} needs {needed}, which this host lacks: {failure}"
    return None


def available_architectures() -> tuple[str, ...]:
    """The ARCHITECTURES this host can build."""
    return tuple(name for name in ARCHITECTURES if unavailable_reason(name) is None)


@dataclasses.dataclass
class ZooModel:
    name: str
    family: str
    model: Any  # comfy.model_patcher.ModelPatcher
    clip: Any  # comfy.sd.CLIP
    vae: Any  # comfy.sd.VAE
    latent_channels: int

    def empty_latent(self, width: int = 64, height: int = 64, batch_size: int = 1) -> dict:
        """{"samples": zeros} shaped like the stock empty-latent node of this architecture
        (EmptyLatentImage / EmptySD3LatentImage / EmptyFlux2LatentImage / EmptyHunyuanLatentVideo
        with length 1); width and height in pixels."""
        import comfy.model_management

        down = LATENT_DOWNSCALE[self.name]
        shape = [batch_size, self.latent_channels, height // down, width // down]
        if self.name in VIDEO_LATENT:
            shape.insert(2, 1)
        return {"samples": torch.zeros(shape, device=comfy.model_management.intermediate_device())}

    def encode(self, text: str) -> list:
        """The CONDITIONING that CLIPTextEncode produces with ``self.clip``."""
        import nodes

        return nodes.CLIPTextEncode().encode(self.clip, text)[0]


# ----------------------------------------------------------------------------------------------
# Deterministic initialisation


def _generator(name: str, component: str, seed: int) -> torch.Generator:
    key = hashlib.sha256(f"negguide-zoo/{name}/{component}/{int(seed)}".encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))
    return g


_NORM_ONES = ("weight", "scale", "gamma")
_NORM_ZEROS = ("bias", "beta")


def _is_norm(module: torch.nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _normal(shape, std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=generator)


def initialise(module: torch.nn.Module, generator: torch.Generator,
               special: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> None:
    """Fill every parameter (and the named ``special`` buffers) of ``module`` deterministically.

    ``special`` maps a parameter/buffer name to a function returning its value (drawing nothing
    from the generator). Tensors are visited in sorted name order."""
    special = special or {}
    owners: dict[str, tuple[torch.nn.Module, str]] = {}
    for mname, mod in module.named_modules():
        for pname, _ in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            owners.setdefault(f"{mname}.{pname}" if mname else pname, (mod, pname))
    tensors = dict(module.named_parameters())
    tensors.update({k: v for k, v in module.named_buffers() if k in special})
    with torch.no_grad():
        for key in sorted(tensors):
            t = tensors[key]
            if t is None or t.numel() == 0:
                continue
            owner, local = owners[key]
            if key in special:
                value = special[key](t)
            elif t.ndim == 0:
                continue  # scalars (CLIP logit_scale, TAESD vae_scale/vae_shift) keep their value
            elif _is_norm(owner) and local in _NORM_ONES:  # any shape: Wan VAE's RMS_norm gamma is [C, 1, 1]
                value = torch.ones(t.shape)
            elif _is_norm(owner) and local in _NORM_ZEROS:
                value = torch.zeros(t.shape)
            elif isinstance(owner, torch.nn.Embedding):
                value = _normal(t.shape, 1.0, generator)
            elif t.ndim >= 2 and isinstance(owner, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                fan_in = t[0].numel()
                value = _normal(t.shape, fan_in ** -0.5, generator)
            elif t.ndim == 1:
                value = _normal(t.shape, 0.02, generator)
            else:
                value = _normal(t.shape, 0.1, generator)
            t.copy_(value.to(dtype=t.dtype, device=t.device))


def digest(zoo_model: ZooModel) -> str:
    """SHA-256 over the weights of a ZooModel's diffusion model, text encoder and VAE."""
    return state_dict_digest({
        **{f"diffusion/{k}": v for k, v in zoo_model.model.model.diffusion_model.state_dict().items()},
        **{f"text_encoder/{k}": v for k, v in zoo_model.clip.cond_stage_model.state_dict().items()},
        **{f"vae/{k}": v for k, v in zoo_model.vae.first_stage_model.state_dict().items()},
    })


def state_dict_digest(module_or_sd) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (for determinism checks)."""
    sd = module_or_sd.state_dict() if hasattr(module_or_sd, "state_dict") else module_or_sd
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k]
        if not torch.is_tensor(t):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------
# Components


def _devices():
    import comfy.model_management as mm

    return mm.get_torch_device(), mm.unet_offload_device()


def _diffusion(name: str, seed: int, config_cls, unet_config: dict, extra: dict | None = None,
               special: dict | None = None):
    """A real model_base model from a supported_models config class, in a ModelPatcher."""
    import comfy.model_patcher

    config = config_cls(unet_config)
    if extra:
        config.unet_config.update(extra)  # overrides the class's unet_extra_config (head layout)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    initialise(model.diffusion_model, _generator(name, "diffusion_model", seed), special)
    load_device, offload_device = _devices()
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


@functools.lru_cache(maxsize=None)
def _tokenizer_instance(tokenizer_cls):
    return tokenizer_cls(embedding_directory=None, tokenizer_data={})


def _shared_tokenizer(tokenizer_cls):
    """Tokenizer factory for ClipTarget that loads each (stateless) tokenizer class once per
    process: loading the vocabularies is most of a build's time."""

    def make(embedding_directory=None, tokenizer_data={}):
        if embedding_directory is None and not tokenizer_data:
            return _tokenizer_instance(tokenizer_cls)
        return tokenizer_cls(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)

    return make


def _clip(name: str, seed: int, tokenizer, clip_model, model_options: dict, tokenizer_data: dict | None = None):
    """A real comfy.sd.CLIP around a ComfyUI text-encoder class with tiny configs; ``tokenizer_data``
    is what comfy.sd hands the tokenizer from a text-encoder file (e.g. a Mistral "tekken_model")."""
    import comfy.sd
    import comfy.supported_models_base

    options = {"dtype": torch.float32, **model_options}
    target = comfy.supported_models_base.ClipTarget(_shared_tokenizer(tokenizer), clip_model)
    clip = comfy.sd.CLIP(target, tokenizer_data=tokenizer_data or {}, model_options=options)
    initialise(clip.cond_stage_model, _generator(name, "text_encoder", seed))
    return clip


def _taesd_vae(name: str, seed: int, latent_channels: int):
    import comfy.sd
    import comfy.taesd.taesd

    taesd = comfy.taesd.taesd.TAESD(latent_channels=latent_channels)
    initialise(taesd, _generator(name, "vae", seed))
    sd = {k: v for k, v in taesd.state_dict().items()}
    return comfy.sd.VAE(sd=sd)


def _wan_vae(name: str, seed: int, dim: int = 8):
    import comfy.ldm.wan.vae
    import comfy.sd

    vae = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                   attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    initialise(vae, _generator(name, "vae", seed))
    return comfy.sd.VAE(sd=dict(vae.state_dict()))


def _flux2_vae(name: str, seed: int, decoder_ch: int = 32):
    """The Flux.2 VAE as comfy.sd.VAE detects it (a KL autoencoder with z 32 and a batch-norm over
    2x2-folded latents: 128 channels, 16x downscale). ComfyUI fixes the encoder width at 128 (it
    reads only the decoder's width from the state dict); the decoder is 32 wide, the least
    GroupNorm(32) allows."""
    import comfy.ldm.models.autoencoder
    import comfy.sd

    ddconfig = {"double_z": True, "z_channels": 32, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
                "batch_norm_latent": True}
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=32,
                                                     decoder_ddconfig={**ddconfig, "ch": decoder_ch})
    initialise(vae, _generator(name, "vae", seed))
    return comfy.sd.VAE(sd=dict(vae.state_dict()))


def _clip_config(hidden: int, heads: int = 2, layers: int = 3, projection: int | None = None) -> dict:
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_attention_heads": heads,
            "num_hidden_layers": layers, "projection_dim": projection or hidden}


def _llm_config(hidden: int, layers: int) -> dict:
    """A tiny decoder-only LLM text model (ComfyUI's Qwen3 / Mistral classes): one attention head,
    one KV head, the cheapest encode."""
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": 1, "num_key_value_heads": 1}


def _t5_config(d_model: int, heads: int = 2, layers: int = 2, model_type: str = "t5") -> dict:
    return {"d_model": d_model, "d_ff": 2 * d_model, "d_kv": d_model // heads, "num_heads": heads,
            "num_layers": layers, "num_decoder_layers": layers, "model_type": model_type}


# ----------------------------------------------------------------------------------------------
# Architectures


def _unet_config(model_channels, channel_mult, transformer_depth, transformer_depth_output,
                 context_dim, adm_in_channels, use_linear) -> dict:
    return {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
        "model_channels": model_channels, "num_res_blocks": [1] * len(channel_mult),
        "channel_mult": list(channel_mult), "transformer_depth": list(transformer_depth),
        "transformer_depth_output": list(transformer_depth_output), "transformer_depth_middle": 1,
        "use_spatial_transformer": True, "legacy": False, "context_dim": context_dim,
        "adm_in_channels": adm_in_channels, "use_linear_in_transformer": use_linear,
        "use_temporal_attention": False, "use_temporal_resblock": False,
        **({"num_classes": "sequential"} if adm_in_channels else {}),
    }


def _build_sd15(name, seed):
    import comfy.sd1_clip
    import comfy.supported_models

    clip_hidden = 64
    model = _diffusion(name, seed, comfy.supported_models.SD15,
                       _unet_config(32, [1, 2], [1, 1], [1, 1, 1, 1], clip_hidden, None, False),
                       extra={"num_heads": 2, "num_head_channels": -1})
    clip = _clip(name, seed, comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel,
                 {"clip_l_model_config": _clip_config(clip_hidden)})
    return model, clip, _taesd_vae(name, seed, 4)


def _build_sdxl(name, seed):
    import comfy.sdxl_clip
    import comfy.supported_models

    l_hidden, g_hidden, g_proj = 32, 64, 64
    model = _diffusion(name, seed, comfy.supported_models.SDXL,
                       _unet_config(32, [1, 2], [0, 1], [0, 0, 1, 1], l_hidden + g_hidden,
                                    g_proj + 6 * 256, True),
                       extra={"num_heads": -1, "num_head_channels": 16})
    clip = _clip(name, seed, comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel,
                 {"clip_l_model_config": _clip_config(l_hidden),
                  "clip_g_model_config": _clip_config(g_hidden, projection=g_proj)})
    return model, clip, _taesd_vae(name, seed, 4)


def _build_sd3(name, seed):
    import numpy as np

    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.supported_models
    import comfy.text_encoders.sd3_clip

    depth, max_size = 2, 32
    hidden = 64 * depth
    l_hidden, g_hidden, g_proj = 64, 64, 64
    unet_config = {
        "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": depth, "input_size": None,
        "adm_in_channels": l_hidden + g_proj,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": 4096, "out_features": hidden}},
        "num_patches": max_size * max_size, "pos_embed_max_size": max_size,
        "pos_embed_scaling_factor": None, "qk_norm": None, "x_block_self_attn_layers": [],
    }

    def pos_embed(t):
        table = mmdit.get_2d_sincos_pos_embed(hidden, max_size)
        return torch.from_numpy(np.asarray(table, dtype=np.float32)).reshape(t.shape)

    model = _diffusion(name, seed, comfy.supported_models.SD3, unet_config, special={"pos_embed": pos_embed})
    clip = _clip(name, seed, comfy.text_encoders.sd3_clip.SD3Tokenizer,
                 comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=False),
                 {"clip_l_model_config": _clip_config(l_hidden),
                  "clip_g_model_config": _clip_config(g_hidden, projection=g_proj)})
    return model, clip, _taesd_vae(name, seed, 16)


_FLUX_BLOCKS = {"hidden_size": 64, "num_heads": 2, "axes_dim": [8, 12, 12], "depth": 2,
                "depth_single_blocks": 2, "mlp_ratio": 4.0, "theta": 10000, "patch_size": 2,
                "qkv_bias": True}


def _build_flux(name, seed):
    import comfy.ldm.flux.model
    import comfy.supported_models
    import comfy.text_encoders.flux

    clip_hidden, t5_dim = 64, 64
    unet_config = complete_params(
        {"image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16,
         "vec_in_dim": clip_hidden, "context_in_dim": t5_dim, **_FLUX_BLOCKS}, comfy.ldm.flux.model.FluxParams)
    model = _diffusion(name, seed, comfy.supported_models.Flux, unet_config)
    clip = _clip(name, seed, comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip(),
                 {"clip_l_model_config": _clip_config(clip_hidden), "t5xxl_model_config": _t5_config(t5_dim)})
    return model, clip, _taesd_vae(name, seed, 16)


def _build_chroma(name, seed):
    import comfy.ldm.chroma.model
    import comfy.supported_models
    import comfy.text_encoders.pixart_t5

    t5_dim = 64
    unet_config = complete_params(
        {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": t5_dim,
         "in_dim": 64, "out_dim": _FLUX_BLOCKS["hidden_size"], "hidden_dim": 128, "n_layers": 2,
         **_FLUX_BLOCKS}, comfy.ldm.chroma.model.ChromaParams)
    model = _diffusion(name, seed, comfy.supported_models.Chroma, unet_config)
    clip = _clip(name, seed, comfy.text_encoders.pixart_t5.PixArtTokenizer, comfy.text_encoders.pixart_t5.pixart_te(),
                 {"t5xxl_model_config": _t5_config(t5_dim)})
    return model, clip, _taesd_vae(name, seed, 16)


def _flux2_unet_config(context_in_dim: int, guidance_embed: bool) -> dict:
    """The Flux.2 DiT as comfy/model_detection.py configures every Flux.2 checkpoint (Klein and dev
    alike: detection tells them apart only by the widths it reads and by the guidance embedder's
    keys), at the zoo's tiny widths: hidden 64, 2 heads of 32, 2 double + 2 single blocks. Text
    positions run along the 4th RoPE axis: txt_ids_dims [3] where FluxParams has the field (0.3.75's
    has none and numbers Flux.2 text along that axis itself)."""
    import comfy.ldm.flux.model

    params = comfy.ldm.flux.model.FluxParams
    config = {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
              "context_in_dim": context_in_dim, "hidden_size": 64, "num_heads": 2, "axes_dim": [8, 8, 8, 8],
              "depth": 2, "depth_single_blocks": 2, "mlp_ratio": 3.0, "theta": 2000, "patch_size": 1,
              "qkv_bias": False, "guidance_embed": guidance_embed, "global_modulation": True, "mlp_silu_act": True,
              "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0}
    if "txt_ids_dims" in {field.name for field in dataclasses.fields(params)}:
        config["txt_ids_dims"] = [3]
    return complete_params(config, params)


def _build_flux2(name, seed):
    """Flux.2 Klein 4B: no guidance embedding (Klein is distilled), the Qwen3-4B encoder."""
    import comfy.supported_models
    import comfy.text_encoders.flux

    te_hidden = 32
    # the Klein encoder concatenates the hidden states of its layers 9, 18 and 27
    model = _diffusion(name, seed, comfy.supported_models.Flux2,
                       _flux2_unet_config(3 * te_hidden, guidance_embed=False))
    clip = _clip(name, seed, comfy.text_encoders.flux.KleinTokenizer, comfy.text_encoders.flux.klein_te(),
                 {"qwen3_4b_model_config": _llm_config(te_hidden, layers=28)})
    return model, clip, _flux2_vae(name, seed)


# Mistral's special tokens at the ranks every tekken vocabulary gives them (mistral_common's
# Tekkenizer.DEPRECATED_SPECIAL_TOKENS); Flux.2 dev's template uses <s> (ComfyUI's start token 1),
# [SYSTEM_PROMPT], [/SYSTEM_PROMPT], [INST] and [/INST], and ComfyUI pads with <pad> (11).
_TEKKEN_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                    "[TOOL_CONTENT]")
# Whole-word tokens, as a real 131k-token vocabulary has them: the words of Flux.2 dev's system
# prompt (the template is then 32 tokens, about what the real vocabulary gives) and a few common
# prompt words; other words split into word prefixes and bytes.
_TEKKEN_WORDS = ("You", "are", "an", "AI", "that", "reasons", "about", "image", "descriptions", "give",
                 "structured", "responses", "focusing", "on", "object", "relationships", "attribution", "and",
                 "actions", "without", "speculation", "a", "the", "of", "in", "with", "at", "red", "blue", "green",
                 "car", "cat", "dog", "sun", "sky", "tree", "house", "photo", "night")
# The split pattern both ComfyUI loaders apply to tekken vocabularies (0.33's bpe_tokenizer reads
# no other; real tekken files carry Mistral's own, which it does not read either).
_TEKKEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                   r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


def _tekken_pieces() -> list[bytes]:
    """The byte-level BPE vocabulary in rank order: the 256 single bytes, then every prefix (2 bytes
    and longer) of each _TEKKEN_WORDS word and of the word after a space, shorter ones first. Each
    prefix is the one before it plus a byte, so both loaders derive a merge for it and BPE always
    merges a listed word, with or without its leading space, into one token."""
    prefixes = dict.fromkeys(word[:end] for text in _TEKKEN_WORDS for word in (text.encode(), b" " + text.encode())
                             for end in range(2, len(word) + 1))
    return [bytes([b]) for b in range(256)] + sorted(prefixes, key=len)


def tekken_json() -> bytes:
    """A valid tiny Mistral "tekken" tokenizer file (what real Flux.2 dev text-encoder files carry
    as their "tekken_model" tensor; ComfyUI ships none): the special tokens by token_str at
    Mistral's ranks 0-19, then the byte-level vocabulary of :func:`_tekken_pieces` as base64
    token_bytes (ranks from 0, ids after the specials). Token ids run 0..TEKKEN_VOCAB_SIZE - 1."""
    import base64
    import json

    def entry(rank: int, piece: bytes) -> dict:
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:  # a lone byte of a multi-byte character: real files give null
            text = None
        return {"rank": rank, "token_bytes": base64.b64encode(piece).decode("ascii"), "token_str": text}

    pieces = _tekken_pieces()
    return json.dumps({
        "config": {"pattern": _TEKKEN_PATTERN, "num_vocab_tokens": len(pieces),
                   "default_vocab_size": TEKKEN_VOCAB_SIZE, "default_num_special_tokens": len(_TEKKEN_SPECIALS),
                   "version": "v7"},
        "vocab": [entry(rank, piece) for rank, piece in enumerate(pieces)],
        "special_tokens": [{"rank": rank, "token_str": token, "is_control": True}
                           for rank, token in enumerate(_TEKKEN_SPECIALS)],
    }).encode("utf-8")


TEKKEN_VOCAB_SIZE = len(_TEKKEN_SPECIALS) + len(_tekken_pieces())


def _mistral_tokenizer_data() -> dict:
    """The tokenizer_data comfy.sd gives Flux2Tokenizer for a Mistral text-encoder file: the tekken
    file as the uint8 tensor the checkpoint stores it as (so CLIP.get_sd can save it again)."""
    return {"tekken_model": torch.frombuffer(bytearray(tekken_json()), dtype=torch.uint8)}


@functools.lru_cache(maxsize=None)
def _mistral_tokenizer_failure() -> str | None:
    """Why this host cannot tokenize with ComfyUI's Flux.2 dev tokenizer over a tekken
    vocabulary (ComfyUI 0.3.75 converts it with a transformers MistralConverter API that newer
    transformers replaced), or None when it can."""
    import comfy.text_encoders.flux

    try:
        comfy.text_encoders.flux.Flux2Tokenizer(tokenizer_data=_mistral_tokenizer_data()).tokenize_with_weights("a")
    except Exception as error:  # whatever fails, this host cannot tokenize
        return f"{type(error).__name__}: {error}"
    return None


def _build_flux2_dev(name, seed):
    """Flux.2 dev: the Flux.2 DiT with the guidance embedding (dev is guidance-distilled) and
    ComfyUI's Mistral Small 3 (24B) encoder, tiny, with a generated tekken vocabulary."""
    import comfy.supported_models
    import comfy.text_encoders.flux

    te_hidden = 32
    # the Mistral encoder concatenates the hidden states of its layers 10, 20 and 30
    model = _diffusion(name, seed, comfy.supported_models.Flux2,
                       _flux2_unet_config(3 * te_hidden, guidance_embed=True))
    # pruned: 30 layers and no final norm, ComfyUI's own configuration for pruned Flux.2 dev
    # encoder files; it gives layer 30's input as the output of the last layer, so the states of
    # layers 10, 20 and 30 equal a 40-layer model's.
    clip = _clip(name, seed, comfy.text_encoders.flux.Flux2Tokenizer, comfy.text_encoders.flux.flux2_te(pruned=True),
                 {"mistral3_24b_model_config": {**_llm_config(te_hidden, layers=30), "vocab_size": TEKKEN_VOCAB_SIZE}},
                 tokenizer_data=_mistral_tokenizer_data())
    return model, clip, _flux2_vae(name, seed)


def _wan_tokenizer(embedding_directory=None, tokenizer_data={}):
    """ComfyUI's WanT5Tokenizer layout ({"umt5xxl": ...}, no start token, EOS 1, pad 0, at least
    512 tokens) over the shipped T5 vocabulary; see the module docstring for why."""
    import comfy.sd1_clip
    from transformers import T5TokenizerFast

    path = os.path.join(os.path.dirname(os.path.realpath(comfy.sd1_clip.__file__)), "text_encoders", "t5_tokenizer")
    umt5_like = functools.partial(
        comfy.sd1_clip.SDTokenizer, path, pad_with_end=False, embedding_size=4096, embedding_key="umt5xxl",
        tokenizer_class=T5TokenizerFast, has_start_token=False, pad_to_max_length=False,
        max_length=99999999, min_length=512, pad_token=0)
    return comfy.sd1_clip.SD1Tokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                                       clip_name="umt5xxl", tokenizer=umt5_like)


def _wan(name: str, seed: int, config_cls, latent_channels: int, vae):
    """A Wan DiT of ``config_cls`` (dim 64, 2 heads, 2 blocks, patch (1,2,2)) over ``latent_channels``
    latent channels, with the zoo's UMT5-like text encoder."""
    import comfy.text_encoders.wan

    t5_dim = 32
    unet_config = {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "in_dim": latent_channels,
                   "out_dim": latent_channels, "dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 2,
                   "freq_dim": 256, "text_dim": t5_dim, "window_size": (-1, -1), "qk_norm": True,
                   "cross_attn_norm": True, "eps": 1e-6}
    model = _diffusion(name, seed, config_cls, unet_config)
    clip = _clip(name, seed, _wan_tokenizer, comfy.text_encoders.wan.te(),
                 {"umt5xxl_model_config": {**_t5_config(t5_dim, model_type="umt5"), "vocab_size": 32128}})
    return model, clip, vae(name, seed)


def _build_wan21(name, seed):
    import comfy.supported_models

    return _wan(name, seed, comfy.supported_models.WAN21_T2V, 16, _wan_vae)


def _taehv_vae(name: str, seed: int, latent_channels: int):
    """TAEHV, the tiny video VAE that comfy.sd.VAE detects from its keys on both hosts (16x
    spatial, 4x temporal): with 48 latent channels Wan 2.2's (taew2_2), with 32 Hunyuan Video
    1.5's (lighttae_hv15, HunyuanVideo15 latent format). ComfyUI fixes the full VAEs' widths
    (hundreds of millions of parameters), too big for a random-weight zoo model."""
    import comfy.sd
    import comfy.taesd.taehv

    tae = comfy.taesd.taehv.TAEHV(latent_channels=latent_channels, latent_format=None)
    initialise(tae, _generator(name, "vae", seed))
    return comfy.sd.VAE(sd=dict(tae.state_dict()))


def _build_wan22(name, seed):
    """Wan 2.2 TI2V 5B (comfy.supported_models.WAN22_T2V -> model_base.WAN22): the Wan 2.1 blocks
    over 48-channel latents at 16x. The 14B A14B high/low-noise pair is the Wan 2.1 architecture
    (wan21)."""
    import comfy.supported_models

    return _wan(name, seed, comfy.supported_models.WAN22_T2V, 48, functools.partial(_taehv_vae, latent_channels=48))


def _tiny_qwen_vl(device=None, dtype=None, model_options={}, **kwargs):
    """ComfyUI's Qwen2.5-VL text model, its full-size vision tower swapped for a 2-layer one."""
    import comfy.text_encoders.qwen_image
    import comfy.text_encoders.qwen_vl

    te = comfy.text_encoders.qwen_image.Qwen25_7BVLIModel(device=device, dtype=dtype, model_options=model_options,
                                                          **kwargs)
    hidden = te.transformer.model.config.hidden_size
    te.transformer.visual = comfy.text_encoders.qwen_vl.Qwen2VLVisionTransformer(
        hidden_size=32, output_hidden_size=hidden, intermediate_size=64, num_heads=2, num_layers=2,
        device=device, dtype=dtype, ops=te.operations)
    return te


def _build_qwen_image(name, seed):
    import comfy.supported_models
    import comfy.text_encoders.qwen_image

    te_dim = 32
    unet_config = {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
                   "num_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2,
                   "joint_attention_dim": te_dim, "axes_dims_rope": (8, 12, 12)}
    model = _diffusion(name, seed, comfy.supported_models.QwenImage, unet_config)
    clip = _clip(name, seed, comfy.text_encoders.qwen_image.QwenImageTokenizer, comfy.text_encoders.qwen_image.te(),
                 {"qwen25_7b_class": _tiny_qwen_vl,
                  "qwen25_7b_model_config": {"hidden_size": te_dim, "intermediate_size": 2 * te_dim,
                                             "num_hidden_layers": 2, "num_attention_heads": 2,
                                             "num_key_value_heads": 1}})
    return model, clip, _wan_vae(name, seed)


def _build_hidream(name, seed):
    """HiDream-I1: comfy.supported_models.HiDream -> model_base.HiDream -> HiDreamImageTransformer2DModel
    (one double and one single block, 2 routed experts), with all four of its text encoders:
    CLIP-L and CLIP-G (the pooled vector), T5 (the context) and Llama 3.1 (every layer's hidden
    states, encoder_hidden_states_llama3), each tiny, with the tokenizers ComfyUI ships."""
    import comfy.supported_models
    import comfy.text_encoders.hidream

    l_hidden, g_hidden, t5_dim, llama_hidden, llama_layers = 32, 32, 32, 32, 3
    unet_config = {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
                   "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
                   "caption_channels": [t5_dim, llama_hidden], "text_emb_dim": l_hidden + g_hidden,
                   "num_routed_experts": 2, "num_activated_experts": 1, "axes_dims_rope": (8, 4, 4),
                   "max_resolution": (128, 128), "llama_layers": [0, 1, llama_layers - 1]}
    model = _diffusion(name, seed, comfy.supported_models.HiDream, unet_config)
    clip = _clip(name, seed, comfy.text_encoders.hidream.HiDreamTokenizer, comfy.text_encoders.hidream.hidream_clip(),
                 {"clip_l_model_config": _clip_config(l_hidden), "clip_g_model_config": _clip_config(g_hidden),
                  "t5xxl_model_config": _t5_config(t5_dim),
                  "llama_model_config": {"hidden_size": llama_hidden, "intermediate_size": 2 * llama_hidden,
                                         "num_hidden_layers": llama_layers, "num_attention_heads": 1,
                                         "num_key_value_heads": 1}})
    return model, clip, _taesd_vae(name, seed, 16)


def _build_hunyuan_video15(name, seed):
    """Hunyuan Video 1.5 (comfy.supported_models.HunyuanVideo15 -> model_base.HunyuanVideo15 ->
    HunyuanVideo): one double and one single block, the token refiner, the byT5 glyph mapper, the
    vision projection and the condition-type embedding; image-conditioning channels as the real
    T2V/I2V checkpoint (32 latent + 32 image + 1 mask in). Text: Qwen2.5-VL (tiny, the shipped
    qwen25_tokenizer and HV 1.5's template) without the byT5 encoder, whose 1472-wide config
    ComfyUI fixes; tests feed conditioning_byt5small directly."""
    import comfy.ldm.hunyuan_video.model
    import comfy.supported_models
    import comfy.text_encoders.hunyuan_image
    import comfy.text_encoders.hunyuan_video

    te_dim = 32
    unet_config = complete_params(
        {"image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32, "patch_size": [1, 1, 1],
         "vec_in_dim": None, "axes_dim": [8, 12, 12], "context_in_dim": te_dim, "hidden_size": 64, "mlp_ratio": 2.0,
         "num_heads": 2, "depth": 1, "depth_single_blocks": 1, "theta": 256, "qkv_bias": True,
         "guidance_embed": False, "byt5": True, "meanflow": False, "use_cond_type_embedding": True,
         "vision_in_dim": 48}, comfy.ldm.hunyuan_video.model.HunyuanVideoParams)
    model = _diffusion(name, seed, comfy.supported_models.HunyuanVideo15, unet_config)
    clip = _clip(name, seed, comfy.text_encoders.hunyuan_video.HunyuanVideo15Tokenizer,
                 comfy.text_encoders.hunyuan_image.te(byt5=False),
                 {"qwen25_7b_class": _tiny_qwen_vl,
                  "qwen25_7b_model_config": {"hidden_size": te_dim, "intermediate_size": 2 * te_dim,
                                             "num_hidden_layers": 3, "num_attention_heads": 2,
                                             "num_key_value_heads": 1}})
    return model, clip, _taehv_vae(name, seed, 32)


def _build_z_image(name, seed):
    """Z-Image (Turbo): comfy.supported_models.ZImage -> model_base.Lumina2 -> NextDiT."""
    import comfy.supported_models
    import comfy.text_encoders.z_image

    te_hidden = 32
    # dim 256 is the least NextDiT allows with z_image_modulation: its timestep embedder always
    # outputs 256 features and the adaLN layers read min(dim, 256) of them.
    unet_config = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": te_hidden,
                   "n_layers": 2, "n_refiner_layers": 2, "n_heads": 2, "n_kv_heads": 2, "qk_norm": True,
                   "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
                   "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
                   "pad_tokens_multiple": 32}
    model = _diffusion(name, seed, comfy.supported_models.ZImage, unet_config)
    clip = _clip(name, seed, comfy.text_encoders.z_image.ZImageTokenizer, comfy.text_encoders.z_image.te(),
                 {"qwen3_4b_model_config": _llm_config(te_hidden, layers=3)})  # layer -2 (Z-Image's) needs >= 3
    return model, clip, _taesd_vae(name, seed, 16)


_BUILDERS: dict[str, Callable] = {
    "sd15": _build_sd15, "sdxl": _build_sdxl, "sd3": _build_sd3, "flux": _build_flux,
    "chroma": _build_chroma, "flux2": _build_flux2, "flux2_dev": _build_flux2_dev, "wan21": _build_wan21,
    "wan22": _build_wan22,
    "qwen_image": _build_qwen_image,
    "z_image": _build_z_image,
    "hidream": _build_hidream,
    "hunyuan_video15": _build_hunyuan_video15,
}

# What an architecture needs to work on a host beyond its classes, as (what, probe): the probe
# tries it and returns why it fails, or None.
_NEEDS_WORKING: dict[str, tuple[str, Callable[[], str | None]]] = {
    "flux2_dev": ("ComfyUI's Flux.2 dev tokenizer working over a tekken vocabulary", _mistral_tokenizer_failure),
}

_cache: dict[tuple[str, int], ZooModel] = {}
_lock = threading.Lock()


def build(name: str, seed: int = 0, *, cached: bool = True) -> ZooModel:
    """A tiny random-weight model of architecture ``name`` (one of ARCHITECTURES).

    Cached per (name, seed); the returned model/clip are clones, safe to patch. ``cached=False``
    constructs everything afresh and leaves the cache alone (for determinism checks)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown zoo architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    reason = unavailable_reason(name)
    if reason is not None:
        raise RuntimeError(reason)
    key = (name, int(seed))
    if not cached:
        model, clip, vae = _BUILDERS[name](name, int(seed))
        return ZooModel(name, FAMILIES[name], model, clip, vae, LATENT_CHANNELS[name])
    with _lock:
        master = _cache.get(key)
        if master is None:
            model, clip, vae = _BUILDERS[name](name, int(seed))
            master = ZooModel(name, FAMILIES[name], model, clip, vae, LATENT_CHANNELS[name])
            _cache[key] = master
    return dataclasses.replace(master, model=master.model.clone(), clip=master.clip.clone())


def clear_cache() -> None:
    """Forget every cached model (the next build() constructs afresh)."""
    with _lock:
        _cache.clear()
