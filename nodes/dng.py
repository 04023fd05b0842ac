"""Dynamic Negative Guidance nodes (math and posterior tracker: guidance/dng.py).

* ``NegGuideDNG`` (MODEL patch) for the stock KSampler / KSamplerAdvanced / SamplerCustom: the
  sampler's positive is the prompt, its negative the concept to avoid (the paper's
  text-to-image form, 2 predictions per step). It is a ``sampler_pre_cfg_function`` (a list
  that composes with other nodes, not the single ``sampler_cfg_function`` slot) that replaces
  both predictions by the DNG result D; ComfyUI's CFG then gives D + (D - D) * cfg = D exactly,
  whatever cfg the sampler uses. An OUTER_SAMPLE wrapper resets the per-sample posterior at the
  start of every sampling run (one guider.sample call) and rejects untrackable samplers.
* ``NegGuideDNGGuider`` (GUIDER for SamplerCustomAdvanced): positive, negative and an optional
  empty conditioning (CFG on the positive: 3 predictions in ONE batched calc_cond_batch per
  step); replays ComfyUI's pre/post-cfg hooks as the core Guider_PerpNeg does; its ``sample``
  resets the posterior.
* ``NegGuideDNGPlot``: lambda(t) or p(c-|x_t) per sample of the last run as an IMAGE.

Composition (checked at sampling time, ValueError rather than silent no-ops): NegGuideDNG must be
the last pre-CFG function (later ones, e.g. APG or NegGuideDNS, would only see [D, D]) and the
model must have no sampler_cfg_function (RescaleCFG would get cond = uncond); guiders that never
call the pre-CFG functions (core DualCFGGuider) are caught by a PREDICT_NOISE wrapper
(``set_guarded_pre_cfg``, shared with NegGuideDNS). NegGuideDNGGuider hands its CFG part to the
model's sampler_cfg_function and adds the DNG term after it.

Reset choice: an explicit per-run hook (OUTER_SAMPLE wrapper / guider.sample) rather than
"sigma went up", because a run can legitimately start at a lower sigma than the previous run
ended (KSamplerAdvanced, img2img), and two different runs can share a first sigma. Inside a run,
sigma going back up is an error (restart-type samplers cannot be tracked).

Tracking needs x_s of the next step: the sampler hands it to the next model call as its input.
The tracker keeps the previous step's two transition means and updates at the next call whose
sigma is one of the sampler's own (transformer_options["sample_sigmas"]); see
guidance.dng.PosteriorTracker for multi-stage samplers.

State lives in a PosteriorTracker held by a closure (the pre-cfg function), which
ModelPatcher.clone()'s deepcopy of model_options keeps as itself, so clones of the patched model
share it; it is reset per run and is never written to the input model.
"""

from __future__ import annotations

import functools
import logging
import math

import torch

import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
import node_helpers
from comfy_api.latest import io

from ..attention_patches.override_chain import describe
from ..guidance.dng import DNGParams, PosteriorTracker, add_negative_guidance, guide_t2i

LOG = logging.getLogger(__name__)
HOOK_KEY = "negguide_dng"
TRACKER_ATTR = "negguide_dng_tracker"
UNTRACKABLE_SAMPLERS = {
    "dpm_fast_function": "dpm_fast",
    "dpm_adaptive_function": "dpm_adaptive",
    "sample_dpm_fast": "dpm_fast",
    "sample_dpm_adaptive": "dpm_adaptive",
}
EXACT_SAMPLERS = ("euler_ancestral (eta 1, EPS/v-prediction models)", "ddpm")
GUARD_KEY = "negguide_pre_cfg_guard"
# (min, max) of every float input: the node's widget limits, and what library calls are held to
# (lambda0 = 1e30 overflows lambda (D_neg - D_pos) to inf and the latent to NaN).
FLOAT_RANGES = {
    "lambda0": (0.0, 100.0),
    "prior": (1e-6, 0.99),
    "temperature": (0.0, 10.0),
    "offset": (-1.0, 1.0),
    "p_min": (1e-12, 0.5),
    "p_max": (0.01, 0.999999),
    "cfg": (0.0, 100.0),
}


# ----------------------------------------------------------------------------- shared helpers


