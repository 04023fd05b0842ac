"""Z-Image (NextDiT) with NegGuideVSF and NegGuideNegToMe: the layout of attention_patches/
families/z_image.py, proven on the tiny zoo model through ComfyUI's own model code.

The caption is [P ; N] padded by the model to a multiple of 32 (the negative N appended before
the model pads, so the padding lands after N); image tokens follow, padded too. See the adapter's
docstring for the visibility rules these tests check."""

import pytest
import torch

import nodes

from negguide.attention_patches.families.z_image import IMAGE_ONLY, JOINT, TEXT_ONLY, ZImageCall, padded
from negguide.attention_patches.vsf import QueryGroup
from negguide.harness import zoo
from negguide.harness.attention_calls import attention_outputs_of_one_step, record_below
from negguide.nodes import vsf as vsf_node
from negguide.nodes.negtome import NegGuideNegToMe
from negguide.nodes.vsf import NegGuideVSF

pytestmark = pytest.mark.zoo_architecture("z_image")

POSITIVE, OTHER_POSITIVE = "a red cat", "a blue dog"  # same token count
NEGATIVE, OTHER_NEGATIVE = "a red square", "a blue square"  # same token count
INF = float("-inf")


def test_call_layout_follows_the_models_padding_rule():
    call = ZImageCall.of(text_len=24, negative_len=11, grid=(1, 4, 6), multiple=32, text_only_calls=2)
    assert (call.positive, call.negative, call.caption_padding) == ((0, 13), (13, 24), (24, 32))
    assert (call.image, call.image_padding, call.length) == ((32, 56), (56, 64), 64)
    # padded caption == padded image (32): the first two calls of that length are the text-only ones
    assert [call.kind(32, 32) for _ in range(4)] == [TEXT_ONLY, TEXT_ONLY, IMAGE_ONLY, IMAGE_ONLY]
    assert call.kind(64, 64) == JOINT and call.kind(64, 32) is None and call.image_span(64, 64) == (32, 56)
    assert call.image_span(32, 32) is None
    exact = ZImageCall.of(text_len=32, negative_len=8, grid=(1, 8, 8), multiple=32, text_only_calls=2)
    assert exact.caption_padding == (32, 32) and exact.image_padding == (96, 96)
    assert exact.vsf_groups(JOINT, 96) == [QueryGroup(((32, 96),), flipped=True),
                                       QueryGroup(((0, 24),), hidden=((24, 32),)),
                                       QueryGroup(((24, 32),), hidden=((0, 24),))]
    assert padded(33, 32) == 64 and padded(0, 32) == 0 and padded(5, None) == 5
    assert call.vsf_groups(IMAGE_ONLY, 32) == [] and ZImageCall.of(13, 0, (1, 4, 6), 32, 2).vsf_groups(JOINT, 64) == []


def test_the_negative_enters_with_its_real_tokens_only():
    z = zoo.build("z_image")
    tokens = z.clip.tokenize(NEGATIVE)["qwen3_4b"][0]
    negative = vsf_node.encode_negative(z.clip, NEGATIVE).context
    assert 151643 not in [t[0] for t in tokens]  # no pad token
    # = the prompt's own tokens after the chat template's prefix, which every text encodes alike
    template = len(tokens) - negative.shape[1]
    assert template >= 1
    own = z.encode(NEGATIVE)[0][0]
    torch.testing.assert_close(negative, own[:, template:], rtol=0, atol=0)
    torch.testing.assert_close(own[:, :template], z.encode(OTHER_NEGATIVE)[0][0][:, :template], rtol=1e-4, atol=1e-5)


def vsf_calls(z, positive=POSITIVE, negative=NEGATIVE, bias=0.25, width=96, height=64, seed=1):
    """Every attention call VSF makes in one step (recorded below it)."""
    model, calls = record_below(z.model)
    patched = NegGuideVSF.execute(model, z.clip, negative, 3.0, bias, 0.0, 1.0).args[0]
    nodes.common_ksampler(patched, seed, 1, 1.0, "euler", "simple", z.encode(positive), z.encode(""),
                          z.empty_latent(width, height, 1))
    return calls


