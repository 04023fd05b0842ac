"""NegBench v2: negative guidance measured in the shapes world, with controls and intervals.

Every prompt of a prompt file (``shapes_world/prompts/negbench.json``: a prompt, its scene, the
positive concepts, an unrelated concept) is run with three negatives: **related** (the scene's
implicit object, which the model draws unasked in ~80% of such images), **unrelated** (another
scene's implicit object, which never appears in this scene) and **neutral** (a word the text
encoder knows that no image ever shows: the control). Every number is measured on the scene's
implicit object (the *target*), the positive concepts and the scene, by the judge, and compared
image by image (same seeds, same noise) with the method's **baseline at the same cfg**:

- VSF and NegToMe: the plain model at the plain cfg (1 for the few-step flow models);
- CFG, DNG and DNS: CFG at the guided cfg with an empty negative.

Per (method, negative kind): ``target`` = share of images with the target present, and its
paired change against the baseline with a 95% interval (normal approximation over the paired
per-image differences, >= 64 images over >= 2 seeds per prompt); ``removal_gated`` = the change
in the share of images where the target is gone **and** the scene and every positive concept
are there (a removal that destroys the scene does not count); ``pos_ok`` change; ``change`` =
mean absolute pixel change against the baseline image (0-255); ``diversity`` = mean pairwise
distance of the judge's features within groups of 8 images, as a ratio to the baseline's; DNG's
posterior p per image (mean and max over the steps).

Methods: ``cfg``, ``vsf`` (the negative without its text-independent start token, the product
default), ``vsf_keep_start`` (with it: decision 4a of issue 15), ``negtome`` (diversity mode, no
negative, threshold 0.65, steps 0-0.3), ``negtome_long_window`` (threshold 0.5, steps 0-0.6),
``dng`` (NegGuideDNGGuider, posterior against the empty prompt's prediction),
``dng_positive_reference`` (posterior against the positive's: decision 4b), ``dng_few_step``
(``dng`` at temperature 0.05 and p_max 0.5, the setting measured for 4-step models), ``dns``
(auto-DNP: the DNS image of each seed, captioned by the judge, is that seed's negative; run once
per prompt). Requires ComfyUI booted in this process.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import judge as judge_module
from . import models, world as shapes

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts" / "negbench.json"
KINDS: tuple[str, ...] = ("related", "unrelated", "neutral")
DIVERSITY_GROUP = 8
"""Images per diversity group (pairwise distances are taken within a group of one seed batch)."""
Z95 = 1.959964


@dataclass(frozen=True)
class Setting:
    """How a family is sampled in the benchmark."""

    steps: int
    sampler: str
    scheduler: str
    cfg: float
    """cfg of the CFG-based methods (cfg, dng, dns) and of their baseline."""
    plain_cfg: float
    """cfg of vsf, negtome and their baseline (1 = the CFG-free few-step setting)."""
    vsf_scale: float = 3.0
    vsf_bias: float = 0.1


SETTINGS: dict[str, Setting] = {
    "sd3": Setting(steps=8, sampler="euler", scheduler="simple", cfg=4.0, plain_cfg=1.0),
    "flux": Setting(steps=4, sampler="euler", scheduler="simple", cfg=3.0, plain_cfg=1.0),
    "sd15": Setting(steps=20, sampler="euler_ancestral", scheduler="normal", cfg=5.0, plain_cfg=5.0),
}


@dataclass(frozen=True)
class Prompt:
    text: str
    scene: str
    positive_concepts: tuple[str, ...]
    unrelated: str
    neutral: str

    @property
    def target(self) -> str:
        """The concept every effect is measured on: the scene's implicit object."""
        return shapes.IMPLICIT[self.scene]

    def negative(self, kind: str) -> str:
        return {"related": self.target, "unrelated": self.unrelated, "neutral": self.neutral}[kind]


