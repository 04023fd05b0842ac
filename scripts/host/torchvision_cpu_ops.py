"""Host-only import hook: lets PyPI's CUDA-linked torchvision import on a CPU-only torch.

torchvision's Python side registers fake (meta) kernels for ``torchvision::nms`` and
``torchvision::qnms`` at import time. With a CPU-only torch its native library cannot load, so
those op schemas do not exist and ``import torchvision`` fails with
"operator torchvision::nms does not exist". This hook defines the two schemas right before
torchvision is first imported. Installed into the development venv by scripts/setup_host.sh
(through a .pth file); never part of the node pack.
"""

import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_libraries = []  # a torch.library.Library deregisters its ops when garbage-collected


def _define_missing_schemas() -> None:
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        try:
            getattr(torch.ops.torchvision, name)
        except (AttributeError, RuntimeError):
            library.define(schema)
    _libraries.append(library)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            _define_missing_schemas()
        return None  # the regular finders import torchvision itself


def install() -> None:
    if "torchvision" not in sys.modules:
        sys.meta_path.insert(0, _BeforeTorchvision())
