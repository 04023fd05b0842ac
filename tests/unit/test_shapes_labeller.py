"""The rule-based labeller (an independent check of the CNN judge) reads the shapes world's
ground truth back from its renders: clean, and degraded the way generated images are (blur,
pixel noise, a colour shift)."""

import numpy as np
import pytest
from negguide.shapes_world import labeller, world

COUNT = 300


def _degrade(images: np.ndarray, seed: int) -> np.ndarray:
    """A 3x3 box blur, a per-image colour shift (per channel: gain 1 +- 0.05, offset +- 10/255)
    and Gaussian pixel noise (std 6/255); float in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = images.astype(np.float32) / 255.0
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    x = sum(padded[:, dy:dy + world.SIZE, dx:dx + world.SIZE] for dy in range(3) for dx in range(3)) / 9.0
    gain = rng.uniform(0.95, 1.05, size=(len(x), 1, 1, 3))
    offset = rng.uniform(-10 / 255, 10 / 255, size=(len(x), 1, 1, 3))
    x = x * gain + offset + rng.normal(0.0, 6 / 255, size=x.shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def renders():
    images, scenes = world.generate(COUNT, seed=20260)
    truth = np.stack([s.labels() for s in scenes]) > 0.5
    truth_scenes = np.array([world.SCENES.index(s.scene) for s in scenes])
    return images, truth, truth_scenes


def _report(result: dict) -> str:
    return f"scene {result['scene']:.3f}; " + ", ".join(f"{k} {v:.3f}" for k, v in result["concepts"].items())


def test_clean_renders_are_labelled_correctly(renders):
    images, truth, truth_scenes = renders
    presence, scenes = labeller.label_images(images)
    assert presence.shape == (COUNT, len(world.CONCEPTS)) and presence.dtype == bool
    assert scenes.shape == (COUNT,)
    result = labeller.agreement(presence, scenes, truth, truth_scenes)
    assert result["scene"] >= 0.98, _report(result)
    assert min(result["concepts"].values()) >= 0.95, _report(result)
    # Not just the absences: every concept is drawn often enough here, and found when drawn.
    assert truth.sum(axis=0).min() >= 15
    recall = (presence & truth).sum(axis=0) / truth.sum(axis=0)
    assert recall.min() >= 0.9, dict(zip(world.CONCEPTS, recall.round(3), strict=True))


def test_degraded_renders_are_labelled_correctly(renders):
    images, truth, truth_scenes = renders
    presence, scenes = labeller.label_images(_degrade(images, seed=1))
    result = labeller.agreement(presence, scenes, truth, truth_scenes)
    assert min(result["concepts"].values()) >= 0.9, _report(result)
    assert result["scene"] >= 0.98, _report(result)


def test_uint8_and_float_images_read_alike(renders):
    images, _, _ = renders
    for image in images[:8]:
        a_presence, a_scene = labeller.label_image(image)
        b_presence, b_scene = labeller.label_image(image.astype(np.float32) / 255.0)
        assert np.array_equal(a_presence, b_presence) and a_scene == b_scene
    with pytest.raises(ValueError, match="expected an image"):
        labeller.label_image(np.zeros((32, 32, 3), dtype=np.uint8))


def test_agreement_of_identical_labellings_is_one_and_of_flipped_ones_zero(renders):
    _, truth, truth_scenes = renders
    same = labeller.agreement(truth, truth_scenes, truth.astype(np.float32), truth_scenes.copy())
    assert same["scene"] == 1.0 and same["min"] == 1.0
    assert set(same["concepts"]) == set(world.CONCEPTS) and all(v == 1.0 for v in same["concepts"].values())
    flipped = labeller.agreement(truth, truth_scenes, ~truth, (truth_scenes + 1) % len(world.SCENES))
    assert flipped["scene"] == 0.0 and flipped["min"] == 0.0
    assert all(v == 0.0 for v in flipped["concepts"].values())
    with pytest.raises(ValueError, match="same non-empty batch"):
        labeller.agreement(truth, truth_scenes, truth[:-1], truth_scenes[:-1])
