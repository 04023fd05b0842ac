"""Locate the ComfyUI host that scripts/setup_host.sh prepared, and boot it in this process.

Library mode follows shared/notes/host.md: the ComfyUI root goes on sys.path and its argument
parser sees ``--cpu --use-pytorch-cross-attention`` before ``comfy.cli_args`` or
``comfy.model_management`` are imported (otherwise ComfyUI probes CUDA).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_MODULE = "negguide"
"""The pack's folder name under custom_nodes/ (and its package name in tests and tools)."""
LIBRARY_ARGS = ("--cpu", "--use-pytorch-cross-attention", "--disable-all-custom-nodes")
DEFAULT_HOST = "0.33.0"
"""The primary test host; ``COMFYUI_HOST=0.3.75`` selects the oldest supported one."""


class HostNotReady(RuntimeError):
    pass


def host_name() -> str:
    """The host this process tests: $COMFYUI_HOST, else the one whose venv (``.venv-<host>``)
    runs this Python, else the primary host."""
    configured = os.environ.get("COMFYUI_HOST")
    if configured:
        return configured
    venv = Path(sys.prefix)
    if venv.parent == REPO_ROOT and venv.name.startswith(".venv-"):
        return venv.name.removeprefix(".venv-")
    return DEFAULT_HOST


def comfyui_root() -> Path:
    """The ComfyUI checkout in use: $COMFYUI_PATH, else the one scripts/setup_host.sh made for
    ``host_name()`` (recorded in .host/<host>/comfyui_path)."""
    configured = os.environ.get("COMFYUI_PATH")
    if configured:
        root = Path(configured)
    else:
        marker = REPO_ROOT / ".host" / host_name() / "comfyui_path"
        if not marker.is_file():
            raise HostNotReady(
                f"No ComfyUI {host_name()} host: run `make setup COMFYUI_HOST={host_name()}` "
                "(scripts/setup_host.sh) first.")
        root = Path(marker.read_text().strip())
    if not (root / "main.py").is_file() or not (root / "comfy").is_dir():
        raise HostNotReady(f"{root} is not a ComfyUI checkout (expected main.py and comfy/).")
    return root.resolve()


_booted = False


def boot_library_mode(cpu: bool = True) -> Path:
    """Make ``comfy``, ``nodes`` and ``comfy_api`` importable in this process, on CPU, with
    PyTorch attention. Idempotent; returns the ComfyUI root. ``cpu=False`` leaves out ``--cpu``
    so ComfyUI picks the accelerator (benchmarks on a GPU machine); the first call decides."""
    global _booted
    root = comfyui_root()
    if _booted:
        return root
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *(a for a in LIBRARY_ARGS if cpu or a != "--cpu")]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses the argv above)
        import comfy.model_management  # noqa: F401
        import nodes  # noqa: F401
    finally:
        sys.argv = saved_argv
    _booted = True
    return root
