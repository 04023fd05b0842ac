"""Hunyuan Video 1.5 with NegGuideVSF and NegGuideNegToMe: the layout of attention_patches/
families/hunyuan_video.py, proven on the tiny zoo model (ComfyUI's own HunyuanVideo15 classes,
Qwen2.5-VL text encoder) through the host's model code, on both hosts: 0.33 puts the text first
in every joint call, 0.3.75 last, and the adapter reads which off the blocks.

Per model call: two token-refiner calls over the text context alone, then one joint call per
double and single block over [vision ; byT5 ; context] and the video tokens."""

import types

import pytest
import torch

import nodes

from negguide.attention_patches.families import ADAPTERS, JOINT, TEXT_ONLY
from negguide.attention_patches.families.hunyuan_video import HunyuanVideoAdapter
from negguide.harness import zoo
from negguide.harness.attention_calls import attention_outputs_of_one_step, record_below
from negguide.nodes import vsf as vsf_node
from negguide.nodes.model_family import family_adapter_of
from negguide.nodes.negtome import NegGuideNegToMe
from negguide.nodes.schedule import SigmaWindow

pytestmark = pytest.mark.zoo_architecture("hunyuan_video15")

ADAPTER = ADAPTERS["hunyuan_video"]
POSITIVE, OTHER_POSITIVE = "a red cat", "a blue dog"  # same token count
NEGATIVE = "a red square"
WIDTH, HEIGHT = 96, 64  # latent 6 x 4 (16x), patch 1 -> 24 video tokens
IMAGE = 6 * 4
BYT5, VISION = 5, 3  # glyph and vision tokens fed beside the context
INF = float("-inf")


def conditioning(z, text=POSITIVE, seed=0):
    """``text``'s CONDITIONING with byT5 glyph states and SigLIP-like vision states beside it
    (the zoo's text encoder has no byT5; I2V workflows add the vision output)."""
    generator = torch.Generator().manual_seed(seed)
    tensor, extra = z.encode(text)[0]
    vision = types.SimpleNamespace(last_hidden_state=torch.randn(1, VISION, 48, generator=generator))
    return [[tensor, {**extra, "conditioning_byt5small": torch.randn(1, BYT5, 1472, generator=generator),
                      "clip_vision_output": vision}]]


def recorded_calls(z, method=None, seed=1, positive=None, batch=1):
    """Every attention call of one step at cfg 1, recorded below ``method`` (a function of the model)."""
    model, calls = record_below(z.model)
    nodes.common_ksampler(method(model) if method else model, seed, 1, 1.0, "euler", "simple",
                          positive or conditioning(z), z.encode(""), z.empty_latent(WIDTH, HEIGHT, batch))
    return calls


def vsf(z, adapter=ADAPTER, bias=0.25):
    tokens = vsf_node.encode_negative(z.clip, NEGATIVE)
    window = SigmaWindow.from_percents(z.model, 0.0, 1.0, "test")
    return lambda model: vsf_node.apply_vsf(model, adapter, tokens, 3.0, bias, window)


