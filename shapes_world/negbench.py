"""NegBench-mini: negative guidance measured in the shapes world, against its ground-truth judge.

For every prompt item of a prompt file (``shapes_world/prompts/negbench_mini.json`` by default:
a prompt, a negative, whether the negative is related to the prompt's scene, the concepts
involved) and every method, one batch of images is sampled from fixed seeds through ComfyUI's
own sampler and NegGuide's own nodes, then judged. Metrics per method:

- ``neg_present``: share of images of RELATED items that contain the negative concept (lower is
  better; "negative compliance" = 1 - this);
- ``pos_ok``: share of images with every positive concept present and the right scene;
- ``unrelated_change``: mean absolute pixel change (0-255 scale) an UNRELATED negative causes
  against the method's own no-negative image (same seed, same cfg): lower is better;
- ``diversity``: mean pairwise RMS pixel distance between the images of a batch (0-255 scale);
- ``time``: sampling seconds per batch relative to ``none``.

Methods: ``none`` (the family's plain setting: cfg 1 for the few-step flow models, cfg w for
SD1.5), ``cfg`` (constant negative prompting at cfg w), ``vsf`` (NegGuideVSF at the plain
setting), ``negtome`` (NegGuideNegToMe diversity mode, no negative), ``dng`` (NegGuideDNGGuider at
cfg w), ``dns`` (auto-DNP: NegGuideDNS image -> judge caption (the BLIP-2 stand-in) -> cfg w with
the caption as the negative, per image). Requires ComfyUI booted in this process.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import judge as judge_module
from . import models, world as shapes

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts" / "negbench_mini.json"
METHODS: tuple[str, ...] = ("none", "cfg", "vsf", "negtome", "dng", "dns")


@dataclass(frozen=True)
class Setting:
    """How a family is sampled in the benchmark."""

    steps: int
    sampler: str
    scheduler: str
    cfg: float
    """cfg of the CFG-based methods (cfg, dng, dns)."""
    plain_cfg: float
    """cfg of ``none``, ``vsf`` and ``negtome`` (1 = the CFG-free few-step setting)."""
    vsf_scale: float = 3.0
    vsf_bias: float = 0.1


SETTINGS: dict[str, Setting] = {
    "sd3": Setting(steps=8, sampler="euler", scheduler="simple", cfg=4.0, plain_cfg=1.0),
    "flux": Setting(steps=4, sampler="euler", scheduler="simple", cfg=3.0, plain_cfg=1.0),
    "sd15": Setting(steps=20, sampler="euler_ancestral", scheduler="normal", cfg=5.0, plain_cfg=5.0),
}


@dataclass(frozen=True)
class Item:
    prompt: str
    negative: str
    related: bool
    negative_concept: str
    positive_concepts: tuple[str, ...]
    scene: str


def load_prompts(path: Path = DEFAULT_PROMPTS) -> list[Item]:
    data = json.loads(Path(path).read_text())
    items = [Item(d["prompt"], d["negative"], bool(d["related"]), d["negative_concept"],
                  tuple(d["positive_concepts"]), d["scene"]) for d in data["items"]]
    for item in items:  # fail early on a concept the judge does not know
        judge_module.concept_index(item.negative_concept)
        for c in item.positive_concepts:
            judge_module.concept_index(c)
    return items


# ----------------------------------------------------------------------------------------------
# Sampling through ComfyUI and NegGuide's nodes


@dataclass
class World:
    """One family's loaded models, the judge and the sampling setting."""

    family: str
    model: object
    clip: object
    vae: object
    judge: judge_module.Judge
    setting: Setting
    _encoded: dict = field(default_factory=dict)

    @classmethod
    def load(cls, family: str, weights_dir: Path | None = None) -> "World":
        model, clip, vae = models.load(family, weights_dir)
        judge = judge_module.load((weights_dir or models.WEIGHTS_DIR) / models.JUDGE_FILE)
        return cls(family, model, clip, vae, judge, SETTINGS[family])

    def encode(self, text: str) -> list:
        if text not in self._encoded:
            import nodes

            self._encoded[text] = nodes.CLIPTextEncode().encode(self.clip, text)[0]
        return self._encoded[text]

    def encode_batch(self, texts: list[str]) -> list:
        """One conditioning whose tensors hold a different text per batch item."""
        parts = [self.encode(t)[0] for t in texts]
        extra = dict(parts[0][1])
        if extra.get("pooled_output") is not None:
            extra["pooled_output"] = torch.cat([p[1]["pooled_output"] for p in parts])
        return [[torch.cat([p[0] for p in parts]), extra]]

    def empty_latent(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, models.LATENT_CHANNELS, 8, 8)

    def ksample(self, model, positive, negative, cfg: float, seed: int, batch: int) -> torch.Tensor:
        import nodes

        s = self.setting
        latent = {"samples": self.empty_latent(batch)}
        return nodes.common_ksampler(model, seed, s.steps, cfg, s.sampler, s.scheduler, positive, negative, latent)[0]["samples"]

    def guider_sample(self, guider, seed: int, batch: int) -> torch.Tensor:
        import comfy.sample
        import comfy.samplers

        s = self.setting
        latent = self.empty_latent(batch)
        sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), s.scheduler, s.steps)
        return guider.sample(comfy.sample.prepare_noise(latent, seed), latent, comfy.samplers.sampler_object(s.sampler),
                             sigmas, seed=seed, disable_pbar=True)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent).float().clamp(0, 1)

    def judge_images(self, images: torch.Tensor):
        return judge_module.judge_images(self.judge, images)


