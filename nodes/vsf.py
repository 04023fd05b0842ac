"""NegGuideVSF: Value Sign Flip negative prompts inside attention (math: attention_patches/vsf.py).

How it hooks into ComfyUI (all on a clone, all reversible):
- an APPLY_MODEL wrapper appends the negative's real tokens N to the text context of every row,
  inside the active sigma window, and records the token layout of this model call;
- transformer_options["optimized_attention_override"] (a single slot: an override already there
  is chained, not replaced) runs VSF on the attention calls that see the text;
- on UNets an attn2 patch marks the next attention call as the cross-attention of its block.
Rows of the unconditional CFG branch never see N, so with cfg > 1 VSF acts on the cond branch only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

import comfy.patcher_extension
from comfy_api.latest import io

from ..attention_patches.architectures import Architecture, cond_rows, sequence_dims
from ..attention_patches.override_chain import OVERRIDE_SLOT, OverrideReach, call_chained
from ..attention_patches.vsf import (
    JointLayout,
    mass_on_latent_grid,
    negative_attention_mass,
    vsf_cross_attention,
    vsf_grouped_attention,
    vsf_joint_attention,
)
from .model_family import architecture_of
from .negtome import negtome_on_top, restack_negtome_above
from .node_text import node_text
from .schedule import SigmaWindow

LOG = logging.getLogger(__name__)
HOOK_KEY = "negguide_vsf"
NOOP_KEY = "negguide_vsf_noop"
"""Attachment on the MODEL a recording NegGuideVSF returned without patching: why it did nothing."""
SUPPORTED_FAMILIES = ("unet", "mmdit", "flux", "flux2", "qwen_image", "wan", "z_image")


def _sub_tokenizer(tokenizer, key: str):
    for name in (key, f"clip_{key}"):
        sub = getattr(tokenizer, name, None)
        if sub is not None and hasattr(sub, "pad_token"):
            return sub
    raise ValueError(f"NegGuideVSF: cannot find the tokenizer for text encoder '{key}'.")


def _real_length(sub_tokenizer, batch: list) -> int:
    """Tokens up to and including the end token (or the last non-pad token): no padding."""
    ids = [token[0] for token in batch]
    end = getattr(sub_tokenizer, "end_token", None)
    start = getattr(sub_tokenizer, "tokens_start", 0)
    if end is not None and end in ids[start:]:
        return ids.index(end, start) + 1
    pad = sub_tokenizer.pad_token
    return max((i + 1 for i, token in enumerate(ids) if token != pad), default=0)


def _negative_parts(clip, text: str) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """``text``'s real (unpadded) token embeddings: one [1, n_i, D] per fixed-length window
    (CLIP), in order, and the variable-length encoders' tokens [1, m, D] (or None).

    Variable-length encoders (T5 family, LLMs) get each token list cut after its end token before
    encoding, so padding never enters them (T5 attends to its padding). Fixed-length encoders
    (CLIP: 77 positions) must see their full window; CLIP is causal, so its real tokens do not
    depend on the padding, and the padded positions are cut from the output instead. A text
    longer than one CLIP window is split into windows by ComfyUI's tokenizer exactly as a long
    prompt is (each window encoded on its own). ComfyUI puts the fixed-length part first in the
    context (SD3: [CLIP-L|G windows ; T5])."""
    tokens = clip.tokenize(text)
    encoder_input, fixed_real, fixed_window, variable_len = {}, None, 0, 0
    for key, batches in tokens.items():
        sub_tokenizer = _sub_tokenizer(clip.tokenizer, key)
        lengths = [_real_length(sub_tokenizer, batch) for batch in batches]
        if sub_tokenizer.pad_to_max_length:
            encoder_input[key] = batches
            if fixed_real is not None and len(fixed_real) != len(lengths):
                raise ValueError(
                    f"NegGuideVSF: the negative prompt splits into {len(lengths)} {key} windows but "
                    f"{len(fixed_real)} windows of another text encoder; cannot line them up."
                )
            fixed_real = lengths if fixed_real is None else [max(a, b) for a, b in zip(fixed_real, lengths)]
            fixed_window = max(fixed_window, *(len(batch) for batch in batches))
        else:
            encoder_input[key] = [batch[:length] for batch, length in zip(batches, lengths)]
            variable_len += sum(lengths)
    encoded = clip.encode_from_tokens(encoder_input)
    context_len = encoded.shape[1]
    if fixed_real is None:  # every encoder saw its real tokens only (LLM encoders may drop a template)
        return [], encoded
    fixed_len = fixed_window * len(fixed_real)
    fixed_parts = [encoded[:, i * fixed_window:i * fixed_window + real] for i, real in enumerate(fixed_real)]
    if context_len == fixed_len + variable_len:
        return fixed_parts, encoded[:, fixed_len:]
    if context_len == fixed_len:  # no variable-length encoder loaded (SD3 without T5)
        return fixed_parts, None
    if context_len == variable_len:  # the fixed-length encoder only feeds the pooled vector (Flux)
        return [], encoded
    raise ValueError(
        f"NegGuideVSF: cannot separate the negative prompt's tokens from padding for this text encoder "
        f"({context_len} context tokens from {len(fixed_real)} windows of {fixed_window} + {variable_len})."
    )


def text_independent_prefix(tokens: torch.Tensor, reference: torch.Tensor) -> int:
    """How many leading tokens of ``tokens`` [1, n, D] equal those of ``reference`` [1, m, D]
    (another text's encoding through the same encoder): tokens that say nothing about the text.

    A causal encoder's start token (CLIP's BOS, an LLM's chat-template prefix) sees only itself,
    so its output is the same for every text; flipping it in VSF would push every image token
    away from what the positive's own start token says, whatever the negative is."""
    count = 0
    for a, b in zip(tokens[0], reference[0]):
        if not torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5 * float(b.float().abs().max().clamp(min=1.0))):
            break
        count += 1
    return count


