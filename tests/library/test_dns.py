"""NegGuideDNS / NegGuideDNSGuider through ComfyUI's real sampling code on zoo models: sd15 (EPS)
and sd3 (flow-matching). The paper's definition: DNS = CFG with the empty prompt as the positive
and the prompt as the negative; both nodes must give the very latents of that stock run."""

import copy

import pytest
import torch

import comfy.sample
import comfy.samplers
import nodes

from negguide.harness import zoo
from negguide.nodes.dns import NegGuideDNS, NegGuideDNSGuider, is_dns_patched, zero_conditioning

PROMPT = "a blue circle on grass"
STEPS = 3
CFG = 3.0


@pytest.fixture(scope="module", params=["sd15", "sd3"])
def entry(request):
    return zoo.build(request.param)


def ksample(entry, model, positive, negative, *, cfg=CFG, seed=5, sampler="euler"):
    latent = entry.empty_latent(32, 32, 2)
    return nodes.common_ksampler(model, seed, STEPS, cfg, sampler, "normal", positive, negative, latent)[0]["samples"]


def guider_sample(entry, guider, *, seed=5, sampler="euler"):
    latent = entry.empty_latent(32, 32, 2)["samples"]
    noise = comfy.sample.prepare_noise(latent, seed)
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "normal", STEPS)
    return guider.sample(noise, latent, comfy.samplers.sampler_object(sampler), sigmas, seed=seed, disable_pbar=True)


def test_patch_equals_stock_sampler_with_swapped_prompts(entry):
    p, empty = entry.encode(PROMPT), entry.encode("")
    model = entry.model
    options_before = copy.copy(model.model_options)
    patched = NegGuideDNS.execute(model).args[0]
    assert model.model_options == options_before and not is_dns_patched(model)  # input untouched
    dns = ksample(entry, patched, p, empty)  # the prompt as the positive, as in a normal run
    stock = ksample(entry, model, empty, p)  # the paper: positive "", negative p
    plain = ksample(entry, model, p, empty)
    assert torch.equal(dns, stock)
    assert not torch.allclose(dns, plain)  # and it is not the normal image


def test_guider_equals_stock_sampler_with_swapped_prompts(entry):
    p, empty = entry.encode(PROMPT), entry.encode("")
    guider = NegGuideDNSGuider.execute(entry.model, p, CFG, empty_conditioning=empty).args[0]
    stock = ksample(entry, entry.model, empty, p)
    assert torch.equal(guider_sample(entry, guider).to(stock), stock)


def test_guider_without_empty_uses_zeroed_prompt(entry, caplog):
    p = entry.encode(PROMPT)
    with caplog.at_level("WARNING"):
        guider = NegGuideDNSGuider.execute(entry.model, p, CFG).args[0]
    assert "not the paper's encoded empty prompt" in caplog.text
    stock = ksample(entry, entry.model, zero_conditioning(p), p)
    assert torch.equal(guider_sample(entry, guider).to(stock), stock)


def test_guider_with_clip_uses_the_encoded_empty_prompt_as_the_paper(entry):
    """The paper's empty prompt is "" encoded: on CLIP models not the zeroed prompt (start/end
    tokens and position embeddings), so the two defaults give different images."""
    p = entry.encode(PROMPT)
    guider = NegGuideDNSGuider.execute(entry.model, p, CFG, clip=entry.clip).args[0]
    stock = ksample(entry, entry.model, entry.encode(""), p)
    assert torch.equal(guider_sample(entry, guider).to(stock), stock)
    assert not torch.equal(stock, ksample(entry, entry.model, zero_conditioning(p), p))
    connected = NegGuideDNSGuider.execute(entry.model, p, CFG, empty_conditioning=zero_conditioning(p), clip=entry.clip).args[0]
    assert torch.equal(guider_sample(entry, connected), guider_sample(entry, NegGuideDNSGuider.execute(entry.model, p, CFG).args[0]))


def test_patch_at_cfg_one_is_the_empty_prompts_image(entry):
    """cfg 1: D = D_empty (ComfyUI's cfg-1 shortcut, which would drop the negative, is disabled)."""
    p, empty = entry.encode(PROMPT), entry.encode("")
    patched = NegGuideDNS.execute(entry.model).args[0]
    dns = ksample(entry, patched, p, empty, cfg=1.0)
    stock = ksample(entry, entry.model, empty, empty, cfg=1.0)
    assert torch.allclose(dns, stock, atol=1e-4)


def test_patch_composes_with_an_existing_cfg_function():
    """A sampler_cfg_function set before the patch sees the swapped predictions, exactly as in a
    stock run with swapped prompts (the single slot is neither overwritten nor refused)."""
    entry = zoo.build("sd15")
    p, empty = entry.encode(PROMPT), entry.encode("")

    def halfway(args):  # a custom CFG: half the usual scale
        return args["input"] - (args["uncond_denoised"] + (args["cond_denoised"] - args["uncond_denoised"]) * (args["cond_scale"] / 2))

    base = entry.model.clone()
    base.set_model_sampler_cfg_function(halfway)
    dns = ksample(entry, NegGuideDNS.execute(base).args[0], p, empty)
    stock = ksample(entry, base, empty, p)
    assert torch.equal(dns, stock)


def test_errors():
    entry = zoo.build("sd15")
    patched = NegGuideDNS.execute(entry.model).args[0]
    with pytest.raises(ValueError, match="already applied"):
        NegGuideDNS.execute(patched)
    with pytest.raises(ValueError, match="patched by NegGuideDNS"):
        NegGuideDNSGuider.execute(patched, entry.encode(PROMPT), CFG)
    with pytest.raises(ValueError, match="conditioning is missing"):
        NegGuideDNSGuider.execute(entry.model, [], CFG)


def test_dual_cfg_guider_refuses_the_patch_instead_of_ignoring_it():
    """Core DualCFGGuider never runs the pre-CFG functions: it used to sample the unpatched
    model (positive/negative not swapped) without a word."""
    import comfy_extras.nodes_custom_sampler as custom
    entry = zoo.build("sd15")
    for nested in (False, True):
        guider = custom.Guider_DualCFG(NegGuideDNS.execute(entry.model).args[0])
        guider.set_conds(entry.encode(PROMPT), entry.encode("a house"), entry.encode(""))
        guider.set_cfg(CFG, 2.0, nested=nested)
        with pytest.raises(ValueError, match="NegGuideDNS: the guider Guider_DualCFG does not run the model's pre-CFG"):
            guider_sample(entry, guider)


def test_guider_cfg_must_be_finite_and_in_range():
    entry = zoo.build("sd15")
    for cfg in (float("nan"), float("inf"), 1e9, -1.0):
        with pytest.raises(ValueError, match=r"cfg must be a finite number in \[0, 100\]"):
            NegGuideDNSGuider.execute(entry.model, entry.encode(PROMPT), cfg)
