"""Record what passes through ComfyUI's attention slot (transformer_options
["optimized_attention_override"]), for tests: below a method (what the method's hooks hand to the
attention they chain) and above it (what the method's hooks return).

The recorders are plain functions, as any other node's override is: ModelPatcher.clone() deep-copies
model_options on some hosts, and functions survive that as themselves."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SLOT = "optimized_attention_override"


@dataclass(frozen=True)
class AttentionCall:
    """One attention call as the slot saw it (copies)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    skip_reshape: bool
    out: torch.Tensor


def _recording(attend, calls: list[AttentionCall]):
    def override(func, q, k, v, heads, mask=None, **kwargs):
        out = attend(func, q, k, v, heads, mask=mask, **kwargs)
        calls.append(AttentionCall(q.detach().clone(), k.detach().clone(), v.detach().clone(),
                                   None if mask is None else mask.detach().clone(),
                                   bool(kwargs.get("skip_reshape", False)), out.detach().clone()))
        return out

    return override


def record_below(model) -> tuple[object, list[AttentionCall]]:
    """A clone of ``model`` with a recording override in its (empty) attention slot, and the list
    it fills: a method applied to the clone later chains it, so every call the method makes
    arrives here (its output is the plain attention's, before a method edits it)."""
    model = model.clone()
    options = model.model_options.setdefault("transformer_options", {})
    if options.get(SLOT) is not None:
        raise ValueError("record_below needs a model whose attention slot is empty")
    calls: list[AttentionCall] = []
    options[SLOT] = _recording(lambda func, *args, **kwargs: func(*args, **kwargs), calls)
    return model, calls


def record_above(model) -> list[AttentionCall]:
    """Wrap what ``model``'s attention slot holds now (a method's override, or nothing) with a
    recorder, in place, and return the list it fills with the calls as the model's blocks see
    them (their outputs are what the method returned)."""
    options = model.model_options.setdefault("transformer_options", {})
    inner = options.get(SLOT)
    calls: list[AttentionCall] = []

    def attend(func, q, k, v, heads, mask=None, **kwargs):
        if inner is None:
            return func(q, k, v, heads, mask=mask, **kwargs)
        return inner(func, q, k, v, heads, mask=mask, **kwargs)

    options[SLOT] = _recording(attend, calls)
    return calls


def attention_outputs_of_one_step(model, positive, negative, noise: torch.Tensor) -> list[torch.Tensor]:
    """The attention outputs, as the model's blocks see them, of every call of one euler step
    from sigma 1 at cfg 1 on ``noise`` (``model`` is cloned; whatever its slot holds is kept)."""
    import comfy.samplers

    model = model.clone()
    seen = record_above(model)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(1.0)
    guider.sample(noise, noise.clone(), comfy.samplers.sampler_object("euler"), torch.tensor([1.0, 0.0]), seed=1,
                  disable_pbar=True)
    return [call.out for call in seen]
