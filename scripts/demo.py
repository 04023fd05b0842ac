"""`make demo`: run every bundled shapes-world workflow through a real ComfyUI server.

Starts ComfyUI (``main.py``) with this pack, loads each ``workflows/?? CPU demo - *.json`` (the
UI-format files users open from the Templates menu), converts it to the API format as the
frontend does, queues it with the workflow attached (so SaveImage embeds both the prompt and the
workflow in each PNG, as in the browser), and copies the images to ``out/demo/<workflow>/``. A
comparison sheet (one row per workflow, its images left to right) is written to
``out/demo/comparison.png``. Then one labelled sheet per method, ``out/demo/sheet_<method>.png``:
rows = NegBench's prompts with the negative written on each row, columns = the method's
baseline (same seeds, same cfg) | the method, on the family the method is meant for
(:data:`SHEET_FAMILIES`). The shapes-world models are bundled with the pack, so nothing is
downloaded; the whole run takes about a minute once the host is set up.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from _pack import ROOT, boot, load_pack

OUT = ROOT / "out" / "demo"
SHEET_FAMILIES = {"vsf": "sd15", "negtome": "flux", "cfg": "sd3", "dng": "sd3", "dns": "sd15"}
"""The shapes-world family each method's sheet shows, where NegBench v2 measured its effect
(README): VSF and auto-DNP on the SD1.5-style UNet, NegToMe on the patch-1 Flux at cfg 1, CFG and
DNG on the SD3 MMDiT."""
SHEET_IMAGES = 4


def shapes_workflows() -> list[Path]:
    from negguide.harness import workflows

    return workflows.cpu_demo_files(ROOT / "workflows")


def comparison_sheet(rows: list[tuple[str, list[Path]]], path: Path, tile: int = 128) -> None:
    from PIL import Image, ImageDraw

    label_h, pad = 16, 4
    width = max(len(images) for _, images in rows) * (tile + pad) + pad
    sheet = Image.new("RGB", (max(width, 420), len(rows) * (tile + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for label, images in rows:
        draw.text((pad, y), label, fill="black")
        for i, image_path in enumerate(images):
            picture = Image.open(image_path).convert("RGB").resize((tile, tile), Image.NEAREST)
            sheet.paste(picture, (pad + i * (tile + pad), y + label_h))
        y += tile + label_h + pad
    sheet.save(path)


def method_sheets() -> None:
    """One plain | method sheet per method (related negatives, seed 0), in this process."""
    boot()
    import torch

    from negguide.shapes_world import negbench, sheets

    torch.set_num_threads(1)
    for method, family in SHEET_FAMILIES.items():
        t0 = time.perf_counter()
        kinds = ("related",) if negbench.METHODS[method].takes_negative else ("none",)
        for cell in negbench.run(family, (method,), seeds=(0,), batch=SHEET_IMAGES, kinds=kinds):
            sheets.comparison_sheet(cell, OUT / f"sheet_{method}.png", per_side=SHEET_IMAGES)
        print(f"[demo] sheet_{method}.png ({family}) in {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> int:
    load_pack()
    from negguide.harness import workflows
    from negguide.harness.server import ComfyServer

    files = shapes_workflows()
    if not files:
        print("no shapes-world workflows found in workflows/", file=sys.stderr)
        return 1
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    rows = []
    start = time.perf_counter()
    print(f"[demo] starting ComfyUI with NegGuide ({len(files)} shapes-world workflows)", flush=True)
    with ComfyServer() as server:
        object_info = server.object_info()
        for number, path in enumerate(files, 1):
            ui_workflow = workflows.load(path)
            prompt = workflows.to_api(ui_workflow, object_info)
            t0 = time.perf_counter()
            history = server.wait(server.queue(prompt, workflow=ui_workflow), timeout=600)
            images = server.output_images(history)
            name = workflows.short_name(path)
            target = OUT / path.stem
            target.mkdir()
            copied = [Path(shutil.copy(image, target / image.name)) for image in images]
            rows.append((name, copied))
            print(f"[demo] {number}/{len(files)} {path.stem}: {len(copied)} images in {time.perf_counter() - t0:.1f} s", flush=True)
    comparison_sheet(rows, OUT / "comparison.png")
    method_sheets()
    print(f"[demo] done in {time.perf_counter() - start:.0f} s: {OUT.relative_to(ROOT)}/ (comparison.png, "
          f"one folder per workflow; each PNG embeds its prompt and workflow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
