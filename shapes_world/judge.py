"""The shapes-world judge: a small CNN that says which concepts an image contains.

Outputs one presence logit per :data:`world.CONCEPTS` and one logit per :data:`world.SCENES`.
It is trained on generated scenes (clean and round-tripped through the shapes-world VAE, with
blur and noise) and is the ground-truth oracle of NegBench. Plain torch, no ComfyUI.
"""

from __future__ import annotations

import torch
from torch import nn

from . import models, world


class Judge(nn.Module):
    """Input [B, 3, 64, 64] in [0, 1], average-pooled to 32x32 (the concepts are 14-22 px wide,
    so nothing is lost), then three conv blocks (32 -> 16 -> 8 -> 4) and a linear head."""

    def __init__(self, width: int = 24):
        super().__init__()

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(nn.AvgPool2d(2), block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width * 16, len(world.CONCEPTS) + len(world.SCENES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, 64, 64] in [0, 1] -> logits [B, concepts + scenes]."""
        return self.head(self.features(images * 2 - 1).flatten(1))


def load(path=None) -> Judge:
    """The trained judge (the bundled file unless ``path``), in eval mode."""
    from safetensors.torch import load_file

    judge = Judge()
    judge.load_state_dict(load_file(str(path or models.WEIGHTS_DIR / models.JUDGE_FILE)))
    return judge.eval()


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(concept presence logits [B, C], scene logits [B, S])."""
    n = len(world.CONCEPTS)
    return logits[:, :n], logits[:, n:]


def _judge_input(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, 3] -> the judge's [B, 3, 64, 64] (area-resized when needed)."""
    x = images.permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (world.SIZE, world.SIZE):
        x = nn.functional.interpolate(x, size=(world.SIZE, world.SIZE), mode="area")
    return x


@torch.no_grad()
def judge_images(judge: Judge, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Presence probabilities [B, C] and scene index [B] of images [B, H, W, 3] in [0, 1]
    (ComfyUI's IMAGE layout; resized to 64x64 when needed)."""
    judge.eval()
    x = _judge_input(images)
    presence, scenes = [], []
    for chunk in x.split(batch):
        concept_logits, scene_logits = split_logits(judge(chunk))
        presence.append(torch.sigmoid(concept_logits))
        scenes.append(scene_logits.argmax(-1))
    return torch.cat(presence), torch.cat(scenes)


@torch.no_grad()
def image_features(judge: Judge, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The judge's features [B, F] (its last conv block, flattened: what the presence head reads)
    of images [B, H, W, 3] in [0, 1]: NegBench's space for measuring diversity, in which two
    images differ when their content does, not when their pixels are noisy."""
    judge.eval()
    x = _judge_input(images)
    return torch.cat([judge.features(chunk * 2 - 1).flatten(1) for chunk in x.split(batch)])


def concept_index(name: str) -> int:
    if name not in world.CONCEPTS:
        raise ValueError(f"unknown concept {name!r}; the shapes world has {', '.join(world.CONCEPTS)}")
    return world.CONCEPTS.index(name)


def describe(presence: torch.Tensor, scene: int, threshold: float = 0.5) -> str:
    """A shapes-world caption of what the judge sees: the present concepts (``presence`` [C]) in
    scene ``scene``, e.g. "a sun and a red square on a beach". This is the stand-in for BLIP-2
    inside the shapes world (auto-DNP's captioner)."""
    present = [c for c, p in zip(world.CONCEPTS, presence.tolist()) if p > threshold]
    return world.caption_for(world.SCENES[int(scene)], present)
