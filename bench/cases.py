"""The registry of benchmark cases.

A case is a function that gets a :class:`CaseContext` (the built model, its inputs, the step count
and seed) and returns the baseline :class:`~negguide.bench.timing.Variant` and the variants to
compare with it. To add one (for a new method, say), write in this module or in any module that
``bench/run.py`` imports::

    @case("vsf", "VSF attention patch vs plain sampling")
    def _vsf(ctx):
        patched = ctx.model.patcher.clone()
        ...attach the method's patches to `patched`...
        return ctx.plain(), [Variant("vsf", ctx.sampler(patched))]

Keep the comparison fair: same seed, steps, cfg and inputs on both sides, and one model build
shared by every variant (``patcher.clone()`` shares the weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .models import BenchModel
from .timing import Variant


@dataclass
class CaseContext:
    model: BenchModel
    steps: int
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # the CLI's parsed options

    def sampler(self, patcher=None, **sample_kwargs) -> Callable[[], Any]:
        """A callable that runs one sampling of ``patcher`` (default: the unpatched model)."""
        model = self.model

        def run():
            return model.sample(patcher, steps=self.steps, seed=self.seed, **sample_kwargs)

        return run

    def plain(self, name: str = "baseline") -> Variant:
        return Variant(name, self.sampler(), "plain sampling, no patches")


@dataclass
class Case:
    name: str
    help: str
    build: Callable[[CaseContext], tuple[Variant, list[Variant]]]


CASES: dict[str, Case] = {}


def case(name: str, help: str):
    """Decorator: register ``fn(ctx) -> (baseline, [variants])`` as case ``name``."""

    def register(fn):
        if name in CASES:
            raise ValueError(f"case {name!r} registered twice")
        CASES[name] = Case(name, help, fn)
        return fn

    return register


# ----------------------------------------------------------------------------- cases


@case("identity", "baseline vs itself: the harness's noise level (ratio should be ~1.00)")
def _identity(ctx: CaseContext):
    base = ctx.plain()
    return base, [Variant("baseline-again", base.fn, "the same callable as the baseline")]


def passthrough_attention(func, *args, **kwargs):
    """An optimized_attention_override that calls the original attention unchanged."""
    return func(*args, **kwargs)


@case(
    "attention-override",
    "plain vs a pass-through transformer_options['optimized_attention_override']: the floor of "
    "any attention-level method's overhead",
)
def _attention_override(ctx: CaseContext):
    patched = ctx.model.patcher.clone()
    patched.model_options.setdefault("transformer_options", {})[
        "optimized_attention_override"
    ] = passthrough_attention
    return ctx.plain(), [
        Variant("attn-override", ctx.sampler(patched), "pass-through optimized_attention_override on a clone")
    ]
