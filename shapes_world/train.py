"""Train the shapes-world models, deterministically (``scripts/train_shapes_world.py``).

Stages, in order (each writes its file into the output folder and a line into ``training.json``):

1. ``vae``: a 16-channel TAESD on random 32x32 crops of generated scenes (it is fully
   convolutional, so crops are 4x cheaper than full images and it works at any size); the
   decoder sees noisy latents so it tolerates a diffusion model's errors. Then ``vae_scale`` /
   ``vae_shift`` are set so that the SD3 latent format's ``process_in`` has mean 0, std 1.
2. ``text_encoder``: the CLIP-L text model, pretrained on the world's captions with linear probes
   (each word's token tells its class, the end tokens and pooled vectors the caption's concepts
   and scene), then frozen.
3. one stage per diffusion family (``sd3``, ``sd15``, ``flux``): the standard denoising loss on
   the family's own model sampling (sigma drawn uniformly from its sigma table, loss on the
   epsilon / velocity scale), through ComfyUI's ``BaseModel.apply_model``, with 10% empty-caption
   dropout for classifier-free guidance.
4. ``judge``: the concept classifier, on clean and VAE-round-tripped scenes with blur and noise;
   its held-out accuracy per concept is measured on fresh scenes and recorded.

Requires ComfyUI booted in this process (library mode). Results are identical run to run on the
same machine with the same torch thread count. A stage is resumable: killed, and started again
with the same command, it goes on from its last save (:class:`Resume`, every 200 steps) to the
same weights; its ``seconds`` in ``training.json`` are then those of the last run only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import judge as judge_module
from . import models, world
from ..harness.zoo import initialise, state_dict_digest
from .host_compat import checkpoint_names

log = logging.getLogger("negguide.shapes_world.train")
STAGES: tuple[str, ...] = ("vae", "text_encoder", "vae_decoder", *models.FAMILIES, "judge")
CFG_DROPOUT = 0.1


@dataclass(frozen=True)
class Budget:
    """Optimisation steps per stage (scaled down for the smoke test)."""

    vae: int = 700
    vae_decoder: int = 600
    diffusion: int = 3200
    judge: int = 700
    dataset: int = 6000
    judge_eval: int = 1000
    vae_images: int = 4000
    text_encoder: int = 1000
    text_captions: int = 20000

    def scaled(self, factor: float) -> "Budget":
        def s(n, floor):
            return max(floor, int(round(n * factor)))
        return Budget(s(self.vae, 2), s(self.vae_decoder, 2), s(self.diffusion, 2), s(self.judge, 2), s(self.dataset, 16), s(self.judge_eval, 16),
                      s(self.vae_images, 16), s(self.text_encoder, 2), s(self.text_captions, 16))


def _generator(stage: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(sum(ord(c) * 131 ** i for i, c in enumerate(stage)) % (2**31))
    return g


def _save(state_dict: dict, path: Path, dtype=torch.float16) -> None:
    from safetensors.torch import save_file

    partial = path.with_suffix(f".{os.getpid()}.tmp")  # parallel stages read a file another one rewrites
    save_file({k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}, str(partial))
    partial.replace(path)


def _cosine_lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


CHECKPOINT_EVERY = 200
"""Steps between two saves of a stage's optimisation state (:class:`Resume`)."""