def check_sampler(sampler, who: str) -> None:
    """ValueError for samplers whose model calls do not follow their sigma schedule."""
    function = getattr(sampler, "sampler_function", None)
    name = getattr(function, "__name__", "")
    if name in UNTRACKABLE_SAMPLERS:
        raise ValueError(
            f"{who}: the sampler '{UNTRACKABLE_SAMPLERS[name]}' chooses its own noise levels, so the DNG "
            "posterior cannot be tracked. Use euler_ancestral or ddpm (exact), or euler / heun / dpmpp_2m "
            "(approximate)."
        )


def is_flow(base_model) -> bool:
    """Flow-matching (CONST) parameterisation: x = (1 - sigma) x0 + sigma eps."""
    return isinstance(getattr(base_model, "model_sampling", None), comfy.model_sampling.CONST)


def sample_sigmas(model_options: dict):
    return model_options.get("transformer_options", {}).get("sample_sigmas")


def check_float_inputs(who: str, **values) -> dict:
    """The float inputs as floats; ValueError naming the input and its allowed range when one is
    not a finite number inside FLOAT_RANGES (library calls skip the UI's widget limits)."""
    out = {}
    for name, value in values.items():
        low, high = FLOAT_RANGES[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and low <= number <= high):
            raise ValueError(f"{who}: {name} must be a finite number in [{low:g}, {high:g}], got {value!r}.")
        out[name] = number
    return out


def params_from_inputs(who: str, lambda0, prior, temperature, offset, p_min, p_max) -> DNGParams:
    v = check_float_inputs(who, lambda0=lambda0, prior=prior, temperature=temperature, offset=offset,
                           p_min=p_min, p_max=p_max)
    return DNGParams(v["lambda0"], v["prior"], v["temperature"], v["offset"], v["p_min"], v["p_max"]).validate(who)


def set_guarded_pre_cfg(patched, pre_cfg, who: str, disable_cfg1_optimization: bool):
    """Install ``pre_cfg`` as a sampler_pre_cfg_function of ``patched`` (a ModelPatcher, changed in
    place) plus a PREDICT_NOISE wrapper that raises if a guider's predict_noise returns without
    having called it. Guiders that bypass ComfyUI's sampling_function and never replay the pre-CFG
    hooks (core DualCFGGuider, any such custom guider) would otherwise silently sample the
    unpatched model. Detected by what the guider does, not by its class. Returns the installed
    function (``pre_cfg``'s attributes, e.g. markers, are copied onto it)."""
    calls = [0]

    @functools.wraps(pre_cfg)
    def guarded(args):
        calls[0] += 1
        return pre_cfg(args)

    def require_pre_cfg_call(executor, *args, **kwargs):
        before = calls[0]
        out = executor(*args, **kwargs)
        if calls[0] == before:
            guider = type(getattr(executor, "class_obj", None)).__name__
            raise ValueError(
                f"{who}: the guider {guider} does not run the model's pre-CFG functions "
                "(sampler_pre_cfg_function), so this patch would be silently ignored. Use KSampler, "
                "KSamplerAdvanced, SamplerCustom or CFGGuider with this model"
                + (", or NegGuideDNGGuider for CFG plus DNG." if who == "NegGuideDNG" else ".")
            )
        return out

    patched.set_model_sampler_pre_cfg_function(guarded, disable_cfg1_optimization=disable_cfg1_optimization)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, GUARD_KEY, require_pre_cfg_call)
    return guarded


def tracker_of_model(model) -> PosteriorTracker | None:
    for fn in model.model_options.get("sampler_pre_cfg_function", []):
        tracker = getattr(fn, TRACKER_ATTR, None)
        if tracker is not None:
            return tracker
    return None


