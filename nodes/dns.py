"""Diffusion-Negative Sampling nodes (math: guidance/dns.py; paper: Desai & Vasconcelos, ECCV 2024).

DNS samples the image the model considers least compliant with the prompt p: CFG with the empty
prompt as the positive and p as the negative. Two sampling styles:

* ``NegGuideDNS`` (MODEL patch) for the stock KSampler / KSamplerAdvanced / SamplerCustom /
  CFGGuider: connect positive = the prompt and negative = the empty prompt, exactly like a normal
  run. The patch swaps the two predictions before CFG, so the sampler computes
  D = D_p + cfg (D_empty - D_p) = D_empty + (cfg - 1)(D_empty - D_p) (paper Eq. 19 with
  s = cfg - 1), bit-identical to the stock sampler fed positive "" and negative p. The same prompt
  conditioning therefore feeds the DNS pass and the final pass of auto-DNP.

  Design choice (single slot): the patch is a ``sampler_pre_cfg_function`` (a list that composes
  with other nodes), NOT the single ``sampler_cfg_function`` slot, so nothing is overwritten or
  has to be refused. Everything after it (a sampler_cfg_function set by another node such as
  RescaleCFG, the post-cfg functions) sees the swapped predictions, i.e. exactly what it would
  see in a stock run with swapped prompts. ComfyUI's cfg = 1 shortcut (skip the negative) is
  disabled by the patch, since at cfg 1 the result is the EMPTY prompt's prediction. A guider
  that never runs the pre-CFG functions (core DualCFGGuider) gets a ValueError at its first step
  instead of silently sampling the unpatched model (nodes.dng.set_guarded_pre_cfg).

* ``NegGuideDNSGuider`` (GUIDER for SamplerCustomAdvanced): the prompt's conditioning, the empty
  prompt and cfg; it is the core CFGGuider with positive = empty and negative = the prompt, so
  every pre/post-cfg hook and cfg function of the model runs as in a stock run. The empty prompt
  is, in this order: ``empty_conditioning`` if connected; the paper's form, "" encoded by
  ``clip`` if connected (on CLIP models it differs from zeros: the start/end tokens and the
  position embeddings are not zero); else the prompt's conditioning zeroed (as the core
  ConditioningZeroOut), with a warning that this is not the paper's form.
"""

from __future__ import annotations

import logging

import torch

import comfy.samplers
from comfy_api.latest import io

from .dng import FLOAT_RANGES, check_float_inputs, set_guarded_pre_cfg

LOG = logging.getLogger(__name__)
DNS_MARKER = "negguide_dns"
WHO = "NegGuideDNS"


def is_dns_patched(model) -> bool:
    return any(getattr(fn, DNS_MARKER, False) for fn in model.model_options.get("sampler_pre_cfg_function", []))


def dns_pre_cfg(args: dict) -> list:
    """Swap [D_positive, D_negative] -> [D_negative, D_positive] before ComfyUI's CFG."""
    out = args["conds_out"]
    if len(out) != 2:
        raise ValueError(
            f"{WHO} works with samplers that evaluate a positive and a negative (KSampler, KSamplerAdvanced, "
            f"SamplerCustom, CFGGuider); this guider evaluates {len(out)} conditionings. "
            "Use NegGuideDNSGuider with SamplerCustomAdvanced instead."
        )
    if args["conds"][1] is None:
        raise ValueError(
            f"{WHO}: the sampler gave no negative prediction; connect the empty prompt (CLIPTextEncode with "
            "no text, or ConditioningZeroOut) to the sampler's negative input."
        )
    return [out[1], out[0]]


setattr(dns_pre_cfg, DNS_MARKER, True)


def apply_dns(model):
    """A clone of ``model`` (ModelPatcher) that samples diffusion-negative images."""
    if is_dns_patched(model):
        raise ValueError(f"{WHO} is already applied to this model (a second one would swap the prompts back).")
    patched = model.clone()
    set_guarded_pre_cfg(patched, dns_pre_cfg, WHO, disable_cfg1_optimization=True)
    return patched


