"""HiDream-I1 with NegGuideVSF and NegGuideNegToMe: the layout of attention_patches/families/
hidream.py, proven on the tiny zoo model (ComfyUI's own HiDream classes and all four of its text
encoders) through the host's model code.

Every attention call is [I ; T5 ; Llama_last ; Llama_k], image first; VSF appends N to the T5
context and to every Llama layer, so N sits at the end of each of the three text parts. The zoo
model needs the Llama tokenizer's data file, which the 0.33.0 snapshot lacks: there these tests
skip with that reason (zoo.unavailable_reason)."""

import pytest
import torch

import nodes

from negguide.attention_patches.families import ADAPTERS, JOINT
from negguide.attention_patches.families.hidream import LLAMA_INPUT
from negguide.harness import zoo
from negguide.harness.attention_calls import attention_outputs_of_one_step, record_below
from negguide.nodes import vsf as vsf_node
from negguide.nodes.negtome import NegGuideNegToMe
from negguide.nodes.vsf import NegGuideVSF

pytestmark = pytest.mark.zoo_architecture("hidream")

POSITIVE, OTHER_POSITIVE = "a red cat", "a blue dog"  # same token count
NEGATIVE, OTHER_NEGATIVE = "a red square", "a blue square"  # same token count
WIDTH, HEIGHT = 96, 64  # latent 12 x 8 -> 6 x 4 image tokens
IMAGE = 6 * 4
INF = float("-inf")


def negative_tokens(z, text, **options):
    return vsf_node.encode_negative(z.clip, text, extra_inputs=ADAPTERS["hidream"].extra_text_inputs, **options)


def recorded_calls(z, method=None, seed=1, conditioning=None):
    """Every attention call of one step, recorded below ``method`` (a function of the model)."""
    model, calls = record_below(z.model)
    nodes.common_ksampler(method(model) if method else model, seed, 1, 1.0, "euler", "simple",
                          conditioning or z.encode(POSITIVE), z.encode(""), z.empty_latent(WIDTH, HEIGHT, 1))
    return calls


def lengths(z):
    tensor, extra = z.encode(POSITIVE)[0]
    return tensor.shape[1], extra["conditioning_llama3"].shape[-2]


