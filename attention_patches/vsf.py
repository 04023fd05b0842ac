"""Value Sign Flip (VSF) attention: negative prompts inside attention, in one pass.

Paper: "VSF: Simple, Efficient, and Effective Negative Guidance in Few-Step Image Generation
Models By Value Sign Flip" (ICLR 2026). Notation: P positive text tokens, N negative text tokens
(real tokens only, no padding), I image tokens, alpha the flip scale, beta the bias.

Cross-attention (SD1.x/SDXL attn2, Wan cross-attention), the paper's single-softmax form:

    Z = softmax(Q [K_P ; K_N]^T / sqrt(d) + b) [V_P ; -alpha V_N],   b = 0 on P, -beta on N

which equals the paper's weighted form Z_W = W Z+ - alpha (1 - W) Z- exactly, with
W = sum A+ / (sum A+ + sum A-), A+ = exp(Q K_P^T / sqrt d), A- = exp(Q K_N^T / sqrt d - beta).

Joint attention (MMDiT / Flux / Qwen-Image): the negative travels as extra text tokens N beside
P through every block; each joint attention adds a flipped copy Nf (K_Nf = K_N,
V_Nf = -alpha V_N) that only image queries see, with bias -beta. Visibility:

    image queries: I, P, Nf       P queries: I, P       N queries: I, N

Queries are split by group so every group runs the model's own fused attention over the
unchanged key set with a broadcast column bias ([B, 1, 1, L_k]): no dense (L x L) mask and no
extra keys. Because Nf shares its keys with N, "image sees Nf, not N" is simply "image sees the
N columns with flipped values"; the N queries still read the unflipped values.

Every function here takes the attention implementation as an argument (ComfyUI's optimized
attention, or a chained override) and calls it as ``attention(q, k, v, mask)``; ``seq_dim`` is
the sequence axis of q/k/v (1 for [B, L, H*D], 2 for [B, H, L, D]). A mask the model passes
itself (its text padding, a Redux attention bias) is kept: it is added to VSF's biases, row by row
for the queries of each group (:func:`additive_mask`, :func:`mask_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Ranges = tuple[tuple[int, int], ...]
"""Half-open sequence ranges. N may take several: HiDream appends it to each of its text parts."""


class OneNegativeRange:
    """Base of the layouts whose negative N is one range (their ``negative`` field or property):
    N's columns as Ranges (what the hooks pass to the VSF functions)."""

    @property
    def negative_columns(self) -> Ranges:
        return (self.negative,)


@dataclass(frozen=True)
class JointLayout(OneNegativeRange):
    """Where the token groups sit in a joint sequence (half-open index ranges)."""

    positive: tuple[int, int]
    negative: tuple[int, int]
    image: tuple[int, int]

    @classmethod
    def text_first(cls, positive_len: int, negative_len: int, image_len: int) -> "JointLayout":
        """[P ; N ; I]: SD3 MMDiT and Flux put the text stream before the image tokens."""
        p_end = positive_len
        n_end = p_end + negative_len
        return cls((0, p_end), (p_end, n_end), (n_end, n_end + image_len))

    @property
    def length(self) -> int:
        return max(self.positive[1], self.negative[1], self.image[1])

    def query_groups(self) -> list["QueryGroup"]:
        """The paper's joint visibility as query groups for :func:`vsf_grouped_attention`: image
        queries see I, P and Nf; P queries see I and P; N queries see I and N. On inactive rows
        image and P queries do not see N at all (plain attention over I and P); N queries are
        unchanged there, and nothing reads them."""
        return [
            QueryGroup((self.image,), flipped=True),
            QueryGroup((self.positive,), hidden=(self.negative,)),
            QueryGroup((self.negative,), hidden=(self.positive,)),
        ]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A mask as ComfyUI's attention functions take it ([Lq, Lk], [B, Lq, Lk] or [B, H, Lq, Lk];
    bool: True = attend, else an additive bias) as an additive bias [B|1, H|1, Lq|1, Lk] of
    ``dtype`` (False -> -inf), ComfyUI's own reading of the same shapes."""
    while mask.ndim < 4:
        mask = mask.unsqueeze(0 if mask.ndim == 2 else 1)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def mask_rows(mask: torch.Tensor | None, queries: Ranges) -> torch.Tensor | None:
    """The rows of an :func:`additive_mask` for the queries at ``queries`` (gathered in that
    order); a mask with one row (the same for every query) is returned as it is."""
    if mask is None or mask.shape[-2] == 1:
        return mask
    parts = [mask[..., lo:hi, :] for lo, hi in queries]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)