class NegGuideDNS(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideDNS",
            display_name="DNS Diffusion-Negative Sampling (model patch)",
            category="model_patches/negguide",
            description=(
                "Diffusion-Negative Sampling: the sampler fed positive = your prompt and negative = the empty prompt "
                "generates the image the model considers LEAST compliant with the prompt "
                "(D = D_empty + (cfg - 1)(D_empty - D_p), identical to swapping the two prompts). Caption that image "
                "(NegGuideBLIP2Caption) and use the caption as the negative prompt of the final run with the same seed "
                "(auto-DNP). Use the UNPATCHED model for the final run."
            ),
            inputs=[io.Model.Input("model", tooltip="The diffusion model to patch (any model that supports CFG).")],
            outputs=[io.Model.Output(tooltip="The model that samples diffusion-negative images; use it only for the DNS pass.")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        return io.NodeOutput(apply_dns(model))


def encode_empty_prompt(clip) -> list:
    """The CONDITIONING of the empty prompt "" (what CLIPTextEncode with no text gives)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(""))


def empty_prompt(conditioning: list, empty_conditioning: list | None, clip) -> tuple[list, str]:
    """The empty prompt of a DNS run and which form it is (see the module docstring)."""
    if empty_conditioning:
        return empty_conditioning, "the connected empty_conditioning"
    if clip is not None:
        return encode_empty_prompt(clip), 'the empty prompt "" encoded by the connected clip (the paper\'s form)'
    return zero_conditioning(conditioning), "the prompt's conditioning zeroed (no clip connected)"


def zero_conditioning(conditioning: list) -> list:
    """The conditioning with its tensors zeroed (as the core ConditioningZeroOut)."""
    out = []
    for tensor, extra in conditioning:
        extra = dict(extra)
        if extra.get("pooled_output") is not None:
            extra["pooled_output"] = torch.zeros_like(extra["pooled_output"])
        out.append([torch.zeros_like(tensor), extra])
    return out


class NegGuideDNSGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideDNSGuider",
            display_name="DNS Guider (Diffusion-Negative Sampling)",
            category="sampling/custom_sampling/guiders",
            description=(
                "A GUIDER for SamplerCustomAdvanced that samples the diffusion-negative image of a prompt: CFG with the "
                "empty prompt as the positive and the prompt as the negative, D = D_p + cfg (D_empty - D_p) "
                "(paper Eq. 19 with s = cfg - 1)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (unpatched; not the NegGuideDNS output)."),
                io.Conditioning.Input("conditioning", tooltip="The prompt p whose diffusion-negative image to sample."),
                io.Float.Input("cfg", default=7.0, min=FLOAT_RANGES["cfg"][0], max=FLOAT_RANGES["cfg"][1], step=0.1, round=0.01,
                               tooltip="CFG scale of the swapped-prompt CFG (the paper uses the main CFG, e.g. 7). "
                                       "1 = the empty prompt's own image."),
                io.Conditioning.Input("empty_conditioning", optional=True,
                                      tooltip="Optional: the empty prompt encoded (CLIPTextEncode with no text). "
                                              "Not connected: \"\" encoded by clip, else the prompt zeroed."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional: the text encoder of this model, to encode the empty prompt \"\" as the "
                                      "paper does (used when empty_conditioning is not connected). Without either, the "
                                      "prompt's conditioning zeroed stands in (differs from \"\" on CLIP models)."),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, conditioning, cfg, empty_conditioning=None, clip=None) -> io.NodeOutput:
        if not conditioning:
            raise ValueError("NegGuideDNSGuider: the prompt conditioning is missing or empty.")
        if is_dns_patched(model):
            raise ValueError(
                "NegGuideDNSGuider: this model is patched by NegGuideDNS already (the prompts would be swapped twice); "
                "connect the unpatched model."
            )
        cfg = check_float_inputs("NegGuideDNSGuider", cfg=cfg)["cfg"]
        empty, form = empty_prompt(conditioning, empty_conditioning, clip)
        if clip is None and not empty_conditioning:
            LOG.warning("NegGuideDNSGuider: no clip and no empty_conditioning connected: using %s, not the paper's "
                        "encoded empty prompt; connect this model's CLIP for the paper's form.", form)
        else:
            LOG.info("NegGuideDNSGuider: the empty prompt is %s.", form)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(empty, conditioning)  # positive = empty, negative = the prompt
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)