def encode_negative(clip, text: str, drop_text_independent: bool = True) -> torch.Tensor:
    """The negative prompt's token embeddings [1, n, D]: no padding, and (``drop_text_independent``)
    no leading token that every text encodes the same (see :func:`text_independent_prefix`;
    compared with the empty text through the same path), in every CLIP window and in the
    variable-length part. Windows and parts keep their order."""
    fixed, variable = _negative_parts(clip, text)
    if drop_text_independent:
        empty_fixed, empty_variable = _negative_parts(clip, "")
        if fixed and empty_fixed:
            fixed = [part[:, text_independent_prefix(part, empty_fixed[0]):] for part in fixed]
        if variable is not None and empty_variable is not None:
            variable = variable[:, text_independent_prefix(variable, empty_variable):]
    tokens = torch.cat([*fixed, *([variable] if variable is not None else [])], dim=1)
    if tokens.shape[1] == 0:
        raise ValueError(f"NegGuideVSF: the negative prompt {text!r} encodes to no text-specific token; write the concept to avoid.")
    return tokens


@dataclass
class _CallLayout:
    """The token layout of one model call, shared with its attention calls."""

    text_len: int
    negative: tuple[int, int]
    image_len: int | None
    rows_active: torch.Tensor
    """Cond rows of the model call's batch (for the recorded maps); attention calls take theirs
    from their own batch, which a hook inside this one (NegToMe's reference rows) may enlarge."""
    expect_cross_attention: bool = field(default=False)
    reach: OverrideReach = field(default_factory=OverrideReach)
    negative_mass: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    """With recording on: image-token count -> [B, L] attention masses on N of each call."""
    segments: object | None = None
    """The family adapter's layout of this call (Architecture.adapter), else None."""


