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
(default 2**24 = 16.8 M: 64 MiB in fp32, 32 MiB in fp16/bf16). The merge runs in place
(:func:`merge_tokens_`; the ``in_place`` forms of the grouping functions), so with R reference
rows (R = 1 in both grouping modes below: the reference is shared, never expanded) the peak
extra memory of one call, in elements of the input dtype, is

    R * M * D                 the normalised reference tokens
  + max_similarities          one chunk's similarity matrix (plus P * c maxima, indices, norms)
  + ~2 * P * c * D            the chunk's gathered matches (reused for the difference) and, for a
                              strided view, a contiguous copy of the chunk for the matmul
                              (<= 2 * max_similarities by the choice of c)
  + B * N * D                 only for the copying forms (in_place=False)

Example: batch 8 x 4096 tokens, width 3072, bf16, diversity mode (P = 7 sources against
image 0): the unchunked S would be 7 x 4096 x 4096 = 117 M elements (235 MB); chunked, c = 585
and S <= 16.8 M elements (32 MiB); the chunk temporaries are 2 x 7 x 585 x 3072 = 25 M elements
(50 MB), the reference 25 MB: about 110 MB over the attention output, merged in place.

Cost. Besides the similarity matmul (2 * P * N * M * D FLOPs), a chunk makes about four passes
over its P * c * D tokens (norms, gather, difference, update) and none over unmatched memory:
the source side is never normalised (see :func:`merge_tokens_`).

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


def merge_tokens_(
    tokens: torch.Tensor,
    reference: torch.Tensor,
    alpha: float,
    threshold: float,
    reference_mask: torch.Tensor | None = None,
    max_similarities: int = DEFAULT_MAX_SIMILARITIES,
) -> torch.Tensor:
    """NegToMe, in place, of ``tokens`` [P, N, D] against ``reference`` [P, M, D] (pair p: tokens p
    against reference p) or [1, M, D] (one reference for every row); returns ``tokens``, which
    must not overlap ``reference``.

    ``reference_mask`` [M] or [P, M] (bool): reference tokens that may be matched; the others
    never are (a token whose only candidates are masked out is left unchanged).
    Similarities are computed in chunks of tokens (see the module docstring for the bound).
    The argmax needs only the reference normalised (a positive factor per source row does not
    change it), so the source side is divided by its norm only in the threshold test:
    max_j x_i . r_j / |r_j| > tau * |x_i|  <=>  max_j cos(x_i, r_j) > tau.
    """
    if (tokens.ndim != 3 or reference.ndim != 3 or reference.shape[0] not in (1, tokens.shape[0])
            or tokens.shape[2] != reference.shape[2]):
        raise ValueError(f"merge_tokens_: tokens {tuple(tokens.shape)} and reference {tuple(reference.shape)} "
                         "must be [P, N, D] and [P or 1, M, D]")
    if alpha == 0 or tokens.shape[1] == 0 or reference.shape[1] == 0:
        return tokens
    pairs, n_tokens, width = tokens.shape
    shared = reference.shape[0] == 1 and pairs > 1
    ref_unit = torch.nn.functional.normalize(reference, dim=-1)
    excluded = None
    if reference_mask is not None:
        reference_mask = reference_mask.to(device=tokens.device, dtype=torch.bool)
        excluded = (~reference_mask).view(-1 if reference_mask.ndim == 2 and reference_mask.shape[0] > 1 else 1, 1, reference.shape[1])
    norm_dtype = torch.promote_types(tokens.dtype, torch.float32)  # fp16/bf16 norms in fp32
    step = chunk_size(pairs, max(reference.shape[1], width), max_similarities)
    for start in range(0, n_tokens, step):
        x = tokens[:, start:start + step]  # a view: written in place below
        if shared:  # one [P*c, D] x [D, M] matmul, the reference never expanded
            sim = (x.reshape(-1, width) @ ref_unit[0].T).view(pairs, x.shape[1], -1)
        else:
            sim = torch.bmm(x, ref_unit.transpose(1, 2))  # [P, c, M]
        if excluded is not None:
            sim.masked_fill_(excluded, float("-inf"))
        best, index = sim.max(dim=-1)  # [P, c]
        del sim
        norm = torch.linalg.vector_norm(x, dim=-1, dtype=norm_dtype).clamp_min_(1e-12)
        unmatched = ~(best.to(norm_dtype) > threshold * norm).unsqueeze(-1)
        if shared:
            target = reference[0][index]  # [P, c, D]
        else:
            target = torch.gather(reference, 1, index.unsqueeze(-1).expand(-1, -1, width))
        delta = torch.sub(x, target, out=target).masked_fill_(unmatched, 0)
        x.add_(delta, alpha=alpha)  # x + alpha * (x - x_ref), matched tokens only
    return tokens


def diversity_merge(
    x: torch.Tensor,
    groups: Sequence[Sequence[int]],
    alpha: float,
    threshold: float,
    max_similarities: int = DEFAULT_MAX_SIMILARITIES,
    in_place: bool = False,
) -> torch.Tensor:
    """Batch diversity: within each group of rows of ``x`` [B, N, D], every image but the first
    is merged away from the group's first image (its reference); first images and groups of
    one are unchanged. Returns ``x`` merged in place, or a merged copy."""
    out = x if in_place else x.clone()
    for group in groups:
        rows = list(group)
        if len(rows) > 1:
            _merge_rows(out, rows[1:], rows[0], alpha, threshold, None, max_similarities)
    return out


def reference_merge(
    x: torch.Tensor,
    groups: Sequence[Sequence[int]],
    reference_rows: Sequence[int],
    alpha: float,
    threshold: float,
    reference_mask: torch.Tensor | None = None,
    max_similarities: int = DEFAULT_MAX_SIMILARITIES,
    in_place: bool = False,
) -> torch.Tensor:
    """Reference image: within each group of rows of ``x`` [B, N, D], every row except the
    group's reference row (``reference_rows[g]``, which is left unchanged) is merged away from
    that reference row. ``reference_mask`` [N] (bool) limits which reference tokens count.
    Returns ``x`` merged in place, or a merged copy."""
    out = x if in_place else x.clone()
    for group, ref_row in zip(groups, reference_rows):
        rows = [r for r in group if r != ref_row]
        if rows:
            _merge_rows(out, rows, ref_row, alpha, threshold, reference_mask, max_similarities)
    return out


def _merge_rows(x, rows, ref_row, alpha, threshold, reference_mask, max_similarities):
    """Merge rows ``rows`` of ``x`` in place against row ``ref_row`` (not among ``rows``, so it
    is never written); runs of consecutive rows are merged as one view."""
    reference = x[ref_row:ref_row + 1]
    runs, begin = [], rows[0]
    for prev, row in zip(rows, rows[1:] + [None]):
        if row != prev + 1:
            runs.append((begin, prev + 1))
            begin = row
    for lo, hi in runs:
        merge_tokens_(x[lo:hi], reference, alpha, threshold, reference_mask, max_similarities)
