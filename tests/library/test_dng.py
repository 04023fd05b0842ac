"""NegGuideDNG / NegGuideDNGGuider / NegGuideDNGPlot through ComfyUI's real sampling code on zoo
models: sd15 (EPS) and sd3 (flow-matching, CONST)."""

import copy

import pytest
import torch

import comfy.sample
import comfy.samplers
import nodes

from negguide.harness import zoo
from negguide.nodes.dng import DNGGuider, NegGuideDNG, NegGuideDNGGuider, NegGuideDNGPlot, tracker_of_model

POSITIVE = "a blue circle on grass"
NEGATIVE = "a red square"
PARAMS = dict(lambda0=15.0, prior=0.01, temperature=0.25, offset=0.003, p_min=1e-6, p_max=0.99)
STEPS = 6
UNRELATED_SCALE = 8.0


def patch(model, **overrides):
    return NegGuideDNG.execute(model, **{**PARAMS, **overrides}).args[0]


def ksample(entry, model, *, sampler="euler_ancestral", cfg=1.0, batch=1, seed=3, steps=STEPS,
            positive=POSITIVE, negative=NEGATIVE):
    latent = entry.empty_latent(32, 32, batch)
    negative = entry.encode(negative) if isinstance(negative, str) else negative
    return nodes.common_ksampler(model, seed, steps, cfg, sampler, "normal",
                                 entry.encode(positive), negative, latent)[0]["samples"]


def unrelated(entry, scale=UNRELATED_SCALE):
    """A negative far from anything the positive generates: the encoded NEGATIVE prompt with
    its token embeddings (and pooled vector) scaled, so its prediction differs strongly from the
    positive's (on random weights, real prompts all predict nearly the same image)."""
    out = []
    for tokens, extra in entry.encode(NEGATIVE):
        extra = dict(extra)
        if extra.get("pooled_output") is not None:
            extra["pooled_output"] = extra["pooled_output"] * scale
        out.append([tokens * scale, extra])
    return out


def guider_sample(entry, guider, *, sampler="euler_ancestral", batch=1, seed=3, steps=STEPS, noise=None):
    latent = entry.empty_latent(32, 32, batch)["samples"]
    if noise is None:
        noise = comfy.sample.prepare_noise(latent, seed)
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "normal", steps)
    return guider.sample(noise, latent, comfy.samplers.sampler_object(sampler), sigmas, seed=seed, disable_pbar=True)


def dng_guider(entry, model=None, *, empty=True, cfg=4.0, **overrides):
    params = {**PARAMS, **overrides}
    empty_cond = entry.encode("") if empty else None
    return NegGuideDNGGuider.execute(model or entry.model, entry.encode(POSITIVE), entry.encode(NEGATIVE), cfg,
                                     empty_conditioning=empty_cond, **params).args[0]


@pytest.fixture(scope="module")
def sd15():
    return zoo.build("sd15")


@pytest.fixture(scope="module")
def sd3():
    return zoo.build("sd3")


def rel_change(a, b, ref):
    return ((a - b).norm() / ref.norm()).item()


# ----------------------------------------------------------------------------- the paper's property