class VSFHooks:
    """The wrapper, attention override and attn2 patch that NegGuideVSF attaches."""

    def __init__(self, architecture: Architecture, negative: torch.Tensor, alpha: float, beta: float,
                 window: SigmaWindow, previous_override=None, record: bool = False):
        self.architecture = architecture
        self.negative = negative
        self.alpha = alpha
        self.beta = beta
        self.window = window
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
        if kwargs.get("attention_mask") is not None:
            raise ValueError("NegGuideVSF does not support text attention masks on this model yet.")
        if self.negative.shape[-1] != c_crossattn.shape[-1]:
            raise ValueError(
                f"NegGuideVSF: the negative prompt was encoded to {self.negative.shape[-1]}-dim tokens, "
                f"but this {self.architecture.family} model's text context is {c_crossattn.shape[-1]}-dim. "
                "Connect the CLIP that was loaded for this model."
            )
        batch, text_len = c_crossattn.shape[0], c_crossattn.shape[1]
        negative = self.negative.to(c_crossattn).expand(batch, -1, -1)
        rows_active = cond_rows(batch, transformer_options.get("cond_or_uncond"))
        image_len = self.architecture.image_tokens(x.shape) if self.architecture.image_only_attention else None
        unmarked_cross = self.architecture.attention == "cross" and not self.architecture.cross_attention_marked
        if unmarked_cross and self.architecture.image_tokens(x.shape) == text_len + negative.shape[1]:
            raise ValueError(
                f"NegGuideVSF: at this latent size the {self.architecture.family} model has as many image "
                "tokens as text tokens, so its cross-attention cannot be told from self-attention. "
                "Change the width or height by one step."
            )
        layout = _CallLayout(text_len + negative.shape[1], (text_len, text_len + negative.shape[1]), image_len, rows_active)
        if self.architecture.adapter is not None:
            layout.segments = self.architecture.adapter.call_layout(
                executor.class_obj.diffusion_model, tuple(x.shape), text_len + negative.shape[1], negative.shape[1],
                kwargs, "NegGuideVSF")
        transformer_options = {**transformer_options, HOOK_KEY: layout}
        out = executor(x, t, c_concat, torch.cat([c_crossattn, negative], dim=1), control, transformer_options, **kwargs)
        layout.reach.check("NegGuideVSF", transformer_options)
        if self.record and layout.negative_mass:
            grid = mass_on_latent_grid(layout.negative_mass, tuple(x.shape), self.architecture.patch_size)
            self.maps.append((sigma, grid[rows_active]))
        return out

    def mark_cross_attention(self, n, context_attn2, value_attn2, extra_options):
        layout = extra_options.get(HOOK_KEY)
        if layout is not None:
            layout.expect_cross_attention = True
        return n, context_attn2, value_attn2

    def attention_override(self, func, q, k, v, heads, mask=None, **kwargs):
        def attend(q_, k_, v_, mask_):
            return call_chained(self.previous_override, func, q_, k_, v_, heads, mask=mask_, **kwargs)

        layout = kwargs.get("transformer_options", {}).get(HOOK_KEY)
        if layout is not None:
            layout.reach.calls += 1
        seq_dim, out_dim = sequence_dims(kwargs.get("skip_reshape", False), kwargs.get("skip_output_reshape", False))
        if layout is not None and layout.segments is not None:
            return self._segmented_attention(layout, attend, q, k, v, heads, mask, kwargs, seq_dim, out_dim)
        if layout is None or not self._acts_on(layout, q.shape[seq_dim], k.shape[seq_dim]):
            return attend(q, k, v, mask)
        if mask is not None:
            raise ValueError("NegGuideVSF does not support attention masks on this model yet.")
        rows_active = cond_rows(q.shape[0], kwargs["transformer_options"].get("cond_or_uncond"))
        common = dict(alpha=self.alpha, beta=self.beta, rows_active=rows_active, seq_dim=seq_dim)
        if self.architecture.attention == "cross":
            if self.record:
                self._record_mass(layout, q, k, heads, seq_dim)
            return vsf_cross_attention(attend, q, k, v, negative=layout.negative, **common)
        image_len = q.shape[seq_dim] - layout.text_len
        joint = JointLayout.text_first(layout.negative[0], layout.negative[1] - layout.negative[0], image_len)
        if self.record:
            self._record_mass(layout, q.narrow(seq_dim, layout.text_len, image_len), k, heads, seq_dim)
        return vsf_joint_attention(attend, q, k, v, layout=joint, output_seq_dim=out_dim, **common)

    def _segmented_attention(self, layout: _CallLayout, attend, q, k, v, heads, mask, kwargs, seq_dim, out_dim):
        """VSF on a family with a layout adapter: the adapter says which calls to act on and the
        query groups (visibility) of each; the math is vsf_grouped_attention."""
        segments = layout.segments
        kind = segments.kind(q.shape[seq_dim], k.shape[seq_dim])
        groups = segments.vsf_groups(kind)
        if not groups:
            return attend(q, k, v, mask)
        if mask is not None:
            raise ValueError("NegGuideVSF does not support attention masks on this model yet.")
        rows_active = cond_rows(q.shape[0], kwargs["transformer_options"].get("cond_or_uncond"))
        if self.record and any(group.flipped for group in groups):
            image = segments.image
            self._record_mass(layout, q.narrow(seq_dim, image[0], image[1] - image[0]), k, heads, seq_dim)
        return vsf_grouped_attention(attend, q, k, v, groups=groups, negative=segments.negative, alpha=self.alpha,
                                     beta=self.beta, rows_active=rows_active, seq_dim=seq_dim, output_seq_dim=out_dim)

    def _record_mass(self, layout: _CallLayout, image_queries, k, heads: int, seq_dim: int) -> None:
        mass = negative_attention_mass(image_queries, k, negative=layout.negative, beta=self.beta, heads=heads, seq_dim=seq_dim)
        layout.negative_mass.setdefault(mass.shape[1], []).append(mass.float().cpu())

    def _acts_on(self, layout: _CallLayout, q_len: int, k_len: int) -> bool:
        if self.architecture.attention == "cross" and not self.architecture.cross_attention_marked:
            return k_len == layout.text_len and q_len != k_len
        if self.architecture.attention == "cross":
            if not layout.expect_cross_attention:
                return False
            layout.expect_cross_attention = False
            if k_len != layout.text_len:
                raise ValueError(
                    f"NegGuideVSF: a cross-attention saw {k_len} text tokens instead of {layout.text_len}; "
                    "another node changes the text context inside attention. Apply NegGuideVSF after it."
                )
            return True
        if q_len != k_len or q_len <= layout.text_len:
            return False
        return layout.image_len is None or q_len == layout.text_len + layout.image_len


