"""A rule-based labeller for shapes-world images: an independent check of the CNN judge.

Plain numpy (no torch, no ComfyUI). It reads an image [64, 64, 3] (uint8, or float in [0, 1])
and says which of :data:`world.CONCEPTS` it shows and which of :data:`world.SCENES` it is,
with rules written from how :mod:`world` draws, tolerant of the blur, noise and colour shift of
images a diffusion model generates.

Rules:

1. **Scene and colour shift.** The per-channel medians of the top and the bottom 8 rows are
   compared with each scene's background there (beach: sky over sand; night: dark blue; meadow:
   grass; room: wall over floor). Each scene may explain them up to one colour shift common to
   both bands; the scene with the smallest cost (mismatch between the two bands' shifts plus half
   the shift itself) wins, and its shift is the image's first colour-shift estimate.
2. **Pixel classes.** After subtracting the shift, every pixel goes to the nearest colour of
   :data:`PALETTE` (the three object colours, the implicit objects' colours, the backgrounds'
   colours) by RGB distance, or to no class when even the nearest is farther than
   :data:`MAX_DISTANCE` (:data:`MAX_OBJECT_DISTANCE` for the three object colours, which are far
   from all others). The shift is then refined to the median offset of the pixels classed as the
   scene's backgrounds from their nominal colours, and the pixels classed again.
3. **Explicit objects.** For each object colour, the 4-connected components of its pixels, each
   cut at narrow necks (:func:`split_at_necks`: two touching objects of one colour), keeping
   parts of at least :data:`MIN_OBJECT_AREA` pixels. A part's shape comes from two moments
   (:func:`shape_moments`), which, unlike a bounding box's fill ratio, a few ragged blurred edge
   pixels barely move: a *triangle* (apex up) when its y-skewness is below
   :data:`TRIANGLE_MAX_SKEWNESS` (its mass sits low: ~ -0.57 against 0), otherwise a *square*
   when its four-fold anisotropy is above :data:`SQUARE_MIN_ANISOTROPY` (~0.43 against 0 for a
   circle), otherwise a *circle*.
4. **Implicit objects**, each from its own colour:

   - *sun*: a yellow component of at least :data:`MIN_SUN_AREA` pixels (the halo is not needed);
   - *moon*: a component of at least :data:`MIN_MOON_AREA` pale pixels (moon or star colour, or,
     against a background far darker, any bright grey-white pixel: :func:`pale_mask`); a star is
     one pixel, so never enough;
   - *tree*: a dark-green (crown) component of at least :data:`MIN_CROWN_AREA` pixels;
   - *window*: a compact pale-blue (pane or sky colour, the two being close) group, its four
     panes joined by two dilations across the cross: at least :data:`MIN_PANE_AREA` pixels, no
     side longer than :data:`MAX_PANE_SIZE` and not touching the image border, which rules out
     a beach's sky and the corners of it that a sun cuts off.

Thresholds were set on clean renders and on renders blurred (3x3 box), noised (std 6/255) and
colour-shifted (per channel, +-10 and a gain of +-5%); see tests/unit/test_shapes_labeller.py.
Known limits: a heavier blur (5x5 box) loses a few small windows (their panes shrink below
:data:`MIN_PANE_AREA`); two same-coloured objects drawn over each other (rather than touching)
read as one object; a window drawn against a beach's sky (same pale blue) would be missed; the
rules assume the world's palette and layout (backgrounds at the top and bottom, apex-up
triangles), so an image far from it (a strong hue change) is read as its nearest scene.

:func:`label_image` and :func:`label_images` apply the rules; :func:`agreement` compares two
labellings (e.g. this labeller's against the judge's).
"""

from __future__ import annotations

import numpy as np

from . import world

Colour = tuple[int, int, int]

PALETTE: dict[str, Colour] = {
    **world.COLOURS,
    # Implicit objects (world._draw_implicit).
    "sun": (250, 200, 20),
    "halo": (250, 240, 140),
    "moon": (240, 240, 210),
    "star": (230, 230, 230),
    "crown": (30, 100, 40),
    "trunk": (110, 70, 30),
    "frame": (90, 60, 40),
    "pane": (170, 220, 250),
    # Backgrounds (world._background).
    "sky": (150, 205, 240),
    "sand": (235, 215, 160),
    "night": (15, 20, 60),
    "grass": (120, 200, 110),
    "stripe": (90, 170, 80),
    "wall": (200, 195, 185),
    "floor": (150, 110, 80),
}
"""Every colour the world paints, by class name."""
CLASS_NAMES: tuple[str, ...] = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[name] for name in CLASS_NAMES], dtype=np.float32)
UNKNOWN = -1
"""Pixel class of a pixel near no palette colour."""

