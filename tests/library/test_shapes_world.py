"""The shapes world's trained models: the training script really runs, the committed weights load
through ComfyUI and sample, the judge's accuracy claim holds on fresh scenes, and a NegBench-mini
slice shows negative prompts working."""

import json

import safetensors

import nodes
import pytest
import torch

from negguide.nodes.shapes_world import NegGuideShapesWorldCaption, NegGuideShapesWorldLoader
from negguide.shapes_world import judge as judge_module
from negguide.shapes_world import models, negbench, train, world

# Thresholds of the efficacy tests: set from the measured NegBench-mini numbers (README), with margin.
BASELINE_TREE = 0.3
SLICE_FAMILIES = ("sd3",)
DROP = 0.25
NEGTOME_GAIN = 1.03
NEGTOME_FAMILIES = ("sd3", "flux")
DNG_UNRELATED_RATIO = 0.3

TINY = train.Budget(vae=2, vae_decoder=2, diffusion=2, judge=2, dataset=32, judge_eval=32, vae_images=32)


def test_training_script_runs_every_stage(tmp_path):
    record = train.run(tmp_path, budget=TINY)
    assert set(record) == set(train.STAGES)
    for family in models.FAMILIES:
        assert (tmp_path / models.diffusion_file(family)).is_file()
        assert len(record[family]["loss_curve"]) == 1 and record[family]["loss_curve"][0] > 0
    for family in models.FAMILIES:  # the same file format on every host: the committed files' key names
        written, committed = (safetensors.safe_open(str(folder / models.diffusion_file(family)), "pt").keys()
                              for folder in (tmp_path, models.WEIGHTS_DIR))
        assert sorted(written) == sorted(committed), family
    model, clip, vae = models.load("flux", tmp_path)  # what the script wrote loads like the bundled files
    latent = nodes.common_ksampler(model, 0, 1, 1.0, "euler", "simple", nodes.CLIPTextEncode().encode(clip, "a beach")[0],
                                   nodes.CLIPTextEncode().encode(clip, "")[0], {"samples": torch.zeros(1, 16, 8, 8)})[0]
    assert latent["samples"].shape == (1, 16, 8, 8)
    assert json.loads((tmp_path / "training.json").read_text())["judge"]["held_out_accuracy"]["per_concept"]


def test_committed_weights_are_small():
    files = sorted(models.WEIGHTS_DIR.glob("*.safetensors"))
    assert len(files) == 6
    assert all(f.stat().st_size <= 8 * 2**20 for f in files)
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20


_worlds: dict[str, negbench.World] = {}


def world_of(family: str) -> negbench.World:
    """The loaded shapes-world family (loaded once per test session)."""
    if family not in _worlds:
        _worlds[family] = negbench.World.load(family)
    return _worlds[family]


def bench_items(related: bool, negative: str | None = None) -> list:
    return [i for i in negbench.load_prompts() if i.related == related and (negative is None or i.negative == negative)]


@pytest.mark.parametrize("family", models.FAMILIES)
def test_loader_node_samples_the_prompted_scene(family):
    """Each trained model, loaded by the node and sampled by the stock KSampler with its
    NegBench setting, draws the scene the prompt names (judged) for >= 75% of 8 seeds."""
    model, clip, vae = NegGuideShapesWorldLoader.execute(family).args
    setting = negbench.SETTINGS[family]
    encode = nodes.CLIPTextEncode().encode
    for prompt, scene in (("a red square at night", "night"), ("a blue circle in a meadow", "meadow")):
        latent = nodes.common_ksampler(model, 1, setting.steps, setting.plain_cfg, setting.sampler, setting.scheduler,
                                       encode(clip, prompt)[0], encode(clip, "")[0],
                                       nodes.EmptyLatentImage().generate(64, 64, 8)[0])[0]
        images = vae.decode(latent["samples"]).float().clamp(0, 1)
        assert images.shape == (8, 64, 64, 3)
        _, scenes = judge_module.judge_images(judge_module.load(), images)
        assert (scenes == world.SCENES.index(scene)).float().mean() >= 0.75, (family, prompt, scenes)


def test_sd3_file_loads_with_the_stock_loader_code():
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(models.WEIGHTS_DIR / models.diffusion_file("sd3")))
    assert type(model.model).__name__ == "SD3"


def test_judge_accuracy_on_fresh_scenes():
    """The judge's held-out claim on scenes it never saw: >= 97% per concept and per scene on
    clean scenes; after a VAE round trip (what generated images look like) scenes and implicit
    objects (what NegBench-mini measures) stay >= 99%, coloured shapes >= 85% (the VAE's blur
    makes squares and circles alike; measured 88.7% worst, 95.3% mean over all concepts)."""
    images, scenes = world.generate(600, seed=12345)
    x = train._to_tensor(images)
    labels, scene_ids = train._labels(scenes)
    judge = judge_module.load()
    clean = train.judge_accuracy(judge, x, labels, scene_ids)
    assert clean["min"] >= 0.97 and clean["scene"] >= 0.97, clean
    half = slice(0, 300)
    tripped = train.judge_accuracy(judge, train._round_trip(models.load_vae(), x[half]), labels[half], scene_ids[half])
    per_concept = tripped["per_concept"]
    assert tripped["scene"] >= 0.99
    assert min(per_concept[c] for c in world.IMPLICIT.values()) >= 0.99, per_concept
    assert min(per_concept[c] for c in world.OBJECTS) >= 0.85, per_concept


