"""The pack's V3 nodes: thin wrappers that validate inputs, clone the model and attach hooks."""

import os

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .blip2 import NegGuideBLIP2Caption, NegGuideBLIP2Loader
from .dng import NegGuideDNG, NegGuideDNGGuider, NegGuideDNGPlot
from .dns import NegGuideDNS, NegGuideDNSGuider
from .negtome import NegGuideNegToMe
from .shapes_world import SHAPES_WORLD_NODES
from .vsf import NegGuideVSF, NegGuideVSFAttentionMap

TEST_NODES_ENV = "NEGGUIDE_TEST_NODES"
"""Set to 1 to also register the test-only nodes of ``harness/`` (never for users)."""


class NegGuideExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        node_list: list[type[io.ComfyNode]] = [
            NegGuideVSF,
            NegGuideVSFAttentionMap,
            NegGuideNegToMe,
            NegGuideDNG,
            NegGuideDNGGuider,
            NegGuideDNGPlot,
            NegGuideDNS,
            NegGuideDNSGuider,
            NegGuideBLIP2Loader,
            NegGuideBLIP2Caption,
            *SHAPES_WORLD_NODES,
        ]
        if os.environ.get(TEST_NODES_ENV) == "1":
            from ..harness.test_nodes import TEST_NODES

            node_list += TEST_NODES
        return node_list