@pytest.mark.parametrize("name", ["sd15", "sd3"])
def test_unrelated_negative_changes_the_output_far_less_than_constant_negative_prompting(name):
    """The paper's Sec. 4.3 property. Unrelated negative: NEGATIVE with embeddings x 8, far from
    anything the positive generates (``unrelated``): the posterior falls from the prior to p_min
    within a few steps, so lambda(t) -> 0. NP at matched strength = DNG's static (zeroth-order)
    limit at its starting scale: the stock KSampler with the negative as uncond and
    cfg = 1 + lambda_NP, lambda_NP = lambda0 * prior / (1 - prior) (0.15).
    Bounds (20 euler_ancestral steps): DNG's mean lambda over the run < 0.1 x lambda_NP, and DNG's
    output change < 0.5 x NP's (measured ~0.39 on sd15: the first step, which uses the prior
    before any evidence, carries most of what remains)."""
    entry = zoo.build(name)
    steps = 20
    lam_np = PARAMS["lambda0"] * PARAMS["prior"] / (1 - PARAMS["prior"])
    negative = unrelated(entry)
    plain = ksample(entry, entry.model, steps=steps)
    np_out = ksample(entry, entry.model, cfg=1.0 + lam_np, negative=negative, steps=steps)
    patched = patch(entry.model)
    dng_out = ksample(entry, patched, negative=negative, steps=steps)
    change_np, change_dng = rel_change(np_out, plain, plain), rel_change(dng_out, plain, plain)
    curves = tracker_of_model(patched).curves()
    print(f"{name}: relative change NP {change_np:.4f}, DNG {change_dng:.4f} (ratio {change_dng / change_np:.2f}); "
          f"mean lambda {curves['lambda'].mean():.4f} vs NP {lam_np:.3f}; final p {curves['p'][-1, 0]:.3g}")
    assert change_np > 1e-3
    assert curves["lambda"].mean() < 0.1 * lam_np
    assert curves["p"][-1, 0] < PARAMS["prior"] / 100
    assert change_dng < 0.5 * change_np


# ----------------------------------------------------------------------------- exactness and state


def test_lambda0_zero_equals_plain_sampling_exactly(sd15):
    plain = ksample(sd15, sd15.model, cfg=1.0)
    assert torch.equal(ksample(sd15, patch(sd15.model, lambda0=0.0), cfg=1.0), plain)
    # guider with empty conditioning at lambda0 = 0 is the stock CFGGuider(positive, empty, cfg)
    reference = comfy.samplers.CFGGuider(sd15.model)
    reference.set_conds(sd15.encode(POSITIVE), sd15.encode(""))
    reference.set_cfg(4.0)
    assert torch.equal(guider_sample(sd15, dng_guider(sd15, lambda0=0.0)), guider_sample(sd15, reference))
    # ... and without it, the positive alone at cfg 1
    reference.set_conds(sd15.encode(POSITIVE), sd15.encode(""))
    reference.set_cfg(1.0)
    assert torch.equal(guider_sample(sd15, dng_guider(sd15, empty=False, lambda0=0.0)), guider_sample(sd15, reference))


def test_batch_keeps_per_sample_posteriors(sd15):
    """Batch of 2 (deterministic euler, explicit noise): each sample's posterior curve equals the
    one of the same noise sampled alone (|log p| difference < 1e-3), and the two curves differ."""
    guider = dng_guider(sd15, empty=False, temperature=1.0, offset=0.0)
    latent = sd15.empty_latent(32, 32, 2)["samples"]
    noise = comfy.sample.prepare_noise(latent, 11)
    guider_sample(sd15, guider, sampler="euler", batch=2, noise=noise)
    both = guider.tracker.curves()["p"]
    assert both.shape == (STEPS, 2)
    singles = []
    for b in range(2):
        guider_sample(sd15, guider, sampler="euler", batch=1, noise=noise[b:b + 1])
        singles.append(guider.tracker.curves()["p"][:, 0])
    for b in range(2):
        assert (both[:, b].log() - singles[b].log()).abs().max() < 1e-3
    assert not torch.allclose(both[:, 0], both[:, 1])


def test_state_resets_between_runs_and_input_model_untouched(sd15):
    model = sd15.model
    options_before = copy.copy(model.model_options)
    wrappers_before = copy.copy(model.wrappers)
    patched = patch(model)
    assert model.model_options == options_before and model.wrappers == wrappers_before
    assert "sampler_pre_cfg_function" not in model.model_options
    first = ksample(sd15, patched, seed=5)
    first_curve = tracker_of_model(patched).curves()["p"].clone()
    ksample(sd15, patched, seed=6, batch=2)
    again = ksample(sd15, patched, seed=5)
    assert torch.equal(first, again)
    assert torch.equal(tracker_of_model(patched).curves()["p"], first_curve)
    assert first_curve.shape == (STEPS, 1)


