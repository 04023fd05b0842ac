"""Importing the pack or its math must not import ComfyUI, touch the network or mutate globals."""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_pack_and_math_import_without_comfyui():
    # A fresh interpreter: this test process may already hold ComfyUI modules from other tiers.
    code = textwrap.dedent(
        f"""
        import importlib, importlib.util, pkgutil, socket, sys
        def no_network(*args, **kwargs):
            raise AssertionError("network access during import")
        socket.socket.connect = no_network
        root = {str(REPO_ROOT)!r}
        spec = importlib.util.spec_from_file_location(
            "negguide", root + "/__init__.py", submodule_search_locations=[root])
        pack = importlib.util.module_from_spec(spec)
        sys.modules["negguide"] = pack
        spec.loader.exec_module(pack)
        before = set(sys.modules)
        for package in ("guidance", "attention_patches"):
            mod = importlib.import_module("negguide." + package)
            for info in pkgutil.iter_modules(mod.__path__):
                importlib.import_module(f"negguide.{{package}}.{{info.name}}")
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("comfy", "comfy_api", "nodes", "folder_paths"))
        assert not leaked, leaked
        assert pack.WEB_DIRECTORY == "./web"
        assert callable(pack.comfy_entrypoint)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