def layout(z, context_len, negative_len=0):
    return ADAPTER.call_layout(z.model.model.diffusion_model, (1, 32, 1, HEIGHT // 16, WIDTH // 16), context_len,
                               negative_len, {"txt_byt5": torch.zeros(1, BYT5, 1472),
                                              "clip_fea": torch.zeros(1, VISION, 48)}, "test")


def test_two_refiner_calls_then_joint_calls_in_the_order_the_host_uses():
    """Plain model, by perturbation: the refiner calls cover the context alone; in the first
    joint call new noise changes exactly the video rows, a new prompt exactly the context rows,
    new glyph or vision states exactly theirs, at the positions the adapter gives on this host."""
    z = zoo.build("hunyuan_video15")
    context = z.encode(POSITIVE)[0][0].shape[1]
    call = layout(z, context)
    base = recorded_calls(z)
    assert [c.q.shape[2] for c in base] == [context, context, call.length, call.length]  # [B, H, L, D]
    assert all(c.skip_reshape and c.mask is None and c.q.shape == c.k.shape for c in base)
    assert call.kind(context, context) == TEXT_ONLY and call.kind(call.length, call.length) == JOINT
    text = (call.length - call.text_len, call.length) if call.image_first else (0, call.text_len)
    image = call.image
    assert image == ((0, IMAGE) if call.image_first else (call.text_len, call.length))
    assert getattr(z.model.model.diffusion_model.double_blocks[0], "flipped_img_txt", False) == call.image_first
    vision = (text[0], text[0] + VISION)
    byt5 = (vision[1], vision[1] + BYT5)
    spans = {"image": image, "vision": vision, "byt5": byt5, "context": (byt5[1], text[1])}
    assert spans["context"] == (call.context_start, call.context_start + context)
    original = conditioning(z)
    changed = {
        "image": recorded_calls(z, seed=2)[2].k,
        "context": recorded_calls(z, positive=[[z.encode(OTHER_POSITIVE)[0][0], original[0][1]]])[2].k,
        "byt5": recorded_calls(z, positive=[[original[0][0], {**original[0][1], "conditioning_byt5small":
                                                              torch.randn(1, BYT5, 1472)}]])[2].k,
        "vision": recorded_calls(z, positive=[[original[0][0], {**original[0][1], "clip_vision_output":
                                                                types.SimpleNamespace(last_hidden_state=torch.randn(1, VISION, 48))}]])[2].k,
    }
    for what, keys in changed.items():
        for part, (lo, hi) in spans.items():
            same = torch.equal(keys[:, :, lo:hi], base[2].k[:, :, lo:hi])
            assert same == (part != what), f"changing the {what} {'changed' if same else 'left'} the {part} rows"


def test_vsf_groups_and_masks_follow_the_layout():
    """Refiner calls: P, then N with the companion z; joint calls: image side (N at -beta,
    values flipped, z hidden), vision + byT5 + P (N and z hidden), N + z (the rest of the text
    hidden). Every group reads the unchanged keys."""
    z = zoo.build("hunyuan_video15")
    context = z.encode(POSITIVE)[0][0].shape[1]
    n = vsf_node.encode_negative(z.clip, NEGATIVE).context.shape[1]
    call = layout(z, context + n + 1, n)
    calls = recorded_calls(z, vsf(z))
    ((plo, phi),), (nlo, nhi), (zlo, zhi) = call.positive_columns, call.negative, call.companion
    assert [(c.q.shape[2], c.k.shape[2]) for c in calls] == [(context, context + n + 1), (n + 1, context + n + 1)] * 2 + [
        (IMAGE, call.length), (phi - plo, call.length), (n + 1, call.length)] * 2
    refine_p, refine_n = calls[0].mask[0, 0, 0], calls[1].mask[0, 0, 0]
    assert torch.all(refine_p[:context] == 0) and torch.all(refine_p[context:] == INF)
    assert torch.all(refine_n[:context] == INF) and torch.all(refine_n[context:-1] == 0) and refine_n[-1] == INF
    image, prompt, negative = calls[4:7]
    assert torch.equal(image.k, prompt.k) and torch.equal(prompt.k, negative.k)
    mi, mp, mn = (c.mask[0, 0, 0] for c in (image, prompt, negative))
    assert torch.allclose(mi[nlo:nhi], torch.tensor(-0.25)) and mi[zlo] == INF
    assert torch.all(mi[:nlo] == 0) and torch.all(mi[zhi:] == 0)
    assert torch.all(mp[nlo:zhi] == INF) and torch.all(mp[:nlo] == 0) and torch.all(mp[zhi:] == 0)
    assert torch.all(mn[plo:phi] == INF) and mn[zlo] == INF and torch.all(mn[nlo:nhi] == 0)
    assert torch.all(mn[call._image_side[0]:call._image_side[1]] == 0)
    torch.testing.assert_close(image.v[:, :, nlo:nhi], -3.0 * prompt.v[:, :, nlo:nhi])
    assert torch.equal(image.v[:, :, :nlo], prompt.v[:, :, :nlo])


class _WithoutCompensation(HunyuanVideoAdapter):
    """A zero token where z goes: the refiner's mean then includes N."""

    def pool_companion(self, context, negative_len):
        return torch.zeros_like(context[:, :1])


def test_the_companion_token_keeps_the_refined_prompt_the_plain_models():
    """The token refiner pools the mean of the whole context: with z after N, P's refined tokens
    (the keys of P in the first joint call) are the plain model's; with a zero token there instead
    (the control) they move."""
    z = zoo.build("hunyuan_video15")
    context = z.encode(POSITIVE)[0][0].shape[1]
    n = vsf_node.encode_negative(z.clip, NEGATIVE).context.shape[1]
    call = layout(z, context + n + 1, n)
    lo, hi = call.context_start, call.context_start + context
    plain_p = recorded_calls(z)[2].k[:, :, lo:hi]  # P sits where it sits without N, in either order
    joint = [c for c in recorded_calls(z, vsf(z)) if c.k.shape[2] == call.length][0]
    control = [c for c in recorded_calls(z, vsf(z, _WithoutCompensation())) if c.k.shape[2] == call.length][0]
    torch.testing.assert_close(joint.k[:, :, lo:hi], plain_p, rtol=1e-5, atol=1e-5)
    assert (control.k[:, :, lo:hi] - plain_p).abs().max() > 1e-3


def test_the_negative_leaves_its_glyph_tokens_out():
    """A quoted negative tokenizes to byT5 glyph tokens too; they feed txt_byt5 (the encoder's
    conditioning_byt5small), never the context: the negative is its Qwen2.5-VL tokens alone, the
    prompt's own encoding (template cropped, no padding)."""
    z = zoo.build("hunyuan_video15")
    quoted = 'a "red" square'
    assert "byt5" in z.clip.tokenize(quoted)
    tokens = vsf_node.encode_negative(z.clip, quoted).context
    torch.testing.assert_close(tokens, z.encode(quoted)[0][0], rtol=1e-5, atol=1e-5)


def test_negtome_merges_exactly_the_video_tokens():
    """Attention outputs with NegToMe vs without (batch 3, same noise), in the first joint call:
    only the video rows of images 1 and 2 change; the text rows and image 0 are the plain model's;
    the refiner calls are untouched."""
    z = zoo.build("hunyuan_video15")
    call = layout(z, z.encode(POSITIVE)[0][0].shape[1])

    def outputs(model):
        x = torch.randn(3, 32, 1, HEIGHT // 16, WIDTH // 16, generator=torch.Generator().manual_seed(0))
        return attention_outputs_of_one_step(model, conditioning(z), z.encode(""), x)

    plain = outputs(z.model)
    merged = outputs(NegGuideNegToMe.execute(z.model, 0.9, -1.0, 0.0, 1.0, "batch diversity").args[0])
    assert all(torch.equal(a, b) for a, b in zip(plain[:2], merged[:2]))  # refiner calls: [B, L, H*D]
    lo, hi = call.image
    joint_plain, joint_merged = plain[2], merged[2]
    assert torch.equal(joint_plain[0], joint_merged[0])
    assert torch.equal(joint_plain[:, :lo], joint_merged[:, :lo]) and torch.equal(joint_plain[:, hi:], joint_merged[:, hi:])
    assert not torch.allclose(joint_plain[1:, lo:hi], joint_merged[1:, lo:hi])


# Hunyuan Video 1.0 and HunyuanImage 2.1: the same DiT without the condition-type embedding, so
# byT5 follows the context. Tiny models from the host's own classes (what detection sets for
# their checkpoints, shrunk), fed the zoo's Qwen2.5-VL context (HunyuanImage 2.1's encoder; 1.0's
# LLaVA-Llama-3 tokenizer is not in the 0.33.0 snapshot) and, for 2.1, byT5 glyph states.
CONTEXT_FIRST = {
    "hunyuan_video_1.0": ("HunyuanVideo", {"in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2],
                                           "axes_dim": [8, 12, 12], "guidance_embed": True, "byt5": False},
                          (1, 16, 1, HEIGHT // 8, WIDTH // 8), 0),
    "hunyuan_image_2.1": ("HunyuanImage21", {"in_channels": 64, "out_channels": 64, "patch_size": [1, 1],
                                             "axes_dim": [16, 16], "guidance_embed": False, "byt5": True},
                          (1, 64, HEIGHT // 32, WIDTH // 32), BYT5),
}


def context_first_model(name):
    """A ModelPatcher of ``name``'s tiny DiT with deterministic random weights, its latent shape
    and its byT5 token count."""
    import comfy.ldm.hunyuan_video.model
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    from negguide.shapes_world.host_compat import complete_params

    supported, config, latent, byt5 = CONTEXT_FIRST[name]
    unet_config = complete_params(
        {"image_model": "hunyuan_video", "vec_in_dim": None, "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 2.0,
         "num_heads": 2, "depth": 1, "depth_single_blocks": 1, "theta": 256, "qkv_bias": True, "meanflow": False,
         "use_cond_type_embedding": False, "vision_in_dim": None, **config}, comfy.ldm.hunyuan_video.model.HunyuanVideoParams)
    model_config = getattr(comfy.supported_models, supported)(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    base = model_config.get_model({})
    zoo.initialise(base.diffusion_model, torch.Generator().manual_seed(5))
    patcher = comfy.model_patcher.ModelPatcher(base, comfy.model_management.get_torch_device(),
                                               comfy.model_management.unet_offload_device())
    return patcher, latent, byt5


def context_first_conditioning(z, byt5, text=POSITIVE, glyph_seed=0, mask_padding=0):
    """``text``'s zoo encoding, with ``byt5`` glyph states; ``mask_padding`` random tokens after
    it dropped by a text mask (what a padding encoder gives)."""
    tensor, extra = z.encode(text)[0]
    extra = {k: v for k, v in extra.items() if k != "attention_mask"}
    if byt5:
        extra["conditioning_byt5small"] = torch.randn(1, byt5, 1472, generator=torch.Generator().manual_seed(glyph_seed))
    if mask_padding:
        padding = torch.randn(1, mask_padding, tensor.shape[-1], generator=torch.Generator().manual_seed(9))
        extra["attention_mask"] = torch.cat([torch.ones(1, tensor.shape[1], dtype=torch.int64),
                                             torch.zeros(1, mask_padding, dtype=torch.int64)], 1)
        tensor = torch.cat([tensor, padding], 1)
    return [[tensor, extra]]


def one_step(model, latent, positive, z, method=None, seed=1):
    """The latent after one euler step at cfg 1, and the attention calls below ``method``."""
    recorded, calls = record_below(model)
    out = nodes.common_ksampler(method(recorded) if method else recorded, seed, 1, 1.0, "euler", "simple",
                                positive, z.encode(""), {"samples": torch.zeros(latent)})[0]["samples"]
    return out, calls


@pytest.mark.parametrize("name", sorted(CONTEXT_FIRST))
def test_context_first_models_put_byt5_after_the_context(name):
    """Plain model, by perturbation, in the first joint call: a new prompt changes exactly the
    context rows, new glyph states exactly the byT5 rows after them, new noise exactly the image
    rows, at the adapter's positions on this host."""
    z = zoo.build("hunyuan_video15")
    model, latent, byt5 = context_first_model(name)
    positive = context_first_conditioning(z, byt5)
    context = positive[0][0].shape[1]
    call = ADAPTER.call_layout(model.model.diffusion_model, latent, context, 0,
                               {"txt_byt5": positive[0][1].get("conditioning_byt5small")}, "test")
    assert not call.byt5_first and call.text_len == context + byt5
    _, base = one_step(model, latent, positive, z)
    joint = [c for c in base if c.q.shape[2] == call.length]
    assert len(joint) == 2 and [c.q.shape[2] for c in base[:2]] == [context, context]
    start = call.context_start
    spans = {"context": (start, start + context), "byt5": (start + context, start + context + byt5), "image": call.image}
    changed = {
        "context": one_step(model, latent, context_first_conditioning(z, byt5, OTHER_POSITIVE), z)[1],
        "image": one_step(model, latent, positive, z, seed=2)[1],
    }
    if byt5:
        changed["byt5"] = one_step(model, latent, context_first_conditioning(z, byt5, glyph_seed=1), z)[1]
    for what, calls in changed.items():
        keys = [c for c in calls if c.q.shape[2] == call.length][0].k
        for part, (lo, hi) in spans.items():
            if hi > lo:
                same = torch.equal(keys[:, :, lo:hi], joint[0].k[:, :, lo:hi])
                assert same == (part != what), f"changing the {what} {'changed' if same else 'left'} the {part} rows"


# A masked prompt beside byT5 fails in the host itself (the joint mask covers only the context:
# hunyuan_video/model.py:388), so HunyuanImage 2.1 is checked without one.
@pytest.mark.parametrize("name, mask_padding", [("hunyuan_video_1.0", 0), ("hunyuan_video_1.0", 3),
                                                ("hunyuan_image_2.1", 0)])
def test_context_first_models_with_infinite_bias_equal_the_plain_model(name, mask_padding):
    """VSF with the flipped copy fully masked gives the plain model's step (with and without a
    padded, masked prompt); with the paper's bias it changes it. byT5 queries are prompt-side:
    one group with vision and P (two ranges), never seeing N."""
    z = zoo.build("hunyuan_video15")
    model, latent, byt5 = context_first_model(name)
    positive = context_first_conditioning(z, byt5, mask_padding=mask_padding)
    plain, _ = one_step(model, latent, positive, z)
    inf, calls = one_step(model, latent, positive, z, vsf(z, bias=float("inf")))
    torch.testing.assert_close(inf, plain, rtol=1e-5, atol=1e-5)
    n = vsf_node.encode_negative(z.clip, NEGATIVE).context.shape[1]
    context = positive[0][0].shape[1]
    call = ADAPTER.call_layout(model.model.diffusion_model, latent, context + n + 1, n,
                               {"txt_byt5": positive[0][1].get("conditioning_byt5small")}, "test")
    joint = [(c.q.shape[2], c.k.shape[2]) for c in calls if c.k.shape[2] == call.length]
    assert joint == [(call.image_len, call.length), (context + byt5, call.length), (n + 1, call.length)] * 2
    assert all(c.mask is not None for c in calls) and (mask_padding == 0 or calls[0].mask.min() < -1e30)
    assert not torch.allclose(one_step(model, latent, positive, z, vsf(z))[0], plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CONTEXT_FIRST))
def test_the_nodes_take_context_first_models_and_negtome_merges_their_image_tokens(name):
    """Both nodes accept the 1.0 and 2.1 model classes as the Hunyuan Video family; NegToMe
    (batch 2) changes only image 1's image rows of the first joint call."""
    model, latent, byt5 = context_first_model(name)
    assert family_adapter_of(model, "NegGuideVSF", vsf_node.SUPPORTED_FAMILIES) is ADAPTER
    z = zoo.build("hunyuan_video15")
    positive = context_first_conditioning(z, byt5)
    call = ADAPTER.call_layout(model.model.diffusion_model, latent, positive[0][0].shape[1], 0,
                               {"txt_byt5": positive[0][1].get("conditioning_byt5small")}, "test")
    x = torch.randn(2, *latent[1:], generator=torch.Generator().manual_seed(0))
    plain = attention_outputs_of_one_step(model, positive, z.encode(""), x)[2]
    merged = attention_outputs_of_one_step(
        NegGuideNegToMe.execute(model, 0.9, -1.0, 0.0, 1.0, "batch diversity").args[0], positive, z.encode(""), x)[2]
    lo, hi = call.image
    assert torch.equal(plain[0], merged[0])
    assert torch.equal(plain[:, :lo], merged[:, :lo]) and torch.equal(plain[:, hi:], merged[:, hi:])
    assert not torch.allclose(plain[1, lo:hi], merged[1, lo:hi])
