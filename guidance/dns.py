"""Diffusion-Negative Sampling (DNS), the first half of Diffusion-Negative Prompting (DNP).

Desai & Vasconcelos, "Improving Image Synthesis with Diffusion-Negative Sampling" (ECCV 2024),
Eq. 19: sample the image the model considers LEAST compliant with the prompt p,

    eps = eps_empty + s * (eps_empty - eps_p),

i.e. classifier-free guidance with the roles of the empty prompt and p flipped. The combination
is linear in the prediction, and ComfyUI's denoised prediction D = x - sigma * eps (or its flow
analogue) is affine in eps at fixed x and sigma, so it carries over to D exactly:

    D = D_empty + s * (D_empty - D_p).

The paper implements it (Sec. 4, "it suffices to prompt the latter with empty positive prompt and
negative prompt p") as the practitioners' two-prediction CFG with swapped prompts, which in
ComfyUI's cfg_function form with scale w is

    D = D_p + w * (D_empty - D_p) = D_empty + (w - 1) * (D_empty - D_p),

so Eq. 19 with scale s is CFG with swapped prompts at cfg w = s + 1. The nodes take ComfyUI's
cfg w (what the stock sampler fed positive "" and negative p uses, and what the public auto-DNP
reproduction ran: guidance 7 with prompt "" and negative p) and compute it in exactly
cfg_function's order of operations, so the latents are bit-identical to that stock run.
"""

from __future__ import annotations

import torch


def dns_combine(d_empty: torch.Tensor, d_prompt: torch.Tensor, scale: float) -> torch.Tensor:
    """Paper Eq. 19 in denoised space: D = D_empty + s (D_empty - D_p). ``scale`` = 0 gives the
    empty-prompt (unconditional) prediction; the equivalent ComfyUI cfg is ``scale + 1``."""
    return d_empty + (d_empty - d_prompt) * scale


def dns_cfg(d_empty: torch.Tensor, d_prompt: torch.Tensor, cfg: float) -> torch.Tensor:
    """DNS as ComfyUI's CFG with swapped prompts: D = D_p + w (D_empty - D_p), written exactly as
    comfy.samplers.cfg_function (uncond_pred + (cond_pred - uncond_pred) * cond_scale with
    cond = empty, uncond = p). Equals :func:`dns_combine` with scale = w - 1; w = 1 is D_empty."""
    return d_prompt + (d_empty - d_prompt) * cfg


def paper_scale_to_cfg(scale: float) -> float:
    """Eq. 19's s -> the ComfyUI cfg of the swapped-prompt CFG (w = s + 1)."""
    return float(scale) + 1.0
