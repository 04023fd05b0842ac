"""Test tiers, by folder: unit/ (pure math, no ComfyUI), library/ (ComfyUI in-process),
server/ (a real ComfyUI main.py over HTTP).

The repository is imported as the package ``negguide``, the way ComfyUI imports a custom node
pack, and never put on sys.path itself: its ``nodes/`` package would shadow ComfyUI's nodes.py.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

if "negguide" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "negguide", REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    sys.modules["negguide"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["negguide"])

TIERS = ("unit", "library", "server")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(item.fspath).relative_to(REPO_ROOT / "tests").parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
