"""Hunyuan Video 1.5's layout (attention_patches/families/hunyuan_video.py) in both host orders,
its pooling companion, and VSF's grouped attention over it against an independent dense-mask
reference built from each token's role."""

import pytest
import torch

from negguide.attention_patches.families import JOINT, TEXT_ONLY
from negguide.attention_patches.families.hunyuan_video import HUNYUAN_VIDEO, HunyuanVideoCall
from negguide.attention_patches.vsf import vsf_grouped_attention

DTYPE = torch.float64
VISION, BYT5, P, N, REFERENCE, IMAGE = 2, 3, 5, 4, 2, 6


def call(image_first: bool, negative_len: int = N, byt5_first: bool = True) -> HunyuanVideoCall:
    context = P + negative_len + (1 if negative_len else 0)  # [P ; N ; z] as VSF hands it to the model
    return HunyuanVideoCall(VISION, BYT5, context, negative_len, REFERENCE, IMAGE, image_first, (1, 2, 3), 1,
                            byt5_first=byt5_first)


def roles(layout: HunyuanVideoCall, kind: str) -> list[str]:
    """Each token's role, in sequence order: what the model concatenates where (model.py)."""
    context = ["P"] * P + ["N"] * layout.negative_len + ["z"] * layout.companion_len
    if kind == TEXT_ONLY:
        return context
    byt5 = ["byt5"] * BYT5
    text = ["vision"] * VISION + (byt5 + context if layout.byt5_first else context + byt5)
    image = ["reference"] * REFERENCE + ["image"] * IMAGE
    return image + text if layout.image_first else text + image


SEES = {  # query role -> key roles it sees; "N~" = the negative read flipped (-alpha V_N, bias -beta)
    JOINT: {"image": {"image", "reference", "vision", "byt5", "P", "N~"}, "reference": {"image", "reference", "vision", "byt5", "P", "N~"},
            "vision": {"image", "reference", "vision", "byt5", "P"}, "byt5": {"image", "reference", "vision", "byt5", "P"},
            "P": {"image", "reference", "vision", "byt5", "P"}, "N": {"image", "reference", "N"}, "z": {"image", "reference", "N"}},
    TEXT_ONLY: {"P": {"P"}, "N": {"N"}, "z": {"N"}},
}


def dense_reference(q, k, v, token_roles, kind, alpha, beta):
    """Row by row: each query's visible keys, flipped N values for the image side."""
    scale = q.shape[-1] ** -0.5
    out = torch.empty_like(q)
    for i, role in enumerate(token_roles):
        sees = SEES[kind][role]
        logits = (q[:, :, i:i + 1] @ k.transpose(-1, -2))[:, :, 0] * scale
        values = v.clone()
        for j, key in enumerate(token_roles):
            if key == "N" and "N~" in sees:
                logits[..., j] -= beta
                values[:, :, j] *= -alpha
            elif key not in sees:
                logits[..., j] = float("-inf")
        out[:, :, i] = torch.einsum("bhl,bhld->bhd", logits.softmax(-1), values)
    return out


def sdpa(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("image_first", [False, True])
def test_joint_positions_in_either_order(image_first):
    layout = call(image_first)
    text = VISION + BYT5 + P + N + 1
    assert layout.length == text + REFERENCE + IMAGE and layout.context_len == P + N + 1
    start = REFERENCE + IMAGE if image_first else 0
    assert layout.positive_columns == ((start, start + VISION + BYT5 + P),)
    assert layout.negative == (start + VISION + BYT5 + P, start + text - 1) and layout.companion == (start + text - 1, start + text)
    assert layout.image == ((REFERENCE, REFERENCE + IMAGE) if image_first else (text + REFERENCE, layout.length))
    assert layout.kind(layout.length, layout.length) == JOINT and layout.kind(P + N + 1, P + N + 1) == TEXT_ONLY
    assert layout.kind(IMAGE, IMAGE) is None and layout.image_span(P + N + 1, P + N + 1) is None
    assert call(image_first, 0).vsf_groups(JOINT, call(image_first, 0).length) == []  # NegToMe's layout


@pytest.mark.parametrize("image_first", [False, True])
def test_context_first_positions_put_byt5_after_the_companion(image_first):
    """Hunyuan Video 1.0 / HunyuanImage 2.1: [vision ; P ; N ; z ; byT5]; the prompt side is two ranges."""
    layout = call(image_first, byt5_first=False)
    start = REFERENCE + IMAGE if image_first else 0
    context = start + VISION
    assert layout.context_start == context and layout.negative == (context + P, context + P + N)
    assert layout.companion == (context + P + N, context + P + N + 1)
    assert layout.positive_columns == ((start, context + P), (context + P + N + 1, context + P + N + 1 + BYT5))
    assert layout.length == VISION + BYT5 + P + N + 1 + REFERENCE + IMAGE


@pytest.mark.parametrize("byt5_first", [True, False])
@pytest.mark.parametrize("kind", [JOINT, TEXT_ONLY])
@pytest.mark.parametrize("image_first", [False, True])
def test_grouped_attention_equals_the_dense_visibility(image_first, kind, byt5_first):
    layout = call(image_first, byt5_first=byt5_first)
    token_roles = roles(layout, kind)
    length = len(token_roles)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, length, 8, generator=generator, dtype=DTYPE) for _ in range(3))
    got = vsf_grouped_attention(sdpa, q, k, v, groups=layout.vsf_groups(kind, length), negative=layout.negative_columns,
                                alpha=2.0, beta=0.3, rows_active=torch.ones(2, dtype=torch.bool), seq_dim=2,
                                output_seq_dim=2)
    torch.testing.assert_close(got, dense_reference(q, k, v, token_roles, kind, 2.0, 0.3), rtol=1e-10, atol=1e-10)


def test_the_companion_keeps_the_mean_of_the_context_the_prompts():
    """TokenRefiner's c = mean over every context token: with z after N it is mean(P)."""
    generator = torch.Generator().manual_seed(1)
    positive, negative = torch.randn(3, P, 16, generator=generator, dtype=DTYPE), torch.randn(3, N, 16, generator=generator, dtype=DTYPE)
    context = torch.cat([positive, negative], dim=1)
    companion = HUNYUAN_VIDEO.pool_companion(context, N)
    assert companion.shape == (3, 1, 16)
    torch.testing.assert_close(torch.cat([context, companion], dim=1).mean(1), positive.mean(1), rtol=1e-12, atol=1e-12)