def apply_vsf(model, architecture: Architecture, negative_tokens: torch.Tensor, scale: float, bias: float,
              window: SigmaWindow, record_attention_map: bool = False):
    """A clone of ``model`` (a ModelPatcher) with VSF attached for the unpadded negative tokens
    [1, n, D]: the APPLY_MODEL wrapper, the chained attention override and, on UNets, the attn2
    marker; with ``record_attention_map`` also a per-run reset of the recorded maps.

    NegToMe edits the finished attention output, so it must wrap VSF whatever the node order:
    on a model whose attention slot NegToMe fills, VSF goes in below it and NegToMe is stacked
    on top again (the same hooks as VSF-then-NegToMe give)."""
    patched = model.clone()
    transformer_options = patched.model_options.setdefault("transformer_options", {})
    negtome = negtome_on_top(patched)
    hooks = VSFHooks(
        architecture, negative_tokens.cpu(), scale, bias,
        window=window,
        previous_override=negtome.previous_override if negtome else transformer_options.get(OVERRIDE_SLOT),
        record=record_attention_map,
    )
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY, hooks.apply_model_wrapper)
    if record_attention_map:
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, HOOK_KEY, hooks.reset_per_run)
    transformer_options[OVERRIDE_SLOT] = hooks.attention_override
    if architecture.cross_attention_marked:
        patched.set_model_attn2_patch(hooks.mark_cross_attention)
    if negtome:
        restack_negtome_above(patched, negtome, hooks.attention_override)
    return patched


