"""NegGuide's test-only custom node pack: the nodes of harness/test_nodes.py, for tests only.

harness/server.py links this folder into a test server's custom_nodes/ as ``negguide_test_nodes``
beside the pack itself when a test asks for the test nodes; users never get it (harness/ is left
out of what ships, .comfyignore) and the pack never imports it. ComfyUI loads custom node folders
in no fixed order, so this pack imports the repository as ``negguide`` itself when ComfyUI has
not done so yet (the same module name ComfyUI gives the pack's folder).
"""

import importlib.util
import sys
from pathlib import Path

PACK_MODULE = "negguide"


def _import_negguide():
    if PACK_MODULE not in sys.modules:
        root = Path(__file__).resolve().parents[2]
        spec = importlib.util.spec_from_file_location(
            PACK_MODULE, root / "__init__.py", submodule_search_locations=[str(root)])
        sys.modules[PACK_MODULE] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[PACK_MODULE]


async def comfy_entrypoint():
    _import_negguide()
    from negguide.harness.test_nodes import NegGuideTestExtension

    return NegGuideTestExtension()
