"""Benchmark case: the DNG guider with vs without posterior tracking (target: tracking <= 1%).

Registered on import; ``bench/run.py`` needs ``from negguide.bench import cases_dng  # noqa: F401``
next to its ``cases`` import. Both variants run the same NegGuideDNGGuider (3 predictions in one
batched call: positive, empty = the case's negative, negative = the case's positive conditioning
x 2, so its prediction differs), with the case's sampler, scheduler, steps and seed; the only
difference is ``PosteriorTracker(tracking=...)``: with tracking off lambda stays at its
prior value. The baseline is the untracked guider, so the ratio is the tracking overhead.
"""

from __future__ import annotations

from .cases import CaseContext, case
from .timing import Variant


def _guider_sampler(ctx: CaseContext, tracking: bool):
    import comfy.sample
    import comfy.samplers

    from negguide.guidance.dng import DNGParams
    from negguide.nodes.dng import DNGGuider

    bench = ctx.model
    params = DNGParams(lambda0=15.0, prior=0.01, tau=0.25, delta=0.003, p_min=1e-6, p_max=0.99)
    negative = [[c[0] * 2.0, dict(c[1])] for c in bench.positive]
    cfg = bench.cfg if bench.cfg and bench.cfg > 1.0 else 4.0

    def run():
        guider = DNGGuider(bench.patcher, params, tracking=tracking)
        guider.set_conds(bench.positive, negative, bench.negative)
        guider.set_cfg(cfg)
        latent = bench.latent["samples"]
        noise = comfy.sample.prepare_noise(latent, ctx.seed)
        sigmas = comfy.samplers.calculate_sigmas(bench.patcher.get_model_object("model_sampling"),
                                                 bench.scheduler, ctx.steps)
        sampler = comfy.samplers.sampler_object(bench.sampler_name)
        return guider.sample(noise, latent, sampler, sigmas, seed=ctx.seed, disable_pbar=True)

    return run


@case("dng-tracking", "DNG guider with vs without posterior tracking (3 predictions per step both)")
def _dng_tracking(ctx: CaseContext):
    baseline = Variant("dng-untracked", _guider_sampler(ctx, tracking=False), "DNG guider, lambda fixed at its prior value")
    return baseline, [Variant("dng-tracked", _guider_sampler(ctx, tracking=True), "DNG guider with the Bayes-filter posterior")]
