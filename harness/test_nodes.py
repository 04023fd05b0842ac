"""Test-only V3 nodes, registered by nodes/__init__.py only when NEGGUIDE_TEST_NODES=1 (the
server tests set it; users never do). They expose the harness zoo to graphs run over HTTP."""

from __future__ import annotations

from comfy_api.latest import io

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


TEST_NODES: list[type[io.ComfyNode]] = [NegGuideTestZooLoader]
