"""The attention-override slot: chaining what was there, and noticing when we were replaced.

ComfyUI's ``transformer_options["optimized_attention_override"]`` is a single slot: every
attention call of every model runs ``override(func, q, k, v, heads, **kwargs)`` when it is set.
A NegGuide hook stores what the slot held before it (another pack's override, core
``ModelAttentionBackend``'s) and calls it in place of ``func``, so both act. A node applied AFTER
NegGuide may write the slot again without chaining: then NegGuide's hook never runs and the
method would silently do nothing. The APPLY_MODEL wrapper counts the hook's calls in each model
call (:class:`OverrideReach`) and :meth:`OverrideReach.check` turns zero into an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

OVERRIDE_SLOT = "optimized_attention_override"


def call_chained(previous: Callable | None, func: Callable, q, k, v, heads: int, mask=None, **kwargs):
    """Run attention through the override that was in the slot before ours, else ``func``."""
    if previous is not None:
        return previous(func, q, k, v, heads, mask=mask, **kwargs)
    return func(q, k, v, heads, mask=mask, **kwargs)


def describe(function: Any) -> str:
    """A readable name of what sits in the slot (for error messages)."""
    if function is None:
        return "nothing (the slot was cleared)"
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    module = getattr(function, "__module__", None) or type(owner).__module__
    return f"{name} from {module}" if module else name


class AttentionHookReplaced(RuntimeError):
    """A node applied after a NegGuide node replaced the attention override without chaining it."""


@dataclass
class OverrideReach:
    """How often a hook's attention override ran during one model call."""

    calls: int = 0

    def check(self, node: str, transformer_options: Mapping[str, Any]) -> None:
        """Raise when the model call finished without reaching the hook: the slot then holds
        someone else's override (or nothing)."""
        if self.calls:
            return
        current = transformer_options.get(OVERRIDE_SLOT)
        raise AttentionHookReplaced(
            f"{node} did not run: a node applied after it replaced the model's attention function "
            f"(transformer_options['{OVERRIDE_SLOT}'] now holds {describe(current)}; core "
            f"ModelAttentionBackend does this). Apply {node} after that node, i.e. between it and the sampler: "
            f"{node} then keeps the other node's attention function and runs inside it."
        )
