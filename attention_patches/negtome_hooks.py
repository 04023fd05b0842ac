"""The hooks NegGuideNegToMe attaches (nodes/negtome.py attaches them to a ModelPatcher clone):
plain callables with ComfyUI's hook signatures, no ComfyUI import. Math:
attention_patches/negtome.py; where the image tokens sit: the family adapter
(attention_patches/families/).

- ``apply_model_wrapper`` (APPLY_MODEL wrapper): checks the sigma window and records this model
  call's layout (cond/uncond groups, the family adapter's CallLayout, reference rows) in
  transformer_options; in reference-image mode it also appends, to every cond/uncond chunk of the
  batch, one row holding the reference latent re-noised to the current sigma (fixed noise from
  ``seed``), with that chunk's conditioning, and strips those rows from the model output;
- ``unet_attn1_output`` (UNets, attn1_output_patch): merges the self-attention output after
  to_out, before the residual (the reference SDXL point);
- ``attention_override`` (DiTs, transformer_options["optimized_attention_override"], chaining
  what the slot held): merges the image tokens of each block's self/joint attention output, the
  span the layout gives (before the output projection, which is affine, so the extrapolation
  commutes with it; only the matching sees pre-projection features).
Groups follow transformer_options["cond_or_uncond"]: cond and uncond rows never mix, and a call
holding only one of them (ComfyUI splits prompts of different lengths) is its own group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .calls import chunk_groups, sequence_dims
from .families.base import ATTENTION_OUTPUT, FamilyAdapter
from .negtome import diversity_merge, reference_merge
from .override_chain import OverrideReach, call_chained

METHOD = "NegGuideNegToMe"
HOOK_KEY = "negguide_negtome"
"""Key of the wrapper, and of this model call's record in transformer_options."""


@dataclass
class ModelCall:
    """What the attention hooks need to know about one model call."""

    groups: list[range]
    reference_rows: list[int] | None
    """Reference mode: the appended row of each group."""
    layout: object
    """The family adapter's CallLayout of this call."""
    reach: OverrideReach = field(default_factory=OverrideReach)


def insert_rows(value, groups: list[range], batch: int):
    """``value`` with, after each group's rows, a copy of that group's first row (per-row tensors
    and lists of them; anything else is returned unchanged)."""
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
        parts = []
        for group in groups:
            parts += [value[group.start:group.stop], value[group.start:group.start + 1]]
        return torch.cat(parts)
    if isinstance(value, list) and value and all(torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == batch for v in value):
        return [insert_rows(v, groups, batch) for v in value]
    return value


