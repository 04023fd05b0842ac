"""Edit models' reference images (Flux Kontext, Flux.2 edit, Qwen-Image-Edit) under VSF and NegToMe.

ComfyUI's ReferenceLatent node puts "reference_latents" in the conditioning; Flux, Flux.2 and
Qwen-Image patchify them and append their tokens after the generated image tokens:
[text ; image ; reference] (families/text_first.py). They are image-side tokens: VSF's image
query group includes them (they read N flipped, never as text), and NegToMe merges only the
generated image tokens, never the reference the model encoded.
"""

import inspect

import pytest
import torch

import comfy_extras.nodes_edit_model as edit_model
import nodes

from negguide.attention_patches.families.text_first import TextFirstCall
from negguide.harness import zoo
from negguide.harness.attention_calls import record_above, record_below
from negguide.nodes import negtome as negtome_node
from negguide.nodes import vsf as vsf_node
from negguide.nodes.model_family import family_adapter_of
from negguide.nodes.negtome import apply_negtome
from negguide.nodes.schedule import SigmaWindow
from negguide.nodes.vsf import NegGuideVSF

EDIT_MODELS = ["flux", "flux2", "flux2_dev", "qwen_image"]
PROMPT, NEGATIVE = "a blue circle on grass", "a red square"
WIDTH, HEIGHT = 96, 64  # not square, so a transposed reference would not fit


def with_reference(entry, conditioning, seed=3):
    """``conditioning`` with one random reference latent of the generated image's size, set by
    ComfyUI's own ReferenceLatent node."""
    shape = entry.empty_latent(WIDTH, HEIGHT, 1)["samples"].shape
    reference = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return edit_model.ReferenceLatent.execute(conditioning, {"samples": reference}).args[0]


def token_counts(entry):
    """(text, image) tokens of one model call at WIDTH x HEIGHT: the reference adds as many
    tokens as the image (same size). model_base.Flux2 left-pads a context shorter than 512 tokens
    (Flux.2 dev's Mistral prompt) to 512."""
    adapter = family_adapter_of(entry.model, "test", ("flux", "flux2", "qwen_image"))
    latent = entry.empty_latent(WIDTH, HEIGHT, 1)["samples"]
    layout = adapter.call_layout(entry.model.model.diffusion_model, tuple(latent.shape), 0, 0, {}, "test")
    text = entry.encode(PROMPT)[0][0].shape[1]
    return max(text, 512) if entry.family == "flux2" else text, layout.image_len


def run_once(entry, model, batch=1):
    latent = entry.empty_latent(WIDTH, HEIGHT, batch)
    return nodes.common_ksampler(model, 7, 1, 1.0, "euler", "normal", with_reference(entry, entry.encode(PROMPT)),
                                 entry.encode(""), latent)[0]["samples"]


def test_the_text_first_layout_puts_references_on_the_image_side():
    layout = TextFirstCall(text_len=10, negative_len=3, image_len=6, grid=(1, 2, 3), patch_size=2)
    q_len = 10 + 6 + 6  # + a reference of the image's size
    image_group, positive_group, negative_group = layout.vsf_groups(layout.kind(q_len, q_len), q_len)
    assert image_group.flipped and image_group.queries == ((10, q_len),)
    assert positive_group.queries == ((0, 7),) and negative_group.queries == ((7, 10),)
    assert layout.image_span(q_len, q_len) == (10, 16)