# ----------------------------------------------------------------------------- samplers and models


@pytest.mark.parametrize("name,sampler", [
    ("sd15", "euler_ancestral"), ("sd15", "ddpm"), ("sd15", "euler"), ("sd15", "heun"), ("sd15", "dpmpp_2m"),
    ("sd15", "dpmpp_2s_ancestral"), ("sd3", "euler"), ("sd3", "euler_ancestral"), ("sd3", "heun"),
])
def test_samplers_record_one_posterior_per_schedule_step(name, sampler):
    """Every sampler: finite output, exactly one posterior per schedule step (heun's predictor
    evaluation replaced by the real step, dpmpp_2s midpoints skipped), posterior moving off the
    prior after the first step."""
    entry = zoo.build(name)
    patched = patch(entry.model, temperature=1.0)
    out = ksample(entry, patched, sampler=sampler, steps=4)
    curves = tracker_of_model(patched).curves()
    assert torch.isfinite(out).all()
    assert curves["p"].shape == (4, 1)
    sigmas = comfy.samplers.calculate_sigmas(entry.model.get_model_object("model_sampling"), "normal", 4)
    assert torch.allclose(curves["sigma"], sigmas[:4].double(), rtol=1e-5)
    assert curves["p"][0, 0].item() == pytest.approx(PARAMS["prior"])
    assert curves["p"][1:, 0].sub(PARAMS["prior"]).abs().max() > 1e-4


