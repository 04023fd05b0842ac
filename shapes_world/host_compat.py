"""Building ComfyUI models by hand on every supported host, by capability (never by version).

ComfyUI's own loader fills in what a model class needs from a checkpoint's keys; code that builds
a model from a config dict (the shapes world's loader, the test zoo) has to do the same. Two
things changed between the hosts NegGuide supports (0.3.75 and 0.33):

- the parameter dataclasses of some DiTs gained required fields (Flux ``txt_ids_dims``; Chroma
  ``txt_ids_dims`` and ``vec_in_dim``): :func:`complete_params` adds a field only when the host's
  dataclass has it, with the value ComfyUI's own detection gives a model of the classic layout;
- state-dict names of Flux's QK-norm weights went from ``*_norm.scale`` to ``*_norm.weight``:
  :func:`fit_state_dict_names` renames a file's keys to what the host's model expects, and
  :func:`checkpoint_names` writes files under the names real checkpoints use on every host.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

# What comfy/model_detection.py sets for the classic Flux/Chroma layouts (and Hunyuan Video
# checkpoints without a meanflow sum), for fields a host's parameter dataclass may require
# (Flux.2 sets txt_ids_dims [3] itself in its config).
_DETECTION_DEFAULTS: dict[str, Any] = {"txt_ids_dims": [], "vec_in_dim": None, "meanflow_sum": False}

_EQUIVALENT_SUFFIXES = ((".scale", ".weight"), (".weight", ".scale"))


def required_fields(params_cls) -> set[str]:
    """Names of the fields of a parameter dataclass that have no default."""
    return {f.name for f in dataclasses.fields(params_cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def complete_params(config: Mapping[str, Any], params_cls) -> dict[str, Any]:
    """``config`` plus every required field of ``params_cls`` it lacks and ComfyUI's detection
    would have set. A field this host's dataclass does not have is never added (older hosts
    reject unknown keyword arguments)."""
    completed = dict(config)
    for name in required_fields(params_cls) - completed.keys():
        if name in _DETECTION_DEFAULTS:
            completed[name] = _DETECTION_DEFAULTS[name]
    return completed


def fit_state_dict_names(state_dict: Mapping[str, Any], expected_keys: Iterable[str]) -> dict[str, Any]:
    """``state_dict`` with each key the model does not expect renamed to its equivalent the model
    does expect (``*_norm.scale`` <-> ``*_norm.weight``); other keys are left as they are, so a
    real mismatch still shows in ``load_state_dict``."""
    expected = set(expected_keys)
    fitted = {}
    for key, value in state_dict.items():
        if key not in expected and "_norm." in key:
            for old, new in _EQUIVALENT_SUFFIXES:
                if key.endswith(old) and key[: -len(old)] + new in expected:
                    key = key[: -len(old)] + new
                    break
        fitted[key] = value
    return fitted


def checkpoint_names(state_dict: Mapping[str, Any], to_model_names) -> dict[str, Any]:
    """``state_dict`` (a model's own names) under the names ComfyUI's loader converts FROM:
    ``to_model_names`` is the model config's ``process_unet_state_dict``. A key is renamed
    (``*_norm.weight`` -> ``*_norm.scale``) only where the loader maps the other name back to it,
    so the same file is written on every host (0.33 loads Flux QK norms as ``.weight`` from
    checkpoints that name them ``.scale``, as real Flux checkpoints do)."""
    saved = {}
    for key, value in state_dict.items():
        for new, old in _EQUIVALENT_SUFFIXES:
            if key.endswith(new) and "_norm." in key:
                candidate = key[: -len(new)] + old
                if key in to_model_names({candidate: value}):
                    key = candidate
                break
        saved[key] = value
    return saved