def _vsf(world: World, item: Item, seed: int, batch: int, applied: bool) -> torch.Tensor:
    from ..nodes.vsf import NegGuideVSF

    s = world.setting
    model = world.model
    if applied:
        model = NegGuideVSF.execute(world.model, world.clip, item.negative, s.vsf_scale, s.vsf_bias, 0.0, 1.0).args[0]
    return world.ksample(model, world.encode(item.prompt), world.encode(""), s.plain_cfg, seed, batch)


def _none(world: World, item: Item, seed: int, batch: int, applied: bool) -> torch.Tensor:
    return world.ksample(world.model, world.encode(item.prompt), world.encode(""), world.setting.plain_cfg, seed, batch)


def _cfg(world: World, item: Item, seed: int, batch: int, applied: bool) -> torch.Tensor:
    return world.ksample(world.model, world.encode(item.prompt), world.encode(item.negative if applied else ""),
                         world.setting.cfg, seed, batch)


def _negtome(world: World, item: Item, seed: int, batch: int, applied: bool) -> torch.Tensor:
    from ..nodes.negtome import MODE_DIVERSITY, NegGuideNegToMe

    model = NegGuideNegToMe.execute(world.model, 0.9, 0.65, 0.0, 0.3, MODE_DIVERSITY).args[0] if applied else world.model
    return world.ksample(model, world.encode(item.prompt), world.encode(""), world.setting.plain_cfg, seed, batch)


def _dng(world: World, item: Item, seed: int, batch: int, applied: bool) -> torch.Tensor:
    from ..nodes.dng import NegGuideDNGGuider

    if not applied:
        return world.ksample(world.model, world.encode(item.prompt), world.encode(""), world.setting.cfg, seed, batch)
    guider = NegGuideDNGGuider.execute(world.model, world.encode(item.prompt), world.encode(item.negative), world.setting.cfg,
                                       15.0, 0.01, 0.25, 0.003, 1e-6, 0.99, empty_conditioning=world.encode("")).args[0]
    return world.guider_sample(guider, seed, batch)


def _dns(world: World, item: Item, seed: int, batch: int, applied: bool) -> torch.Tensor:
    """auto-DNP: the DNS image of each seed, captioned by the judge, is that seed's negative."""
    from ..nodes.dns import NegGuideDNS

    positive = world.encode(item.prompt)
    if not applied:
        return world.ksample(world.model, positive, world.encode(""), world.setting.cfg, seed, batch)
    dns_model = NegGuideDNS.execute(world.model).args[0]
    dns_images = world.decode(world.ksample(dns_model, positive, world.encode(""), world.setting.cfg, seed, batch))
    presence, scenes = world.judge_images(dns_images)
    captions = [judge_module.describe(p, s) for p, s in zip(presence, scenes)]
    return world.ksample(world.model, positive, world.encode_batch(captions), world.setting.cfg, seed, batch)


SAMPLERS: dict[str, Callable] = {"none": _none, "cfg": _cfg, "vsf": _vsf, "negtome": _negtome, "dng": _dng, "dns": _dns}


# ----------------------------------------------------------------------------------------------
# Metrics


def pairwise_rms(images: torch.Tensor) -> float:
    """Mean pairwise RMS distance (0-255 scale) between the images of a batch [B, H, W, 3]."""
    flat = images.reshape(len(images), -1) * 255.0
    pairs = list(itertools.combinations(range(len(flat)), 2))
    return float(np.mean([((flat[i] - flat[j]) ** 2).mean().sqrt().item() for i, j in pairs])) if pairs else 0.0


@dataclass
class ItemResult:
    method: str
    item: Item
    images: torch.Tensor  # [B, 64, 64, 3]
    neg_present: float
    pos_ok: float
    change: float  # mean |image - own no-negative image| (0-255)
    diversity: float
    seconds: float