def test_every_attention_call_is_image_first_then_t5_then_two_llama_layers():
    """Plain model, by perturbation: in the first call, new noise changes exactly the image rows,
    a new T5 context exactly the T5 rows, new Llama states exactly the two Llama parts; every call
    has the adapter's length, which the adapter calls joint with the image span first."""
    z = zoo.build("hidream")
    t5, llama = lengths(z)
    length = IMAGE + t5 + 2 * llama
    base = recorded_calls(z)
    assert len(base) == 2  # one double, one single block
    for call in base:
        assert call.q.shape == call.k.shape == call.v.shape and call.q.shape[1] == length  # [B, L, H*D]
        assert call.mask is None and not call.skip_reshape
    layout = ADAPTERS["hidream"].call_layout(z.model.model.diffusion_model, (1, 16, HEIGHT // 8, WIDTH // 8),
                                             t5, 0, {LLAMA_INPUT.model_input: torch.zeros(1, 3, llama, 32)}, "test")
    assert layout.kind(length, length) == JOINT and layout.image_span(length, length) == (0, IMAGE)

    a, b = z.encode(POSITIVE)[0], z.encode(OTHER_POSITIVE)[0]
    assert a[0].shape == b[0].shape
    t5_only = [[b[0], dict(a[1])]]
    llama_only = [[a[0], {**a[1], "conditioning_llama3": b[1]["conditioning_llama3"]}]]
    spans = {"image": (0, IMAGE), "t5": (IMAGE, IMAGE + t5), "llama": (IMAGE + t5, length)}
    changed = {"image": recorded_calls(z, seed=2)[0].k, "t5": recorded_calls(z, conditioning=t5_only)[0].k,
               "llama": recorded_calls(z, conditioning=llama_only)[0].k}
    for what, keys in changed.items():
        for part, (lo, hi) in spans.items():
            same = torch.equal(keys[:, lo:hi], base[0].k[:, lo:hi])
            assert same == (part != what), f"changing the {what} {'changed' if same else 'left'} the {part} rows"


def test_the_negative_enters_with_its_real_t5_and_llama_tokens_only():
    """T5: the negative's own tokens (with its end token, no padding). Llama: every layer's states
    of its own tokens after the start token (the prompt's own encoding, no padding)."""
    z = zoo.build("hidream")
    tokens = negative_tokens(z, NEGATIVE)
    own = z.encode(NEGATIVE)[0]
    n5, nl = tokens.context.shape[1], tokens.extra[LLAMA_INPUT.model_input].shape[-2]
    ids = z.clip.tokenize(NEGATIVE)
    t5_ids, llama_ids = [t[0] for t in ids["t5xxl"][0]], [t[0] for t in ids["llama"][0]]
    assert n5 == t5_ids.index(1) + 1  # up to and including T5's end token
    assert nl == len([t for t in llama_ids if t != 128009]) - 1  # Llama's real tokens after its start token
    torch.testing.assert_close(tokens.context, own[0][:, :n5], rtol=1e-5, atol=1e-5)
    llama = own[1]["conditioning_llama3"]
    torch.testing.assert_close(tokens.extra[LLAMA_INPUT.model_input], llama[:, :, 1:1 + nl], rtol=1e-5, atol=1e-5)
    kept = negative_tokens(z, NEGATIVE, drop_text_independent=False).extra[LLAMA_INPUT.model_input]
    other = negative_tokens(z, OTHER_NEGATIVE, drop_text_independent=False).extra[LLAMA_INPUT.model_input]
    assert kept.shape[-2] == nl + 1  # the start token, which every text encodes alike, is dropped
    # alike up to rounding: texts of other lengths take other matmul shapes (1.4e-6 seen on 0.3.75),
    # hence the tolerance of nodes/vsf.text_independent_prefix
    torch.testing.assert_close(kept[:, :, 0], other[:, :, 0], rtol=1e-4, atol=1e-5)


def test_vsf_groups_and_masks_follow_the_layout():
    """Per call three groups: image (N columns at -beta, values flipped), P (every N part
    hidden), N (every P part hidden); every group reads the unchanged keys."""
    z = zoo.build("hidream")
    t5, llama = lengths(z)
    tokens = negative_tokens(z, NEGATIVE)
    n5, nl = tokens.context.shape[1], tokens.extra[LLAMA_INPUT.model_input].shape[-2]
    length = IMAGE + t5 + n5 + 2 * (llama + nl)
    negative = torch.zeros(length, dtype=torch.bool)
    for lo, n in ((IMAGE + t5, n5), (IMAGE + t5 + n5 + llama, nl), (length - nl, nl)):
        negative[lo:lo + n] = True
    positive = ~negative
    positive[:IMAGE] = False
    calls = recorded_calls(z, lambda model: NegGuideVSF.execute(model, z.clip, NEGATIVE, 3.0, 0.25, 0.0, 1.0).args[0])
    assert [(c.q.shape[1], c.k.shape[1]) for c in calls] == [(IMAGE, length), (int(positive.sum()), length),
                                                            (int(negative.sum()), length)] * 2
    image, prompt, negative_group = calls[:3]
    assert torch.equal(image.k, prompt.k) and torch.equal(prompt.k, negative_group.k)
    (mi, vi), (mp, vp), mn = (image.mask, image.v), (prompt.mask, prompt.v), negative_group.mask
    assert mi.shape == mp.shape == mn.shape == (1, 1, 1, length)
    assert torch.allclose(mi[..., negative], torch.tensor(-0.25)) and torch.all(mi[..., ~negative] == 0)
    assert torch.all(mp[..., negative] == INF) and torch.all(mp[..., ~negative] == 0)
    assert torch.all(mn[..., positive] == INF) and torch.all(mn[..., ~positive] == 0)
    torch.testing.assert_close(vi[:, negative], -3.0 * vp[:, negative])
    assert torch.equal(vi[:, ~negative], vp[:, ~negative])


def test_negtome_merges_exactly_the_image_tokens():
    """Attention outputs with NegToMe vs without (batch 3, same noise), in the first call: only
    the image rows of images 1 and 2 change; the text rows and image 0 are the plain model's."""
    z = zoo.build("hidream")

    def first_output(model):
        x = torch.randn(3, 16, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(0))
        return attention_outputs_of_one_step(model, z.encode(POSITIVE), z.encode(""), x)[0]

    plain = first_output(z.model)
    merged = first_output(NegGuideNegToMe.execute(z.model, 0.9, -1.0, 0.0, 1.0, "batch diversity").args[0])
    assert torch.equal(plain[:, IMAGE:], merged[:, IMAGE:]) and torch.equal(plain[0], merged[0])
    assert not torch.allclose(plain[1:, :IMAGE], merged[1:, :IMAGE])


@pytest.mark.parametrize("node", ["NegGuideVSF", "NegGuideNegToMe"])
def test_image_conditioned_hidream_is_refused_with_the_reason(node):
    """HiDream E1 (the condition image concatenated beside the latent): a clear error at sampling."""
    z = zoo.build("hidream")
    if node == "NegGuideVSF":
        model = NegGuideVSF.execute(z.model, z.clip, NEGATIVE, 3.0, 0.1, 0.0, 1.0).args[0]
    else:
        model = NegGuideNegToMe.execute(z.model, 0.9, 0.65, 0.0, 1.0, "batch diversity").args[0]
    latent = z.empty_latent(WIDTH, HEIGHT, 2)
    cond = z.encode(POSITIVE)[0]
    edit = [[cond[0], {**cond[1], "concat_latent_image": torch.zeros_like(latent["samples"][:1])}]]
    with pytest.raises(ValueError, match=rf"{node} does not support image-conditioned HiDream \(E1 edit\)"):
        nodes.common_ksampler(model, 0, 1, 1.0, "euler", "simple", edit, z.encode(""), latent)