def _param_inputs() -> list:
    return [
        io.Float.Input("lambda0", default=15.0, min=FLOAT_RANGES["lambda0"][0], max=FLOAT_RANGES["lambda0"][1], step=0.1, round=0.01,
                       tooltip="lambda0: the largest-scale factor; lambda(t) = lambda0 * p / (1 - p). 0 = off "
                               "(plain sampling). SD: 12-27."),
        io.Float.Input("prior", default=0.01, min=FLOAT_RANGES["prior"][0], max=FLOAT_RANGES["prior"][1], step=0.001, round=0.000001,
                       tooltip="p(c-): the posterior before the first step (the chance the concept appears "
                               "unprompted). SD: 0.01."),
        io.Float.Input("temperature", default=0.25, min=FLOAT_RANGES["temperature"][0], max=FLOAT_RANGES["temperature"][1], step=0.01, round=0.0001,
                       tooltip="tau: scales the evidence of each step; lower = slower, smoother posterior. SD: 0.2-0.3."),
        io.Float.Input("offset", default=0.003, min=FLOAT_RANGES["offset"][0], max=FLOAT_RANGES["offset"][1], step=0.0001, round=0.00001,
                       tooltip="delta: added to each step's evidence, divided by 2x the DDPM step variance (paper "
                               "Algorithm 2); positive pushes the posterior up. SD: 0.002-0.004."),
        io.Float.Input("p_min", default=1e-6, min=FLOAT_RANGES["p_min"][0], max=FLOAT_RANGES["p_min"][1], step=0.000001, round=1e-12,
                       tooltip="Lower clamp of the posterior: how far DNG may switch itself off."),
        io.Float.Input("p_max", default=0.99, min=FLOAT_RANGES["p_max"][0], max=FLOAT_RANGES["p_max"][1], step=0.001, round=0.000001,
                       tooltip="Upper clamp of the posterior: lambda never exceeds lambda0 * p_max / (1 - p_max). "
                               "Must be larger than p_min."),
    ]


# ----------------------------------------------------------------------------- MODEL patch


def apply_dng(model, params: DNGParams, tracking: bool = True):
    """A clone of ``model`` (ModelPatcher) with DNG as a pre-cfg function + a reset wrapper."""
    tracker = PosteriorTracker(params, tracking=tracking)
    who = "NegGuideDNG"

    def dng_pre_cfg(args):
        out = args["conds_out"]
        if len(out) != 2:
            raise ValueError(
                f"{who} works with samplers that evaluate a positive and a negative (KSampler, "
                "KSamplerAdvanced, SamplerCustom, CFGGuider); this guider evaluates "
                f"{len(out)} conditionings. Use NegGuideDNGGuider instead."
            )
        check_composition(args["model_options"])
        d_pos, d_neg = out
        if args["conds"][1] is None:  # ComfyUI skipped the negative (cfg 1, lambda0 = 0)
            d_neg = None
        x = args["input"]
        sigma = float(args["sigma"].max())
        lam = tracker.observe(x, sigma, sample_sigmas(args["model_options"]), d_pos, d_neg, is_flow(args["model"]))
        if d_neg is None:
            if params.lambda0 != 0:
                raise ValueError(f"{who}: the sampler gave no negative prediction; connect the concept to avoid to the sampler's negative input.")
            return [d_pos, d_pos]
        guided = guide_t2i(d_pos, d_neg, lam)
        return [guided, guided]

    def reset_per_run(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        check_sampler(sampler, who)
        tracker.reset()
        cfg = getattr(executor.class_obj, "cfg", 1.0)
        if not math.isclose(cfg, 1.0):
            LOG.info("%s replaces CFG: the sampler's cfg %.3g has no effect (D = D_pos - lambda (D_neg - D_pos)).", who, cfg)
        return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def check_composition(model_options: dict) -> None:
        """DNG hands [D, D] to CFG, so CFG-stage code after it sees cond = uncond: a pre-CFG function
        applied after this patch (APG, NegGuideDNS, FreSca, TCFG, ...) and any sampler_cfg_function
        (RescaleCFG, CFGNorm, ...) would either do nothing or undo DNG's cfg-independence."""
        fns = model_options.get("sampler_pre_cfg_function", [])
        position = next((i for i, fn in enumerate(fns) if fn is installed), None)
        later = fns[position + 1:] if position is not None else []
        if later:
            raise ValueError(
                f"{who}: {', '.join(describe(fn) for fn in later)} was applied to the model after {who}; it would act "
                f"on DNG's already-combined prediction and have no effect. Apply that node before {who} "
                f"(between the checkpoint loader and {who})."
            )
        if "sampler_cfg_function" in model_options:
            raise ValueError(
                f"{who}: the model has a CFG function (sampler_cfg_function, set by e.g. RescaleCFG or CFGNorm); "
                f"{who} replaces CFG, so it would have no effect. Use NegGuideDNGGuider with empty_conditioning, "
                "which applies it to its CFG on the positive, or remove that node."
            )

    setattr(dng_pre_cfg, TRACKER_ATTR, tracker)
    patched = model.clone()
    installed = set_guarded_pre_cfg(patched, dng_pre_cfg, who, disable_cfg1_optimization=params.lambda0 != 0)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, HOOK_KEY, reset_per_run)
    return patched


