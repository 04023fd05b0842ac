"""Test-only V3 nodes, registered by the separate test-only pack harness/test_pack/ (linked into
a test server by harness/server.py; never shipped, never imported by the pack). They expose the
harness zoo to graphs run over HTTP."""

from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from . import zoo

CATEGORY = "_for_testing/negguide"


class NegGuideTestZooLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegGuideTestZooLoader",
            display_name="NegGuide test: zoo model loader",
            category=CATEGORY,
            description="A tiny random-weight model of a real architecture (harness/zoo.py), "
                        "with its text encoder and VAE. For NegGuide's tests only.",
            inputs=[
                io.Combo.Input("architecture", options=list(zoo.ARCHITECTURES), default=zoo.ARCHITECTURES[0],
                               tooltip="Which architecture of the zoo to build."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the random weights (same seed, same weights)."),
            ],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, architecture: str, seed: int) -> io.NodeOutput:
        entry = zoo.build(architecture, seed)
        return io.NodeOutput(entry.model, entry.clip, entry.vae)


class NegGuideTestExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [NegGuideTestZooLoader]
