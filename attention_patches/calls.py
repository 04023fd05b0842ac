"""What every ComfyUI attention call shares, whatever the family: the sequence axis of q/k/v and
the cond/uncond chunks of the batch. Where the tokens sit is the family adapters' job
(attention_patches/families/)."""

from __future__ import annotations

from typing import Sequence

import torch


def sequence_dims(skip_reshape: bool, skip_output_reshape: bool) -> tuple[int, int]:
    """(input, output) sequence axes of a ComfyUI attention call: q/k/v are [B, H, L, D] with
    skip_reshape and [B, L, H*D] without; the output is [B, H, L, D] only with
    skip_output_reshape."""
    return (2 if skip_reshape else 1), (2 if skip_output_reshape else 1)


def chunk_groups(batch: int, cond_or_uncond: Sequence[int] | None) -> list[range]:
    """The rows of each cond/uncond chunk of a ComfyUI model call: ``cond_or_uncond`` (from
    transformer_options) has one entry per chunk (0 cond, 1 uncond), each chunk
    ``batch // len(cond_or_uncond)`` rows. Without it: one group."""
    chunks = len(cond_or_uncond) if cond_or_uncond else 1
    if batch % chunks:
        raise ValueError(f"batch {batch} does not split into {chunks} cond/uncond chunks")
    size = batch // chunks
    return [range(i * size, (i + 1) * size) for i in range(chunks)]


def cond_rows(batch: int, cond_or_uncond: Sequence[int] | None) -> torch.Tensor:
    """[batch] bool: True on the rows of the conditional (positive) chunks. Without
    ``cond_or_uncond`` every row is conditional."""
    rows = torch.ones(batch, dtype=torch.bool)
    for kind, group in zip(cond_or_uncond or [], chunk_groups(batch, cond_or_uncond)):
        rows[group.start:group.stop] = kind == 0
    return rows
