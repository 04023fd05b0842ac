"""The one place bench/ boots the pack and the ComfyUI host.

``python bench/run.py`` puts bench/ (not the repository root) on sys.path, so this module is
imported as ``_pack``. It imports the repository as the package ``negguide`` (the repository root
must never go on sys.path: its ``nodes/`` package would shadow ComfyUI's ``nodes.py``), boots
ComfyUI in library mode, and takes bench/ back off sys.path so that ``bench/models.py`` can never
shadow a top-level ``models`` module. Everything else in bench/ is then imported as
``negguide.bench.*``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PACK = "negguide"


def load_pack():
    """Import the repository as ``negguide`` (idempotent) without booting ComfyUI."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(
        PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK]
        raise
    return module


def boot(device: str = "cpu"):
    """Load the pack, boot ComfyUI (``device`` "cpu" forces ``--cpu``; "cuda" lets ComfyUI pick
    the GPU), silence ComfyUI's progress bars, and return the ``negguide`` module. The first call
    in a process decides the device."""
    pack = load_pack()
    sys.path[:] = [p for p in sys.path if _resolved(p) != BENCH_DIR]
    from negguide.harness import host

    host.boot_library_mode(cpu=(device == "cpu"))
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False  # tqdm per step would be timed along with the model
    return pack


def _resolved(entry: str) -> Path | None:
    try:
        return Path(entry or ".").resolve()
    except OSError:
        return None