def test_caption_node_describes_what_is_drawn():
    """The judge-based captioner (auto-DNP's BLIP-2 stand-in) names the scene of every image and
    every concept of nearly all of them (overlapping shapes can hide one)."""
    images, scenes = world.generate(12, seed=77)
    captions = NegGuideShapesWorldCaption.execute(torch.from_numpy(images).float() / 255.0).args[0]
    assert len(captions) == 12
    complete = 0
    for caption, scene in zip(captions, scenes):
        assert world.caption_for(scene.scene, []) in caption or scene.scene in caption, (caption, scene)
        complete += all(concept in caption for concept in scene.concepts)
    assert complete >= 10, captions


@pytest.mark.parametrize("family", SLICE_FAMILIES)
def test_negbench_slice_vsf_and_cfg_remove_a_related_negative(family):
    """NegBench-mini in small (issue 7): on "a purple triangle in a meadow" (a tree in ~80% of
    such training images, rarely named), the negative "tree" must lower the tree's presence with
    constant negative prompting (CFG) and with VSF at cfg 1, against no negative. (Per-item
    numbers of every prompt are in the README: not every concept responds as well.)"""
    world = world_of(family)
    item = bench_items(related=True, negative="tree")[0]
    with torch.inference_mode():
        result = {m: negbench.run_item(world, m, item, seed=0, batch=16) for m in ("none", "cfg", "vsf")}
    baseline = result["none"].neg_present
    assert baseline >= BASELINE_TREE, "the trained model should draw the implicit tree without being asked"
    assert result["cfg"].neg_present <= baseline - DROP
    assert result["vsf"].neg_present <= baseline - DROP


@pytest.mark.parametrize("family", NEGTOME_FAMILIES)
def test_negtome_makes_batches_of_trained_models_more_diverse(family):
    """Issue 4 on trained weights: same seeds, batch 8, NegGuideNegToMe (batch diversity, alpha 0.9,
    threshold 0.65, first 30% of the steps): the images of the batch differ more from each other.
    The SD1.5-style UNet is not asserted: on it the early-window merge leaves the batch as diverse
    as before (NegBench-mini: 36.2 -> 36.4 RMS), while the DiTs gain (Flux-style 28.6 -> 38.0)."""
    world = world_of(family)
    item = bench_items(related=True, negative="sun")[0]
    with torch.inference_mode():
        none = negbench.run_item(world, "none", item, seed=0, batch=8)
        negtome = negbench.run_item(world, "negtome", item, seed=0, batch=8)
    assert negtome.diversity >= NEGTOME_GAIN * none.diversity, (negtome.diversity, none.diversity)


def test_dng_changes_far_less_than_cfg_for_an_unrelated_negative():
    """Issue 5 on trained weights (SD1.5-style UNet, cfg 5): an unrelated negative ("moon" on a
    beach) changes DNG's images far less than constant negative prompting at the same cfg (the
    posterior stays near the prior). Measured: DNG 0.1 vs CFG 5.3 (0-255 mean pixel change)."""
    world = world_of("sd15")
    unrelated = bench_items(related=False, negative="moon")[0]
    with torch.inference_mode():
        dng = negbench.run_item(world, "dng", unrelated, seed=0, batch=8)
        cfg = negbench.run_item(world, "cfg", unrelated, seed=0, batch=8)
    assert cfg.change > 1.0, "constant negative prompting should visibly change the images"
    assert dng.change <= DNG_UNRELATED_RATIO * cfg.change


def test_caption_node_accepts_rgba_images():
    """An RGBA IMAGE [B, H, W, 4] (e.g. LoadImage of a PNG with alpha piped through) is captioned
    like its RGB part: alpha is dropped, as core nodes do for RGB-only consumers."""
    images, _ = world.generate(3, seed=78)
    rgb = torch.from_numpy(images).float() / 255.0
    rgba = torch.cat([rgb, torch.rand(*rgb.shape[:-1], 1)], dim=-1)
    expected = NegGuideShapesWorldCaption.execute(rgb).args[0]
    out = NegGuideShapesWorldCaption.execute(rgba)
    assert out.args[0] == expected and len(expected) == 3
    with pytest.raises(ValueError, match=r"expected an IMAGE .* got \(3, 64, 64, 2\)"):
        NegGuideShapesWorldCaption.execute(rgb[..., :2])