class NegGuideDNG(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideDNG",
            display_name="DNG Negative Prompt (Dynamic Negative Guidance)",
            category="model_patches/negguide",
            description=(
                "Dynamic Negative Guidance for the stock KSampler: the sampler's negative is the concept to "
                "avoid, pushed away with a scale that follows the tracked probability that the concept is "
                "being generated, so an unrelated negative leaves the image almost unchanged. Replaces CFG "
                "(the sampler's cfg has no effect); for CFG + DNG use NegGuideDNGGuider."
            ),
            inputs=[io.Model.Input("model", tooltip="The diffusion model to patch (any EPS, v-prediction or flow model).")]
            + _param_inputs(),
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, lambda0, prior, temperature, offset, p_min, p_max) -> io.NodeOutput:
        params = params_from_inputs("NegGuideDNG", lambda0, prior, temperature, offset, p_min, p_max)
        if tracker_of_model(model) is not None:
            raise ValueError("NegGuideDNG is already applied to this model: use one NegGuideDNG node.")
        return io.NodeOutput(apply_dng(model, params))


# ----------------------------------------------------------------------------- GUIDER


POSTERIOR_REFERENCES = ("positive", "empty")
"""What the posterior p(negative | x_t) weighs the negative branch against: the positive
prediction, or the empty prompt's (the unconditional model of the paper's Bayes rule; used when
empty_conditioning is connected and cfg != 1, else the positive). NegBench v2 (issue 15,
decision 4b): against the positive, p stays at or below its prior for every negative (DNG then
does nothing); against the empty prompt it rises for related negatives and stays near the prior
for unrelated ones on the shapes-world SD3 model (max p 0.31 vs 0.016; SD1.5 and Flux: no
separation)."""


class DNGGuider(comfy.samplers.CFGGuider):
    """CFGGuider with DNG: [positive, empty, negative] in one calc_cond_batch per step."""

    who = "NegGuideDNGGuider"

    def __init__(self, model_patcher, params: DNGParams, tracking: bool = True, posterior_reference: str = "positive"):
        super().__init__(model_patcher)
        self.params = params
        self.tracker = PosteriorTracker(params, tracking=tracking)
        if posterior_reference not in POSTERIOR_REFERENCES:
            raise ValueError(f"{self.who}: posterior_reference must be one of {', '.join(POSTERIOR_REFERENCES)}.")
        self.posterior_reference = posterior_reference

    def set_conds(self, positive, negative, empty=None):
        conds = {"positive": positive, "negative": negative}
        if empty is not None:
            conds["empty_negative_prompt"] = node_helpers.conditioning_set_values(empty, {"prompt_type": "negative"})
        self.inner_set_conds(conds)

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        check_sampler(sampler, self.who)
        self.tracker.reset()
        return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        positive = self.conds.get("positive")
        negative = self.conds.get("negative")
        empty = self.conds.get("empty_negative_prompt")
        keep_all = model_options.get("disable_cfg1_optimization", False)
        if empty is not None and math.isclose(self.cfg, 1.0) and not keep_all:
            empty = None  # CFG at 1 is the positive alone (as ComfyUI's sampling_function)
        if self.params.lambda0 == 0 and not keep_all:
            negative = None  # lambda0 = 0: exactly the plain CFGGuider, no negative pass
        conds = [positive, empty, negative]
        out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": conds, "conds_out": out, "cond_scale": self.cfg, "timestep": timestep,
                    "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = fn(args)
        d_pos, d_empty, d_neg = out
        d_empty = d_empty if empty is not None else None
        d_neg = d_neg if negative is not None else None
        d_ref = d_empty if self.posterior_reference == "empty" and d_empty is not None else d_pos
        lam = self.tracker.observe(x, float(timestep.max()), sample_sigmas(model_options), d_ref, d_neg,
                                   is_flow(self.inner_model))
        cfg_function = model_options.get("sampler_cfg_function")
        if d_empty is not None:
            if cfg_function is not None:  # e.g. RescaleCFG: it gets the CFG part, as in cfg_function
                cfg_args = {"cond": x - d_pos, "uncond": x - d_empty, "cond_scale": self.cfg, "timestep": timestep,
                            "input": x, "sigma": timestep, "cond_denoised": d_pos, "uncond_denoised": d_empty,
                            "model": self.inner_model, "model_options": model_options, "input_cond": positive,
                            "input_uncond": empty}
                base = x - cfg_function(cfg_args)
            else:
                base = d_empty + (d_pos - d_empty) * self.cfg  # = ComfyUI's cfg_function
            denoised = base if d_neg is None else add_negative_guidance(base, d_pos, d_neg, lam)
        else:
            if cfg_function is not None:  # d_empty is None: no empty_conditioning was connected
                raise ValueError(
                    f"{self.who}: the model has a CFG function (sampler_cfg_function, set by e.g. RescaleCFG), but "
                    "without empty_conditioning this guider does no CFG for it to act on; connect empty_conditioning."
                )
            denoised = d_pos if d_neg is None else guide_t2i(d_pos, d_neg, lam)
        for fn in model_options.get("sampler_post_cfg_function", []):
            args = {
                "denoised": denoised, "cond": positive, "uncond": empty if empty is not None else negative,
                "cond_scale": self.cfg if empty is not None else 1.0, "model": self.inner_model,
                "uncond_denoised": d_empty if d_empty is not None else d_pos, "cond_denoised": d_pos,
                "sigma": timestep, "model_options": model_options, "input": x,
                "empty_cond": empty, "empty_cond_denoised": d_empty,
                "negative_cond": negative, "negative_cond_denoised": d_neg, "dng_lambda": lam,
            }
            denoised = fn(args)
        return denoised


class NegGuideDNGGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideDNGGuider",
            display_name="DNG Guider (Dynamic Negative Guidance)",
            category="sampling/custom_sampling/guiders",
            description=(
                "A GUIDER for SamplerCustomAdvanced: CFG on the positive (when empty_conditioning is connected) "
                "plus Dynamic Negative Guidance away from the negative, all predictions in one batched model "
                "call per step. D = D_empty + cfg (D_pos - D_empty) - lambda(t) (D_neg - D_pos)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (any EPS, v-prediction or flow model)."),
                io.Conditioning.Input("positive", tooltip="The prompt."),
                io.Conditioning.Input("negative", tooltip="The concept to avoid."),
                io.Float.Input("cfg", default=7.5, min=FLOAT_RANGES["cfg"][0], max=FLOAT_RANGES["cfg"][1], step=0.1, round=0.01,
                               tooltip="CFG scale of the positive against empty_conditioning (SD: 7.5). "
                                       "Ignored without empty_conditioning."),
            ] + _param_inputs() + [
                io.Conditioning.Input("empty_conditioning", optional=True,
                                      tooltip="Optional: the empty prompt encoded. Connected: CFG on the positive "
                                              "plus DNG (3 predictions per step), and the posterior weighs the negative "
                                              "against the empty prompt's prediction (the paper's Bayes rule). Not "
                                              "connected: the positive replaces the unconditional branch (2 predictions) "
                                              "and is the posterior's reference."),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, lambda0, prior, temperature, offset, p_min, p_max,
                empty_conditioning=None) -> io.NodeOutput:
        params = params_from_inputs(DNGGuider.who, lambda0, prior, temperature, offset, p_min, p_max)
        cfg = check_float_inputs(DNGGuider.who, cfg=cfg)["cfg"]
        if not negative:
            raise ValueError("NegGuideDNGGuider: the negative conditioning is missing or empty; connect the concept to avoid.")
        if not positive:
            raise ValueError("NegGuideDNGGuider: the positive conditioning is missing or empty.")
        if tracker_of_model(model) is not None:
            raise ValueError("NegGuideDNGGuider: this model is patched by NegGuideDNG already; use one of the two.")
        guider = DNGGuider(model, params, posterior_reference="empty" if empty_conditioning is not None else "positive")
        guider.set_conds(positive, negative, empty_conditioning)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)


