"""NegToMe merge math against closed forms (paper Sec. 3, methods note Sec. 2)."""

import pytest
import torch

from negguide.attention_patches.calls import chunk_groups, cond_rows
from negguide.attention_patches.negtome import (
    chunk_size,
    diversity_merge,
    merge_tokens_,
    reference_merge,
)

DTYPE = torch.float64


def merge_tokens(source, reference, *args, **kwargs):
    """The merge of a copy of ``source`` (the input stays as built)."""
    return merge_tokens_(source.clone(), reference, *args, **kwargs)


def hand_built():
    """Source tokens [1, 3, 2] and reference tokens [1, 2, 2] with known cosines:
    s0 = (1, 0)   best r0 = (2, 0)      cos 1.0  -> matched
    s1 = (0, 3)   best r1 = (1, 1)      cos 0.7071 -> matched only if tau < 0.7071
    s2 = (-1, 0)  best r1 = (1, 1)      cos -0.7071 (r0: -1) -> unmatched for tau >= 0
    """
    source = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]], dtype=DTYPE)
    reference = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]], dtype=DTYPE)
    return source, reference


@pytest.mark.parametrize("alpha", [0.9, -0.5, 1.7])
def test_matched_token_moves_by_exactly_alpha_times_difference(alpha):
    source, reference = hand_built()
    out = merge_tokens(source, reference, alpha, threshold=0.5)
    s, r = source[0], reference[0]
    torch.testing.assert_close(out[0, 0], s[0] + alpha * (s[0] - r[0]), rtol=0, atol=1e-15)
    torch.testing.assert_close(out[0, 1], s[1] + alpha * (s[1] - r[1]), rtol=0, atol=1e-15)
    assert torch.equal(out[0, 2], s[2])  # best cosine -0.707 <= 0.5: unmatched, untouched


def test_threshold_is_strict():
    source, reference = hand_built()
    cos = 1 / 2 ** 0.5
    just_below = merge_tokens(source, reference, 1.0, threshold=torch.tensor(cos, dtype=DTYPE).item() - 1e-9)
    at = merge_tokens(source, reference, 1.0, threshold=1.0)  # s0's cosine is exactly 1.0: not > 1.0
    assert not torch.equal(just_below[0, 1], source[0, 1])
    assert torch.equal(at, source)


def test_matching_is_source_to_reference_not_reference_to_source():
    """Two source tokens share one best reference token; reference-to-source matching (the
    reference code's axis) would move only one of them."""
    source = torch.tensor([[[1.0, 0.1], [1.0, -0.1]]], dtype=DTYPE)
    reference = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=DTYPE)
    out = merge_tokens(source, reference, 1.0, threshold=0.9)
    expected = 2 * source - reference[:, [0, 0]]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)


def test_alpha_zero_is_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 50, 8, generator=g)
    assert torch.equal(merge_tokens(x[1:], x[:1], 0.0, -1.0), x[1:])
    assert torch.equal(diversity_merge(x, [range(0, 4)], 0.0, -1.0), x)


@pytest.mark.parametrize("shared", [True, False])
def test_chunked_equals_unchunked(shared):
    g = torch.Generator().manual_seed(1)
    source = torch.randn(3, 257, 16, generator=g, dtype=DTYPE)
    reference = torch.randn(1 if shared else 3, 129, 16, generator=g, dtype=DTYPE)
    mask = torch.rand(129, generator=g) > 0.3
    whole = merge_tokens(source, reference, 0.8, 0.1, mask, max_similarities=10 ** 9)
    assert chunk_size(3, 129, 10 ** 9) >= 257  # really one chunk
    chunked = merge_tokens(source, reference, 0.8, 0.1, mask, max_similarities=3 * 129 * 7)
    assert chunk_size(3, 129, 3 * 129 * 7) == 7  # 37 chunks, the last one partial
    assert torch.equal(whole, chunked)
    assert not torch.equal(whole, source)


def test_reference_mask_excludes_tokens():
    source, reference = hand_built()
    out = merge_tokens(source, reference, 1.0, 0.5, reference_mask=torch.tensor([False, True]))
    s, r = source[0], reference[0]
    torch.testing.assert_close(out[0, 0], s[0] + (s[0] - r[1]), rtol=0, atol=1e-15)  # now matched to r1 (cos .707)


def test_chunk_size_bounds_similarities_at_batch_8_by_4096():
    c = chunk_size(7, 4096)
    assert 7 * c * 4096 <= 1 << 24 and c == 585


