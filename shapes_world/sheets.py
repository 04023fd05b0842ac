"""Picture sheets a person can read: plain | method, same seeds, one row per prompt.

Each row is labelled with its prompt and the negative the method was given; the left block is
the method's baseline (the same seeds at the same cfg, see :mod:`shapes_world.negbench`), the
right block the method. Plain PIL, no ComfyUI import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .negbench import Cell

NO_NEGATIVE = {"negtome": "no negative (batch diversity)", "dns": "its own: the DNS image's caption"}


def _tile(image: torch.Tensor, size: int):
    from PIL import Image

    return Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).resize((size, size), Image.NEAREST)


def comparison_sheet(cell: Cell, path: Path, per_side: int = 4, tile: int = 96) -> None:
    """``cell``'s first-seed examples: rows = prompts, ``per_side`` baseline images | as many
    method images (the same seeds)."""
    from PIL import Image, ImageDraw

    pad, gap, label_h, head_h = 4, 16, 30, 20
    side = per_side * (tile + pad)
    width = pad + 2 * side + gap
    rows = list(cell.examples.items())
    sheet = Image.new("RGB", (max(width, 480), head_h + len(rows) * (label_h + tile + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), "baseline (same seeds, same cfg)", fill="black")
    draw.text((pad + side + gap, 4), cell.method, fill="black")
    y = head_h
    for prompt, (negative, baseline, method) in rows:
        said = NO_NEGATIVE.get(cell.method) if negative is None else f'"{negative}" ({cell.kind})'
        draw.text((pad, y + 2), f"{prompt}", fill="black")
        draw.text((pad, y + 15), f"negative: {said}", fill="gray")
        for i in range(min(per_side, len(baseline))):
            sheet.paste(_tile(baseline[i], tile), (pad + i * (tile + pad), y + label_h))
            sheet.paste(_tile(method[i], tile), (pad + side + gap + i * (tile + pad), y + label_h))
        y += label_h + tile + pad
    sheet.save(path)
