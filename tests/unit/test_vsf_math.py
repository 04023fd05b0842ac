"""VSF attention math against closed-form references (paper Sec. 3, methods note Sec. 1)."""

import math

import pytest
import torch

from negguide.attention_patches.vsf import (
    JointLayout,
    additive_mask,
    negative_attention_mass,
    vsf_cross_attention,
    vsf_grouped_attention,
)

DTYPE = torch.float64  # closed-form comparisons at double precision


def sdpa(q, k, v, mask):
    """[B, H, L, D] attention, the shape ComfyUI's skip_reshape calls use."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def heads_last(x):
    """[B, H, L, D] -> [B, L, H*D], ComfyUI's default attention output layout."""
    b, h, l, d = x.shape
    return x.transpose(1, 2).reshape(b, l, h * d)


def random_qkv(batch=2, heads=3, q_len=5, k_len=7, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=g, dtype=DTYPE) for n in (q_len, k_len, k_len)]


def weighted_form(q, k_pos, v_pos, k_neg, v_neg, alpha, beta):
    """The paper's explicit form Z_W = W Z+ - alpha (1 - W) Z- (two softmaxes)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    a_pos = torch.exp(q @ k_pos.transpose(-1, -2) * scale)
    a_neg = torch.exp(q @ k_neg.transpose(-1, -2) * scale - beta)
    w = a_pos.sum(-1, keepdim=True) / (a_pos.sum(-1, keepdim=True) + a_neg.sum(-1, keepdim=True))
    z_pos = (a_pos / a_pos.sum(-1, keepdim=True)) @ v_pos
    z_neg = (a_neg / a_neg.sum(-1, keepdim=True)) @ v_neg
    return w * z_pos - alpha * (1 - w) * z_neg


@pytest.mark.parametrize("beta", [0.0, 0.7])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.5])
def test_cross_attention_single_softmax_equals_weighted_form(alpha, beta):
    q, k, v = random_qkv()
    p = 4  # k/v rows 0..3 are P, 4..6 are N
    rows = torch.ones(q.shape[0], dtype=torch.bool)
    out = vsf_cross_attention(sdpa, q, k, v, negative=((p, 7),), alpha=alpha, beta=beta, rows_active=rows, seq_dim=2)
    expected = weighted_form(q, k[:, :, :p], v[:, :, :p], k[:, :, p:], v[:, :, p:], alpha, beta)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_cross_attention_inactive_rows_are_plain_attention_over_positive():
    q, k, v = random_qkv(batch=3)
    rows = torch.tensor([True, False, True])
    out = vsf_cross_attention(sdpa, q, k, v, negative=((4, 7),), alpha=3.0, beta=0.1, rows_active=rows, seq_dim=2)
    plain = sdpa(q[1:2], k[1:2, :, :4], v[1:2, :, :4], None)
    torch.testing.assert_close(out[1:2], plain, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out[0:1], sdpa(q[0:1], k[0:1, :, :4], v[0:1, :, :4], None))


def test_cross_attention_on_flat_layout_with_seq_dim_1():
    q, k, v = random_qkv(batch=1, heads=1)
    flat = [x[:, 0] for x in (q, k, v)]  # [B, L, D], one head

    def flat_attention(q_, k_, v_, mask):
        return sdpa(q_[:, None], k_[:, None], v_[:, None], mask)[:, 0]

    rows = torch.ones(1, dtype=torch.bool)
    out = vsf_cross_attention(flat_attention, *flat, negative=((4, 7),), alpha=2.0, beta=0.3, rows_active=rows, seq_dim=1)
    expected = weighted_form(q, k[:, :, :4], v[:, :, :4], k[:, :, 4:], v[:, :, 4:], 2.0, 0.3)[:, 0]
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def joint_reference(q, k, v, layout, alpha, beta, model_mask=None):
    """Independent construction: append an explicit flipped copy Nf to keys/values and apply
    the paper's visibility as a dense (L_q x L_k) mask in one softmax; ``model_mask`` (additive,
    [B, 1, L_q, L_k]) is added on top, Nf's columns taking N's."""
    n0, n1 = layout.negative
    k_all = torch.cat([k, k[:, :, n0:n1]], dim=2)
    v_all = torch.cat([v, -alpha * v[:, :, n0:n1]], dim=2)
    length = k.shape[2]
    nf = (length, length + n1 - n0)
    mask = torch.full((q.shape[2], k_all.shape[2]), float("-inf"), dtype=DTYPE)

    def allow(rows, cols, value=0.0):
        mask[rows[0]:rows[1], cols[0]:cols[1]] = value

    for cols in (layout.image, layout.positive):
        allow(layout.image, cols)
    allow(layout.image, nf, -beta)
    for cols in (layout.image, layout.positive):
        allow(layout.positive, cols)
    for cols in (layout.image, layout.negative):
        allow(layout.negative, cols)
    if model_mask is not None:
        mask = mask + torch.cat([model_mask, model_mask[..., n0:n1]], dim=-1)
    return sdpa(q, k_all, v_all, mask)


@pytest.mark.parametrize("output_layout", ["heads_first", "heads_last"])
@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_joint_attention_matches_dense_mask_reference(beta, output_layout):
    layout = JointLayout.text_first(positive_len=3, negative_len=2, image_len=6)
    q, k, v = random_qkv(q_len=11, k_len=11, seed=1)
    rows = torch.ones(2, dtype=torch.bool)
    if output_layout == "heads_first":
        attention, out_dim, expected_fn = sdpa, 2, lambda x: x
    else:
        attention, out_dim, expected_fn = (lambda *a: heads_last(sdpa(*a))), 1, heads_last
    out = vsf_grouped_attention(
        attention, q, k, v, groups=layout.query_groups(), negative=layout.negative_columns, alpha=3.0, beta=beta, rows_active=rows, seq_dim=2, output_seq_dim=out_dim
    )
    torch.testing.assert_close(out, expected_fn(joint_reference(q, k, v, layout, 3.0, beta)), rtol=1e-10, atol=1e-12)


def test_joint_attention_fully_masked_flip_equals_plain_model_without_negative():
    """beta -> infinity: image and P outputs equal attention over [P ; I] with no N at all."""
    layout = JointLayout.text_first(positive_len=3, negative_len=2, image_len=6)
    q, k, v = random_qkv(q_len=11, k_len=11, seed=2)
    rows = torch.ones(2, dtype=torch.bool)
    out = vsf_grouped_attention(
        sdpa, q, k, v, groups=layout.query_groups(), negative=layout.negative_columns, alpha=3.0, beta=float("inf"), rows_active=rows, seq_dim=2, output_seq_dim=2
    )
    keep = torch.tensor([0, 1, 2, 5, 6, 7, 8, 9, 10])  # P and I
    plain = sdpa(q[:, :, keep], k[:, :, keep], v[:, :, keep], None)
    torch.testing.assert_close(out[:, :, keep], plain, rtol=1e-12, atol=1e-12)


def test_joint_attention_inactive_rows_ignore_negative():
    layout = JointLayout.text_first(positive_len=3, negative_len=2, image_len=6)
    q, k, v = random_qkv(q_len=11, k_len=11, seed=3)
    rows = torch.tensor([False, True])
    out = vsf_grouped_attention(
        sdpa, q, k, v, groups=layout.query_groups(), negative=layout.negative_columns, alpha=3.0, beta=0.1, rows_active=rows, seq_dim=2, output_seq_dim=2
    )
    keep = torch.tensor([0, 1, 2, 5, 6, 7, 8, 9, 10])
    plain = sdpa(q[:1, :, keep], k[:1, :, keep], v[:1, :, keep], None)
    torch.testing.assert_close(out[:1, :, keep], plain, rtol=1e-12, atol=1e-12)
    active_plain = sdpa(q[1:, :, keep], k[1:, :, keep], v[1:, :, keep], None)
    assert (out[1:, :, 5:] - active_plain[:, :, 3:]).abs().max() > 1e-3  # the flip acts on image rows


def test_inputs_are_not_modified():
    q, k, v = random_qkv()
    copies = [x.clone() for x in (q, k, v)]
    vsf_cross_attention(sdpa, q, k, v, negative=((4, 7),), alpha=3.0, beta=0.1, rows_active=torch.ones(2, dtype=torch.bool), seq_dim=2)
    for original, copy in zip((q, k, v), copies):
        assert torch.equal(original, copy)


@pytest.mark.parametrize("seq_dim", [1, 2])
def test_negative_attention_mass_is_one_minus_w(seq_dim):
    q, k, _ = random_qkv(batch=2, heads=3, q_len=9, k_len=7, seed=4)
    beta = 0.3
    scale = 1.0 / math.sqrt(q.shape[-1])
    a_pos = torch.exp(q @ k[:, :, :4].transpose(-1, -2) * scale).sum(-1)
    a_neg = torch.exp(q @ k[:, :, 4:].transpose(-1, -2) * scale - beta).sum(-1)
    expected = (a_neg / (a_pos + a_neg)).mean(1)  # 1 - W, averaged over heads
    if seq_dim == 1:
        q, k = (t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1) for t in (q, k))
    mass = negative_attention_mass(q, k, negative=((4, 7),), beta=beta, heads=3, seq_dim=seq_dim, query_chunk=4)
    torch.testing.assert_close(mass, expected, rtol=1e-10, atol=1e-12)


def _joint_masks(batch, length, text_len, seed=6):
    """The masks models hand attention, each as the model passes it and as its dense additive
    [B, 1, L, L] reading: a key mask [B, 1, L] (Qwen-Image: 0 or -max on the text's padding, here
    P's last token), a square bias [B, L, L] (Flux with Redux's attn_bias: log-strengths, -inf
    included) and a bool [B, 1, L, L] (True = attend)."""
    g = torch.Generator().manual_seed(seed)
    key_mask = torch.zeros(batch, 1, length, dtype=DTYPE)
    key_mask[:, 0, text_len - 1] = -torch.finfo(DTYPE).max
    square = torch.log(torch.rand(batch, length, length, generator=g, dtype=DTYPE) + 0.2)
    square[:, text_len:, 0] = float("-inf")
    keep = torch.ones(batch, 1, length, length, dtype=torch.bool)
    keep[0, :, :, 1] = False
    return {
        "key mask": (key_mask, key_mask[:, None].expand(batch, 1, length, length)),
        "square bias": (square, square[:, None]),
        "bool": (keep, torch.zeros(keep.shape, dtype=DTYPE).masked_fill(~keep, float("-inf"))),
    }


@pytest.mark.parametrize("kind", ["key mask", "square bias", "bool"])
def test_joint_attention_keeps_the_models_own_mask(kind):
    """The model's mask applies to every query group as it would without VSF, row by row: the
    dense reference with that mask added, to 1e-10."""
    layout = JointLayout.text_first(positive_len=3, negative_len=2, image_len=6)
    q, k, v = random_qkv(q_len=11, k_len=11, seed=5)
    mask, dense = _joint_masks(2, 11, text_len=3)[kind]
    out = vsf_grouped_attention(
        sdpa, q, k, v, groups=layout.query_groups(), negative=layout.negative_columns, alpha=3.0, beta=0.2,
        rows_active=torch.ones(2, dtype=torch.bool), seq_dim=2, output_seq_dim=2, mask=additive_mask(mask, DTYPE))
    torch.testing.assert_close(out, joint_reference(q, k, v, layout, 3.0, 0.2, model_mask=dense), rtol=1e-10, atol=1e-12)
    unmasked = vsf_grouped_attention(
        sdpa, q, k, v, groups=layout.query_groups(), negative=layout.negative_columns, alpha=3.0, beta=0.2,
        rows_active=torch.ones(2, dtype=torch.bool), seq_dim=2, output_seq_dim=2)
    assert (out - unmasked).abs().max() > 1e-3  # the control: the mask changes the result


def test_cross_attention_ignores_masked_padding_of_the_positive():
    """Text padding the model masks out is as if absent: VSF over [P ; pad ; N] with the pad
    masked equals VSF over [P ; N]."""
    q, k, v = random_qkv(k_len=9, seed=7)
    keys = torch.ones(2, 9, dtype=torch.bool)
    keys[:, 4:6] = False  # P = 0..3, padding 4..5, N = 6..8
    rows = torch.ones(2, dtype=torch.bool)
    padded = vsf_cross_attention(sdpa, q, k, v, negative=((6, 9),), alpha=3.0, beta=0.1, rows_active=rows, seq_dim=2,
                                 mask=additive_mask(keys[:, None], DTYPE))
    keep = torch.tensor([0, 1, 2, 3, 6, 7, 8])
    unpadded = vsf_cross_attention(sdpa, q, k[:, :, keep], v[:, :, keep], negative=((4, 7),), alpha=3.0, beta=0.1,
                                   rows_active=rows, seq_dim=2)
    torch.testing.assert_close(padded, unpadded, rtol=1e-10, atol=1e-12)


def test_negative_attention_mass_leaves_out_hidden_and_masked_keys():
    """The recorded share is over the keys the queries see: without the hidden columns (a pooling
    companion) and the model's masked ones, it equals the share over the remaining keys."""
    q, k, _ = random_qkv(batch=2, heads=3, q_len=9, k_len=8, seed=8)
    keys = torch.zeros(2, 1, 1, 8, dtype=DTYPE)
    keys[..., 1] = float("-inf")  # masked by the model
    mass = negative_attention_mass(q, k, negative=((4, 7),), beta=0.3, heads=3, seq_dim=2, hidden=((7, 8),), mask=keys)
    keep = torch.tensor([0, 2, 3, 4, 5, 6])
    expected = negative_attention_mass(q, k[:, :, keep], negative=((3, 6),), beta=0.3, heads=3, seq_dim=2)
    torch.testing.assert_close(mass, expected, rtol=1e-10, atol=1e-12)


def test_additive_mask_reads_shapes_and_bools_as_comfyui_does():
    keep = torch.tensor([[True, False, True]])
    assert additive_mask(keep, DTYPE).shape == (1, 1, 1, 3)  # [Lq, Lk] -> [1, 1, Lq, Lk]
    assert additive_mask(keep, DTYPE).flatten().tolist() == [0.0, float("-inf"), 0.0]
    assert additive_mask(torch.zeros(2, 4, 5), DTYPE).shape == (2, 1, 4, 5)  # [B, Lq, Lk] -> [B, 1, Lq, Lk]
    bias = torch.randn(2, 3, 4, 5)
    assert torch.equal(additive_mask(bias, torch.float32), bias)
