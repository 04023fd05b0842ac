"""The pack's V3 nodes: thin wrappers that validate inputs, clone the model and attach hooks."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .blip2 import NegGuideBLIP2Caption, NegGuideBLIP2Loader
from .dng import NegGuideDNG, NegGuideDNGGuider, NegGuideDNGPlot
from .dns import NegGuideDNS, NegGuideDNSGuider
from .negtome import NegGuideNegToMe
from .shapes_world import SHAPES_WORLD_NODES
from .vsf import NegGuideVSF, NegGuideVSFAttentionMap


class NegGuideExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
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