class NegGuideVSF(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideVSF",
            display_name="VSF Negative Prompt (Value Sign Flip)",
            category="model_patches/negguide",
            description=(
                "Negative prompt for few-step, CFG-free models (Flux Schnell, SD3.5 Turbo, SDXL Lightning): "
                "image tokens that attend to the negative read its values with the sign flipped, which "
                "cancels the concept where it would appear. Works at cfg 1 in a single pass; at cfg > 1 "
                "it acts on the positive branch only."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch: SD1.5/SDXL, SD3/SD3.5, Flux, Chroma, Qwen-Image, Wan 2.1, Z-Image."),
                io.Clip.Input("clip", tooltip="The text encoder loaded for this model; encodes the negative without padding."),
                io.String.Input("negative", multiline=True, default="", tooltip="What should not appear. Empty: no effect."),
                io.Float.Input("scale", default=3.0, min=0.0, max=20.0, step=0.05, round=0.01,
                               tooltip="alpha: how strongly flipped negative values cancel. 0 = off. Typical 1.5-4 (Flux up to 6)."),
                io.Float.Input("bias", default=0.1, min=0.0, max=100.0, step=0.01, round=0.001,
                               tooltip="beta: attention-logit penalty on the flipped negative; higher = gentler. Typical 0.05-0.2."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of the active window, as a fraction of the schedule (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="End of the active window, as a fraction of the schedule (1 = last step)."),
                io.Boolean.Input("record_attention_map", default=False, optional=True,
                                 tooltip="Record where the negative acts, for NegGuideVSFAttentionMap. Costs about one "
                                         "extra attention score computation per layer: leave off for normal use."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, clip, negative, scale, bias, start_percent, end_percent,
                record_attention_map=False) -> io.NodeOutput:
        architecture = architecture_of(model, "NegGuideVSF", SUPPORTED_FAMILIES)
        window = SigmaWindow.from_percents(model, start_percent, end_percent, "NegGuideVSF")
        if not negative.strip() or scale == 0:
            reason = "the negative prompt is empty" if not negative.strip() else "scale is 0"
            LOG.warning("NegGuideVSF: %s; the model is returned unchanged.", reason)
            if record_attention_map:  # tell NegGuideVSFAttentionMap why there is nothing to show
                model = model.clone()
                model.set_attachments(NOOP_KEY, reason)
            return io.NodeOutput(model, ui=node_text(f"VSF is off: {reason}; the model is returned unchanged."))
        if model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY):
            raise ValueError("NegGuideVSF is already applied to this model: put every negative concept into one NegGuideVSF node.")
        patched = apply_vsf(model, architecture, encode_negative(clip, negative), scale, bias, window, record_attention_map)
        return io.NodeOutput(patched)


def render_attention_maps(maps: list[tuple[float, torch.Tensor]], tile_scale: int = 8) -> torch.Tensor:
    """One IMAGE [1, H, W, 3]: a row per image of the batch, a column per model call (high noise
    left), each tile the negative-attention share over the latent grid on one colour scale
    (black = none, through red to yellow = the largest share of the run)."""
    stacked = torch.stack([grid for _, grid in maps], dim=1)  # [B, steps, h, w]
    values = stacked / stacked.max().clamp_min(1e-12)
    rgb = torch.stack([(2 * values).clamp(max=1), (2 * values - 1).clamp(min=0), torch.zeros_like(values)], dim=-1)
    rgb = rgb.repeat_interleave(tile_scale, dim=2).repeat_interleave(tile_scale, dim=3)  # [B, steps, H, W, 3]
    batch, steps, height, width, _ = rgb.shape
    gap = 2
    sheet = torch.ones(batch * (height + gap) - gap, steps * (width + gap) - gap, 3)
    for b in range(batch):
        for s in range(steps):
            sheet[b * (height + gap):b * (height + gap) + height, s * (width + gap):s * (width + gap) + width] = rgb[b, s]
    return sheet.unsqueeze(0)


class NegGuideVSFAttentionMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideVSFAttentionMap",
            display_name="VSF Attention Map (where the negative acts)",
            category="model_patches/negguide",
            description=(
                "Shows where VSF cancelled the negative in the last sampling run: for each step, the share of "
                "every image token's attention that went to the flipped negative (1 - W in the paper), averaged "
                "over heads and layers. Rows are the images of the batch, columns the steps."
            ),
            inputs=[
                io.Latent.Input("samples", tooltip="The sampler's output LATENT: makes the map run after sampling."),
                io.Model.Input("model", tooltip="The MODEL output of NegGuideVSF with record_attention_map on."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, samples, model) -> io.NodeOutput:
        wrappers = model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY)
        hooks = wrappers[0].__self__ if wrappers else None
        noop = model.get_attachment(NOOP_KEY)
        if hooks is None and noop:
            raise ValueError(f"NegGuideVSFAttentionMap: NegGuideVSF did nothing ({noop}), so there is no map to show. "
                             "Give it a negative prompt and a scale above 0.")
        if hooks is None:
            raise ValueError("NegGuideVSFAttentionMap: connect the MODEL of a NegGuideVSF node with record_attention_map on.")
        if not hooks.record:
            raise ValueError("NegGuideVSFAttentionMap: turn on record_attention_map on the NegGuideVSF node connected to 'model'.")
        if not hooks.maps and hooks.runs == 0:
            raise ValueError("NegGuideVSFAttentionMap: nothing was sampled with this model yet; connect the output LATENT "
                             "of the sampler that uses it to 'samples'.")
        if not hooks.maps:
            raise ValueError("NegGuideVSFAttentionMap: the last sampling run had no step inside NegGuideVSF's "
                             "start_percent..end_percent window, so VSF never acted and nothing was recorded. "
                             "Widen the window (or use more steps).")
        return io.NodeOutput(render_attention_maps(hooks.maps))