# ----------------------------------------------------------------------------- plot


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def render_curves(sigma: torch.Tensor, values: torch.Tensor, title: str, width: int = 512, height: int = 320,
                  log_y: bool = True) -> torch.Tensor:
    """values [T, B] against step index (high noise left) as an IMAGE [1, H, W, 3] in [0, 1]."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 12, 24, height - 36
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    steps = values.shape[0]
    y = values.clamp_min(1e-12).log10() if log_y else values
    lo, hi = (float(y.min()), float(y.max())) if y.numel() else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    draw.text((left, 4), title, fill=(0, 0, 0))
    fmt = (lambda v: f"1e{v:.1f}") if log_y else (lambda v: f"{v:.3g}")
    draw.text((4, top), fmt(hi), fill=(0, 0, 0))
    draw.text((4, bottom - 10), fmt(lo), fill=(0, 0, 0))
    if steps:
        draw.text((left, bottom + 6), f"sigma {float(sigma[0]):.3g}", fill=(0, 0, 0))
        draw.text((right - 90, bottom + 6), f"sigma {float(sigma[-1]):.3g}", fill=(0, 0, 0))
    draw.text(((left + right) // 2 - 40, bottom + 20), "sampling step ->", fill=(0, 0, 0))

    def point(i, v):
        px = left + (right - left) * (i / max(steps - 1, 1))
        py = bottom - (bottom - top) * ((v - lo) / (hi - lo))
        return (px, py)

    for b in range(values.shape[1] if values.ndim == 2 else 0):
        color = PALETTE[b % len(PALETTE)]
        pts = [point(i, float(y[i, b])) for i in range(steps)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for px, py in pts:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
    import numpy as np

    return (torch.from_numpy(np.asarray(image, dtype=np.float32)) / 255.0).unsqueeze(0)


class NegGuideDNGPlot(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideDNGPlot",
            display_name="DNG Guidance Scale Plot",
            category="sampling/custom_sampling/guiders",
            description=(
                "Plots the dynamic guidance scale lambda(t) (or the posterior p(c-|x_t)) of every image of the last "
                "sampling run with a NegGuideDNG model or a NegGuideDNGGuider, one curve per image (paper Fig. 5b/12)."
            ),
            inputs=[
                io.Latent.Input("samples", tooltip="The sampler's output LATENT: makes the plot run after sampling."),
                io.Combo.Input("curve", options=["lambda", "posterior"], default="lambda",
                               tooltip="lambda(t) = lambda0 p / (1 - p), or the posterior p(c-|x_t) itself (log scale)."),
                io.Model.Input("model", optional=True, tooltip="The MODEL output of NegGuideDNG that the sampler used."),
                io.Guider.Input("guider", optional=True, tooltip="The NegGuideDNGGuider that SamplerCustomAdvanced used."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, samples, curve, model=None, guider=None) -> io.NodeOutput:
        if curve not in ("lambda", "posterior"):
            raise ValueError(f"NegGuideDNGPlot: curve must be 'lambda' or 'posterior', not {curve!r}.")
        tracker = None
        if guider is not None:
            tracker = getattr(guider, "tracker", None) if isinstance(guider, DNGGuider) else None
        elif model is not None:
            tracker = tracker_of_model(model)
        if tracker is None:
            raise ValueError("NegGuideDNGPlot: connect the MODEL from NegGuideDNG or the GUIDER from NegGuideDNGGuider.")
        curves = tracker.curves()
        if curves["p"].numel() == 0:
            raise ValueError("NegGuideDNGPlot: nothing recorded yet; connect the sampler's output LATENT to 'samples'.")
        batch = samples["samples"].shape[0]
        if curves["p"].shape[1] != batch:
            raise ValueError(
                f"NegGuideDNGPlot: the last DNG run had {curves['p'].shape[1]} images, the connected LATENT has {batch}. "
                "Connect the LATENT sampled with this model or guider."
            )
        values = curves["lambda"] if curve == "lambda" else curves["p"]
        title = "DNG guidance scale lambda(t), one curve per image" if curve == "lambda" else "DNG posterior p(c-|x_t)"
        return io.NodeOutput(render_curves(curves["sigma"], values, title))