SCENE_BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "beach": ("sky", "sand"),
    "night": ("night",),
    "meadow": ("grass", "stripe"),
    "room": ("wall", "floor"),
}
"""The background classes of each of :data:`world.SCENES`."""

MAX_DISTANCE = 60.0
"""RGB distance (0-255 scale) beyond which a pixel belongs to no class..."""
MAX_OBJECT_DISTANCE = 100.0
"""...but an explicit object's colour, which is far from every other, keeps a pixel up to this far."""
_MAX_DISTANCES = np.array([MAX_OBJECT_DISTANCE if name in world.COLOURS else MAX_DISTANCE for name in PALETTE],
                          dtype=np.float32)
MIN_OBJECT_AREA = 30
"""Smallest component (pixels) that counts as an explicit object (the smallest drawn, a
radius-7 triangle, has ~90)."""
MAX_SPLIT_EROSIONS = 2
"""How many 3x3 erosions :func:`split_at_necks` tries to cut touching objects apart."""
MIN_CORE_AREA = 12
"""Smallest eroded core (pixels) that counts as an object of its own when splitting."""
MIN_SUN_AREA = 25
"""Smallest yellow component (pixels) that counts as the sun (a radius-6 disc has ~113)."""
MIN_MOON_AREA = 10
"""Smallest pale component (pixels) that counts as the moon (a star is one pixel; the thinnest
crescent drawn has a few dozen)."""
MOON_MIN_CONTRAST = 80.0
"""How much brighter (mean channel, 0-255) than the scene's brightest background a grey-white
pixel must be to count as the moon's (only a night is dark enough for this to matter)."""
MOON_MAX_CHROMA = 60.0
"""Largest max-min channel spread (0-255) of a grey-white pixel."""
MIN_CROWN_AREA = 40
"""Smallest dark-green component (pixels) that counts as a tree (its radius-9 crown has ~250)."""
MIN_PANE_AREA = 16
"""Fewest pale-blue pixels that count as a window's pane (a radius-7 window's four panes have
~100 clean, ~25 once blurred)."""
MAX_PANE_SIZE = 24
"""Largest bounding-box side (pixels) of a window's pane (a window is at most 18 px wide)."""


# ----------------------------------------------------------------------------------------------
# Pixels