def load_prompts(path: Path = DEFAULT_PROMPTS) -> list[Prompt]:
    data = json.loads(Path(path).read_text())
    prompts = [Prompt(d["prompt"], d["scene"], tuple(d["positive_concepts"]), d["unrelated"], data["neutral"])
               for d in data["prompts"]]
    for prompt in prompts:  # fail early on a concept the judge does not know
        for concept in (*prompt.positive_concepts, prompt.unrelated, prompt.target):
            judge_module.concept_index(concept)
        if prompt.scene not in shapes.SCENES:
            raise ValueError(f"unknown scene {prompt.scene!r}; the shapes world has {', '.join(shapes.SCENES)}")
    return prompts


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


@dataclass
class Sampled:
    """A method's latents for one (prompt, negative, seed) and what it recorded on the way."""

    latent: torch.Tensor
    posterior: torch.Tensor | None = None
    """DNG: p per step and image [T, B]."""


def plain_baseline(world: World, prompt: str, seed: int, batch: int) -> Sampled:
    return Sampled(world.ksample(world.model, world.encode(prompt), world.encode(""), world.setting.plain_cfg, seed, batch))


def guided_baseline(world: World, prompt: str, seed: int, batch: int) -> Sampled:
    return Sampled(world.ksample(world.model, world.encode(prompt), world.encode(""), world.setting.cfg, seed, batch))


def _vsf(drop_start_token: bool):
    def sample(world: World, prompt: str, negative: str, seed: int, batch: int) -> Sampled:
        from ..nodes.model_family import family_adapter_of
        from ..nodes.schedule import SigmaWindow
        from ..nodes.vsf import SUPPORTED_FAMILIES, apply_vsf, encode_negative

        s = world.setting
        tokens = encode_negative(world.clip, negative, drop_text_independent=drop_start_token)
        model = apply_vsf(world.model, family_adapter_of(world.model, "NegGuideVSF", SUPPORTED_FAMILIES), tokens,
                          s.vsf_scale, s.vsf_bias, SigmaWindow.from_percents(world.model, 0.0, 1.0, "NegGuideVSF"))
        return Sampled(world.ksample(model, world.encode(prompt), world.encode(""), s.plain_cfg, seed, batch))
    return sample


def _cfg(world: World, prompt: str, negative: str, seed: int, batch: int) -> Sampled:
    return Sampled(world.ksample(world.model, world.encode(prompt), world.encode(negative), world.setting.cfg, seed, batch))


def _negtome(threshold: float, end: float):
    """NegToMe in diversity mode, alpha 0.9 (the reference's Flux value), from the first step to ``end``."""
    def sample(world: World, prompt: str, negative: str | None, seed: int, batch: int) -> Sampled:
        from ..nodes.negtome import MODE_DIVERSITY, NegGuideNegToMe

        model = NegGuideNegToMe.execute(world.model, 0.9, threshold, 0.0, end, MODE_DIVERSITY).args[0]
        return Sampled(world.ksample(model, world.encode(prompt), world.encode(""), world.setting.plain_cfg, seed, batch))
    return sample


def _dng(posterior_reference: str, **params):
    """DNG at the paper's SD hyper-parameters, or with ``params`` (DNGParams fields) changed."""
    def sample(world: World, prompt: str, negative: str, seed: int, batch: int) -> Sampled:
        from ..guidance.dng import DNGParams
        from ..nodes.dng import DNGGuider

        guider = DNGGuider(world.model, DNGParams(**params).validate(), posterior_reference=posterior_reference)
        guider.set_conds(world.encode(prompt), world.encode(negative), world.encode(""))
        guider.set_cfg(world.setting.cfg)
        latent = world.guider_sample(guider, seed, batch)
        return Sampled(latent, guider.tracker.curves()["p"])
    return sample