@pytest.mark.parametrize("width,height", [(96, 64), (128, 128)])
def test_vsf_calls_and_masks_follow_the_layout(width, height):
    """Text-only calls: 2 groups (P + padding, N); image-only calls untouched; joint calls:
    image (N at -beta, flipped), P + paddings (no N), N (no P, no caption padding)."""
    z = zoo.build("z_image")
    p, n = z.encode(POSITIVE)[0][0].shape[1], vsf_node.encode_negative(z.clip, NEGATIVE).context.shape[1]
    cap, img = padded(p + n, 32), (width // 16) * (height // 16)
    img_pad = padded(img, 32)
    calls = vsf_calls(z, width=width, height=height)
    shapes = [(c.q.shape[2], c.k.shape[2], c.mask is not None) for c in calls]
    text = [(p + cap - (p + n), cap, True), (n, cap, True)]
    joint = [(img, cap + img_pad, True), (p + cap - (p + n) + img_pad - img, cap + img_pad, True),
             (n, cap + img_pad, True)]
    assert shapes == text * 2 + [(img_pad, img_pad, False)] * 2 + joint * 2
    # text-only: P and padding never see N; N sees N only
    mp, mn = calls[0].mask, calls[1].mask
    assert mp.shape == mn.shape == (1, 1, 1, cap)
    assert torch.all(mp[..., :p] == 0) and torch.all(mp[..., p:p + n] == INF) and torch.all(mp[..., p + n:] == 0)
    assert torch.all(mn[..., :p] == INF) and torch.all(mn[..., p:p + n] == 0) and torch.all(mn[..., p + n:] == INF)
    # joint: the flipped copy is exactly the n real negative columns, never the padding
    mi, mp, mn = (calls[6 + i].mask for i in range(3))
    assert torch.all(mi[..., :p] == 0) and torch.allclose(mi[..., p:p + n], torch.tensor(-0.25))
    assert torch.all(mi[..., p + n:] == 0)
    assert torch.all(mp[..., p:p + n] == INF) and torch.all(mp[..., :p] == 0) and torch.all(mp[..., p + n:] == 0)
    assert torch.all(mn[..., :p] == INF) and torch.all(mn[..., p:p + n] == 0)
    assert torch.all(mn[..., p + n:cap] == INF) and torch.all(mn[..., cap:] == 0)
    # the image group reads -alpha V_N on the negative columns and V elsewhere
    vi, vp = calls[6].v, calls[7].v  # after 2 x 2 text-only and 2 image-only calls
    torch.testing.assert_close(vi[:, :, p:p + n], -3.0 * vp[:, :, p:p + n])
    assert torch.equal(vi[:, :, :p], vp[:, :, :p]) and torch.equal(vi[:, :, p + n:], vp[:, :, p + n:])


def test_text_only_refiner_keeps_positive_and_negative_apart():
    """After the text-only refiner (the keys of the first joint call): the positive side (P and the
    caption padding) does not depend on N, N does not depend on P, the image part on neither."""
    z = zoo.build("z_image")
    p, n = z.encode(POSITIVE)[0][0].shape[1], vsf_node.encode_negative(z.clip, NEGATIVE).context.shape[1]
    assert z.encode(OTHER_POSITIVE)[0][0].shape[1] == p
    assert vsf_node.encode_negative(z.clip, OTHER_NEGATIVE).context.shape[1] == n
    cap = padded(p + n, 32)

    def first_joint_keys(**kw):
        return vsf_calls(z, **kw)[6].k  # after 2 x 2 text-only and 2 image-only calls

    base = first_joint_keys()
    other_n = first_joint_keys(negative=OTHER_NEGATIVE)
    other_p = first_joint_keys(positive=OTHER_POSITIVE)
    assert torch.equal(base[:, :, :p], other_n[:, :, :p]) and torch.equal(base[:, :, p + n:], other_n[:, :, p + n:])
    assert not torch.allclose(base[:, :, p:p + n], other_n[:, :, p:p + n])
    assert torch.equal(base[:, :, p:p + n], other_p[:, :, p:p + n]) and torch.equal(base[:, :, cap:], other_p[:, :, cap:])
    assert not torch.allclose(base[:, :, :p], other_p[:, :, :p])


def test_vsf_attention_map_records_on_the_real_image_tokens():
    z = zoo.build("z_image")
    model = NegGuideVSF.execute(z.model, z.clip, NEGATIVE, 3.0, 0.1, 0.0, 1.0, True).args[0]
    out = nodes.common_ksampler(model, 7, 2, 1.0, "euler", "normal", z.encode(POSITIVE), z.encode(""),
                                z.empty_latent(96, 64, 2))[0]["samples"]
    hooks = model.get_wrappers("apply_model", vsf_node.HOOK_KEY)[0].__self__
    assert len(hooks.maps) == 2 and all(grid.shape == (2, *out.shape[-2:]) for _, grid in hooks.maps)
    assert all(((grid > 0) & (grid < 1)).all() for _, grid in hooks.maps)


def test_negtome_merges_exactly_the_image_tokens_of_joint_calls():
    """Attention outputs with NegToMe vs without (batch 3, same noise): in the joint calls only
    the real image rows of images 1 and 2 change; text, padding, image 0 and the refiner calls
    (text-only, image-only) are bitwise the plain model's."""
    z = zoo.build("z_image")
    p = z.encode(POSITIVE)[0][0].shape[1]
    cap, img = padded(p, 32), 6 * 4

    def outputs(model):
        x = torch.randn(3, 16, 8, 12, generator=torch.Generator().manual_seed(0))
        return attention_outputs_of_one_step(model, z.encode(POSITIVE), z.encode(""), x)

    plain = outputs(z.model)
    merged = outputs(NegGuideNegToMe.execute(z.model, 0.9, -1.0, 0.0, 1.0, "batch diversity").args[0])
    assert len(plain) == len(merged) == 6  # 2 text-only, 2 image-only, 2 joint
    for call in range(4):
        assert torch.equal(plain[call], merged[call])
    first = 4  # the first joint call: same inputs in both runs, so only the merge differs
    a, b = plain[first], merged[first]  # [B, L, H*D]
    assert a.shape[1] == cap + 32
    assert torch.equal(a[:, :cap], b[:, :cap]) and torch.equal(a[:, cap + img:], b[:, cap + img:])
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1:, cap:cap + img], b[1:, cap:cap + img])