def test_groups_follow_cond_or_uncond():
    assert chunk_groups(6, [1, 0]) == [range(0, 3), range(3, 6)]
    assert chunk_groups(2, [0]) == [range(0, 2)]
    assert chunk_groups(3, None) == [range(0, 3)]
    with pytest.raises(ValueError):
        chunk_groups(5, [1, 0])


def test_cond_rows_mark_the_positive_chunks():
    assert cond_rows(6, [1, 0]).tolist() == [False] * 3 + [True] * 3
    assert cond_rows(2, [0]).tolist() == [True, True]
    assert cond_rows(3, None).tolist() == [True] * 3


def test_diversity_groups_are_isolated_and_first_image_is_the_reference():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 40, 8, generator=g, dtype=DTYPE)
    groups = chunk_groups(6, [1, 0])
    out = diversity_merge(x, groups, 0.9, 0.0)
    # first image of each group unchanged; the others merged against it only
    assert torch.equal(out[0], x[0]) and torch.equal(out[3], x[3])
    for rows in groups:
        for r in rows[1:]:
            torch.testing.assert_close(out[r], merge_tokens(x[r:r + 1], x[rows[0]:rows[0] + 1], 0.9, 0.0)[0])
    # changing the other group's rows never changes this group's result
    y = x.clone()
    y[3:] = torch.randn(3, 40, 8, generator=g, dtype=DTYPE)
    assert torch.equal(diversity_merge(y, groups, 0.9, 0.0)[:3], out[:3])


def test_batch_of_one_per_group_is_a_no_op():
    x = torch.randn(2, 30, 8)
    assert torch.equal(diversity_merge(x, chunk_groups(2, [1, 0]), 1.0, -1.0), x)


def test_reference_merge_uses_the_reference_row_of_each_group():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 20, 4, generator=g, dtype=DTYPE)
    groups = [range(0, 3), range(3, 6)]
    out = reference_merge(x, groups, [2, 5], 1.2, 0.0)
    assert torch.equal(out[2], x[2]) and torch.equal(out[5], x[5])
    torch.testing.assert_close(out[0:2], merge_tokens(x[0:2], x[2:3], 1.2, 0.0))
    torch.testing.assert_close(out[3:5], merge_tokens(x[3:5], x[5:6], 1.2, 0.0))


def test_merge_tokens_works_in_place():
    source, reference = hand_built()
    expected = merge_tokens(source, reference, 0.9, 0.5)
    assert merge_tokens_(source, reference, 0.9, 0.5) is source
    assert torch.equal(source, expected)
    assert torch.equal(reference, hand_built()[1])


@pytest.mark.parametrize("merge", ["diversity", "reference"])
def test_in_place_merge_of_a_strided_slice_equals_the_copying_merge(merge):
    """The DiT hook merges the image tokens of the attention output in place: a strided view
    [B, text:text+N, D] of a [B, text+N, D] tensor. Same result as the copying form, the text
    tokens untouched."""
    g = torch.Generator().manual_seed(4)
    attention_out = torch.randn(4, 7 + 64, 16, generator=g, dtype=DTYPE)
    before = attention_out.clone()
    groups = [range(0, 2), range(2, 4)]
    if merge == "diversity":
        expected = diversity_merge(before[:, 7:], groups, 0.9, 0.0, max_similarities=3 * 64)
        returned = diversity_merge(attention_out[:, 7:], groups, 0.9, 0.0, max_similarities=3 * 64, in_place=True)
    else:
        expected = reference_merge(before[:, 7:], groups, [1, 3], 0.9, 0.0, max_similarities=3 * 64)
        returned = reference_merge(attention_out[:, 7:], groups, [1, 3], 0.9, 0.0, max_similarities=3 * 64,
                                   in_place=True)
    assert returned.data_ptr() == attention_out[:, 7:].data_ptr()
    assert torch.equal(attention_out[:, 7:], expected)
    assert torch.equal(attention_out[:, :7], before[:, :7])
    assert not torch.equal(expected, before[:, 7:])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_threshold_uses_float32_norms(dtype):
    """Large half-precision tokens: the norm (which would overflow fp16: |x| > 65504) is taken in
    fp32, so the threshold test still sees a cosine of 1 for a token parallel to its match."""
    source = torch.tensor([[[40000.0, 40000.0], [0.0, 1.0]]], dtype=dtype)
    reference = torch.tensor([[[1.0, 1.0]]], dtype=dtype)
    out = merge_tokens(source, reference, 0.5, threshold=0.9)
    torch.testing.assert_close(out[0, 0], source[0, 0] + 0.5 * (source[0, 0] - reference[0, 0]))
    assert torch.equal(out[0, 1], source[0, 1])  # cosine 0.707 <= 0.9