def _dns(world: World, prompt: str, negative: str | None, seed: int, batch: int) -> Sampled:
    """auto-DNP: the DNS image of each seed, captioned by the judge, is that seed's negative."""
    from ..nodes.dns import NegGuideDNS

    positive = world.encode(prompt)
    dns_model = NegGuideDNS.execute(world.model).args[0]
    dns_images = world.decode(world.ksample(dns_model, positive, world.encode(""), world.setting.cfg, seed, batch))
    presence, scenes = judge_module.judge_images(world.judge, dns_images)
    captions = [judge_module.describe(p, s) for p, s in zip(presence, scenes)]
    return Sampled(world.ksample(world.model, positive, world.encode_batch(captions), world.setting.cfg, seed, batch))


@dataclass(frozen=True)
class Method:
    name: str
    sample: Callable[..., Sampled]
    baseline: Callable[..., Sampled]
    takes_negative: bool
    """False: run once per prompt (NegToMe: no negative; DNS: it finds its own)."""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("cfg", _cfg, guided_baseline, True),
    Method("vsf", _vsf(drop_start_token=True), plain_baseline, True),
    Method("vsf_keep_start", _vsf(drop_start_token=False), plain_baseline, True),
    Method("negtome", _negtome(0.65, 0.3), plain_baseline, False),
    # A longer window and a lower similarity threshold (issue 15's 1.3x diversity target)
    Method("negtome_long_window", _negtome(0.5, 0.6), plain_baseline, False),
    Method("dng", _dng("empty"), guided_baseline, True),
    Method("dng_positive_reference", _dng("positive"), guided_baseline, True),
    # Few-step setting (issue 15, 4b): a lower temperature and a lambda cap of lambda0 (p_max 0.5),
    # so one 4-step update cannot take p from the prior to p_max (lambda 15 -> 1485) and blow up x.
    Method("dng_few_step", _dng("empty", tau=0.05, p_max=0.5), guided_baseline, True),
    Method("dns", _dns, guided_baseline, False),
)}


# ----------------------------------------------------------------------------------------------
# Judging


@dataclass
class Judged:
    """Per-image judgements of one batch."""

    images: torch.Tensor  # [B, 64, 64, 3]
    target: np.ndarray  # [B] bool: the prompt's target concept present
    positives_and_scene: np.ndarray  # [B] bool: every positive concept and the right scene
    features: torch.Tensor  # [B, F] the judge's features

    @property
    def gated_absent(self) -> np.ndarray:
        """Target gone while the scene and the positive concepts survive."""
        return ~self.target & self.positives_and_scene


def judge_batch(world: World, prompt: Prompt, latent: torch.Tensor) -> Judged:
    images = world.decode(latent)
    presence, scenes = judge_module.judge_images(world.judge, images)
    ok = scenes == shapes.SCENES.index(prompt.scene)
    for concept in prompt.positive_concepts:
        ok &= presence[:, judge_module.concept_index(concept)] > 0.5
    target = presence[:, judge_module.concept_index(prompt.target)] > 0.5
    return Judged(images, target.numpy(), ok.numpy(), judge_module.image_features(world.judge, images))


def group_diversity(features: torch.Tensor, group: int = DIVERSITY_GROUP) -> np.ndarray:
    """Mean pairwise Euclidean distance of judge features within consecutive groups of ``group``."""
    out = []
    for chunk in features.split(group):
        if len(chunk) > 1:
            d = torch.cdist(chunk.double(), chunk.double())
            out.append(float(d.sum() / (len(chunk) * (len(chunk) - 1))))
    return np.asarray(out)


# ----------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray) -> "Estimate":
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        half = Z95 * values.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        return cls(float(values.mean()), float(values.mean() - half), float(values.mean() + half), n)

    def text(self, spec: str) -> str:
        """The mean and its interval, each in format ``spec`` (e.g. ``".1f"``)."""
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return self.text("+.3f")


