"""The shapes world: seeded, procedural 64x64 RGB scenes with captions and ground truth.

A scene is a background (one of :data:`SCENES`) with 1-2 explicit objects (a colour and a shape,
:data:`OBJECTS`, 22-30 pixels across) and, with a known rate, the scene's implicit object (:data:`IMPLICIT`): a beach
usually brings a sun, a night a moon, a meadow a tree, a room a window. Captions come from
templates and have the structure negative prompts need:

- implicit objects are usually NOT mentioned (a model learns "beach" -> often a sun, which a
  negative prompt "sun" can then remove);
- an explicit object is sometimes left out of the caption (:data:`OMIT_RATE`);
- every implicit object appears only in its own scene, so for any scene the other implicit
  objects are concepts unrelated to it (a "moon" negative on a beach prompt).

Everything is numpy, deterministic per seed, and has no ComfyUI import.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SIZE = 64
"""Image width and height in pixels."""

SCENES: tuple[str, ...] = ("beach", "night", "meadow", "room")
COLOURS: dict[str, tuple[int, int, int]] = {"red": (220, 30, 30), "blue": (30, 60, 220), "purple": (150, 40, 190)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
OBJECTS: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
IMPLICIT: dict[str, str] = {"beach": "sun", "night": "moon", "meadow": "tree", "room": "window"}
"""The object each scene brings without being asked for it."""
IMPLICIT_RATE = 0.8
"""P(implicit object present | scene)."""
IMPLICIT_MENTION_RATE = 0.25
"""P(an implicit object that is present is named in the caption)."""
OMIT_RATE = 0.05
"""P(an explicit object is left out of the caption)."""
TWO_OBJECT_RATE = 0.3
"""P(a scene has two explicit objects rather than one)."""
OBJECT_RADIUS = (11.0, 15.0)
"""Range of an explicit object's radius in pixels: 3-4 latent cells across, so that a model
working on 8x8 latents can draw (and a judge read) its shape."""
CONCEPTS: tuple[str, ...] = OBJECTS + tuple(IMPLICIT.values())
"""Everything the judge detects (presence), besides the scene itself."""

_SCENE_PHRASE = {"beach": "on a beach", "night": "at night", "meadow": "in a meadow", "room": "in a room"}
_SCENE_NOUN = {"beach": "a beach", "night": "a night sky", "meadow": "a meadow", "room": "a room"}


@dataclasses.dataclass(frozen=True)
class Scene:
    """Ground truth of one generated image."""

    scene: str
    objects: tuple[str, ...]
    """Explicit objects drawn (may repeat a concept)."""
    implicit: bool
    """Whether the scene's implicit object is drawn."""
    caption: str

    @property
    def concepts(self) -> frozenset[str]:
        present = set(self.objects)
        if self.implicit:
            present.add(IMPLICIT[self.scene])
        return frozenset(present)

    def labels(self) -> np.ndarray:
        """Presence of each of :data:`CONCEPTS` (float32 0/1)."""
        return np.array([c in self.concepts for c in CONCEPTS], dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Drawing

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def _paint(image: np.ndarray, mask: np.ndarray, colour) -> None:
    image[mask] = np.asarray(colour, dtype=np.uint8)


def _shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    if shape == "circle":
        return (_X - cx) ** 2 + (_Y - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(_X - cx) <= r * 0.85) & (np.abs(_Y - cy) <= r * 0.85)
    if shape == "triangle":  # apex up
        top, bottom = cy - r, cy + r * 0.8
        half_width = (_Y - top) / (bottom - top) * r
        return (_Y >= top) & (_Y <= bottom) & (np.abs(_X - cx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}")


def _background(scene: str, rng: np.random.Generator) -> np.ndarray:
    image = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    if scene == "beach":
        horizon = int(rng.integers(24, 34))
        image[:horizon] = (150, 205, 240)
        image[horizon:] = (235, 215, 160)
    elif scene == "night":
        image[:] = (15, 20, 60)
        for _ in range(int(rng.integers(4, 8))):
            y, x = rng.integers(0, SIZE, size=2)
            image[y, x] = (230, 230, 230)
    elif scene == "meadow":
        image[:] = (120, 200, 110)
        image[(_Y.astype(int) + _X.astype(int)) % 9 == 0] = (90, 170, 80)
    elif scene == "room":
        floor = int(rng.integers(40, 50))
        image[:floor] = (200, 195, 185)
        image[floor:] = (150, 110, 80)
    else:
        raise ValueError(f"unknown scene {scene!r}")
    return image


def _draw_implicit(image: np.ndarray, scene: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """Draw the scene's implicit object near its usual place; returns (cx, cy, r) it occupies."""
    left = bool(rng.integers(0, 2))
    cx = float(rng.uniform(10, 18) if left else rng.uniform(46, 54))
    if scene == "beach":
        cy, r = float(rng.uniform(9, 14)), float(rng.uniform(6, 8))
        _paint(image, (_X - cx) ** 2 + (_Y - cy) ** 2 <= (r + 2.5) ** 2, (250, 240, 140))
        _paint(image, (_X - cx) ** 2 + (_Y - cy) ** 2 <= r * r, (250, 200, 20))
    elif scene == "night":
        cy, r = float(rng.uniform(9, 14)), float(rng.uniform(6, 8))
        disc = (_X - cx) ** 2 + (_Y - cy) ** 2 <= r * r
        bite = (_X - cx - r * 0.55) ** 2 + (_Y - cy + r * 0.2) ** 2 <= (r * 0.85) ** 2
        _paint(image, disc & ~bite, (240, 240, 210))
    elif scene == "meadow":
        cy, r = float(rng.uniform(28, 36)), 9.0
        _paint(image, (np.abs(_X - cx) <= 2) & (_Y >= cy) & (_Y <= cy + 14), (110, 70, 30))
        _paint(image, (_X - cx) ** 2 + (_Y - cy) ** 2 <= r * r, (30, 100, 40))
    elif scene == "room":
        cy, r = float(rng.uniform(12, 18)), float(rng.uniform(7, 9))
        _paint(image, (np.abs(_X - cx) <= r) & (np.abs(_Y - cy) <= r), (90, 60, 40))
        _paint(image, (np.abs(_X - cx) <= r - 1.5) & (np.abs(_Y - cy) <= r - 1.5), (170, 220, 250))
        _paint(image, ((np.abs(_X - cx) <= 0.8) | (np.abs(_Y - cy) <= 0.8))
               & (np.abs(_X - cx) <= r) & (np.abs(_Y - cy) <= r), (90, 60, 40))
    return cx, cy, r + 3


def _place(rng: np.random.Generator, taken: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """A free spot for an explicit object (rejection sampling; overlap allowed after 50 tries)."""
    for _ in range(50):
        r = float(rng.uniform(*OBJECT_RADIUS))
        cx, cy = (float(v) for v in rng.uniform(r + 1, SIZE - r - 1, size=2))
        if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 2) ** 2 for x, y, q in taken):
            return cx, cy, r
    return cx, cy, r


# ----------------------------------------------------------------------------------------------
# Captions


def _with_article(objects: list[str]) -> str:
    named = [f"a {o}" for o in objects]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def caption_for(scene: str, named_objects: list[str], rng: np.random.Generator | None = None) -> str:
    """A caption naming ``named_objects`` (possibly none) in ``scene``: one of two templates
    drawn with ``rng``, or the "<objects> <scene phrase>" one without."""
    if not named_objects:
        return _SCENE_NOUN[scene]
    things = _with_article(named_objects)
    if rng is None or rng.random() < 0.5:
        return f"{things} {_SCENE_PHRASE[scene]}"
    return f"{_SCENE_NOUN[scene]} with {things}"


def render(scene: Scene, seed: int) -> np.ndarray:
    """Draw ``scene`` (layout drawn from ``seed``); [64, 64, 3] uint8."""
    rng = np.random.default_rng(seed)
    image = _background(scene.scene, rng)
    taken = [_draw_implicit(image, scene.scene, rng)] if scene.implicit else []
    for obj in scene.objects:
        colour, shape = obj.split(" ")
        cx, cy, r = _place(rng, taken)
        taken.append((cx, cy, r))
        _paint(image, _shape_mask(shape, cx, cy, r), COLOURS[colour])
    return image


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene of the world's distribution, with its training caption."""
    scene = SCENES[int(rng.integers(len(SCENES)))]
    count = 1 + int(rng.random() < TWO_OBJECT_RATE)
    objects = [OBJECTS[int(i)] for i in rng.integers(len(OBJECTS), size=count)]
    implicit = bool(rng.random() < IMPLICIT_RATE)
    named = [o for o in objects if rng.random() >= OMIT_RATE]
    if implicit and rng.random() < IMPLICIT_MENTION_RATE:
        named.append(IMPLICIT[scene])
    return Scene(scene, tuple(objects), implicit, caption_for(scene, named, rng))


def generate(count: int, seed: int) -> tuple[np.ndarray, list[Scene]]:
    """``count`` scenes: images [count, 64, 64, 3] uint8 and their ground truth."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(count)]
    layout_seeds = rng.integers(0, 2**31 - 1, size=count)
    images = np.stack([render(s, int(k)) for s, k in zip(scenes, layout_seeds)])
    return images, scenes