def resize_latent(latent: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``latent`` [1, C, (T,) H, W] resized (bilinear) to the spatial size of ``shape``."""
    if latent.ndim != len(shape) or latent.shape[1] != shape[1]:
        raise ValueError(
            f"{METHOD}: the reference latent {tuple(latent.shape)} does not fit this model's latents "
            f"{tuple(shape)}. Encode the reference with this model's VAE."
        )
    if latent.ndim == 5 and latent.shape[2] != shape[2]:
        latent = latent[:, :, :1].expand(-1, -1, shape[2], -1, -1)  # a still image for every frame
    if tuple(latent.shape[-2:]) == tuple(shape[-2:]):
        return latent
    flat = latent.reshape(1, -1, *latent.shape[-2:])
    flat = torch.nn.functional.interpolate(flat, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    return flat.reshape(*latent.shape[:-2], *shape[-2:])


class NegToMeHooks:
    def __init__(self, adapter: FamilyAdapter, alpha: float, threshold: float, window,
                 reference: torch.Tensor | None = None, reference_mask: torch.Tensor | None = None,
                 seed: int = 0, previous_override=None, on_single_image: Callable[[], None] | None = None):
        self.adapter = adapter
        self.alpha = alpha
        self.threshold = threshold
        self.window = window
        """Sigmas where NegToMe acts (``sigma in window``)."""
        self.reference = reference
        """[1, C, (T,) H, W] in the VAE's latent space, or None (batch-diversity mode)."""
        self.reference_mask = reference_mask
        """[H, W] in [0, 1], or None."""
        self.seed = seed
        self.previous_override = previous_override
        self.on_single_image = on_single_image
        """Called on each model call of batch-diversity mode with one image per group (nothing to
        merge): the node reports it, once per prompt."""
        self._mask_cache: dict = {}

    # ------------------------------------------------------------------ per model call
    def apply_model_wrapper(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        if self.alpha == 0 or float(t.max()) not in self.window:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        batch = x.shape[0]
        groups = chunk_groups(batch, transformer_options.get("cond_or_uncond"))
        text_len = 0 if c_crossattn is None else c_crossattn.shape[1]
        layout = self.adapter.call_layout(executor.class_obj.diffusion_model, tuple(x.shape), text_len, 0, kwargs, METHOD)
        if self.reference is None:
            if all(len(group) < 2 for group in groups) and self.on_single_image is not None:
                self.on_single_image()
            call = ModelCall(groups, None, layout)
            out = executor(x, t, c_concat, c_crossattn, control, {**transformer_options, HOOK_KEY: call}, **kwargs)
            self._check_reached(call, transformer_options)
            return out

        if control is not None:
            raise ValueError(f"{METHOD}: reference-image mode does not work together with a ControlNet yet.")
        reference = self._noised_reference(executor.class_obj, x, t, groups)
        parts, new_groups, reference_rows, row = [], [], [], 0
        for group, ref in zip(groups, reference):
            parts += [x[group.start:group.stop], ref]
            new_groups.append(range(row, row + len(group) + 1))
            reference_rows.append(row + len(group))
            row += len(group) + 1
        call = ModelCall(new_groups, reference_rows, layout)
        options = {**transformer_options, HOOK_KEY: call}
        if torch.is_tensor(options.get("sigmas")) and options["sigmas"].shape[0] == batch:
            options["sigmas"] = insert_rows(options["sigmas"], groups, batch)
        kwargs = {key: insert_rows(value, groups, batch) for key, value in kwargs.items()}
        out = executor(torch.cat(parts), insert_rows(t, groups, batch), insert_rows(c_concat, groups, batch),
                       insert_rows(c_crossattn, groups, batch), control, options, **kwargs)
        self._check_reached(call, transformer_options)
        keep = [r for group in new_groups for r in group if r not in reference_rows]
        return out[keep]

    def _check_reached(self, call: ModelCall, transformer_options: dict) -> None:
        """Where NegToMe merges inside the attention override, the override must have run."""
        if self.adapter.negtome_point == ATTENTION_OUTPUT:
            call.reach.check(METHOD, transformer_options)

    def _noised_reference(self, base_model, x, t, groups) -> list[torch.Tensor]:
        """The reference latent at each group's sigma: the same seeded noise at every step."""
        latent = resize_latent(self.reference, x.shape).to(x.device, torch.float32)
        latent = base_model.process_latent_in(latent)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn(latent.shape, generator=generator, dtype=torch.float32).to(x.device)
        sampling = base_model.model_sampling
        return [sampling.noise_scaling(t[g.start:g.start + 1].float(), noise, latent).to(x.dtype) for g in groups]

    # ------------------------------------------------------------------ the merge
    def _mask_for(self, grid: tuple[int, int, int], device) -> torch.Tensor | None:
        """The reference mask on a (frames, h, w) token grid, flattened: tokens whose area is
        more than half inside the mask count."""
        if self.reference_mask is None:
            return None
        key = (grid, str(device))
        if key not in self._mask_cache:
            frames, h, w = grid
            mask = self.reference_mask.float().reshape(1, 1, *self.reference_mask.shape[-2:])
            small = torch.nn.functional.interpolate(mask, size=(h, w), mode="area")[0, 0] > 0.5
            self._mask_cache[key] = small.reshape(-1).repeat(frames).to(device)
        return self._mask_cache[key]

    def _merge(self, tokens: torch.Tensor, call: ModelCall, grid, in_place: bool) -> torch.Tensor:
        """Merge image tokens [B, I, D] of one call (in place, or into a new tensor)."""
        if call.reference_rows is None:
            return diversity_merge(tokens, call.groups, self.alpha, self.threshold, in_place=in_place)
        mask = self._mask_for(grid, tokens.device)
        if mask is not None and mask.shape[0] != tokens.shape[1]:
            raise ValueError(f"{METHOD}: reference mask on {mask.shape[0]} tokens, attention has {tokens.shape[1]}")
        return reference_merge(tokens, call.groups, call.reference_rows, self.alpha, self.threshold, mask,
                               in_place=in_place)

    def unet_attn1_output(self, n, extra_options):
        """attn1_output_patch: n [B, L, C] is the self-attention output after to_out."""
        call = extra_options.get(HOOK_KEY)
        if call is None:
            return n
        shape = extra_options.get("activations_shape")
        grid = (1, shape[-2], shape[-1]) if shape is not None and len(shape) == 4 else (1, 1, n.shape[1])
        if grid[1] * grid[2] != n.shape[1]:
            grid = (1, 1, n.shape[1])
        return self._merge(n, call, grid, in_place=False)  # n may be another patch's tensor

    def attention_override(self, func, q, k, v, heads, mask=None, **kwargs):
        out = call_chained(self.previous_override, func, q, k, v, heads, mask=mask, **kwargs)
        call = kwargs.get("transformer_options", {}).get(HOOK_KEY)
        if call is None:
            return out
        call.reach.calls += 1
        seq_dim, out_dim = sequence_dims(kwargs.get("skip_reshape", False), kwargs.get("skip_output_reshape", False))
        span = call.layout.image_span(q.shape[seq_dim], k.shape[seq_dim])
        if span is None:
            return out
        lo, hi = span
        grid = call.layout.grid
        if out_dim == 2:  # [B, H, L, D]: features are all heads concatenated
            b, h, _, d = out.shape
            image = out[:, :, lo:hi].permute(0, 2, 1, 3).reshape(b, hi - lo, h * d)
            merged = self._merge(image, call, grid, in_place=True)
            out[:, :, lo:hi] = merged.view(b, hi - lo, h, d).permute(0, 2, 1, 3)
            return out
        # [B, L, H*D]: the image tokens are merged in place, as a view (this call's fresh output)
        self._merge(out[:, lo:hi], call, grid, in_place=True)
        return out
