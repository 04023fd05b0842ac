"""The hooks NegGuideVSF attaches (nodes/vsf.py attaches them to a ModelPatcher clone): plain
callables with ComfyUI's hook signatures, no ComfyUI import. Math: attention_patches/vsf.py;
where the tokens sit: the family adapter (attention_patches/families/).

- ``apply_model_wrapper`` (APPLY_MODEL wrapper): inside the sigma window, appends the negative's
  real tokens N to the text context of every row (and to the family's other text inputs, e.g.
  HiDream's Llama hidden states), then the family's pooling companion (Hunyuan Video), and
  asks the family adapter for the layout of this model call, which the attention calls read
  from transformer_options; a text attention mask the model is given gets N (and the companion)
  as attended tokens (FamilyAdapter.attention_mask_with_negative);
- ``attention_override`` (transformer_options["optimized_attention_override"], chaining what the
  slot held): VSF on the calls the layout says see the text, under the mask the model passes;
- ``mark_cross_attention`` (UNet attn2_patch): marks the next attention call as a cross-attention;
- ``position_negative`` (the family's text-positions patch, Flux's ``post_input``): N's RoPE
  positions become those of the text's first tokens (FamilyAdapter.text_positions_patch).
Rows of the unconditional CFG branch never see N, so with cfg > 1 VSF acts on the cond branch only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .calls import cond_rows, sequence_dims
from .families import CROSS
from .families.base import FamilyAdapter
from .override_chain import OverrideReach, call_chained
from .vsf import (additive_mask, mask_rows, mass_on_latent_grid, negative_attention_mass, vsf_cross_attention,
                  vsf_grouped_attention)

METHOD = "NegGuideVSF"
HOOK_KEY = "negguide_vsf"
"""Key of the wrappers, and of this model call's record in transformer_options."""


@dataclass(frozen=True)
class NegativeTokens:
    """The negative prompt's real tokens, as the model's text inputs take them (nodes/vsf.py
    encode_negative)."""

    context: torch.Tensor
    """[1, n, D]: appended to the text context."""
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    """Model input name -> [1, ..., m, D] (tokens on axis -2): appended to that input
    (FamilyAdapter.extra_text_inputs)."""

    def cpu(self) -> "NegativeTokens":
        return NegativeTokens(self.context.cpu(), {name: tokens.cpu() for name, tokens in self.extra.items()})


def _appended(value, tokens: torch.Tensor, what: str, family: str) -> torch.Tensor:
    """``value`` [B, ..., L, D] (the model call's ``what``) with the negative's ``tokens``
    [1, ..., m, D] appended to every row along the token axis -2; a clear error where the
    negative was encoded for another model (another width or layer count, or no such input)."""
    if value is None or value.shape[1:-2] != tokens.shape[1:-2] or value.shape[-1] != tokens.shape[-1]:
        got = "missing" if value is None else f"[{', '.join(map(str, value.shape))}]"
        raise ValueError(
            f"{METHOD}: the negative prompt was encoded to a {what} of shape [{', '.join(map(str, tokens.shape))}], "
            f"but this {family} model's {what} is {got}. Connect the CLIP that was loaded for this model.")
    return torch.cat([value, tokens.to(value).expand(value.shape[0], *tokens.shape[1:])], dim=-2)


@dataclass
class _ModelCall:
    """One model call, shared with its attention calls."""

    layout: object
    """The family adapter's CallLayout of this call."""
    rows_active: torch.Tensor
    """Cond rows of the model call's batch (for the recorded maps); attention calls take theirs
    from their own batch, which a hook inside this one (NegToMe's reference rows) may enlarge."""
    reach: OverrideReach = field(default_factory=OverrideReach)
    negative_mass: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    """With recording on: image-token count -> [B, L] attention masses on N of each call."""


