"""NegGuideVSF through the real ComfyUI model code of every supported zoo architecture."""

import logging
import math

import pytest
import torch

import comfy.model_base
import comfy.samplers
import nodes

from negguide.attention_patches.families import ADAPTERS
from negguide.harness import zoo
from negguide.harness.attention_calls import record_below
from negguide.nodes import vsf as vsf_node
from negguide.nodes.vsf import NegGuideVSF

SUPPORTED = [name for name in zoo.ARCHITECTURES if zoo.FAMILIES[name] in vsf_node.SUPPORTED_FAMILIES]
NEGATIVE = "a red square"
OTHER_NEGATIVE = "a blue square"  # as many tokens as NEGATIVE with every tokenizer in the zoo


def negative_tokens(entry, text, **options):
    """What NegGuideVSF encodes for ``entry``'s model: the context part and the family's other
    text inputs (HiDream's Llama layers)."""
    return vsf_node.encode_negative(entry.clip, text, extra_inputs=ADAPTERS[entry.family].extra_text_inputs, **options)


OWN_LAYOUT_TESTS = {"z_image", "hidream", "hunyuan_video"}
"""Families whose calls are not the three-group joint pattern (padding, several text parts, a
pooling companion): their own test files check every call's groups and masks."""


def pads_caption(name):
    """Families whose model pads the caption (Z-Image): appending N moves the model's own
    padding, so "as if N were absent" means "the same for every N of that length"."""
    return ADAPTERS[zoo.FAMILIES[name]].pads_text


def patch(model, clip, negative=NEGATIVE, scale=3.0, bias=0.1, start=0.0, end=1.0):
    return NegGuideVSF.execute(model, clip, negative, scale, bias, start, end).args[0]


def sample(entry, model, *, cfg=1.0, batch=1, width=64, height=64, seed=7, steps=2, negative_text=""):
    latent = entry.empty_latent(width, height, batch)
    return nodes.common_ksampler(
        model, seed, steps, cfg, "euler", "normal",
        entry.encode("a blue circle on grass"), entry.encode(negative_text), latent,
    )[0]["samples"]


def denoise_once(entry, model, x, sigma=1.0, positive=None):
    """One model evaluation (cond branch) at ``sigma`` for ``positive`` (a CONDITIONING; the
    default prompt's): what a sampler sees."""
    captured = {}

    def capture(args):
        captured["denoised"] = args["denoised"]
        return args["denoised"]

    model = model.clone()
    model.set_model_sampler_post_cfg_function(capture)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive or entry.encode("a blue circle on grass"), entry.encode(""))
    guider.set_cfg(1.0)
    sigmas = torch.tensor([sigma, 0.0])
    guider.sample(x.clone(), x.clone(), comfy.samplers.sampler_object("euler"), sigmas, seed=1, disable_pbar=True)
    return captured["denoised"]


@pytest.mark.parametrize("name", SUPPORTED)
def test_full_ksampler_run_changes_output_and_scale_zero_is_identity(name):
    entry = zoo.build(name)
    plain = sample(entry, entry.model)
    vsf = sample(entry, patch(entry.model, entry.clip))
    off = sample(entry, patch(entry.model, entry.clip, scale=0.0))
    assert torch.isfinite(vsf).all()
    assert (vsf - plain).abs().mean() > 1e-4 * plain.abs().mean()
    assert torch.equal(off, plain)


@pytest.mark.parametrize("name", SUPPORTED)
def test_input_model_is_left_untouched(name):
    entry = zoo.build(name)
    options_before = repr(entry.model.model_options)
    wrappers_before = repr(entry.model.wrappers)
    patched = patch(entry.model, entry.clip)
    assert patched is not entry.model
    assert repr(entry.model.model_options) == options_before
    assert repr(entry.model.wrappers) == wrappers_before
    assert torch.equal(sample(entry, entry.model), sample(entry, zoo.build(name).model))