def test_guider_evaluates_three_predictions_in_one_batched_call(sd15):
    calls = []

    def count(apply_model, args):
        calls.append((args["input"].shape[0], tuple(args["cond_or_uncond"])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model = sd15.model.clone()
    model.set_model_unet_function_wrapper(count)
    guider = dng_guider(sd15, model)
    out = guider_sample(sd15, guider, batch=2, steps=3)
    assert torch.isfinite(out).all()
    assert len(calls) == 3 and all(batch == 6 for batch, _ in calls), calls
    lam = guider.tracker.curves()["lambda"]
    assert lam.shape == (3, 2)


def test_plot_node_draws_the_last_run(sd15):
    patched = patch(sd15.model)
    out = ksample(sd15, patched, batch=2)
    image = NegGuideDNGPlot.execute({"samples": out}, "lambda", model=patched).args[0]
    assert image.shape[0] == 1 and image.shape[-1] == 3 and image.min() >= 0 and image.max() <= 1
    assert (image < 0.99).any()  # something was drawn
    guider = dng_guider(sd15)
    g_out = guider_sample(sd15, guider)
    assert NegGuideDNGPlot.execute({"samples": g_out}, "posterior", guider=guider).args[0].ndim == 4
    with pytest.raises(ValueError, match="LATENT"):
        NegGuideDNGPlot.execute({"samples": out}, "lambda", guider=guider)  # batch 2 vs last run's 1
    with pytest.raises(ValueError, match="connect the MODEL"):
        NegGuideDNGPlot.execute({"samples": out}, "lambda")


# ----------------------------------------------------------------------------- errors


def test_errors(sd15):
    with pytest.raises(ValueError, match="p_max"):
        patch(sd15.model, p_min=0.5, p_max=0.5)
    with pytest.raises(ValueError, match="p_max"):
        dng_guider(sd15, p_min=0.2, p_max=0.1, prior=0.15)
    with pytest.raises(ValueError, match="negative"):
        NegGuideDNGGuider.execute(sd15.model, sd15.encode(POSITIVE), [], 4.0, **PARAMS)
    with pytest.raises(ValueError, match="posterior cannot be tracked"):
        ksample(sd15, patch(sd15.model), sampler="dpm_fast", steps=3)
    with pytest.raises(ValueError, match="posterior cannot be tracked"):
        guider_sample(sd15, dng_guider(sd15), sampler="dpm_adaptive", steps=3)
    with pytest.raises(ValueError, match="already applied"):
        patch(patch(sd15.model))
    with pytest.raises(ValueError, match="NegGuideDNG already"):
        dng_guider(sd15, patch(sd15.model))
    assert isinstance(dng_guider(sd15), DNGGuider)


# ----------------------------------------------------------------------------- input ranges (library calls)


@pytest.mark.parametrize("name,value", [
    ("lambda0", 1e30), ("lambda0", -1.0), ("lambda0", float("nan")), ("prior", float("nan")),
    ("temperature", float("inf")), ("temperature", 1e6), ("offset", float("nan")), ("offset", float("-inf")),
    ("p_min", float("nan")), ("p_max", float("inf")),
])
def test_float_inputs_outside_their_range_are_refused_by_both_nodes(sd15, name, value):
    """lambda0 = 1e30 used to overflow lambda (D_neg - D_pos) and sample NaN (only the UI capped it)."""
    from negguide.nodes.dng import FLOAT_RANGES
    low, high = FLOAT_RANGES[name]
    match = rf"{name} must be a finite number in \[{low:g}, {high:g}\]"
    with pytest.raises(ValueError, match=match):
        patch(sd15.model, **{name: value})
    with pytest.raises(ValueError, match=match):
        dng_guider(sd15, **{name: value})


def test_guider_cfg_outside_its_range_is_refused(sd15):
    for cfg in (float("nan"), float("inf"), 1e9, -1.0):
        with pytest.raises(ValueError, match=r"cfg must be a finite number in \[0, 100\]"):
            dng_guider(sd15, cfg=cfg)


def test_largest_allowed_values_sample_finite(sd15):
    out = ksample(sd15, patch(sd15.model, lambda0=100.0, p_max=0.999999, prior=0.99, temperature=0.0, offset=1.0),
                  steps=3)
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- other guiders and CFG-stage nodes


def dual_cfg_guider(entry, model, style):
    import comfy_extras.nodes_custom_sampler as custom
    guider = custom.Guider_DualCFG(model)
    guider.set_conds(entry.encode(POSITIVE), entry.encode("a house"), entry.encode(NEGATIVE))
    guider.set_cfg(4.0, 2.0, nested=style == "nested")
    return guider


def dns(model):
    from negguide.nodes.dns import NegGuideDNS
    return NegGuideDNS.execute(model).args[0]


@pytest.mark.parametrize("style", ["regular", "nested"])
@pytest.mark.parametrize("stack", ["dng", "dns", "dng_then_dns", "dns_then_dng"])
def test_dual_cfg_guider_refuses_the_patches_instead_of_ignoring_them(sd15, style, stack):
    """Core DualCFGGuider calls calc_cond_batch / cfg_function itself and never replays the
    pre-CFG functions: it used to sample the unpatched model silently."""
    model = {"dng": lambda m: patch(m), "dns": dns, "dng_then_dns": lambda m: dns(patch(m)),
             "dns_then_dng": lambda m: patch(dns(m))}[stack](sd15.model)
    who = "NegGuideDNS" if stack in ("dns", "dng_then_dns") else "NegGuideDNG"
    with pytest.raises(ValueError, match=rf"{who}: the guider Guider_DualCFG does not run the model's pre-CFG"):
        guider_sample(sd15, dual_cfg_guider(sd15, model, style), steps=2)
    # the unpatched model still samples through it
    assert torch.isfinite(guider_sample(sd15, dual_cfg_guider(sd15, sd15.model, style), steps=2)).all()


def apg(model):
    import comfy_extras.nodes_apg as nodes_apg
    return nodes_apg.APG.execute(model, eta=0.0, norm_threshold=5.0, momentum=0.0).args[0]


def rescale_cfg(model):
    import comfy_extras.nodes_model_advanced as advanced
    return advanced.RescaleCFG().patch(model, 0.7)[0]


@pytest.mark.parametrize("later", ["dns", "apg"])
def test_pre_cfg_nodes_after_dng_are_refused_and_before_dng_compose(sd15, later):
    """After DNG they only see DNG's combined [D, D] (no effect): a clear error at sampling time.
    Before DNG they change what DNG combines, so the output differs from DNG alone."""
    other = {"dns": dns, "apg": apg}[later]
    with pytest.raises(ValueError, match=r"was applied to the model after NegGuideDNG.*Apply that node before"):
        ksample(sd15, other(patch(sd15.model)), steps=2, cfg=3.0)
    alone = ksample(sd15, patch(sd15.model), steps=3, cfg=3.0)
    composed = ksample(sd15, patch(other(sd15.model)), steps=3, cfg=3.0)
    assert torch.isfinite(composed).all() and not torch.allclose(composed, alone)


@pytest.mark.parametrize("order", ["rescale_then_dng", "dng_then_rescale"])
def test_cfg_function_with_the_dng_patch_is_refused(sd15, order):
    """DNG hands cond = uncond = D to CFG, so RescaleCFG (a sampler_cfg_function) returned D
    unchanged in either order; now a clear error at sampling time."""
    model = rescale_cfg(patch(sd15.model)) if order == "dng_then_rescale" else patch(rescale_cfg(sd15.model))
    with pytest.raises(ValueError, match="NegGuideDNG: the model has a CFG function"):
        ksample(sd15, model, steps=2)


def test_guider_applies_a_cfg_function_to_its_cfg_part(sd15):
    """NegGuideDNGGuider with empty_conditioning hands its CFG part to the model's
    sampler_cfg_function (RescaleCFG), then subtracts lambda (D_neg - D_pos); at lambda0 = 0 it is
    exactly the stock CFGGuider on the RescaleCFG model."""
    rescaled = rescale_cfg(sd15.model)
    reference = comfy.samplers.CFGGuider(rescaled)
    reference.set_conds(sd15.encode(POSITIVE), sd15.encode(""))
    reference.set_cfg(4.0)
    stock = guider_sample(sd15, reference, steps=3)
    plain_cfg = guider_sample(sd15, dng_guider(sd15, lambda0=0.0), steps=3)
    assert not torch.allclose(stock, plain_cfg)  # RescaleCFG does something here
    assert torch.equal(guider_sample(sd15, dng_guider(sd15, rescaled, lambda0=0.0), steps=3), stock)
    with_dng = guider_sample(sd15, dng_guider(sd15, rescaled), steps=3)
    without_rescale = guider_sample(sd15, dng_guider(sd15), steps=3)
    assert torch.isfinite(with_dng).all() and not torch.allclose(with_dng, without_rescale)
    with pytest.raises(ValueError, match="without empty_conditioning"):
        guider_sample(sd15, dng_guider(sd15, rescaled, empty=False), steps=2)


def test_with_empty_conditioning_the_posterior_weighs_the_negative_against_the_empty_prompt(sd15):
    """Issue 15, decision 4b. The guider's posterior compares the negative's prediction with the
    empty prompt's (the unconditional model of the paper's Bayes rule) when empty_conditioning is
    connected. Closed form: with the empty prompt itself as the negative, D_neg = D_ref at every
    step, so with offset 0 the posterior never leaves its prior; weighed against the positive
    (what the guider did before, and still does without empty_conditioning) it moves."""
    def run(empty):
        guider = NegGuideDNGGuider.execute(sd15.model, sd15.encode(POSITIVE), sd15.encode(""), 4.0,
                                           empty_conditioning=sd15.encode("") if empty else None,
                                           **{**PARAMS, "temperature": 1.0, "offset": 0.0}).args[0]
        guider_sample(sd15, guider)
        return guider.tracker.curves()["p"]

    against_empty, against_positive = run(True), run(False)
    torch.testing.assert_close(against_empty, torch.full_like(against_empty, PARAMS["prior"]), rtol=1e-9, atol=0)
    assert (against_positive - PARAMS["prior"]).abs().max() > 1e-3 * PARAMS["prior"]
