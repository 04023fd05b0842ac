"""HiDream's image-first layout with the negative in three text parts (attention_patches/families/
hidream.py), and VSF's grouped attention over it against an independent dense-mask reference."""

import pytest
import torch

from negguide.attention_patches.families import JOINT
from negguide.attention_patches.families.hidream import HiDreamCall
from negguide.attention_patches.vsf import QueryGroup, vsf_grouped_attention

DTYPE = torch.float64


def sdpa(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_call_layout_puts_the_image_first_and_n_at_the_end_of_each_text_part():
    call = HiDreamCall.of(grid=(1, 2, 3), t5_len=7, t5_negative=3, llama_len=5, llama_negative=2)
    assert call.image == (0, 6) and call.length == 6 + 7 + 5 + 5
    assert call.positive_columns == ((6, 10), (13, 16), (18, 21))
    assert call.negative_columns == ((10, 13), (16, 18), (21, 23))
    assert call.kind(23, 23) == JOINT and call.kind(6, 6) is None and call.kind(23, 17) is None
    assert call.image_span(23, 23) == (0, 6) and call.image_span(22, 22) is None
    assert call.vsf_groups(JOINT, 23) == [
        QueryGroup(((0, 6),), flipped=True),
        QueryGroup(((6, 10), (13, 16), (18, 21)), hidden=((10, 13), (16, 18), (21, 23))),
        QueryGroup(((10, 13), (16, 18), (21, 23)), hidden=((6, 10), (13, 16), (18, 21))),
    ]


def test_without_a_negative_there_is_nothing_for_vsf_and_a_part_without_n_has_no_empty_range():
    plain = HiDreamCall.of(grid=(1, 2, 2), t5_len=4, t5_negative=0, llama_len=3, llama_negative=0)
    assert plain.negative_columns == () and plain.vsf_groups(JOINT, plain.length) == []
    assert plain.image_span(plain.length, plain.length) == (0, 4)  # what NegToMe merges
    llama_only = HiDreamCall.of(grid=(1, 2, 2), t5_len=4, t5_negative=0, llama_len=3, llama_negative=1)
    assert llama_only.negative_columns == ((10, 11), (13, 14))


def dense_reference(q, k, v, roles, alpha, beta):
    """One softmax over the keys plus an explicit flipped copy Nf of every N column, with the
    paper's visibility per token role: I sees I, P and Nf (-beta); P sees I and P; N sees I and N."""
    negative = [i for i, role in enumerate(roles) if role == "N"]
    k_all = torch.cat([k, k[:, :, negative]], dim=2)
    v_all = torch.cat([v, -alpha * v[:, :, negative]], dim=2)
    visible = {"I": {"I", "P", "Nf"}, "P": {"I", "P"}, "N": {"I", "N"}}
    key_roles = list(roles) + ["Nf"] * len(negative)
    mask = torch.full((len(roles), len(key_roles)), float("-inf"), dtype=DTYPE)
    for row, role in enumerate(roles):
        for col, key_role in enumerate(key_roles):
            if key_role in visible[role]:
                mask[row, col] = -beta if key_role == "Nf" else 0.0
    return sdpa(q, k_all, v_all, mask)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_grouped_attention_over_three_negative_parts_matches_the_dense_reference(beta):
    call = HiDreamCall.of(grid=(1, 2, 3), t5_len=7, t5_negative=3, llama_len=5, llama_negative=2)
    roles = ["I"] * 6
    for (p0, p1), (n0, n1) in zip(call.positive_columns, call.negative_columns):
        roles += ["P"] * (p1 - p0) + ["N"] * (n1 - n0)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, call.length, 8, generator=g, dtype=DTYPE) for _ in range(3))
    out = vsf_grouped_attention(sdpa, q, k, v, groups=call.vsf_groups(JOINT, call.length),
                                negative=call.negative_columns, alpha=2.5, beta=beta,
                                rows_active=torch.ones(2, dtype=torch.bool), seq_dim=2, output_seq_dim=2)
    torch.testing.assert_close(out, dense_reference(q, k, v, roles, 2.5, beta), rtol=1e-10, atol=1e-12)