def ratio_estimate(method: np.ndarray, baseline: np.ndarray) -> Estimate:
    """Ratio of means with a 95% interval by the delta method on paired values."""
    m, b = np.asarray(method, np.float64), np.asarray(baseline, np.float64)
    n = len(m)
    r = m.mean() / b.mean()
    residual = (m - r * b) / b.mean()
    half = Z95 * residual.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return Estimate(float(r), float(r - half), float(r + half), n)


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class Cell:
    """One (method, negative kind) of a family, pooled over prompts and seeds (paired arrays)."""

    method: str
    kind: str
    target: list = field(default_factory=list)
    baseline_target: list = field(default_factory=list)
    gated: list = field(default_factory=list)
    baseline_gated: list = field(default_factory=list)
    positives: list = field(default_factory=list)
    baseline_positives: list = field(default_factory=list)
    change: list = field(default_factory=list)
    diversity: list = field(default_factory=list)
    baseline_diversity: list = field(default_factory=list)
    posterior_mean: list = field(default_factory=list)
    posterior_max: list = field(default_factory=list)
    examples: dict = field(default_factory=dict)
    """prompt text -> (negative, baseline images, method images) of the first seed (the sheets)."""

    def add(self, prompt: Prompt, negative: str | None, base: Judged, got: Judged, sampled: Sampled) -> None:
        self.target.append(got.target)
        self.baseline_target.append(base.target)
        self.gated.append(got.gated_absent)
        self.baseline_gated.append(base.gated_absent)
        self.positives.append(got.positives_and_scene)
        self.baseline_positives.append(base.positives_and_scene)
        self.change.append(((got.images - base.images).abs().mean(dim=(1, 2, 3)) * 255.0).numpy())
        self.diversity.append(group_diversity(got.features))
        self.baseline_diversity.append(group_diversity(base.features))
        if sampled.posterior is not None and sampled.posterior.numel():
            self.posterior_mean.append(sampled.posterior.mean(0).numpy())
            self.posterior_max.append(sampled.posterior.max(0).values.numpy())
        self.examples.setdefault(prompt.text, (negative, base.images, got.images))

    def _cat(self, name: str) -> np.ndarray:
        values = getattr(self, name)
        return np.concatenate(values).astype(np.float64) if values else np.zeros(0)

    def summary(self) -> dict:
        target, base = self._cat("target"), self._cat("baseline_target")
        out = {
            "method": self.method, "kind": self.kind, "images": len(target),
            "target": float(target.mean()), "baseline_target": float(base.mean()),
            "target_change": Estimate.of(target - base),
            "gated_removal": Estimate.of(self._cat("gated") - self._cat("baseline_gated")),
            "positives": float(self._cat("positives").mean()), "baseline_positives": float(self._cat("baseline_positives").mean()),
            "positives_change": Estimate.of(self._cat("positives") - self._cat("baseline_positives")),
            "pixel_change": Estimate.of(self._cat("change")),
            "diversity_ratio": ratio_estimate(self._cat("diversity"), self._cat("baseline_diversity")),
        }
        if self.posterior_mean:
            out["posterior_mean"] = Estimate.of(self._cat("posterior_mean"))
            out["posterior_max"] = Estimate.of(self._cat("posterior_max"))
        return out


def run(family: str, methods: tuple[str, ...] = tuple(METHODS), prompts: list[Prompt] | None = None,
        seeds: tuple[int, ...] = (0, 1), batch: int = 32, weights_dir: Path | None = None,
        progress: Callable[[str], None] | None = None, kinds: tuple[str, ...] = (*KINDS, "none")) -> list[Cell]:
    """Every method x negative kind on ``family``: one Cell each (pooled over prompts and seeds).
    ``kinds`` restricts the negatives (``none``: the methods that take no negative)."""
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    world = World.load(family, weights_dir)
    prompts = prompts if prompts is not None else load_prompts()
    baselines: dict = {}
    cells: dict[tuple[str, str], Cell] = {}
    with torch.inference_mode():
        for name in methods:
            method = METHODS[name]
            method_kinds = [k for k in (KINDS if method.takes_negative else ("none",)) if k in kinds]
            for prompt in prompts if method_kinds else ():
                for seed in seeds:
                    key = (method.baseline, prompt.text, seed)
                    if key not in baselines:
                        baselines[key] = judge_batch(world, prompt, method.baseline(world, prompt.text, seed, batch).latent)
                    for kind in method_kinds:
                        negative = prompt.negative(kind) if method.takes_negative else None
                        sampled = method.sample(world, prompt.text, negative, seed, batch)
                        cells.setdefault((name, kind), Cell(name, kind)).add(
                            prompt, negative, baselines[key], judge_batch(world, prompt, sampled.latent), sampled)
            if progress:
                progress(f"{family}: {name} done")
    return list(cells.values())


