"""VSF benchmark case (issue targets: per step <= 1.05x the no-negative single pass, < 0.55x of
CFG with the same negative, peak memory <= 1.05x).

The negative is the bench model's own negative conditioning cut to 77 real tokens (a full
CLIP-window negative), attached with the same ``apply_vsf`` the node uses. All
variants sample the same latent, seed and steps; VSF and the plain pass run at cfg 1 (one model
evaluation per step), CFG at the bench model's cfg (or 4.5 if that is 1) with the negative as the
second branch.
"""

from __future__ import annotations

from ..nodes.model_family import family_adapter_of
from ..nodes.schedule import SigmaWindow
from ..nodes.vsf import SUPPORTED_FAMILIES, apply_vsf
from .cases import CaseContext, case
from .timing import Variant

NEGATIVE_TOKENS = 77


@case("vsf", "VSF at cfg 1 vs the no-negative single pass, and vs CFG with the same negative")
def _vsf(ctx: CaseContext):
    model = ctx.model
    adapter = family_adapter_of(model.patcher, "NegGuideVSF", SUPPORTED_FAMILIES)
    negative_tokens = model.negative[0][0][:1, :NEGATIVE_TOKENS]
    patched = apply_vsf(model.patcher, adapter, negative_tokens, scale=3.0, bias=0.1,
                        window=SigmaWindow.from_percents(model.patcher, 0.0, 1.0, "bench"))
    cfg = model.cfg if model.cfg != 1.0 else 4.5
    baseline = Variant("no-negative", ctx.sampler(cfg=1.0), "cfg 1, one model evaluation per step")
    return baseline, [
        Variant("vsf", ctx.sampler(patched, cfg=1.0), f"VSF, {NEGATIVE_TOKENS} negative tokens, cfg 1"),
        Variant("cfg-negative", ctx.sampler(cfg=cfg), f"CFG {cfg} with the negative as the second branch"),
    ]

