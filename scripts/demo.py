"""`make demo`: run NegGuide's nodes through a real ComfyUI server and write the images.

Interim main job: until the trained shapes-world models land (issue 7), the graphs run on the
tiny random-weight zoo models (harness/zoo.py) through the test-only loader node, so the
pictures show that every step of the pipeline runs on each architecture, not image quality.
Each architecture is sampled without and with NegGuideVSF (same seed); the PNGs (with the API
prompt embedded by SaveImage, as ComfyUI does) and a side-by-side sheet go to out/demo/.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "demo"
ARCHITECTURES = ("sd15", "sd3", "flux")
POSITIVE = "a red circle on a blue background"
NEGATIVE = "a red circle"


def load_pack():
    spec = importlib.util.spec_from_file_location("negguide", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    sys.modules["negguide"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def graph(architecture: str, with_vsf: bool) -> dict:
    nodes = {
        "loader": {"class_type": "NegGuideTestZooLoader", "inputs": {"architecture": architecture, "seed": 0}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": POSITIVE}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
        "latent": {"class_type": "EmptyLatentImage" if architecture == "sd15" else "EmptySD3LatentImage",
                   "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["vsf", 0] if with_vsf else ["loader", 0], "seed": 7, "steps": 4, "cfg": 1.0,
            "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            "positive": ["positive", 0], "negative": ["negative", 0], "latent_image": ["latent", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["loader", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {
            "images": ["decode", 0], "filename_prefix": f"negguide_demo_{architecture}_{'vsf' if with_vsf else 'plain'}"}},
    }
    if with_vsf:
        nodes["vsf"] = {"class_type": "NegGuideVSF", "inputs": {
            "model": ["loader", 0], "clip": ["loader", 1], "negative": NEGATIVE, "scale": 3.0, "bias": 0.1,
            "start_percent": 0.0, "end_percent": 1.0}}
    return nodes


def comparison_sheet(rows: list[tuple[str, Path, Path]], path: Path) -> None:
    from PIL import Image, ImageDraw

    tiles = [(label, Image.open(a).convert("RGB"), Image.open(b).convert("RGB")) for label, a, b in rows]
    size, label_w, pad = 128, 80, 4
    sheet = Image.new("RGB", (label_w + 2 * (size + pad), 20 + len(tiles) * (size + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((label_w, 4), "no negative", fill="black")
    draw.text((label_w + size + pad, 4), f"VSF: '{NEGATIVE}'", fill="black")
    for i, (label, plain, vsf) in enumerate(tiles):
        y = 20 + i * (size + pad)
        draw.text((4, y + size // 2), label, fill="black")
        sheet.paste(plain.resize((size, size)), (label_w, y))
        sheet.paste(vsf.resize((size, size)), (label_w + size + pad, y))
    sheet.save(path)


def main() -> int:
    load_pack()
    from negguide.harness.server import ComfyServer

    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.time()
    print("[demo] starting ComfyUI with the pack ...", flush=True)
    with ComfyServer(test_nodes=True) as server:
        for architecture in ARCHITECTURES:
            images = []
            for with_vsf in (False, True):
                name = f"{architecture} {'+ VSF' if with_vsf else 'plain'}"
                print(f"[demo] {name} ...", flush=True)
                history = server.run(graph(architecture, with_vsf), timeout=300)
                (image,) = server.output_images(history)
                images.append(Path(shutil.copy(image, OUT / image.name)))
            rows.append((architecture, *images))
        if server.import_errors():
            print("[demo] the pack reported import errors:\n" + "\n".join(server.import_errors()), file=sys.stderr)
            return 1
    comparison_sheet(rows, OUT / "comparison.png")
    print(f"[demo] done in {time.time() - started:.0f} s: images and comparison.png in {OUT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
