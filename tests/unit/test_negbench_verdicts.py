"""NegBench v2's verdict on DNG's "removes a related negative like CFG": judged on the target's
change against the same-cfg baseline, and on the negative's own part of it (beyond the neutral
negative), where CFG's removal with any negative does not count."""

import numpy as np
from negguide.shapes_world import negbench

IMAGES = 64


def _cell(method: str, kind: str, present: float, seed: int) -> negbench.Cell:
    """A cell whose baseline always draws the target and whose method draws it in ``present`` of
    the images (the rest of the columns: no change)."""
    rng = np.random.default_rng(seed)
    target = np.zeros(IMAGES, dtype=bool)
    target[rng.permutation(IMAGES)[: round(present * IMAGES)]] = True
    ones, zeros = np.ones(IMAGES, dtype=bool), np.zeros(IMAGES, dtype=bool)
    cell = negbench.Cell(method, kind)
    cell.target, cell.baseline_target = [target], [ones]
    cell.gated, cell.baseline_gated = [~target], [zeros]
    cell.positives, cell.baseline_positives = [ones], [ones]
    cell.change = [np.full(IMAGES, 1.0)]
    cell.diversity, cell.baseline_diversity = [np.ones(8)], [np.ones(8)]
    return cell


def _cells(dng_related: float, dng_neutral: float) -> list:
    return [
        _cell("cfg", "related", 0.40, 0), _cell("cfg", "unrelated", 0.55, 1), _cell("cfg", "neutral", 0.50, 2),
        _cell("dng", "related", dng_related, 3), _cell("dng", "unrelated", 1.0, 4),
        _cell("dng", "neutral", dng_neutral, 5),
    ]


def _verdict(cells: list, claim: str) -> str:
    lines = [line for line in negbench.verdicts(cells) if line.startswith(f"dng: {claim}")]
    assert len(lines) == 1, negbench.verdicts(cells)
    return lines[0]


RAW = "a related negative removes the target like CFG"
OWN = "the related negative's own removal"


def test_a_removal_under_half_of_cfgs_that_cfg_also_makes_with_a_neutral_negative_holds_beyond_the_control():
    """CFG: -0.60 with the related negative, -0.50 with the neutral one (-0.10 its own);
    DNG: -0.25 and 0: under half of CFG's raw removal, but more than CFG's own."""
    cells = _cells(dng_related=0.75, dng_neutral=1.0)
    assert _verdict(cells, RAW).endswith("not shown")
    assert _verdict(cells, OWN).endswith("holds")


def test_a_removal_the_neutral_negative_makes_as_well_is_not_the_negatives_own():
    cells = _cells(dng_related=0.75, dng_neutral=0.75)
    assert _verdict(cells, OWN).endswith("not shown")