# ----------------------------------------------------------------------------------------------
# Verdicts: does each paper's claim hold here?


def _find(cells: list[Cell], method: str, kind: str) -> Cell | None:
    return next((c for c in cells if c.method == method and c.kind == kind), None)


def _cell(cells: list[Cell], method: str, kind: str) -> dict | None:
    cell = _find(cells, method, kind)
    return cell.summary() if cell else None


def beyond_control(cells: list[Cell], method: str) -> Estimate | None:
    """The related negative's effect on the target minus the neutral negative's, paired image by
    image (same prompts, seeds and noise): what the negative itself does, beyond the method."""
    related, neutral = _find(cells, method, "related"), _find(cells, method, "neutral")
    if related is None or neutral is None:
        return None
    return Estimate.of(related._cat("target") - neutral._cat("target"))


def removes_like_cfg(method: Estimate, cfg: Estimate) -> bool:
    """A removal "like CFG's": below zero with 95% confidence and at least half of CFG's mean."""
    return method.high < 0 and method.mean <= 0.5 * cfg.mean


def verdicts(cells: list[Cell]) -> list[str]:
    """One line per claim that these cells can test, each with its numbers."""
    lines = []
    for method in ("cfg", "vsf", "vsf_keep_start", "dng", "dng_positive_reference", "dng_few_step"):
        related, neutral = _cell(cells, method, "related"), _cell(cells, method, "neutral")
        if related is None or neutral is None:
            continue
        removal, control, beyond = related["target_change"], neutral["target_change"], beyond_control(cells, method)
        holds = removal.high < 0 and beyond.high < 0
        lines.append(f"{method}: a related negative removes the target: {removal} vs the baseline, {beyond} beyond the "
                     f"neutral negative (which changes it by {control}) -> {'holds' if holds else 'not shown'}")
    cfg_unrelated, cfg_related = _cell(cells, "cfg", "unrelated"), _cell(cells, "cfg", "related")
    for dng in ("dng", "dng_few_step"):
        dng_unrelated, dng_related = _cell(cells, dng, "unrelated"), _cell(cells, dng, "related")
        if not (cfg_unrelated and dng_unrelated and cfg_related and dng_related):
            continue
        c, d = cfg_unrelated["pixel_change"], dng_unrelated["pixel_change"]
        holds = d.high <= c.mean / 3
        lines.append(f"{dng}: an unrelated negative changes the image <= 1/3 of CFG's change: {d.mean:.2f} "
                     f"[{d.low:.2f}, {d.high:.2f}] vs CFG {c.mean:.2f} -> {'holds' if holds else 'not shown'}")
        cr, dr = cfg_related["target_change"], dng_related["target_change"]
        lines.append(f"{dng}: a related negative removes the target like CFG: {dr} vs CFG {cr} -> "
                     f"{'holds' if removes_like_cfg(dr, cr) else 'not shown'}")
        cb, db = beyond_control(cells, "cfg"), beyond_control(cells, dng)
        if cb is not None and db is not None:
            lines.append(f"{dng}: the related negative's own removal (beyond the neutral negative, which with CFG "
                         f"also moves the target) like CFG's: {db} vs CFG {cb} -> "
                         f"{'holds' if removes_like_cfg(db, cb) else 'not shown'}")
    for name in ("negtome", "negtome_long_window"):
        negtome = _cell(cells, name, "none")
        if not negtome:
            continue
        r, kept = negtome["diversity_ratio"], negtome["positives_change"]
        holds = r.low >= 1.3 and kept.low >= -0.05
        lines.append(f"{name}: feature diversity x{r.mean:.2f} [{r.low:.2f}, {r.high:.2f}], compliance change {kept} "
                     f"-> {'holds (>= 1.3x, compliance kept)' if holds else 'not shown (target >= 1.3x, compliance within -0.05)'}")
    dns = _cell(cells, "dns", "none")
    if dns:
        kept = dns["positives_change"]
        lines.append(f"dns: auto-DNP changes compliance by {kept}, the target by {dns['target_change']} "
                     f"-> {'improves compliance' if kept.low > 0 else 'no compliance gain shown'}")
    return lines