@pytest.mark.parametrize("name", SUPPORTED)
def test_infinite_bias_equals_the_plain_model_exactly(name):
    """With the flipped copy fully masked, N never leaks into image or positive tokens."""
    entry = zoo.build(name)
    patched = patch(entry.model, entry.clip)
    hooks = patched.model_options["transformer_options"]["optimized_attention_override"].__self__
    hooks.beta = float("inf")
    x = torch.randn_like(entry.empty_latent(64, 48, 2)["samples"], dtype=torch.float32)
    if pads_caption(name):
        other = patch(entry.model, entry.clip, negative=OTHER_NEGATIVE)
        other.model_options["transformer_options"]["optimized_attention_override"].__self__.beta = float("inf")
        assert negative_tokens(entry, OTHER_NEGATIVE).context.shape == hooks.negative.context.shape
        torch.testing.assert_close(denoise_once(entry, patched, x), denoise_once(entry, other, x), rtol=0, atol=0)
        assert not torch.allclose(denoise_once(entry, patched, x), denoise_once(entry, patch(entry.model, entry.clip), x))
        return
    torch.testing.assert_close(denoise_once(entry, patched, x), denoise_once(entry, entry.model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SUPPORTED)
def test_padding_of_the_negative_never_reaches_attention(name):
    entry = zoo.build(name)
    x = torch.randn_like(entry.empty_latent(64, 64, 1)["samples"], dtype=torch.float32)
    outputs = []
    for min_length in (77, 256):
        clip = entry.clip.clone()
        for key in ("t5xxl", "umt5xxl", "llama"):  # what ComfyUI's T5TokenizerOptions node sets (and HiDream's Llama)
            clip.set_tokenizer_option(f"{key}_min_length", min_length)
            clip.set_tokenizer_option(f"{key}_min_padding", min_length)
        outputs.append(denoise_once(entry, patch(entry.model, clip), x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    tokens = negative_tokens(entry, NEGATIVE)
    assert all(0 < t.shape[-2] < 20 for t in (tokens.context, *tokens.extra.values()))  # a few real tokens, no 77/256 padding


def padded_positive(entry, pad: int):
    """The default prompt's CONDITIONING with ``pad`` random tokens after its text and an int
    attention mask [1, L + pad] that drops them: what an encoder that pads gives."""
    (context, extras), = entry.encode("a blue circle on grass")
    padding = torch.randn(1, pad, context.shape[-1], generator=torch.Generator().manual_seed(3))
    mask = torch.cat([torch.ones(1, context.shape[1], dtype=torch.int64), torch.zeros(1, pad, dtype=torch.int64)], 1)
    return [[torch.cat([context, padding.to(context)], 1), {**extras, "attention_mask": mask}]]


def without_attention_mask(extras: dict) -> dict:
    """A conditioning's extras without its attention mask and the mask's image shape."""
    return {k: v for k, v in extras.items() if not k.startswith("attention_mask")}


def context_as_the_model_sees_it(entry, context, extras):
    """The text context after the model's own extra_conds: model_base.Flux2 front-pads a context
    shorter than 512 tokens (Flux.2 dev's Mistral prompts) but leaves a Redux bias as it is, so a
    bias built for the unpadded context fails in the plain model; build it for this one."""
    return entry.model.model.extra_conds(cross_attn=context, **without_attention_mask(extras))["c_crossattn"].cond


def joint_bias_positive(entry):
    """The default prompt's CONDITIONING with the square joint-sequence bias Flux models take
    (StyleModelApply's attn_bias: [1, T + 1, T + 1] over the text and a 1x1 image reference,
    which model_base.Flux scales to the image's token grid): text token 0 damped for every query."""
    (context, extras), = entry.encode("a blue circle on grass")
    context = context_as_the_model_sees_it(entry, context, extras)
    length = context.shape[1] + 1
    bias = torch.zeros(1, length, length)
    bias[..., 0] = math.log(0.05)
    return [[context, {**extras, "attention_mask": bias, "attention_mask_img_shape": (1, 1)}]]


def masked_positive(entry):
    """The family's attention-mask form: the square bias for Flux models, text padding elsewhere."""
    return joint_bias_positive(entry) if entry.family in ("flux", "flux2") else padded_positive(entry, 3)


@pytest.mark.parametrize("name", SUPPORTED)
def test_infinite_bias_equals_the_plain_model_under_the_models_own_mask(name):
    """A model call that carries an attention mask (text padding; Flux's Redux bias) keeps it with
    VSF: N is attended where the mask stood, and with the flipped copy fully masked the output
    equals the plain model's under the same mask. The control: the mask changes the plain output
    (on hosts whose model takes no mask from this conditioning, the test says so and skips)."""
    entry = zoo.build(name)
    positive = masked_positive(entry)
    x = torch.randn_like(entry.empty_latent(64, 48, 1)["samples"], dtype=torch.float32)
    try:
        plain = denoise_once(entry, entry.model, x, positive=positive)
    except RuntimeError as error:  # 0.3.75's NextDiT hands an integer text mask to SDPA as it is
        pytest.skip(f"this host's {type(entry.model.model).__name__} fails on a padded text mask without NegGuide: {error}")
    unmasked = [[positive[0][0], without_attention_mask(positive[0][1])]]
    if torch.equal(plain, denoise_once(entry, entry.model, x, positive=unmasked)):
        pytest.skip(f"this host's {type(entry.model.model).__name__} takes no attention mask from the conditioning")
    patched = patch(entry.model, entry.clip, negative=OTHER_NEGATIVE if pads_caption(name) else NEGATIVE)
    patched.model_options["transformer_options"]["optimized_attention_override"].__self__.beta = float("inf")
    if pads_caption(name):
        reference = patch(entry.model, entry.clip)
        reference.model_options["transformer_options"]["optimized_attention_override"].__self__.beta = float("inf")
        plain = denoise_once(entry, reference, x, positive=positive)
    torch.testing.assert_close(denoise_once(entry, patched, x, positive=positive), plain, rtol=1e-5, atol=1e-5)


def keep_all_positive(entry):
    """The default prompt's CONDITIONING with a mask that keeps every token: ones per text token
    (Qwen-Image), a zero square bias (Flux models)."""
    if entry.family in ("flux", "flux2"):
        (context, extras), = joint_bias_positive(entry)
        return [[context, {**extras, "attention_mask": torch.zeros_like(extras["attention_mask"])}]]
    (context, extras), = entry.encode("a blue circle on grass")
    return [[context, {**extras, "attention_mask": torch.ones(1, context.shape[1], dtype=torch.int64)}]]


@pytest.mark.parametrize("name", ["qwen_image", "flux", "chroma", "flux2", "flux2_dev"])
def test_a_mask_that_keeps_every_token_changes_nothing_with_vsf(name):
    """VSF under a mask that keeps every token equals VSF with no mask: the tokens VSF appends
    are attended where the model's mask stands (were N masked out there, the flip would vanish and
    this would equal the plain model, which VSF is not: test_full_ksampler_run_...)."""
    entry = zoo.build(name)
    positive = keep_all_positive(entry)
    x = torch.randn_like(entry.empty_latent(64, 48, 1)["samples"], dtype=torch.float32)
    recorded, calls = record_below(entry.model)
    denoise_once(entry, recorded, x, positive=positive)
    if not any(call.mask is not None for call in calls):
        pytest.skip(f"this host's {type(entry.model.model).__name__} takes no attention mask from the conditioning")
    vsf = patch(entry.model, entry.clip)
    with_mask = denoise_once(entry, vsf, x, positive=positive)
    torch.testing.assert_close(with_mask, denoise_once(entry, vsf, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(with_mask, denoise_once(entry, entry.model, x, positive=positive), rtol=1e-3, atol=1e-3)


def test_a_mask_vsf_cannot_place_the_negative_in_is_refused_with_the_reason():
    """Hunyuan Video 1.5 (whose text masks both hosts forward) given a mask two entries longer
    than its text: VSF says why it cannot place N, before the model runs."""
    entry = zoo.build("hunyuan_video15")
    (context, extras), = entry.encode("a blue circle on grass")
    mask = torch.ones(1, context.shape[1] + 2, dtype=torch.int64)
    mask[:, -1] = 0  # the model is given a mask only where one has a zero
    positive = [[context, {**extras, "attention_mask": mask}]]
    x = torch.randn_like(entry.empty_latent(64, 48, 1)["samples"], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"attention mask of shape \[1, \d+\], not one entry per text token"):
        denoise_once(entry, patch(entry.model, entry.clip), x, positive=positive)


@pytest.mark.parametrize("name", ["flux", "flux2"])
def test_negative_takes_the_text_positions_of_a_prompt_of_its_own(name):
    """Flux models number text tokens along a RoPE axis where the model says so (Flux.2: token j
    at j, after the encoder's padding to 512; Flux.1: all at 0). On Flux.2 VSF's post_input patch
    gives N the ids of the text's first n tokens and leaves P's as the model made them; Flux.1
    gets no patch (its ids stay 0). Recorded by a post_input patch added after VSF's, which sees
    what the blocks get."""
    entry = zoo.build(name)
    x = torch.randn_like(entry.empty_latent(64, 64, 1)["samples"], dtype=torch.float32)
    n = negative_tokens(entry, NEGATIVE).context.shape[1]
    recorded = {}

    def recorder(key):
        def record(args):
            recorded[key] = args["txt_ids"].clone()
            return args
        return record

    for key, model in (("plain", entry.model), ("vsf", patch(entry.model, entry.clip))):
        model = model.clone()
        model.set_model_patch(recorder(key), "post_input")
        denoise_once(entry, model, x)
    plain, vsf = recorded["plain"], recorded["vsf"]
    p = plain.shape[1]
    assert vsf.shape[1] == p + n
    torch.testing.assert_close(vsf[:, :p], plain, rtol=0, atol=0)
    torch.testing.assert_close(vsf[:, p:], plain[:, :n], rtol=0, atol=0)
    adapter = ADAPTERS[entry.family]
    if name == "flux2":  # positions run along the text: without the patch N would sit at 512..
        assert p == 512 and torch.equal(plain[0, :, 3], torch.arange(p, dtype=plain.dtype))
        assert torch.equal(vsf[0, p:, 3], torch.arange(n, dtype=plain.dtype))
    else:
        assert not vsf.any() and adapter.text_positions_patch(entry.model.model.diffusion_model) is None


@pytest.mark.parametrize("name", SUPPORTED)
@pytest.mark.parametrize("cfg", [1.0, 7.0])
@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_batches_cfg_and_odd_latent_sizes(name, cfg, batch):
    entry = zoo.build(name)
    out = sample(entry, patch(entry.model, entry.clip), cfg=cfg, batch=batch, width=72, height=40)
    plain = sample(entry, entry.model, cfg=cfg, batch=batch, width=72, height=40)
    assert out.shape == plain.shape
    assert torch.isfinite(out).all()
    per_image = (out - plain).flatten(1).abs().mean(1)
    assert (per_image > 0).all()  # every image of the batch is affected, not only the first


@pytest.mark.parametrize("name", SUPPORTED)
def test_uncond_branch_is_untouched_at_cfg_above_one(name):
    entry = zoo.build(name)
    seen = {}

    def record(tag):
        def post_cfg(args):
            seen.setdefault(tag, []).append(args["uncond_denoised"].clone())
            return args["denoised"]
        return post_cfg

    results = {}
    baseline = patch(entry.model, entry.clip, negative=OTHER_NEGATIVE) if pads_caption(name) else entry.model
    for tag, model in (("plain", baseline), ("vsf", patch(entry.model, entry.clip))):
        model = model.clone()
        model.set_model_sampler_post_cfg_function(record(tag))
        results[tag] = sample(entry, model, cfg=7.0, steps=1)
    # Equal up to float rounding: the masked negative columns change the kernel's summation
    # blocks, not the math. The cond branch moves by orders of magnitude more.
    torch.testing.assert_close(seen["vsf"][0], seen["plain"][0], rtol=1e-4, atol=1e-4)
    assert (results["vsf"] - results["plain"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", SUPPORTED)
def test_captured_attention_calls_show_layout_and_masks(name):
    entry = zoo.build(name)
    base, calls = record_below(entry.model)
    patched = patch(base, entry.clip, bias=0.25)
    n = negative_tokens(entry, NEGATIVE).context.shape[1]
    x = torch.randn_like(entry.empty_latent(64, 64, 1)["samples"], dtype=torch.float32)
    denoise_once(entry, patched, x)
    masked = [c for c in calls if c.mask is not None]
    assert masked, f"VSF never reached an attention call: {[(c.q.shape, c.k.shape) for c in calls]}"
    if ADAPTERS[entry.family].attention == "cross":
        for call in masked:
            text, mask = call.k.shape[1], call.mask
            assert mask.shape[-1] == text
            assert torch.all(mask[..., : text - n] == 0)
            assert torch.allclose(mask[..., text - n:], torch.tensor(-0.25))
        self_attention = [c for c in calls if c.mask is None]
        assert self_attention and all(c.q.shape[1] == c.k.shape[1] for c in self_attention)
        return
    if entry.family in OWN_LAYOUT_TESTS:
        return  # their own layouts: test_z_image.py, test_hidream.py, test_hunyuan_video.py check every call and mask
    # Joint models: three calls per joint attention, image / positive / negative queries.
    assert len(masked) % 3 == 0
    for image, prompt, negative in zip(masked[0::3], masked[1::3], masked[2::3]):
        (qi, ki, mi), (qp, kp, mp), (qn, kn, mn) = ((c.q.shape, c.k.shape, c.mask) for c in (image, prompt, negative))
        seq = 2 if image.skip_reshape else 1
        total = ki[seq]
        p = qp[seq]
        assert qn[seq] == n and qi[seq] == total - p - n
        assert ki == kp == kn  # every group reads the unchanged key set: no dense mask, no extra keys
        assert mi.shape == (1, 1, 1, total) and mp.shape == (1, 1, 1, total) and mn.shape == (1, 1, 1, total)
        assert torch.all(mi[..., :p] == 0) and torch.allclose(mi[..., p:p + n], torch.tensor(-0.25)) and torch.all(mi[..., p + n:] == 0)
        assert torch.all(mp[..., p:p + n] == float("-inf")) and torch.all(mp[..., :p] == 0) and torch.all(mp[..., p + n:] == 0)
        assert torch.all(mn[..., :p] == float("-inf")) and torch.all(mn[..., p:] == 0)


@pytest.mark.parametrize("name", [n for n in SUPPORTED if zoo.FAMILIES[n] == "unet"])
def test_chains_an_existing_attn2_replace(name):
    entry = zoo.build(name)
    calls = []
    from comfy.ldm.modules.attention import optimized_attention

    def replace(q, k, v, extra_options):
        calls.append(k.shape)
        return optimized_attention(q, k, v, extra_options["n_heads"], transformer_options=extra_options)

    base = entry.model.clone()
    blocks = [("input", i) for i in range(12)] + [("middle", 0)] + [("output", i) for i in range(12)]
    for block in blocks:
        base.set_model_attn2_replace(replace, *block)
    below, recorded = record_below(base)
    patched = patch(below, entry.clip)
    x = torch.randn_like(entry.empty_latent(64, 64, 1)["samples"], dtype=torch.float32)
    out = denoise_once(entry, patched, x)
    assert calls, "the existing attn2 replace was not called"
    assert any(c.mask is not None for c in recorded)
    assert not torch.allclose(out, denoise_once(entry, base, x))


@pytest.mark.parametrize("name", SUPPORTED)
def test_chains_an_existing_attention_override(name):
    entry = zoo.build(name)
    base, calls = record_below(entry.model)
    patched = patch(base, entry.clip)
    slot = "optimized_attention_override"
    assert patched.model_options["transformer_options"][slot] is not base.model_options["transformer_options"][slot]
    sample(entry, patched, steps=1)
    assert calls


def test_empty_negative_is_a_noop_with_a_warning(caplog):
    entry = zoo.build(SUPPORTED[0])
    with caplog.at_level(logging.WARNING):
        out = patch(entry.model, entry.clip, negative="   ")
    assert out is entry.model
    assert "empty" in caplog.text


CLIP_CONTEXT = ("sd15", "sdxl", "sd3")  # the zoo's models whose text context is CLIP windows


@pytest.mark.parametrize("name", SUPPORTED)
@pytest.mark.parametrize("words", [150, 300])
def test_long_negatives_keep_every_windows_real_tokens(name, words):
    """A negative past one CLIP window (75 tokens) is split like a long prompt: 150 one-token
    words are 2 windows, 300 are 4. Every window keeps its real text tokens (words, end; its
    text-independent start token is dropped), no padding; T5/LLM encoders take the whole negative
    up to their own limit."""
    entry = zoo.build(name)
    window = negative_tokens(entry, "red " * 75).context
    long = negative_tokens(entry, "red " * words)
    if name in CLIP_CONTEXT:
        assert window.shape[1] == 76  # 75 + end of one full window: nothing cut but the start token
        torch.testing.assert_close(long.context, torch.cat([window] * (words // 75), dim=1), rtol=0, atol=0)
    elif long.extra:  # HiDream: its T5 takes the first 128 tokens (as for the prompt), Llama every word
        assert long.context.shape[1] == 128
        assert all(words <= t.shape[-2] < words + 16 for t in long.extra.values())
    else:
        assert words <= long.context.shape[1] < words + 16  # a token per word plus end/template tokens
    out = sample(entry, patch(entry.model, entry.clip, negative="red " * words))
    assert torch.isfinite(out).all() and not torch.equal(out, sample(entry, entry.model))


def test_negative_from_another_text_encoder_family_is_a_clear_error():
    sd15, sdxl = zoo.build("sd15"), zoo.build("sdxl")
    assert sd15.clip.encode_from_tokens(sd15.clip.tokenize("x")).shape[-1] != sdxl.encode("x")[0][0].shape[-1]
    patched = patch(sdxl.model, sd15.clip)
    with pytest.raises(ValueError, match="Connect the CLIP"):
        sample(sdxl, patched, steps=1)


def test_applying_vsf_twice_is_a_clear_error():
    entry = zoo.build(SUPPORTED[0])
    with pytest.raises(ValueError, match="already applied"):
        patch(patch(entry.model, entry.clip), entry.clip)


def _unbuilt(config):
    """A ModelPatcher around a real model of ``config`` (weights never initialised: the node
    must refuse it before any sampling)."""
    import comfy.model_management
    import comfy.model_patcher

    config.set_inference_dtype(torch.float32, None)
    return comfy.model_patcher.ModelPatcher(
        config.get_model({}), comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device()
    )


def _apply_attention_method(node, model):
    """NegGuideVSF or NegGuideNegToMe (``node``) on ``model``, as the node runs."""
    from negguide.nodes.negtome import MODE_DIVERSITY, NegGuideNegToMe

    if node == "NegGuideVSF":
        return patch(model, zoo.build("sd3").clip)
    return NegGuideNegToMe.execute(model, 0.9, 0.65, 0.0, 0.3, MODE_DIVERSITY)


def test_unsupported_model_names_its_family():
    """AuraFlow: a model family no method of the pack supports."""
    import comfy.supported_models

    model = _unbuilt(comfy.supported_models.AuraFlow({
        "max_seq": 64, "dim": 64, "n_layers": 1, "n_double_layers": 1, "n_heads": 2,
        "cond_seq_dim": 64, "patch_size": 2, "in_channels": 4, "out_channels": 4,
    }))
    with pytest.raises(ValueError, match="does not support AuraFlow models"):
        patch(model, zoo.build("sd3").clip)


@pytest.mark.skipif(not hasattr(comfy.model_base, "ErnieImage"), reason="this ComfyUI host has no ERNIE-Image model")
@pytest.mark.parametrize("node", ["NegGuideVSF", "NegGuideNegToMe"])
def test_a_family_no_hook_reaches_is_refused_with_the_reason(node):
    """ERNIE-Image (a tiny one from the host's own classes) calls attention without
    transformer_options: the attention methods refuse it and say why, naming what works."""
    import comfy.supported_models

    model = _unbuilt(comfy.supported_models.ErnieImage({
        "image_model": "ernie", "hidden_size": 64, "num_attention_heads": 2, "num_layers": 1, "ffn_hidden_size": 128,
        "in_channels": 16, "out_channels": 16, "text_in_dim": 64, "rope_axes_dim": (8, 12, 12),
    }))
    message = rf"{node} cannot act on ERNIE-Image models: its attention calls do not pass transformer_options.*NegGuideDNG"
    with pytest.raises(ValueError, match=message):
        _apply_attention_method(node, model)


def test_window_outside_the_schedule_is_identity():
    entry = zoo.build(SUPPORTED[0])
    plain = sample(entry, entry.model, steps=2)
    # 2 "normal" steps evaluate sigma_max and sigma_min: neither lies in the 50%-60% window.
    between = sample(entry, patch(entry.model, entry.clip, start=0.5, end=0.6), steps=2)
    torch.testing.assert_close(between, plain, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sd15", "flux", "sd3", "wan21"])
def test_attention_map_records_where_the_negative_acts(name):
    entry = zoo.build(name)
    recording = NegGuideVSF.execute(entry.model, entry.clip, NEGATIVE, 3.0, 0.1, 0.0, 1.0, True).args[0]
    plain_vsf = sample(entry, patch(entry.model, entry.clip), cfg=7.0, batch=2, steps=3)
    for _ in range(2):  # a second run starts a new record
        out = sample(entry, recording, cfg=7.0, batch=2, steps=3)
        image = vsf_node.NegGuideVSFAttentionMap.execute({"samples": out}, recording).args[0]
        hooks = recording.get_wrappers("apply_model", vsf_node.HOOK_KEY)[0].__self__
        assert len(hooks.maps) == 3  # one map per step, cond rows only
        latent_hw = out.shape[-2:]
        for sigma, grid in hooks.maps:
            assert grid.shape == (2, *latent_hw)
            assert (grid > 0).all() and (grid < 1).all()
        assert image.shape == (1, 2 * 8 * latent_hw[0] + 2, 3 * 8 * latent_hw[1] + 4, 3)
    torch.testing.assert_close(out, plain_vsf)  # recording does not change the result


def test_attention_map_needs_a_recording_vsf_model():
    entry = zoo.build("sd15")
    out = sample(entry, patch(entry.model, entry.clip), steps=1)
    with pytest.raises(ValueError, match="connect the MODEL of a NegGuideVSF node with record_attention_map on"):
        vsf_node.NegGuideVSFAttentionMap.execute({"samples": out}, entry.model)
    with pytest.raises(ValueError, match="turn on record_attention_map"):
        vsf_node.NegGuideVSFAttentionMap.execute({"samples": out}, patch(entry.model, entry.clip))


def recording(entry, negative=NEGATIVE, scale=3.0, start=0.0, end=1.0):
    return NegGuideVSF.execute(entry.model, entry.clip, negative, scale, 0.1, start, end, True).args[0]


def test_attention_map_says_what_happened_when_there_is_no_map():
    entry = zoo.build("sd15")
    for negative, scale, reason in (("", 3.0, "the negative prompt is empty"), (NEGATIVE, 0.0, "scale is 0")):
        model = recording(entry, negative, scale)
        out = sample(entry, model, steps=1)
        with pytest.raises(ValueError, match=f"NegGuideVSF did nothing \\({reason}\\)"):
            vsf_node.NegGuideVSFAttentionMap.execute({"samples": out}, model)
    never_sampled = recording(entry)
    with pytest.raises(ValueError, match="nothing was sampled with this model yet"):
        vsf_node.NegGuideVSFAttentionMap.execute({"samples": out}, never_sampled)
    outside = recording(entry, start=0.5, end=0.6)  # 2 "normal" steps: sigma_max and sigma_min only
    out = sample(entry, outside, steps=2)
    with pytest.raises(ValueError, match="no step inside NegGuideVSF's start_percent..end_percent window"):
        vsf_node.NegGuideVSFAttentionMap.execute({"samples": out}, outside)


def test_window_that_ends_before_it_starts_is_a_clear_error():
    entry = zoo.build("sd15")
    with pytest.raises(ValueError, match="is after end_percent"):
        patch(entry.model, entry.clip, start=0.8, end=0.2)


CLIP_CONTEXT = {"sd15", "sdxl", "sd3"}
"""Zoo models whose context holds CLIP windows (causal, a start token per window)."""
BIDIRECTIONAL_ONLY = {"flux", "chroma", "wan21", "hidream"}
"""Zoo models whose context is T5 / UMT5 only (no token is the same for every text; HiDream's
Llama part is checked in test_hidream.py)."""


@pytest.mark.parametrize("name", SUPPORTED)
def test_the_negative_drops_exactly_its_text_independent_tokens(name):
    """Issue 15, decision 4a: a causal encoder's start token (CLIP's BOS, an LLM's template
    prefix) encodes the same for every text, so flipping it pushes every image token whatever the
    negative says. encode_negative drops exactly those leading tokens: one per CLIP window
    (also for a negative longer than one window), none of T5's, and for LLM encoders only a
    prefix that two other negatives share row for row."""
    entry = zoo.build(name)
    kept = negative_tokens(entry, NEGATIVE, drop_text_independent=False).context
    dropped = negative_tokens(entry, NEGATIVE).context
    other = negative_tokens(entry, OTHER_NEGATIVE, drop_text_independent=False).context
    removed = kept.shape[1] - dropped.shape[1]
    if name in CLIP_CONTEXT:
        assert removed == 1
        torch.testing.assert_close(dropped, kept[:, 1:], rtol=0, atol=0)
        torch.testing.assert_close(kept[:, 0], other[:, 0], rtol=0, atol=0)
        assert not torch.allclose(kept[:, 2], other[:, 2])  # "red" vs "blue" ("a" before them is shared)
        two_windows = "red " * 100
        assert (negative_tokens(entry, two_windows, drop_text_independent=False).context.shape[1]
                - negative_tokens(entry, two_windows).context.shape[1]) == 2
    elif name in BIDIRECTIONAL_ONLY:
        assert removed == 0
        torch.testing.assert_close(dropped, kept, rtol=0, atol=0)
    else:
        torch.testing.assert_close(dropped, kept[:, removed:], rtol=0, atol=0)
        torch.testing.assert_close(kept[:, :removed], other[:, :removed], rtol=1e-4, atol=1e-5)
        assert dropped.shape[1] >= 2


def test_the_vsf_node_drops_the_start_token():
    """What the node attaches is the negative without its text-independent start token."""
    entry = zoo.build("sd15")
    hooks = patch(entry.model, entry.clip).model_options["transformer_options"]["optimized_attention_override"].__self__
    torch.testing.assert_close(hooks.negative.context, negative_tokens(entry, NEGATIVE).cpu().context, rtol=0, atol=0)
    assert hooks.negative.context.shape[1] == negative_tokens(entry, NEGATIVE, drop_text_independent=False).context.shape[1] - 1
