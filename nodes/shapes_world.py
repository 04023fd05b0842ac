"""Shapes-world nodes: the pack's embedded default models (shapes_world/) in a graph.

* ``NegGuideShapesWorldLoader``: MODEL, CLIP and VAE of one of the tiny trained shapes-world
  models (SD3 MMDiT, SD1.5 UNet, Flux-schnell-style DiT), from the weights bundled with the pack.
  The SD3 file is a plain diffusion-model file the stock UNETLoader also loads; the SD1.5 and Flux
  ones are too small for ComfyUI's model detection, so this node builds them.
* ``NegGuideShapesWorldCaption``: captions shapes-world images with the world's judge, the
  stand-in for BLIP-2 in the shapes-world auto-DNP workflow.

These models only know the shapes world (64x64 scenes of coloured shapes on a beach, at night, in
a meadow or in a room); they exist so every NegGuide workflow can run, and be measured, on any
machine in seconds.
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..shapes_world import judge as judge_module
from ..shapes_world import models, world

CATEGORY = "loaders/negguide"


class NegGuideShapesWorldLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideShapesWorldLoader",
            display_name="Shapes World Loader (NegGuide)",
            category=CATEGORY,
            description=(
                "Loads one of NegGuide's tiny trained shapes-world models with its text encoder and VAE (bundled "
                "with the pack, no download). They draw 64x64 scenes of coloured shapes (" + ", ".join(world.SCENES)
                + ") and run every NegGuide workflow on a CPU in seconds."
            ),
            inputs=[
                io.Combo.Input("family", options=list(models.FAMILIES), default="sd3",
                               tooltip="sd3: SD3 MMDiT (joint attention, flow, good in 4-8 steps). sd15: SD1.5 UNet "
                                       "(cross-attention, EPS, 20+ steps with cfg). flux: Flux-schnell-style DiT "
                                       "(double + single blocks, flow, 4 steps at cfg 1)."),
            ],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, family: str) -> io.NodeOutput:
        if family not in models.FAMILIES:
            raise ValueError(f"NegGuideShapesWorldLoader: family must be one of {', '.join(models.FAMILIES)}, not {family!r}.")
        return io.NodeOutput(*models.load(family))


class NegGuideShapesWorldCaption(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideShapesWorldCaption",
            display_name="Shapes World Caption (NegGuide)",
            category="conditioning/negguide",
            description=(
                "Captions shapes-world images with the world's concept judge (e.g. 'a sun and a red square on a "
                "beach'): the BLIP-2 stand-in for auto-DNP on the shapes-world models. For real models use "
                "NegGuideBLIP2Caption."
            ),
            is_output_node=True,
            inputs=[
                io.Image.Input("image", tooltip="Shapes-world images (any batch size): one caption each."),
                io.Float.Input("threshold", default=0.5, min=0.01, max=0.99, step=0.01,
                               tooltip="A concept is named when the judge's presence probability exceeds this."),
            ],
            outputs=[io.String.Output(display_name="caption", is_output_list=True,
                                      tooltip="One caption per image (a list: downstream nodes run once per caption).")],
        )

    @classmethod
    def execute(cls, image, threshold: float = 0.5) -> io.NodeOutput:
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
            raise ValueError("NegGuideShapesWorldCaption: expected an IMAGE [batch, height, width, channels] with 1, 3 "
                             f"or 4 channels, got {tuple(image.shape)}.")
        if image.shape[-1] == 4:  # RGBA: the judge sees RGB; drop alpha like core RGB-only nodes
            image = image[..., :3]
        elif image.shape[-1] == 1:  # grey
            image = image.expand(*image.shape[:-1], 3)
        presence, scenes = judge_module.judge_images(judge_module.load(), image)
        captions = [judge_module.describe(p, s, threshold) for p, s in zip(presence, scenes)]
        return io.NodeOutput(captions, ui=ui.PreviewText("\n".join(captions)))


SHAPES_WORLD_NODES: list[type[io.ComfyNode]] = [NegGuideShapesWorldLoader, NegGuideShapesWorldCaption]