def _with_mask(bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return bias if mask is None else (bias + mask).to(bias.dtype)


def column_bias(
    length: int,
    columns: Ranges,
    value: float,
    rows_active: torch.Tensor,
    inactive_value: float,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """An additive attention bias of shape [B, 1, 1, length], zero except on the ``columns``
    ranges: ``value`` for batch rows where ``rows_active`` is True, ``inactive_value`` elsewhere."""
    per_row = torch.where(
        rows_active.to(device),
        torch.tensor(value, dtype=dtype, device=device),
        torch.tensor(inactive_value, dtype=dtype, device=device),
    )
    bias = torch.zeros(rows_active.shape[0], 1, 1, length, dtype=dtype, device=device)
    for lo, hi in columns:
        bias[..., lo:hi] = per_row.view(-1, 1, 1, 1)
    return bias


def flip_values(
    v: torch.Tensor, columns: Ranges, alpha: float, rows_active: torch.Tensor, seq_dim: int
) -> torch.Tensor:
    """A copy of ``v`` whose ``columns`` ranges (sequence positions) are multiplied by -alpha on
    the active batch rows: V_Nf = -alpha V_N."""
    flipped = v.clone()
    shape = [1] * v.ndim
    shape[0] = v.shape[0]
    scale = torch.where(rows_active.to(v.device), -alpha, 1.0).to(v.dtype).view(shape)
    for lo, hi in columns:
        flipped.narrow(seq_dim, lo, hi - lo).mul_(scale)
    return flipped


def vsf_cross_attention(
    attention: AttentionFn,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    negative: Ranges,
    alpha: float,
    beta: float,
    rows_active: torch.Tensor,
    seq_dim: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-attention VSF: keys/values are [P ; N] (N at the ``negative`` ranges), one softmax;
    ``mask``: the model's own, as an :func:`additive_mask`.

    Inactive rows (e.g. the unconditional branch of CFG) mask N out entirely, which is exactly
    plain attention over P."""
    bias = column_bias(k.shape[seq_dim], negative, -beta, rows_active, float("-inf"), q.dtype, q.device)
    return attention(q, k, flip_values(v, negative, alpha, rows_active, seq_dim), _with_mask(bias, mask))


@dataclass(frozen=True)
class QueryGroup:
    """Queries that share one visibility (the joint layout's image, P and N groups; a family
    adapter's groups, e.g. with padding): ``queries`` and ``hidden`` are half-open sequence ranges; ``hidden`` columns get
    bias -inf; a ``flipped`` group reads the negative's columns as Nf (-alpha V_N, bias -beta)."""

    queries: tuple[tuple[int, int], ...]
    hidden: tuple[tuple[int, int], ...] = ()
    flipped: bool = False


def vsf_grouped_attention(
    attention: AttentionFn,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    groups: list[QueryGroup],
    negative: Ranges,
    alpha: float,
    beta: float,
    rows_active: torch.Tensor,
    seq_dim: int,
    output_seq_dim: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """VSF over query groups of any layout: one fused call per group over the unchanged key set
    with a broadcast column bias [B, 1, 1, L_k] (plus, with the model's own ``mask``, an
    :func:`additive_mask`, that mask's rows of the group's queries). A group's query ranges are
    gathered (no copy for one range) and its outputs put back in place. The groups must cover
    every query once. On inactive rows a flipped group sees no N at all (plain attention over the
    rest)."""
    length = k.shape[seq_dim]
    dtype, device = q.dtype, q.device
    neg_inf = float("-inf")
    pieces = []
    for group in groups:
        bias = torch.zeros(q.shape[0], 1, 1, length, dtype=dtype, device=device)
        for lo, hi in group.hidden:
            bias[..., lo:hi] = neg_inf
        values = v
        if group.flipped:
            bias = bias + column_bias(length, negative, -beta, rows_active, neg_inf, dtype, device)
            values = flip_values(v, negative, alpha, rows_active, seq_dim)
        parts = [q.narrow(seq_dim, lo, hi - lo) for lo, hi in group.queries]
        bias = _with_mask(bias, mask_rows(mask, group.queries))
        out = attention(parts[0] if len(parts) == 1 else torch.cat(parts, dim=seq_dim), k, values, bias)
        offset = 0
        for lo, hi in group.queries:
            pieces.append((lo, out.narrow(output_seq_dim, offset, hi - lo)))
            offset += hi - lo
    pieces.sort(key=lambda piece: piece[0])
    covered = sum(piece.shape[output_seq_dim] for _, piece in pieces)
    if covered != q.shape[seq_dim]:
        raise ValueError(f"VSF query groups cover {covered} of {q.shape[seq_dim]} queries")
    return torch.cat([piece for _, piece in pieces], dim=output_seq_dim)


def negative_attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    negative: Ranges,
    beta: float,
    heads: int,
    seq_dim: int,
    hidden: Ranges = (),
    mask: torch.Tensor | None = None,
    query_chunk: int = 1024,
) -> torch.Tensor:
    """Where the negative acts: the share of each query's attention that falls on the (flipped)
    negative columns (the ``negative`` ranges), with their -beta bias, averaged over heads: [B, L_q].
    The softmax runs over the keys these queries see: not the ``hidden`` columns (a pooling
    companion), and under the model's own ``mask`` (an :func:`additive_mask`, rows of these queries).

    This is 1 - W of the paper's weighted form (the weight of Z-), the quantity its attention-map
    figure shows per image token. Computed explicitly in query chunks (peak extra memory
    B x H x query_chunk x L_k logits), so it costs about one more QK^T: for inspection only."""
    if seq_dim == 1:  # [B, L, H*D] or [B, L, H, D] -> [B, H, L, D]
        q, k = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k))
    scale = q.shape[-1] ** -0.5
    on_negative = torch.zeros(k.shape[2], dtype=torch.bool, device=q.device)
    for lo, hi in negative:
        on_negative[lo:hi] = True
    bias = torch.zeros(k.shape[2], dtype=q.dtype, device=q.device)
    bias[on_negative] = -beta
    for lo, hi in hidden:
        bias[lo:hi] = float("-inf")
    masses = []
    for start in range(0, q.shape[2], query_chunk):
        logits = q[:, :, start:start + query_chunk] @ k.transpose(-1, -2) * scale + bias
        if mask is not None:
            logits = logits + (mask if mask.shape[-2] == 1 else mask[..., start:start + query_chunk, :])
        share = logits.softmax(-1)[..., on_negative].sum(-1)
        masses.append(share.mean(1))
    return torch.cat(masses, dim=1)


def mass_on_latent_grid(masses: dict[int, list[torch.Tensor]], latent_shape: tuple[int, ...],
                        patch_size: int) -> torch.Tensor:
    """Average per-token negative-attention masses of one model call into one map over the
    latent grid [B, H, W]. ``masses`` maps a token count to the [B, L] masses of every attention
    call with that many image tokens: one count for DiTs (patch grid), several for UNets (each
    resolution level, 1/2^k of the latent); video frames are averaged."""
    height, width = latent_shape[-2:]
    frames = math.prod(latent_shape[2:-2])
    maps = []
    for tokens, calls in masses.items():
        factor = patch_size
        while frames * math.ceil(height / factor) * math.ceil(width / factor) > tokens:
            factor *= 2
        grid = (math.ceil(height / factor), math.ceil(width / factor))
        if frames * grid[0] * grid[1] != tokens:
            raise ValueError(f"{tokens} image tokens do not tile a {height}x{width} latent.")
        mean = torch.stack(calls).mean(0).reshape(-1, frames, *grid).mean(1, keepdim=True)
        maps.append(torch.nn.functional.interpolate(mean, size=(height, width), mode="bilinear")[:, 0])
    return torch.stack(maps).mean(0)