@pytest.mark.parametrize("name", EDIT_MODELS)
def test_vsf_treats_reference_tokens_as_image_queries(name):
    """Every joint call carries text + image + reference tokens; VSF splits it into image
    queries (image AND reference: they see N flipped, bias -beta), P queries and N queries, and
    the N columns are exactly N's tokens before the image, so no reference token is ever text."""
    entry = zoo.build(name)
    text, image = token_counts(entry)
    n = vsf_node.encode_negative(entry.clip, NEGATIVE).context.shape[1]
    base, calls = record_below(entry.model)
    run_once(entry, NegGuideVSF.execute(base, entry.clip, NEGATIVE, 3.0, 0.25, 0.0, 1.0).args[0])
    masked = [c for c in calls if c.mask is not None]
    assert masked and len(masked) % 3 == 0
    for image_group, prompt, negative in zip(masked[0::3], masked[1::3], masked[2::3]):
        seq = 2 if image_group.skip_reshape else 1
        assert image_group.k.shape[seq] == text + n + 2 * image
        assert (image_group.q.shape[seq], prompt.q.shape[seq], negative.q.shape[seq]) == (2 * image, text, n)
        mi = image_group.mask
        assert torch.all(mi[..., :text] == 0) and torch.allclose(mi[..., text:text + n], torch.tensor(-0.25))
        assert torch.all(mi[..., text + n:] == 0)


@pytest.mark.parametrize("name", EDIT_MODELS)
def test_vsf_with_reference_images_at_infinite_bias_is_the_plain_edit_model(name):
    entry = zoo.build(name)
    plain = run_once(entry, entry.model)
    vsf = NegGuideVSF.execute(entry.model, entry.clip, NEGATIVE, 3.0, 0.1, 0.0, 1.0).args[0]
    assert not torch.allclose(run_once(entry, vsf), plain)
    vsf.model_options["transformer_options"]["optimized_attention_override"].__self__.beta = float("inf")
    torch.testing.assert_close(run_once(entry, vsf), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", EDIT_MODELS)
def test_negtome_merges_the_generated_image_tokens_and_never_the_reference(name):
    """With tau = -1 every generated image token of the non-reference rows is merged in every
    joint call; the text tokens, the reference image's tokens and row 0 (the batch's reference
    image) are left as the model computed them."""
    entry = zoo.build(name)
    text, image = token_counts(entry)
    base, raw = record_below(entry.model)
    adapter = family_adapter_of(base, "test", negtome_node.SUPPORTED_FAMILIES)
    model = apply_negtome(base, adapter, 0.9, -1.0, SigmaWindow.from_percents(base, 0.0, 1.0, "test"))
    merged = record_above(model)
    run_once(entry, model, batch=3)
    assert raw and len(raw) == len(merged)
    for before, after in ((b.out, a.out) for b, a in zip(raw, merged)):
        assert tuple(before.shape[:2]) == (3, text + 2 * image)  # [B, L, H*D]
        assert torch.equal(after[:, :text], before[:, :text]), "a text token was merged"
        assert torch.equal(after[:, text + image:], before[:, text + image:]), "a reference-image token was merged"
        assert torch.equal(after[0], before[0]), "the batch's reference row changed"
        assert (after[1:, text:text + image] != before[1:, text:text + image]).any(dim=-1).all(), \
            "a generated image token was left unmerged"


@pytest.mark.zoo_architecture("z_image")
@pytest.mark.parametrize("method", ["vsf", "negtome"])
def test_z_image_reference_images_are_refused_with_the_reason(method):
    """Z-Image's edit conditioning joins the sequence in another layout, which the Z-Image
    adapter does not cover: both methods refuse it when sampling starts, naming what works.
    (Hosts whose NextDiT takes no reference latents, e.g. 0.3.75, drop them before the model.)"""
    entry = zoo.build("z_image")
    if "ref_latents" not in inspect.signature(entry.model.model.diffusion_model._forward).parameters:
        pytest.skip("this host's NextDiT takes no reference latents (ReferenceLatent does nothing on Z-Image here)")
    if method == "vsf":
        model = NegGuideVSF.execute(entry.model, entry.clip, NEGATIVE, 3.0, 0.1, 0.0, 1.0).args[0]
    else:
        model = negtome_node.NegGuideNegToMe.execute(entry.model, 0.9, 0.0, 0.0, 1.0, "batch diversity").args[0]
    with pytest.raises(ValueError, match="does not support Z-Image reference images.*text-to-image Z-Image"):
        run_once(entry, model)