def _as_rgb255(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 [64, 64, 3] on the 0-255 scale."""
    image = np.asarray(image)
    if image.shape != (world.SIZE, world.SIZE, 3):
        raise ValueError(f"expected an image [{world.SIZE}, {world.SIZE}, 3], got {list(image.shape)}")
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32)
    return np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """Index into :data:`CLASS_NAMES` of each pixel's nearest palette colour, or :data:`UNKNOWN`
    where that is too far; ``rgb`` [H, W, 3] on the 0-255 scale."""
    squared = (rgb**2).sum(-1, keepdims=True) - 2 * rgb @ _PALETTE_RGB.T + (_PALETTE_RGB**2).sum(-1)
    nearest = squared.argmin(axis=-1)
    nearest_squared = np.take_along_axis(squared, nearest[..., None], -1)[..., 0]
    return np.where(nearest_squared <= _MAX_DISTANCES[nearest] ** 2, nearest, UNKNOWN)


def _class_mask(classes: np.ndarray, *names: str) -> np.ndarray:
    return np.isin(classes, [CLASS_NAMES.index(n) for n in names])


BAND_ROWS = 8
"""Rows at the top and at the bottom of an image whose median colour shows the background
(a beach's horizon is at rows 24-34 and a room's floor starts at rows 40-50)."""
SCENE_BANDS: dict[str, tuple[str, str]] = {
    "beach": ("sky", "sand"),
    "night": ("night", "night"),
    "meadow": ("grass", "grass"),
    "room": ("wall", "floor"),
}
"""The background class at the top and at the bottom of each scene."""
SHIFT_WEIGHT = 0.5
"""How much a scene hypothesis pays per unit of the colour shift it needs (a shift that moves
the top and the bottom alike is cheap, a mismatch between them is not)."""


def scene_and_shift(rgb: np.ndarray) -> tuple[int, np.ndarray]:
    """The scene whose top and bottom background colours best explain the image's top and bottom
    bands, up to one colour shift shared by both, and that shift [3] (0-255 scale)."""
    top = np.median(rgb[:BAND_ROWS].reshape(-1, 3), axis=0)
    bottom = np.median(rgb[-BAND_ROWS:].reshape(-1, 3), axis=0)
    best = (np.inf, 0, np.zeros(3, dtype=np.float32))
    for index, scene in enumerate(world.SCENES):
        top_name, bottom_name = SCENE_BANDS[scene]
        top_shift = top - _PALETTE_RGB[CLASS_NAMES.index(top_name)]
        bottom_shift = bottom - _PALETTE_RGB[CLASS_NAMES.index(bottom_name)]
        shift = (top_shift + bottom_shift) / 2
        cost = float(np.linalg.norm(top_shift - bottom_shift) + SHIFT_WEIGHT * np.linalg.norm(shift))
        if cost < best[0]:
            best = (cost, index, shift.astype(np.float32))
    return best[1], best[2]


def _colour_shift(rgb: np.ndarray, classes: np.ndarray, scene: int) -> np.ndarray:
    """Median offset (per channel) of the scene's background pixels from their nominal colours."""
    offsets = np.concatenate([rgb[classes == CLASS_NAMES.index(n)] - _PALETTE_RGB[CLASS_NAMES.index(n)]
                              for n in SCENE_BACKGROUNDS[world.SCENES[scene]]])
    return np.median(offsets, axis=0) if len(offsets) else np.zeros(3, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Components


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected components of ``mask`` [H, W] bool, each as a bool mask (pure numpy:
    every pixel repeatedly takes its neighbours' smallest label, with pointer jumping)."""
    height, width = mask.shape
    if not mask.any():
        return []
    none = height * width
    labels = np.where(mask, np.arange(none).reshape(height, width), none)
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        smallest = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                      padded[1:-1, :-2], padded[1:-1, 2:]])
        smallest = np.where(mask, smallest, none)
        flat = np.append(smallest.ravel(), none)
        smallest = np.where(mask, flat[smallest], none)  # jump: a label is a pixel of the same component
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    return [labels == value for value in np.unique(labels[mask])]


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose whole 3x3 neighbourhood is in ``mask``."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    return np.logical_and.reduce([padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)])


def split_at_necks(component: np.ndarray, max_erosions: int = MAX_SPLIT_EROSIONS) -> list[np.ndarray]:
    """``component`` cut into the objects it may be made of: two touching objects of one colour
    join by a neck a few pixels wide, which eroding the component cuts; each core of at least
    :data:`MIN_CORE_AREA` pixels then grows back over the component's pixels (each pixel to the
    core that reaches it first). A component that no erosion splits comes back whole."""
    eroded = component
    for _ in range(max_erosions):
        eroded = _erode(eroded)
        cores = [core for core in connected_components(eroded) if core.sum() >= MIN_CORE_AREA]
        if len(cores) < 2:
            if not cores:
                break
            continue
        owner = np.zeros(component.shape, dtype=np.int64)
        for index, core in enumerate(cores, start=1):
            owner[core] = index
        while True:
            padded = np.pad(owner, 1)
            reach = np.maximum.reduce([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
            grown = np.where(component & (owner == 0), reach, owner)
            if np.array_equal(grown, owner):
                break
            owner = grown
        return [owner == index for index in range(1, len(cores) + 1)]
    return [component]


def _bounding_box(component: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(component)
    return component[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def shape_moments(component: np.ndarray) -> tuple[float, float]:
    """Two moments of one object's pixels [H, W] bool, about its centroid (x right, y down):

    - *skewness* of y, E[y^3] / E[y^2]^1.5: about -0.57 for an apex-up triangle (its mass
      sits low), 0 for a circle or a square;
    - *four-fold anisotropy* (E[(2xy)^2] - E[(x^2 - y^2)^2]) / (sum of both), the cos(4 theta)
      part of the shape: 3/7 ~ 0.43 for an axis-aligned square, 0 for a circle (or a triangle).

    Moments use every pixel, so a few ragged edge pixels of a blurred shape barely move them,
    where a bounding box's fill ratio would jump."""
    ys, xs = np.nonzero(component)
    ys = ys - ys.mean()
    xs = xs - xs.mean()
    variance = max(float((ys**2).mean()), 1e-6)
    skewness = float((ys**3).mean()) / variance**1.5
    cos4, sin4 = float(((xs**2 - ys**2) ** 2).mean()), float(((2 * xs * ys) ** 2).mean())
    anisotropy = (sin4 - cos4) / max(sin4 + cos4, 1e-6)
    return skewness, anisotropy


TRIANGLE_MAX_SKEWNESS = -0.25
"""Below this y-skewness a shape is a triangle (measured: triangles <= -0.43, others >= -0.08,
clean or degraded)."""
SQUARE_MIN_ANISOTROPY = 0.22
"""Above this four-fold anisotropy a shape is a square (measured: squares >= 0.28, circles
<= 0.16, clean or degraded)."""


def shape_of(component: np.ndarray) -> str:
    """``"circle"``, ``"square"`` or ``"triangle"`` for one object's pixels [H, W] bool (see
    :func:`shape_moments`)."""
    skewness, anisotropy = shape_moments(component)
    if skewness < TRIANGLE_MAX_SKEWNESS:
        return "triangle"
    return "square" if anisotropy > SQUARE_MIN_ANISOTROPY else "circle"


# ----------------------------------------------------------------------------------------------
# Labelling


def _explicit_objects(classes: np.ndarray) -> set[str]:
    found = set()
    for colour in world.COLOURS:
        for component in connected_components(_class_mask(classes, colour)):
            for part in split_at_necks(component):
                if part.sum() >= MIN_OBJECT_AREA:
                    found.add(f"{colour} {shape_of(part)}")
    return found


def _largest_area(mask: np.ndarray) -> int:
    return max((int(c.sum()) for c in connected_components(mask)), default=0)


def _has_window(classes: np.ndarray) -> bool:
    pale_blue = _class_mask(classes, "pane", "sky")
    for component in connected_components(_dilate(_dilate(pale_blue))):
        component &= pale_blue
        box = _bounding_box(component)
        touches_border = component[[0, -1]].any() or component[:, [0, -1]].any()
        if component.sum() >= MIN_PANE_AREA and max(box.shape) <= MAX_PANE_SIZE and not touches_border:
            return True
    return False


def pale_mask(classes: np.ndarray, rgb: np.ndarray, scene: int) -> np.ndarray:
    """Moon-like pixels: the moon's or a star's colour, or, against a background much darker than
    the moon, any grey-white pixel far brighter than that background (a thin crescent blurred
    into the night sky stays grey-white, only dimmer)."""
    pale = _class_mask(classes, "moon", "star")
    brightest_background = max(float(PALETTE[n][0] + PALETTE[n][1] + PALETTE[n][2]) / 3
                               for n in SCENE_BACKGROUNDS[world.SCENES[scene]])
    brightness = rgb.mean(axis=-1)
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    return pale | ((brightness >= brightest_background + MOON_MIN_CONTRAST) & (chroma <= MOON_MAX_CHROMA))


def _implicit_objects(classes: np.ndarray, rgb: np.ndarray, scene: int) -> set[str]:
    found = set()
    if _largest_area(_class_mask(classes, "sun")) >= MIN_SUN_AREA:
        found.add("sun")
    if _largest_area(pale_mask(classes, rgb, scene)) >= MIN_MOON_AREA:
        found.add("moon")
    if _largest_area(_class_mask(classes, "crown")) >= MIN_CROWN_AREA:
        found.add("tree")
    if _has_window(classes):
        found.add("window")
    return found


def label_image(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Presence [13] bool over :data:`world.CONCEPTS` and the index into :data:`world.SCENES` of
    one image [64, 64, 3] (uint8, or float in [0, 1])."""
    rgb = _as_rgb255(image)
    scene, shift = scene_and_shift(rgb)
    classes = classify_pixels(rgb - shift)
    shift = shift + _colour_shift(rgb - shift, classes, scene)
    rgb = rgb - shift
    classes = classify_pixels(rgb)
    found = _explicit_objects(classes) | _implicit_objects(classes, rgb, scene)
    return np.array([c in found for c in world.CONCEPTS]), scene


def label_images(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`label_image` over a batch [B, 64, 64, 3]: presence [B, 13] bool, scenes [B] int."""
    results = [label_image(image) for image in np.asarray(images)]
    presence = np.array([p for p, _ in results], dtype=bool).reshape(len(results), len(world.CONCEPTS))
    return presence, np.array([s for _, s in results], dtype=np.int64)


def agreement(presence_a: np.ndarray, scene_a: np.ndarray, presence_b: np.ndarray, scene_b: np.ndarray) -> dict:
    """How often two labellings of the same images agree: ``{"concepts": {name: rate},
    "scene": rate, "min": the smallest of them}``.

    ``presence_*`` [B, 13] over :data:`world.CONCEPTS`: bool, 0/1 or probabilities (e.g.
    :func:`judge.judge_images`' output), present above 0.5; ``scene_*`` [B] indices into
    :data:`world.SCENES`. Numpy arrays or CPU tensors."""
    presence_a, presence_b = (np.asarray(p).reshape(-1, len(world.CONCEPTS)) > 0.5 for p in (presence_a, presence_b))
    scene_a, scene_b = (np.asarray(s).reshape(-1) for s in (scene_a, scene_b))
    if not len(presence_a) or {len(presence_b), len(scene_a), len(scene_b)} != {len(presence_a)}:
        raise ValueError(f"need labellings of the same non-empty batch, got {len(presence_a)}, {len(presence_b)} "
                         f"presences and {len(scene_a)}, {len(scene_b)} scenes")
    per_concept = (presence_a == presence_b).mean(axis=0)
    concepts = {name: float(rate) for name, rate in zip(world.CONCEPTS, per_concept, strict=True)}
    scene = float((scene_a == scene_b).mean())
    return {"concepts": concepts, "scene": scene, "min": min([scene, *concepts.values()])}