# ----------------------------------------------------------------------------------------------
# The judge, checked on generated images


def generated_images(cells: list[Cell]) -> torch.Tensor:
    """Every image the cells kept for their sheets (baselines once), [N, 64, 64, 3]."""
    seen, images = set(), []
    for cell in cells:
        for prompt, (_, baseline, method) in cell.examples.items():
            base_key = (prompt, id(baseline))
            if base_key not in seen:
                seen.add(base_key)
                images.append(baseline)
            images.append(method)
    return torch.cat(images)


def judge_agreement(judge: judge_module.Judge, images: torch.Tensor) -> dict:
    """The judge against the rule-based labeller (:mod:`shapes_world.labeller`: the world's own
    palette and geometry) on generated images: per-concept and scene agreement."""
    from . import labeller

    presence, scenes = judge_module.judge_images(judge, images)
    rule_presence, rule_scenes = labeller.label_images(images.numpy())
    result = labeller.agreement((presence > 0.5).numpy(), scenes.numpy(), rule_presence, rule_scenes)
    return {**result, "images": len(images)}


# ----------------------------------------------------------------------------------------------
# The world's own acceptance: do the models do what the prompt says (no negative)?

ACCEPTANCE = {"compliance": 0.8, "implicit": 0.7}
"""Issue 15's targets for the models, with no negative: positive compliance (the scene and the
prompt's coloured shape, judged) and the scene's implicit object present."""


def acceptance_prompts() -> list[Prompt]:
    """Every coloured shape in every scene, one caption each (the world's first template):
    36 prompts, no implicit object named."""
    return [Prompt(shapes.caption_for(scene, [obj]), scene, (obj,), "", "")
            for scene in shapes.SCENES for obj in shapes.OBJECTS]


def acceptance(family: str, seeds: tuple[int, ...] = (0, 1), batch: int = 8, weights_dir: Path | None = None) -> dict:
    """Per sampling (plain cfg, and guided cfg where it differs; an empty negative) over
    :func:`acceptance_prompts`: compliance and implicit-object presence, with 95% intervals over
    images, the worst prompt of each, and the scene accuracy."""
    world = World.load(family, weights_dir)
    out = {}
    with torch.inference_mode():
        samplings = [("plain", plain_baseline, world.setting.plain_cfg)]
        if world.setting.cfg != world.setting.plain_cfg:
            samplings.append(("guided", guided_baseline, world.setting.cfg))
        for label, baseline, cfg in samplings:
            per_prompt = []
            for prompt in acceptance_prompts():
                judged = [judge_batch(world, prompt, baseline(world, prompt.text, seed, batch).latent) for seed in seeds]
                ok = np.concatenate([j.positives_and_scene for j in judged])
                target = np.concatenate([j.target for j in judged])
                per_prompt.append((prompt.text, ok, target))
            ok_all = np.concatenate([o for _, o, _ in per_prompt]).astype(np.float64)
            target_all = np.concatenate([t for _, _, t in per_prompt]).astype(np.float64)
            out[label] = {
                "cfg": cfg, "images": len(ok_all),
                "compliance": Estimate.of(ok_all), "implicit": Estimate.of(target_all),
                "worst_compliance": min((float(o.mean()), text) for text, o, _ in per_prompt),
                "worst_implicit": min((float(t.mean()), text) for text, _, t in per_prompt),
            }
    return out


