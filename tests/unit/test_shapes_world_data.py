"""The shapes world's generator and captions: deterministic, and with the structure negative
prompts need (implicit objects at their rate, omitted objects, unrelated concepts)."""

import numpy as np
import pytest
import torch

from negguide.shapes_world import judge, world


def test_generation_is_deterministic_per_seed():
    a_images, a_scenes = world.generate(20, seed=5)
    b_images, b_scenes = world.generate(20, seed=5)
    c_images, _ = world.generate(20, seed=6)
    assert np.array_equal(a_images, b_images) and a_scenes == b_scenes
    assert not np.array_equal(a_images, c_images)
    assert a_images.shape == (20, world.SIZE, world.SIZE, 3) and a_images.dtype == np.uint8


def test_implicit_objects_come_at_their_rate_and_only_in_their_scene():
    _, scenes = world.generate(3000, seed=1)
    rate = np.mean([s.implicit for s in scenes])
    assert abs(rate - world.IMPLICIT_RATE) < 0.03
    for s in scenes:
        others = set(world.IMPLICIT.values()) - {world.IMPLICIT[s.scene]}
        assert not (s.concepts & others), "an implicit object appeared outside its scene"


def test_captions_mostly_leave_implicit_objects_unnamed_and_sometimes_omit_objects():
    _, scenes = world.generate(3000, seed=2)
    with_implicit = [s for s in scenes if s.implicit]
    named = np.mean([world.IMPLICIT[s.scene] in s.caption for s in with_implicit])
    assert abs(named - world.IMPLICIT_MENTION_RATE) < 0.04
    omitted = np.mean([any(o not in s.caption for o in s.objects) for s in scenes])
    assert 0.05 < omitted < 0.35
    assert all(s.scene in s.caption or {"night": "night"}.get(s.scene, "") in s.caption for s in scenes)


def test_every_concept_is_visible_in_the_pixels():
    """Drawing an object changes pixels (no concept is invisible against any background)."""
    for scene in world.SCENES:
        bare = world.render(world.Scene(scene, (), False, ""), seed=3)
        with_implicit = world.render(world.Scene(scene, (), True, ""), seed=3)
        assert (bare != with_implicit).any(axis=-1).sum() > 30
        for obj in world.OBJECTS:
            drawn = world.render(world.Scene(scene, (obj,), False, ""), seed=3)
            assert (bare != drawn).any(axis=-1).sum() > 30, (scene, obj)


def test_labels_and_describe_round_trip():
    scene = world.Scene("beach", ("red square",), True, "a red square on a beach")
    labels = scene.labels()
    assert labels.sum() == 2 and labels[world.CONCEPTS.index("sun")] == 1
    caption = judge.describe(torch.from_numpy(labels), world.SCENES.index("beach"))
    assert caption == "a red square and a sun on a beach"
    assert judge.describe(torch.zeros(len(world.CONCEPTS)), world.SCENES.index("night")) == "a night sky"


def test_unknown_concept_is_refused():
    with pytest.raises(ValueError, match="unknown concept"):
        judge.concept_index("dragon")
