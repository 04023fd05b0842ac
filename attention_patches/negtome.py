"""Negative Token Merging (NegToMe): push image tokens away from their best match in a reference.

Paper: "Negative Token Merging: Image-based Adversarial Feature Guidance" (arXiv 2412.01339),
Sec. 3. Notation: source tokens x_s [N, D] (one generated image), reference tokens x_r [M, D]
(another image of the batch, or a re-noised reference image), alpha the merge strength, tau the
similarity threshold. Applied to the output of self-attention, image tokens only:

    S = normalize(x_s) normalize(x_r)^T                    (cosine similarity, [N, M])
    j*(i) = argmax_j S[i, j]                               (each SOURCE token's best REFERENCE token)
    H(i)  = 1[max_j S[i, j] > tau]                         (strict threshold)
    x_s[i] <- x_s[i] + alpha * (x_s[i] - x_r[j*(i)])  where H(i)
           =  (1 + alpha) x_s[i] - alpha x_r[j*(i)]        (the paper's O_merge)

alpha > 0 pushes away from the reference; alpha < 0 pulls toward it; alpha = 0 is the identity.
The published reference code reduces the similarity over the other axis (matches reference
tokens to source tokens); this module follows the paper (source -> reference) as written above.

Memory. S is never materialised whole: source tokens are processed in chunks of ``c`` tokens,
with ``c`` chosen so that P * c * max(M, D) <= ``max_similarities`` elements
(default 2**24 = 16.8 M: 64 MiB in fp32, 32 MiB in fp16/bf16). With R reference rows (R = 1 in
both grouping modes below: the reference is shared, never expanded), the peak extra memory of
one call, in elements of the input dtype, is

    B * N * D                 the output (a new tensor; sources are read as views, not copied)
  + R * M * D                 the normalised reference tokens
  + max_similarities          one chunk's similarity matrix (plus P * c maxima and indices)
  + ~4 * P * c * D            the chunk's normalised sources, gathered matches, temporaries
                              (<= 4 * max_similarities by the choice of c)

Example: batch 8 x 4096 tokens, width 3072, bf16, diversity mode (P = 7 sources against
image 0): the unchunked S would be 7 x 4096 x 4096 = 117 M elements (235 MB); chunked, c = 585
and S <= 16.8 M elements (32 MiB); the chunk temporaries are 4 x 7 x 585 x 3072 = 50 M elements
(100 MB), the reference 25 MB, the output 201 MB (the same size as the attention output).

Grouping (:func:`diversity_merge`): rows of one batch are split into groups (one group per
cond/uncond chunk of a ComfyUI model call, so cond and uncond never mix). Within a group, image 0
is the reference for every other image (the reference code's choice: one N x N similarity per
image, the published cost and results); image 0 itself is left unchanged. A group of one image
is left unchanged. :func:`reference_merge` instead uses one reference row per group (the
re-noised reference image) for every other row of the group.
"""

from __future__ import annotations

from typing import Sequence

import torch

DEFAULT_MAX_SIMILARITIES = 1 << 24