def acceptance_table(results: dict[str, dict]) -> str:
    """Markdown: one row per family and sampling, the targets' verdict."""
    lines = ["### The models with no negative (every coloured shape in every scene; targets: compliance "
             f">= {ACCEPTANCE['compliance']}, implicit object >= {ACCEPTANCE['implicit']})", "",
             "| family | cfg | images | compliance [95% CI] | worst prompt | implicit object present [95% CI] | worst prompt | targets |",
             "|---|---|---|---|---|---|---|---|"]
    for family, by_sampling in results.items():
        for row in by_sampling.values():
            c, i = row["compliance"], row["implicit"]
            met = c.mean >= ACCEPTANCE["compliance"] and i.mean >= ACCEPTANCE["implicit"]
            lines.append(f"| {family} | {row['cfg']:g} | {row['images']} | {c.mean:.2f} [{c.low:.2f}, {c.high:.2f}] "
                         f"| {row['worst_compliance'][0]:.2f} ({row['worst_compliance'][1]}) "
                         f"| {i.mean:.2f} [{i.low:.2f}, {i.high:.2f}] | {row['worst_implicit'][0]:.2f} ({row['worst_implicit'][1]}) "
                         f"| {'met' if met else 'not met'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Reports


def markdown_table(family: str, cells: list[Cell], setting: Setting, images_per_prompt: int) -> str:
    lines = [f"### {family} ({setting.steps} steps, {setting.sampler}/{setting.scheduler}, plain cfg {setting.plain_cfg:g}, "
             f"guided cfg {setting.cfg:g}, {images_per_prompt} images per prompt and negative)", "",
             "| method | negative | target present (baseline -> method) | target change [95% CI] | gated removal [95% CI] "
             "| positives+scene ok (baseline -> method) | pixel change vs baseline | feature diversity ratio | DNG p mean / max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        s = cell.summary()
        posterior = (f"{s['posterior_mean'].text('.3f')} / {s['posterior_max'].text('.3f')}" if "posterior_mean" in s else "")
        lines.append(f"| {s['method']} | {s['kind']} | {s['baseline_target']:.2f} -> {s['target']:.2f} | {s['target_change']} "
                     f"| {s['gated_removal']} | {s['baseline_positives']:.2f} -> {s['positives']:.2f} "
                     f"| {s['pixel_change'].text('.1f')} | {s['diversity_ratio'].text('.2f')} | {posterior} |")
    lines += ["", *[f"- {v}" for v in verdicts(cells)]]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, family: str, cells: list[Cell]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["family", "method", "kind", "images", "baseline_target", "target", "target_change", "low", "high",
                             "gated_removal", "g_low", "g_high", "baseline_positives", "positives",
                             *_interval_columns("pixel_change"), *_interval_columns("diversity_ratio"),
                             *_interval_columns("posterior_mean"), *_interval_columns("posterior_max")])
        for cell in cells:
            s = cell.summary()
            writer.writerow([family, s["method"], s["kind"], s["images"], f"{s['baseline_target']:.4f}", f"{s['target']:.4f}",
                             *_interval_values(s["target_change"], 4), *_interval_values(s["gated_removal"], 4),
                             f"{s['baseline_positives']:.4f}", f"{s['positives']:.4f}",
                             *_interval_values(s["pixel_change"], 3), *_interval_values(s["diversity_ratio"], 4),
                             *_interval_values(s.get("posterior_mean"), 5), *_interval_values(s.get("posterior_max"), 5)])


def _interval_columns(name: str) -> list[str]:
    return [name, f"{name}_low", f"{name}_high"]


def _interval_values(estimate: Estimate | None, digits: int) -> list[str]:
    """CSV cells of an estimate (empty where the method has none, e.g. a posterior outside DNG)."""
    if estimate is None:
        return ["", "", ""]
    return [f"{v:.{digits}f}" for v in (estimate.mean, estimate.low, estimate.high)]
