"""VSF benchmark case (issue targets: per step <= 1.05x the no-negative single pass, < 0.55x of
CFG with the same negative, <= 0.55x core NAGuidance with the same negative, peak memory <= 1.05x).

The negative is the bench model's own negative conditioning cut to 77 real tokens (a full
CLIP-window negative), attached with the same ``apply_vsf`` the node uses. All
variants sample the same latent, seed and steps; VSF and the plain pass run at cfg 1 (one model
evaluation per step), CFG at the bench model's cfg (or 4.5 if that is 1) with the negative as the
second branch. Where the host ships core ``NAGuidance`` (comfy_extras/nodes_nag.py, 0.33), it runs
at cfg 1 with the same negative: it turns off ComfyUI's cfg-1 shortcut, so every step evaluates
the negative branch too, and blends the branches' attention outputs (attn1_output_patch; on
models whose blocks do not call that patch its output equals the plain pass: see max abs Δout).
"""

from __future__ import annotations

import importlib

from ..attention_patches.vsf_hooks import NegativeTokens
from ..nodes.model_family import family_adapter_of
from ..nodes.schedule import SigmaWindow
from ..nodes.vsf import SUPPORTED_FAMILIES, apply_vsf
from .cases import CaseContext, case
from .timing import Variant

NEGATIVE_TOKENS = 77


@case("vsf", "VSF at cfg 1 vs the no-negative single pass, vs CFG and vs core NAGuidance with the same negative")
def _vsf(ctx: CaseContext):
    model = ctx.model
    adapter = family_adapter_of(model.patcher, "NegGuideVSF", SUPPORTED_FAMILIES)
    negative_tokens = NegativeTokens(model.negative[0][0][:1, :NEGATIVE_TOKENS])
    patched = apply_vsf(model.patcher, adapter, negative_tokens, scale=3.0, bias=0.1,
                        window=SigmaWindow.from_percents(model.patcher, 0.0, 1.0, "bench"))
    cfg = model.cfg if model.cfg != 1.0 else 4.5
    baseline = Variant("no-negative", ctx.sampler(cfg=1.0), "cfg 1, one model evaluation per step")
    variants = [
        Variant("vsf", ctx.sampler(patched, cfg=1.0), f"VSF, {NEGATIVE_TOKENS} negative tokens, cfg 1"),
        Variant("cfg-negative", ctx.sampler(cfg=cfg), f"CFG {cfg} with the negative as the second branch"),
    ]
    nag = core_nag(model.patcher)
    if nag is not None:
        variants.append(Variant("nag", ctx.sampler(nag, cfg=1.0), "core NAGuidance (5, 0.5, 1.5), cfg 1, the negative"))
    return baseline, variants


def core_nag(patcher):
    """``patcher`` with core NAGuidance at its defaults, or None where the host has no such node."""
    try:
        nag = importlib.import_module("comfy_extras.nodes_nag").NAGuidance
    except (ImportError, AttributeError):
        return None
    return nag.execute(patcher, nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5).args[0]