def chunk_size(pairs: int, reference_tokens: int, max_similarities: int = DEFAULT_MAX_SIMILARITIES) -> int:
    """Source tokens per chunk so that ``pairs x chunk x reference_tokens <= max_similarities``
    (at least one token)."""
    return max(1, max_similarities // max(1, pairs * reference_tokens))


def merge_tokens(
    source: torch.Tensor,
    reference: torch.Tensor,
    alpha: float,
    threshold: float,
    reference_mask: torch.Tensor | None = None,
    max_similarities: int = DEFAULT_MAX_SIMILARITIES,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """NegToMe of ``source`` [P, N, D] against ``reference`` [P, M, D] (pair p: source p against
    reference p) or [1, M, D] (one reference for every source). Writes into ``out`` [P, N, D]
    (a new tensor when None; it must not overlap ``reference``) and returns it.

    ``reference_mask`` [M] or [P, M] (bool): reference tokens that may be matched; the others
    never are (a source token whose only candidates are masked out is left unchanged).
    Similarities are computed in chunks of source tokens (see the module docstring for the bound).
    """
    if (source.ndim != 3 or reference.ndim != 3 or reference.shape[0] not in (1, source.shape[0])
            or source.shape[2] != reference.shape[2]):
        raise ValueError(f"merge_tokens: source {tuple(source.shape)} and reference {tuple(reference.shape)} "
                         "must be [P, N, D] and [P or 1, M, D]")
    if out is None:
        out = source.clone()
    elif out.data_ptr() != source.data_ptr():
        out.copy_(source)
    if alpha == 0 or source.shape[1] == 0 or reference.shape[1] == 0:
        return out
    pairs, n_source, width = source.shape
    shared = reference.shape[0] == 1 and pairs > 1
    ref_unit = torch.nn.functional.normalize(reference, dim=-1)
    excluded = None
    if reference_mask is not None:
        reference_mask = reference_mask.to(device=source.device, dtype=torch.bool)
        excluded = (~reference_mask).view(-1 if reference_mask.ndim == 2 and reference_mask.shape[0] > 1 else 1, 1, reference.shape[1])
    step = chunk_size(pairs, max(reference.shape[1], width), max_similarities)
    for start in range(0, n_source, step):
        x = source[:, start:start + step]
        x_unit = torch.nn.functional.normalize(x, dim=-1)
        if shared:  # one [P*c, D] x [D, M] matmul, the reference never expanded
            sim = (x_unit.reshape(-1, width) @ ref_unit[0].T).view(pairs, x.shape[1], -1)
        else:
            sim = torch.bmm(x_unit, ref_unit.transpose(1, 2))  # [P, c, M]
        del x_unit
        if excluded is not None:
            sim.masked_fill_(excluded, float("-inf"))
        best, index = sim.max(dim=-1)  # [P, c]
        del sim
        matched = (best > threshold).unsqueeze(-1)
        if shared:
            target = reference[0][index]  # [P, c, D]
        else:
            target = torch.gather(reference, 1, index.unsqueeze(-1).expand(-1, -1, width))
        out[:, start:start + step] = torch.where(matched, x + alpha * (x - target), x)
    return out


def diversity_merge(
    x: torch.Tensor,
    groups: Sequence[Sequence[int]],
    alpha: float,
    threshold: float,
    max_similarities: int = DEFAULT_MAX_SIMILARITIES,
) -> torch.Tensor:
    """Batch diversity: within each group of rows of ``x`` [B, N, D], every image but the first
    is merged away from the group's first image (its reference); first images and groups of
    one are unchanged. Returns a new tensor."""
    out = x.clone()
    if alpha == 0:
        return out
    for group in groups:
        rows = list(group)
        if len(rows) < 2:
            continue
        _merge_rows(x, out, rows[1:], rows[0], alpha, threshold, None, max_similarities)
    return out


def reference_merge(
    x: torch.Tensor,
    groups: Sequence[Sequence[int]],
    reference_rows: Sequence[int],
    alpha: float,
    threshold: float,
    reference_mask: torch.Tensor | None = None,
    max_similarities: int = DEFAULT_MAX_SIMILARITIES,
) -> torch.Tensor:
    """Reference image: within each group of rows of ``x`` [B, N, D], every row except the
    group's reference row (``reference_rows[g]``, which is left unchanged) is merged away from
    that reference row. ``reference_mask`` [N] (bool) limits which reference tokens count."""
    out = x.clone()
    if alpha == 0:
        return out
    for group, ref_row in zip(groups, reference_rows):
        rows = [r for r in group if r != ref_row]
        if not rows:
            continue
        _merge_rows(x, out, rows, ref_row, alpha, threshold, reference_mask, max_similarities)
    return out


def _merge_rows(x, out, rows, ref_row, alpha, threshold, reference_mask, max_similarities):
    """Merge rows ``rows`` of ``x`` against row ``ref_row`` into ``out``; runs of consecutive
    rows are merged as views (no copy of the sources)."""
    reference = x[ref_row:ref_row + 1]
    runs, begin = [], rows[0]
    for prev, row in zip(rows, rows[1:] + [None]):
        if row != prev + 1:
            runs.append((begin, prev + 1))
            begin = row
    for lo, hi in runs:
        merge_tokens(x[lo:hi], reference, alpha, threshold, reference_mask, max_similarities, out=out[lo:hi])