def run_item(world: World, method: str, item: Item, seed: int, batch: int) -> ItemResult:
    sample = SAMPLERS[method]
    reference = world.decode(sample(world, item, seed, batch, applied=False))
    start = time.perf_counter()
    latent = sample(world, item, seed, batch, applied=True)
    seconds = time.perf_counter() - start
    images = world.decode(latent)
    presence, scenes = world.judge_images(images)
    neg = presence[:, judge_module.concept_index(item.negative_concept)] > 0.5
    pos = torch.ones(len(images), dtype=torch.bool)
    for concept in item.positive_concepts:
        pos &= presence[:, judge_module.concept_index(concept)] > 0.5
    pos &= scenes == shapes.SCENES.index(item.scene)
    return ItemResult(method, item, images, float(neg.float().mean()), float(pos.float().mean()),
                      float((images - reference).abs().mean() * 255.0), pairwise_rms(images), seconds)


@dataclass
class Summary:
    method: str
    neg_present: float
    pos_ok: float
    unrelated_change: float
    diversity: float
    time: float


def summarise(results: list[ItemResult]) -> list[Summary]:
    base_time = np.mean([r.seconds for r in results if r.method == "none"]) if any(r.method == "none" for r in results) else None
    out = []
    for method in dict.fromkeys(r.method for r in results):
        rs = [r for r in results if r.method == method]
        related = [r for r in rs if r.item.related]
        unrelated = [r for r in rs if not r.item.related]
        seconds = np.mean([r.seconds for r in rs])
        out.append(Summary(method,
                           float(np.mean([r.neg_present for r in related])) if related else float("nan"),
                           float(np.mean([r.pos_ok for r in rs])),
                           float(np.mean([r.change for r in unrelated])) if unrelated else float("nan"),
                           float(np.mean([r.diversity for r in rs])),
                           float(seconds / base_time) if base_time else float("nan")))
    return out


def run(family: str, methods: tuple[str, ...] = METHODS, items: list[Item] | None = None, seed: int = 0,
        batch: int = 8, weights_dir: Path | None = None) -> tuple[list[ItemResult], list[Summary]]:
    for m in methods:
        if m not in SAMPLERS:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    world = World.load(family, weights_dir)
    items = items if items is not None else load_prompts()
    with torch.inference_mode():
        results = [run_item(world, m, item, seed, batch) for m in methods for item in items]
    return results, summarise(results)


# ----------------------------------------------------------------------------------------------
# Reports


def markdown_table(family: str, summaries: list[Summary], setting: Setting, batch: int) -> str:
    lines = [f"### {family} ({setting.steps} steps, {setting.sampler}/{setting.scheduler}, plain cfg {setting.plain_cfg:g}, "
             f"guided cfg {setting.cfg:g}, batch {batch})", "",
             "| method | negative present (related, lower=better) | positive ok | change from unrelated negative (0-255) | batch diversity (RMS 0-255) | time vs none |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.method} | {s.neg_present:.2f} | {s.pos_ok:.2f} | {s.unrelated_change:.1f} | {s.diversity:.1f} | {s.time:.2f} |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, family: str, summaries: list[Summary]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["family", "method", "neg_present", "pos_ok", "unrelated_change", "diversity", "time_vs_none"])
        for s in summaries:
            writer.writerow([family, s.method, f"{s.neg_present:.4f}", f"{s.pos_ok:.4f}", f"{s.unrelated_change:.3f}",
                             f"{s.diversity:.3f}", f"{s.time:.3f}"])


def picture_sheet(results: list[ItemResult], path: Path, per_cell: int = 2, scale: int = 2) -> None:
    """Rows = prompt items, columns = methods; each cell shows the first ``per_cell`` images."""
    from PIL import Image, ImageDraw

    methods = list(dict.fromkeys(r.method for r in results))
    items = list(dict.fromkeys(r.item for r in results))
    tile = 64 * scale
    cell_w, label_w, head_h, pad = per_cell * tile + 6, 260, 18, 4
    sheet = Image.new("RGB", (label_w + len(methods) * cell_w, head_h + len(items) * (tile + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, method in enumerate(methods):
        draw.text((label_w + c * cell_w + 4, 3), method, fill="black")
    by_key = {(r.method, r.item): r for r in results}
    for row, item in enumerate(items):
        y = head_h + row * (tile + pad)
        draw.text((4, y + 4), item.prompt, fill="black")
        draw.text((4, y + 20), f"negative: {item.negative} ({'related' if item.related else 'unrelated'})", fill="gray")
        for c, method in enumerate(methods):
            images = by_key[(method, item)].images[:per_cell]
            for k, image in enumerate(images):
                picture = Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).resize((tile, tile), Image.NEAREST)
                sheet.paste(picture, (label_w + c * cell_w + k * tile, y))
    sheet.save(path)