@dataclass(frozen=True)
class Resume:
    """Where a stage keeps its optimisation state while it trains, so that a killed run, started
    again with the same command, resumes at the last save and ends with the same weights (byte for
    byte) as an uninterrupted run: every :data:`CHECKPOINT_EVERY` steps the trained modules'
    state (buffers included), the optimiser's, the stage's generator and torch's global generator
    go into a hidden file in the output folder, removed when the stage has written its weights. A
    file left by another budget is ignored (and overwritten)."""

    out: Path
    stage: str
    generator: torch.Generator
    budget: Budget

    @staticmethod
    def file(out: Path, stage: str) -> Path:
        return out / f".resume-{stage}.pt"

    @property
    def path(self) -> Path:
        return self.file(self.out, self.stage)

    def save(self, step: int, modules, opt, curve: list[float], running: list[float]) -> None:
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"budget": self.budget.__dict__, "step": step, "modules": [m.state_dict() for m in modules],
                    "optimiser": opt.state_dict(), "generator": self.generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "curve": curve, "running": running}, partial)
        partial.replace(self.path)

    def restore(self, modules, opt) -> tuple[int, list[float], list[float]]:
        """Load a saved state into ``modules`` and ``opt``; returns (step, curve, running), or a
        fresh start's (0, [], []) when there is no file of this budget."""
        if not self.path.is_file():
            return 0, [], []
        saved = torch.load(self.path)
        if saved["budget"] != self.budget.__dict__:
            log.info("%s: ignoring %s (another budget)", self.stage, self.path.name)
            return 0, [], []
        for module, state in zip(modules, saved["modules"]):
            module.load_state_dict(state)
        opt.load_state_dict(saved["optimiser"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        log.info("%s: resuming at step %d", self.stage, saved["step"])
        return saved["step"], saved["curve"], saved["running"]


def _optimise(modules: list[torch.nn.Module], steps: int, lr: float, loss_fn, resume: Resume) -> list[float]:
    """AdamW with warmup + cosine decay and gradient clipping over the trainable parameters of
    ``modules``, resumable (:class:`Resume`); returns the loss curve (per 50)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    start, curve, running = resume.restore(modules, opt)
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, steps, lr)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running.append(float(loss.detach()))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            curve.append(float(np.mean(running)))
            running = []
            log.info("%s step %d/%d loss %.4f", resume.stage, step + 1, steps, curve[-1])
        if (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < steps:
            resume.save(step + 1, modules, opt, curve, running)
    return curve


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


# ----------------------------------------------------------------------------------------------
# Stages


def train_vae(out: Path, budget: Budget) -> dict:
    import comfy.taesd.taesd

    g = _generator("vae")
    taesd = comfy.taesd.taesd.TAESD(latent_channels=models.LATENT_CHANNELS)
    initialise(taesd, g)
    images = _to_tensor(world.generate(budget.vae_images, seed=11)[0])
    crop, batch = 32, 24

    def loss_fn(step):
        idx = torch.randint(len(images), (batch,), generator=g)
        ox, oy = (int(v) for v in torch.randint(0, world.SIZE - crop + 1, (2,), generator=g))
        x = images[idx, :, oy:oy + crop, ox:ox + crop]
        z = taesd.taesd_encoder(x)
        y = taesd.taesd_decoder(z + 0.1 * torch.randn(z.shape, generator=g))
        return (y - x).abs().mean() + ((y - x) ** 2).mean() + 1e-4 * (z ** 2).mean()

    taesd.train()
    curve = _optimise([taesd], budget.vae, 2e-3, loss_fn, Resume(out, "vae", g, budget))
    taesd.eval()
    with torch.no_grad():
        sample = images[:256]
        raw = taesd.taesd_encoder(sample)
        mean, std = float(raw.mean()), float(raw.std())
        import comfy.latent_formats

        fmt = comfy.latent_formats.SD3()
        taesd.vae_scale.fill_(std * fmt.scale_factor)
        taesd.vae_shift.fill_(fmt.shift_factor - mean / (std * fmt.scale_factor))
        recon = taesd.taesd_decoder(raw).clamp(0, 1)
        psnr = float(-10 * torch.log10(((recon - sample) ** 2).mean()))
    _save(taesd.state_dict(), out / models.VAE_FILE)
    return {"loss_curve": curve, "raw_latent_mean": mean, "raw_latent_std": std, "recon_psnr_db": psnr}


def train_vae_decoder(out: Path, budget: Budget) -> dict:
    """Sharpen the decoder on whole 64x64 scenes with the encoder frozen: the latent space (and
    so every diffusion model trained on it) stays exactly the same."""
    import comfy.taesd.taesd
    import comfy.utils

    g = _generator("vae_decoder")
    taesd = comfy.taesd.taesd.TAESD(latent_channels=models.LATENT_CHANNELS)
    taesd.load_state_dict({k: v.float() for k, v in comfy.utils.load_torch_file(str(out / models.VAE_FILE)).items()})
    taesd.taesd_encoder.requires_grad_(False)
    taesd.vae_scale.requires_grad_(False)
    taesd.vae_shift.requires_grad_(False)
    images = _to_tensor(world.generate(budget.vae_images, seed=13)[0])
    batch = 16

    def loss_fn(step):
        x = images[torch.randint(len(images), (batch,), generator=g)]
        with torch.no_grad():
            z = taesd.taesd_encoder(x)
        y = taesd.taesd_decoder(z + 0.05 * torch.randn(z.shape, generator=g))
        return (y - x).abs().mean() + ((y - x) ** 2).mean()

    taesd.taesd_decoder.train()
    curve = _optimise([taesd.taesd_decoder], budget.vae_decoder, 5e-4, loss_fn, Resume(out, "vae_decoder", g, budget))
    taesd.eval()
    with torch.no_grad():
        sample = images[:256]
        psnr = float(-10 * torch.log10(((taesd.taesd_decoder(taesd.taesd_encoder(sample)).clamp(0, 1) - sample) ** 2).mean()))
    _save(taesd.state_dict(), out / models.VAE_FILE)
    return {"loss_curve": curve, "recon_psnr_db": psnr}


# Token classes of the text encoder's probes: a colour word, a coloured shape (the shape word,
# read with the colour before it), a scene word, an implicit object's name.
_WORD_CLASSES: tuple[str, ...] = (*world.COLOURS, *world.OBJECTS, *world.SCENES, *world.IMPLICIT.values())
_SCENE_WORDS = {"beach": "beach", "night": "night", "sky": "night", "meadow": "meadow", "room": "room"}
_TEXT_ENCODER_LAYERS = (-1, -2)
"""The layers the families read: SD1.5 and Flux the last (after the final LayerNorm), SD3 the
penultimate (without it)."""


def _word_targets(caption: str) -> list[int]:
    """The probe class (index into _WORD_CLASSES, or -1) of each word of ``caption``."""
    targets, colour = [], None
    for word in caption.replace(",", "").split():
        if word in world.COLOURS:
            colour = word
            targets.append(_WORD_CLASSES.index(word))
        elif word in world.SHAPES and colour is not None:
            targets.append(_WORD_CLASSES.index(f"{colour} {word}"))
        elif word in _SCENE_WORDS:
            targets.append(_WORD_CLASSES.index(_SCENE_WORDS[word]))
        elif word in world.IMPLICIT.values():
            targets.append(_WORD_CLASSES.index(word))
        else:
            targets.append(-1)
    return targets


def _caption_batch(clip, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids [N, 77] exactly as the family's tokenizer makes them, the probe class of each
    token [N, 77] (-1: none), and per caption the concepts it names [N, len(CONCEPTS)] and its
    scene [N]. Every word of the world's vocabulary is one CLIP token, which is checked."""
    def word_token(word: str, end_token: int) -> int:
        start, token, end = (t for t, _ in clip.tokenize(word)["l"][0][:3])
        if end != end_token:  # the end token (and padding) right after: one token
            raise ValueError(f"{word!r} is more than one CLIP token; the probe targets assume one")
        return token

    ids, token_targets, named, scenes = [], [], [], []
    vocabulary: dict[str, int] = {}  # word -> its token: the captions share a few dozen words
    for caption in captions:
        tokens = [t for t, _ in clip.tokenize(caption)["l"][0]]
        words = caption.replace(",", "").split()
        targets = [-1] * len(tokens)
        position = 1  # after the start token
        for word, target in zip(words, _word_targets(caption)):
            if word not in vocabulary:
                vocabulary[word] = word_token(word, tokens[-1])
            while tokens[position] != vocabulary[word]:
                position += 1
            targets[position] = target
        ids.append(tokens)
        token_targets.append(targets)
        named.append([float(f"a {c}" in caption) for c in world.CONCEPTS])
        scenes.append(next(world.SCENES.index(_SCENE_WORDS[w]) for w in words if w in _SCENE_WORDS))
    return (torch.tensor(ids), torch.tensor(token_targets), torch.tensor(named), torch.tensor(scenes))


def train_text_encoder(out: Path, budget: Budget) -> dict:
    """The CLIP-L text model, pretrained on the world's captions with linear probes (then
    discarded), so that its hidden states say what a caption asks for and diffusion models can
    read it (a random encoder's states barely separate "red" from "blue"): at every layer a family
    reads (:data:`_TEXT_ENCODER_LAYERS`), each word's token must tell its class (a shape word: the
    coloured shape it is part of), and the end and padding tokens, and both pooled vectors, the
    concepts the caption names and its scene."""
    clip = models.new_clip("sd15")
    text_model = models.clip_text_model(clip).float()  # trained in float32, whatever the host's CLIP dtype
    text_model.requires_grad_(True)  # ComfyUI freezes a text encoder when it builds it
    g = _generator("text_encoder")
    initialise(text_model, g)
    _, scenes = world.generate(budget.text_captions, seed=14)
    captions = sorted({s.caption for s in scenes})
    ids, token_targets, named, scene_ids = _caption_batch(clip, captions)
    end_token = int(ids[0, -1])
    summary_positions = ids == end_token  # the end token and the end-token padding after it
    width = models.CLIP_WIDTH
    heads = torch.nn.ModuleDict({
        **{f"word{i}": torch.nn.Linear(width, len(_WORD_CLASSES)) for i in range(len(_TEXT_ENCODER_LAYERS))},
        **{f"summary{i}": torch.nn.Linear(width, len(world.CONCEPTS) + len(world.SCENES))
           for i in range(len(_TEXT_ENCODER_LAYERS) + 2)}})
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
    heads.apply(lambda m: m.reset_parameters() if isinstance(m, torch.nn.Linear) else None)

    def summary_loss(head, states, rows):
        logits = head(states)
        concepts, scene = logits[..., :len(world.CONCEPTS)], logits[..., len(world.CONCEPTS):]
        return (torch.nn.functional.binary_cross_entropy_with_logits(concepts, named[rows])
                + torch.nn.functional.cross_entropy(scene, scene_ids[rows]))

    def forward(rows):
        last, penultimate, projected, pooled = text_model(ids[rows], intermediate_output=_TEXT_ENCODER_LAYERS[1],
                                                          final_layer_norm_intermediate=False)
        return (last, penultimate), (projected, pooled)

    def loss_fn(step):
        rows = torch.randint(len(ids), (64,), generator=g)
        with torch.autograd.graph.saved_tensors_hooks(_copy_saved, _unpack_saved):
            layers, pooled_vectors = forward(rows)
        targets, at_end = token_targets[rows], summary_positions[rows]
        keep, end_rows = targets >= 0, rows.repeat_interleave(at_end.sum(1))
        loss = 0.0
        for i, states in enumerate(layers):
            loss = loss + torch.nn.functional.cross_entropy(heads[f"word{i}"](states[keep]), targets[keep])
            loss = loss + summary_loss(heads[f"summary{i}"], states[at_end], end_rows)
        for i, vector in enumerate(pooled_vectors):
            loss = loss + summary_loss(heads[f"summary{len(layers) + i}"], vector, rows)
        return loss

    text_model.train()
    curve = _optimise([text_model, heads], budget.text_encoder, 5e-3, loss_fn,
                      Resume(out, "text_encoder", g, budget))
    text_model.eval()
    with torch.no_grad():
        layers, pooled_vectors = forward(torch.arange(len(ids)))
        keep = token_targets >= 0
        word_accuracy = [float((heads[f"word{i}"](s[keep]).argmax(-1) == token_targets[keep]).float().mean())
                         for i, s in enumerate(layers)]
        scene_accuracy = [float((heads[f"summary{len(layers) + i}"](v)[:, len(world.CONCEPTS):].argmax(-1) == scene_ids).float().mean())
                          for i, v in enumerate(pooled_vectors)]
        named_accuracy = [float(((heads[f"summary{len(layers) + i}"](v)[:, :len(world.CONCEPTS)] > 0).float() == named).float().mean())
                          for i, v in enumerate(pooled_vectors)]
    _save(text_model.state_dict(), out / models.TEXT_ENCODER_FILE)
    return {"loss_curve": curve, "parameters": sum(p.numel() for p in text_model.parameters()),
            "captions": len(captions), "probe_word_accuracy_per_layer": word_accuracy,
            "probe_pooled_scene_accuracy": scene_accuracy, "probe_pooled_named_concepts_accuracy": named_accuracy}


@dataclass
class _Dataset:
    latents: torch.Tensor  # [N, 16, 8, 8] in the model's latent space (process_in applied)
    caption_index: torch.Tensor  # [N] into cond/pooled
    cond: torch.Tensor  # [U, 77, 64] the encoder's real channels
    pooled: torch.Tensor  # [U, P]
    empty_index: int
    context_width: int  # what the family's CLIP wrapper pads the context to


def _encode_captions(clip, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    conds, pooled = [], []
    width = None
    for text in captions:
        c, p = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        width = c.shape[-1]
        conds.append(c[0, :, :models.CLIP_WIDTH].float())
        pooled.append(p[0].float())
    return torch.stack(conds), torch.stack(pooled), width


def _encoded_scenes(out: Path, budget: Budget) -> tuple[torch.Tensor, list[str]]:
    """The training scenes as model-space latents (SD3 latent format) and their captions.
    Encoding is most of a stage's set-up time, so the result is cached in ``out`` (a hidden,
    git-ignored file keyed by the VAE encoder's digest and the dataset size)."""
    import comfy.latent_formats

    vae_file = out / models.VAE_FILE
    vae = models.load_vae(vae_file)
    encoder = {k: v for k, v in vae.first_stage_model.state_dict().items() if not k.startswith("taesd_decoder.")}
    key = state_dict_digest(encoder)[:16]
    cache = out / f".latents-{key}-{budget.dataset}.pt"
    if cache.is_file():
        saved = torch.load(cache)
        return saved["latents"], saved["captions"]
    images, scenes = world.generate(budget.dataset, seed=12)
    with torch.no_grad():
        z = torch.cat([vae.encode(torch.from_numpy(chunk).float() / 255.0)
                       for chunk in np.array_split(images, max(1, len(images) // 256))])
    latents, captions = comfy.latent_formats.SD3().process_in(z.float()), [s.caption for s in scenes]
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"latents": latents, "captions": captions}, partial)
    partial.replace(cache)
    return latents, captions


def _dataset(family: str, out: Path, budget: Budget) -> _Dataset:
    latents, captions = _encoded_scenes(out, budget)
    unique = sorted(set(captions) | {""})
    clip = models.load_clip(family, out / models.TEXT_ENCODER_FILE)
    cond, pooled, width = _encode_captions(clip, unique)
    position = {c: i for i, c in enumerate(unique)}
    return _Dataset(latents, torch.tensor([position[c] for c in captions]), cond, pooled, position[""], width)


def _copy_saved(tensor: torch.Tensor) -> torch.Tensor:
    """Autograd pack hook: keep a copy of every saved activation. ComfyUI's Flux blocks add
    their residuals in place (``img += ...``), which would otherwise overwrite tensors that
    backward needs; inference is unaffected."""
    return tensor.clone()


def _unpack_saved(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass(frozen=True)
class DiffusionRecipe:
    """Optimisation settings of the diffusion models (the same for every family)."""

    steps_factor: float = 1.5
    """Steps = Budget.diffusion x this."""
    lr: float = 1e-3
    batch: int = 48


DIFFUSION_RECIPE = DiffusionRecipe()


def _zero_init(diffusion_model: torch.nn.Module) -> None:
    """Zero-initialised residual branches and output, so each block starts as the identity (trains
    faster than the random initialisation): DiT adaLN-Zero (the MMDiT's adaLN_modulation, Flux's img_mod/txt_mod/modulation, and the
    final projection), and for the UNet the usual zero output convolutions (final conv, each res
    block's last conv, each transformer's proj_out)."""
    with torch.no_grad():
        for name, p in diffusion_model.named_parameters():
            if ("adaLN_modulation" in name or "_mod.lin." in name or "modulation.lin." in name
                    or name.startswith(("final_layer.linear", "out.2.")) or ".out_layers.3." in name
                    or ".proj_out." in name):
                p.zero_()


@contextlib.contextmanager
def host_training_mode():
    """Tell ComfyUI that a model is being trained, for the duration of the block, and restore the
    previous state afterwards.

    ComfyUI hosts that have inference-only fused kernels pick them unless
    ``comfy.model_management.in_training`` is set (the flag its own TrainLoraNode sets around its
    training loop, comfy_extras/nodes_train.py): e.g. Flux RoPE then takes the pure-torch
    ``_apply_rope`` instead of comfy-kitchen's ``apply_rope``, which has no backward
    (comfy/ldm/flux/math.py ``apply_rope`` / ``apply_rope1``). Hosts without the flag have no such
    kernels (their ops are plain torch), so there is nothing to switch."""
    import comfy.model_management as mm

    if not hasattr(mm, "in_training"):
        yield
        return
    previous = mm.in_training
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = previous


def train_diffusion(family: str, out: Path, budget: Budget) -> dict:
    data = _dataset(family, out, budget)
    g = _generator(family)
    recipe = DIFFUSION_RECIPE
    model = models.new_diffusion_model(family)
    initialise(model.diffusion_model, g)
    _zero_init(model.diffusion_model)
    sampling = model.model_sampling
    sigmas = sampling.sigmas.float()
    batch = recipe.batch

    def loss_fn(step):
        idx = torch.randint(len(data.latents), (batch,), generator=g)
        x0 = data.latents[idx]
        captions = data.caption_index[idx].clone()
        captions[torch.rand(batch, generator=g) < CFG_DROPOUT] = data.empty_index
        cond = torch.nn.functional.pad(data.cond[captions], (0, data.context_width - models.CLIP_WIDTH))
        sigma = sigmas[torch.randint(len(sigmas), (batch,), generator=g)]
        noise = torch.randn(x0.shape, generator=g)
        x_t = sampling.noise_scaling(sigma, noise, x0)
        conds = model.extra_conds(cross_attn=cond, pooled_output=data.pooled[captions], device=x0.device, noise=x_t)
        kwargs = {k: v.process_cond(batch_size=batch, device=x0.device, area=None).cond for k, v in conds.items()}
        with torch.autograd.graph.saved_tensors_hooks(_copy_saved, _unpack_saved):
            denoised = model.apply_model(x_t, sigma, **kwargs)
        return (((denoised - x0) / sigma.view(-1, 1, 1, 1)) ** 2).mean()

    # Some hosts freeze a diffusion model when BaseModel builds it (requires_grad_(False) in
    # BaseModel.__init__): every parameter of it is trained here, so switch gradients back on.
    model.diffusion_model.requires_grad_(True)
    model.diffusion_model.train()
    steps = max(1, round(budget.diffusion * recipe.steps_factor))
    with host_training_mode():
        curve = _optimise([model.diffusion_model], steps, recipe.lr, loss_fn, Resume(out, family, g, budget))
    model.diffusion_model.eval()
    _save(checkpoint_names(model.diffusion_model.state_dict(), model.model_config.process_unet_state_dict),
          out / models.diffusion_file(family))
    return {"loss_curve": curve, "parameters": sum(p.numel() for p in model.diffusion_model.parameters())}


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random blur (3x3 box mixed in) and pixel noise, per image."""
    blur = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    mix = torch.rand(len(x), 1, 1, 1, generator=g) * 0.8
    noise = torch.randn(x.shape, generator=g) * torch.rand(len(x), 1, 1, 1, generator=g) * 0.06
    return (x * (1 - mix) + blur * mix + noise).clamp(0, 1)


def _round_trip(vae, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] through the VAE (encode, decode) and back."""
    with torch.no_grad():
        pixels = images.permute(0, 2, 3, 1)
        return vae.decode(vae.encode(pixels)).float().permute(0, 3, 1, 2).clamp(0, 1)


def _judge_inputs(count: int, seed: int, vae) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` fresh scenes, the second half round-tripped through the VAE, with labels."""
    images, scenes = world.generate(count, seed)
    x = _to_tensor(images)
    half = len(x) // 2
    return torch.cat([x[:half], _round_trip(vae, x[half:])]), *_labels(scenes)


def _labels(scenes: list[world.Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.stack([s.labels() for s in scenes])),
            torch.tensor([world.SCENES.index(s.scene) for s in scenes]))


def _judge_training_set(out: Path, budget: Budget, vae) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The diffusion training scenes, clean, plus their first half decoded from the cached
    latents (what generated images look like: the VAE's blur and colour errors)."""
    import comfy.latent_formats

    images, scenes = world.generate(budget.dataset, seed=12)
    latents, _ = _encoded_scenes(out, budget)
    half = len(latents) // 2
    with torch.no_grad():
        decoded = vae.decode(comfy.latent_formats.SD3().process_out(latents[:half])).float().permute(0, 3, 1, 2).clamp(0, 1)
    labels, scene_ids = _labels(scenes)
    return (torch.cat([_to_tensor(images), decoded]), torch.cat([labels, labels[:half]]),
            torch.cat([scene_ids, scene_ids[:half]]))


def judge_accuracy(judge: judge_module.Judge, x: torch.Tensor, labels: torch.Tensor, scene_ids: torch.Tensor) -> dict:
    presence, scene = judge_module.judge_images(judge, x.permute(0, 2, 3, 1))
    per_concept = ((presence > 0.5).float() == labels).float().mean(0)
    return {"per_concept": {c: float(a) for c, a in zip(world.CONCEPTS, per_concept)},
            "scene": float((scene == scene_ids).float().mean()), "min": float(per_concept.min())}


def train_judge(out: Path, budget: Budget) -> dict:
    g = _generator("judge")
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))  # BatchNorm/Conv default init
    vae = models.load_vae(out / models.VAE_FILE)
    x, labels, scene_ids = _judge_training_set(out, budget, vae)
    judge = judge_module.Judge()
    batch = 64

    def loss_fn(step):
        idx = torch.randint(len(x), (batch,), generator=g)
        concept_logits, scene_logits = judge_module.split_logits(judge(_augment(x[idx], g)))
        return (torch.nn.functional.binary_cross_entropy_with_logits(concept_logits, labels[idx])
                + torch.nn.functional.cross_entropy(scene_logits, scene_ids[idx]))

    judge.train()
    curve = _optimise([judge], budget.judge, 3e-3, loss_fn, Resume(out, "judge", g, budget))
    judge.eval()
    _save(judge.state_dict(), out / models.JUDGE_FILE, dtype=torch.float32)
    held_out = judge_accuracy(judge, *_judge_inputs(budget.judge_eval, 99, vae))
    return {"loss_curve": curve, "held_out_accuracy": held_out}


def run(out: Path, stages: tuple[str, ...] = STAGES, budget: Budget = Budget()) -> dict:
    """Run ``stages`` (in STAGES order) into ``out``; returns and writes the training record."""
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "training.json"
    record = {}
    for stage in STAGES:
        if stage not in stages:
            continue
        torch.manual_seed(0)
        start = time.perf_counter()
        if stage == "vae":
            result = train_vae(out, budget)
        elif stage == "text_encoder":
            result = train_text_encoder(out, budget)
        elif stage == "vae_decoder":
            result = train_vae_decoder(out, budget)
        elif stage == "judge":
            result = train_judge(out, budget)
        else:
            result = train_diffusion(stage, out, budget)
        Resume.file(out, stage).unlink(missing_ok=True)  # the weights are written: nothing to resume
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["torch_threads"] = torch.get_num_threads()
        result["budget"] = budget.__dict__
        record[stage] = result
        on_disk = json.loads(record_path.read_text()) if record_path.is_file() else {}  # other stages' runs
        record_path.write_text(json.dumps({**on_disk, stage: result}, indent=1))
        log.info("stage %s done in %.0f s", stage, result["seconds"])
    return record