class VSFHooks:
    def __init__(self, adapter: FamilyAdapter, negative: NegativeTokens, alpha: float, beta: float,
                 window, previous_override=None, record: bool = False):
        self.adapter = adapter
        self.negative = negative
        self.alpha = alpha
        self.beta = beta
        self.window = window
        """Sigmas where VSF acts (``sigma in window``)."""
        self.previous_override = previous_override
        self.record = record
        self.maps: list[tuple[float, torch.Tensor]] = []
        """With recording on: (sigma, [B_cond, H, W] map) per model call of the last run."""
        self.runs = 0
        """With recording on: sampling runs started with this model."""

    def reset_per_run(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper (recording only): each sampling run starts a new record."""
        self.maps = []
        self.runs += 1
        return executor(*args, **kwargs)

    def apply_model_wrapper(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        sigma = float(t.max())
        if c_crossattn is None or sigma not in self.window:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        family, extra = self.adapter.family, self.negative.extra
        positive_len = c_crossattn.shape[1]
        c_crossattn = _appended(c_crossattn, self.negative.context, "text context", family)
        kwargs = {**kwargs, **{name: _appended(kwargs.get(name), tokens, name, family) for name, tokens in extra.items()}}
        n = self.negative.context.shape[1]
        companion = self.adapter.pool_companion(c_crossattn, n)
        if companion is not None:
            c_crossattn = torch.cat([c_crossattn, companion], dim=1)
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = self.adapter.attention_mask_with_negative(
                kwargs["attention_mask"], positive_len, c_crossattn.shape[1] - positive_len, METHOD)
        layout = self.adapter.call_layout(executor.class_obj.diffusion_model, tuple(x.shape), c_crossattn.shape[1],
                                          n, kwargs, METHOD, {name: tokens.shape[-2] for name, tokens in extra.items()})
        call = _ModelCall(layout, cond_rows(c_crossattn.shape[0], transformer_options.get("cond_or_uncond")))
        transformer_options = {**transformer_options, HOOK_KEY: call}
        out = executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        call.reach.check(METHOD, transformer_options)
        if self.record and call.negative_mass:
            grid = mass_on_latent_grid(call.negative_mass, tuple(x.shape), layout.patch_size)
            self.maps.append((sigma, grid[call.rows_active]))
        return out

    def mark_cross_attention(self, n, context_attn2, value_attn2, extra_options):
        call = extra_options.get(HOOK_KEY)
        if call is not None:
            call.layout.mark_cross_attention()
        return n, context_attn2, value_attn2

    def position_negative(self, args: dict) -> dict:
        """Flux's ``post_input`` patch: in a model call VSF appended N to, N's text ids
        (``txt_ids`` [B, L, axes], L = P + N) become a copy of the first n text tokens' ids,
        the positions N would have as a prompt of its own (families/flux.py)."""
        call = args["transformer_options"].get(HOOK_KEY)
        txt_ids = args.get("txt_ids")
        if call is None or txt_ids is None:
            return args
        (lo, hi), = call.layout.negative_columns
        if txt_ids.shape[1] != call.layout.text_len:
            raise ValueError(f"{METHOD}: the model's text ids cover {txt_ids.shape[1]} tokens, but VSF appended its "
                             f"negative to a text of {call.layout.text_len}; a node that changes the text tokens runs "
                             "between them. Apply VSF after it.")
        positioned = txt_ids.clone()
        positioned[:, lo:hi] = txt_ids[:, :hi - lo]  # from the model's ids: N may be longer than P
        return {**args, "txt_ids": positioned}

    def attention_override(self, func, q, k, v, heads, mask=None, **kwargs):
        def attend(q_, k_, v_, mask_):
            return call_chained(self.previous_override, func, q_, k_, v_, heads, mask=mask_, **kwargs)

        call = kwargs.get("transformer_options", {}).get(HOOK_KEY)
        if call is None:
            return attend(q, k, v, mask)
        call.reach.calls += 1
        seq_dim, out_dim = sequence_dims(kwargs.get("skip_reshape", False), kwargs.get("skip_output_reshape", False))
        q_len = q.shape[seq_dim]
        kind = call.layout.kind(q_len, k.shape[seq_dim])
        groups = call.layout.vsf_groups(kind, q_len)
        if kind != CROSS and not groups:
            return attend(q, k, v, mask)
        model_mask = None if mask is None else additive_mask(mask, q.dtype)
        rows_active = cond_rows(q.shape[0], kwargs["transformer_options"].get("cond_or_uncond"))
        negative = call.layout.negative_columns
        flipped = [group for group in groups if group.flipped]
        if self.record and (kind == CROSS or flipped):
            lo, hi = (0, q_len) if kind == CROSS else call.layout.image
            mass = negative_attention_mass(q.narrow(seq_dim, lo, hi - lo), k, negative=negative, beta=self.beta,
                                           heads=heads, seq_dim=seq_dim, hidden=flipped[0].hidden if flipped else (),
                                           mask=mask_rows(model_mask, ((lo, hi),)))
            call.negative_mass.setdefault(mass.shape[1], []).append(mass.float().cpu())
        common = dict(negative=negative, alpha=self.alpha, beta=self.beta, rows_active=rows_active, seq_dim=seq_dim,
                      mask=model_mask)
        if kind == CROSS:
            return vsf_cross_attention(attend, q, k, v, **common)
        return vsf_grouped_attention(attend, q, k, v, groups=groups, output_seq_dim=out_dim, **common)
