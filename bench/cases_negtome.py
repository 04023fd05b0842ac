"""Benchmark case for NegGuideNegToMe (registered on import; bench/run.py must import this module).

NegToMe in batch-diversity mode at batch 4 (the run's latent repeated to 4 images; the
conditioning is broadcast by ComfyUI), reference settings alpha 0.9, tau 0.65, against plain
sampling of the same batch-4 latent:

* ``negtome-early``: the reference window, the first 20% of the schedule (start 0, end 0.2; the
  note says how many steps that is: with few steps the window's sigma bound, inclusive as in
  ComfyUI's own start/end_percent inputs, can hold more than 20% of them: Flux 2 of 5);
* ``negtome-full``: every step (start 0, end 1).

The issue's targets (1024 px, real width, batch 4): at most 1.03x (early) and 1.06x (full).
"""

from __future__ import annotations

import dataclasses

import comfy.samplers

from ..nodes.model_family import family_adapter_of
from ..nodes.negtome import SUPPORTED_FAMILIES, apply_negtome
from ..nodes.schedule import SigmaWindow
from .cases import CaseContext, case
from .timing import Variant

BATCH = 4


@case("negtome", "NegToMe batch diversity at batch 4: early window (first 20%) and every step vs plain")
def _negtome(ctx: CaseContext):
    samples = ctx.model.latent["samples"]
    model = dataclasses.replace(ctx.model, latent={"samples": samples[:1].repeat(BATCH, *([1] * (samples.ndim - 1)))})
    adapter = family_adapter_of(model.patcher, "NegGuideNegToMe", SUPPORTED_FAMILIES)

    def run(patcher):
        return lambda: model.sample(patcher, steps=ctx.steps, seed=ctx.seed)

    early_window = SigmaWindow.from_percents(model.patcher, 0.0, 0.2, "bench")
    early = apply_negtome(model.patcher, adapter, 0.9, 0.65, early_window)
    full = apply_negtome(model.patcher, adapter, 0.9, 0.65, SigmaWindow.from_percents(model.patcher, 0.0, 1.0, "bench"))
    sigmas = comfy.samplers.calculate_sigmas(model.patcher.get_model_object("model_sampling"), model.scheduler, ctx.steps)
    active = sum(float(s) in early_window for s in sigmas[:-1])
    return Variant(f"baseline-b{BATCH}", run(None), f"plain sampling, batch {BATCH}"), [
        Variant("negtome-early", run(early), f"alpha 0.9, tau 0.65, window 0-20%: {active} of {ctx.steps} steps "
                                             f"(sigma >= {early_window.sigma_end:.3f})"),
        Variant("negtome-full", run(full), "alpha 0.9, tau 0.65, every step"),
    ]
