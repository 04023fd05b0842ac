"""The one place scripts/ import the repository as the package ``negguide``.

``python scripts/X.py`` puts scripts/ (not the repository root) on sys.path, so this module is
imported as ``_pack``. The repository root must never go on sys.path: its ``nodes/`` package
would shadow ComfyUI's ``nodes.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK = "negguide"


def load_pack():
    """Import the repository as ``negguide`` (idempotent) without booting ComfyUI."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    sys.modules[PACK] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def boot():
    """Load the pack and boot ComfyUI in library mode on the CPU, progress bars off."""
    load_pack()
    from negguide.harness import host

    host.boot_library_mode()
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
