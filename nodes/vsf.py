"""NegGuideVSF: Value Sign Flip negative prompts inside attention.

The node encodes the negative without padding and attaches the hooks of
attention_patches/vsf_hooks.py to a clone (all reversible): an APPLY_MODEL wrapper, the
attention override (a single slot: an override already there is chained, not replaced) and, on
UNets, an attn2 patch. Math: attention_patches/vsf.py.
"""

from __future__ import annotations

import logging

import torch

import comfy.patcher_extension
from comfy_api.latest import io

from ..attention_patches.families.base import ExtraTextInput, FamilyAdapter
from ..attention_patches.override_chain import OVERRIDE_SLOT
from ..attention_patches.vsf_hooks import HOOK_KEY, NegativeTokens, VSFHooks
from .model_family import family_adapter_of
from .negtome import negtome_on_top, restack_negtome_above
from .node_text import node_text
from .schedule import SigmaWindow

LOG = logging.getLogger(__name__)
NOOP_KEY = "negguide_vsf_noop"
"""Attachment on the MODEL a recording NegGuideVSF returned without patching: why it did nothing."""
SUPPORTED_FAMILIES = ("unet", "mmdit", "flux", "flux2", "qwen_image", "wan", "z_image", "hidream", "hunyuan_video")


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


def _negative_parts(clip, text: str, extra_inputs: tuple[ExtraTextInput, ...] = ()
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None, dict[str, torch.Tensor]]:
    """``text``'s real (unpadded) token embeddings: one [1, n_i, D] per fixed-length window
    (CLIP), in order, the variable-length encoders' tokens [1, m, D] (or None), and the tokens of
    each of the model's ``extra_inputs`` (by model input; their encoders are variable-length and
    feed those inputs, not the context).

    Variable-length encoders (T5 family, LLMs) get each token list cut after its end token before
    encoding, so padding never enters them (T5 attends to its padding). Fixed-length encoders
    (CLIP: 77 positions) must see their full window; CLIP is causal, so its real tokens do not
    depend on the padding, and the padded positions are cut from the output instead. A text
    longer than one CLIP window is split into windows by ComfyUI's tokenizer exactly as a long
    prompt is (each window encoded on its own). ComfyUI puts the fixed-length part first in the
    context (SD3: [CLIP-L|G windows ; T5])."""
    tokens = clip.tokenize(text)
    extra_tokenizers = {extra.tokenizer for extra in extra_inputs}
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
            variable_len += 0 if key in extra_tokenizers else sum(lengths)
    output = clip.encode_from_tokens(encoder_input, return_dict=True)
    encoded = output["cond"]
    extras = {}
    for extra in extra_inputs:
        if output.get(extra.encoder_output) is None:
            raise ValueError(f"NegGuideVSF: this text encoder gives no {extra.encoder_output!r}, which the model reads "
                             "beside the prompt. Connect the CLIP that was loaded for this model.")
        extras[extra.model_input] = output[extra.encoder_output]
    context_len = encoded.shape[1]
    if fixed_real is None:  # every encoder saw its real tokens only (LLM encoders may drop a template)
        return [], encoded, extras
    fixed_len = fixed_window * len(fixed_real)
    fixed_parts = [encoded[:, i * fixed_window:i * fixed_window + real] for i, real in enumerate(fixed_real)]
    if context_len == fixed_len + variable_len:
        return fixed_parts, encoded[:, fixed_len:], extras
    if context_len == fixed_len:  # no variable-length encoder loaded (SD3 without T5)
        return fixed_parts, None, extras
    if context_len == variable_len:  # the fixed-length encoders only feed the pooled vector (Flux, HiDream)
        return [], encoded, extras
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


def _tokens_first(extra: torch.Tensor) -> torch.Tensor:
    """[1, ..., m, D] -> [1, m, ...*D]: one vector per token (all of HiDream's Llama layers)."""
    return extra.movedim(-2, 1).flatten(2)


def encode_negative(clip, text: str, drop_text_independent: bool = True,
                    extra_inputs: tuple[ExtraTextInput, ...] = ()) -> NegativeTokens:
    """The negative prompt's tokens for the text context [1, n, D] and for each of the model's
    ``extra_inputs``: no padding, and (``drop_text_independent``) no leading token that every text
    encodes the same (see :func:`text_independent_prefix`; compared with the empty text through
    the same path), in every CLIP window, in the variable-length part and in each extra input.
    Windows and parts keep their order."""
    fixed, variable, extras = _negative_parts(clip, text, extra_inputs)
    if drop_text_independent:
        empty_fixed, empty_variable, empty_extras = _negative_parts(clip, "", extra_inputs)
        if fixed and empty_fixed:
            fixed = [part[:, text_independent_prefix(part, empty_fixed[0]):] for part in fixed]
        if variable is not None and empty_variable is not None:
            variable = variable[:, text_independent_prefix(variable, empty_variable):]
        extras = {name: tokens[..., text_independent_prefix(_tokens_first(tokens), _tokens_first(empty_extras[name])):, :]
                  for name, tokens in extras.items()}
    tokens = torch.cat([*fixed, *([variable] if variable is not None else [])], dim=1)
    if tokens.shape[1] == 0 and not any(extra.shape[-2] for extra in extras.values()):
        raise ValueError(f"NegGuideVSF: the negative prompt {text!r} encodes to no text-specific token; write the concept to avoid.")
    return NegativeTokens(tokens, extras)


def apply_vsf(model, adapter: FamilyAdapter, negative_tokens: NegativeTokens, scale: float, bias: float,
              window: SigmaWindow, record_attention_map: bool = False):
    """A clone of ``model`` (a ModelPatcher) with VSF attached for the unpadded negative tokens
    (:func:`encode_negative`): the APPLY_MODEL wrapper, the chained attention override, on UNets the attn2
    marker, on Flux.2 the text-positions patch; with ``record_attention_map`` also a per-run reset of
    the recorded maps.

    NegToMe edits the finished attention output, so it must wrap VSF whatever the node order:
    on a model whose attention slot NegToMe fills, VSF goes in below it and NegToMe is stacked
    on top again (the same hooks as VSF-then-NegToMe give)."""
    patched = model.clone()
    transformer_options = patched.model_options.setdefault("transformer_options", {})
    negtome = negtome_on_top(patched)
    hooks = VSFHooks(
        adapter, negative_tokens.cpu(), scale, bias,
        window=window,
        previous_override=negtome.previous_override if negtome else transformer_options.get(OVERRIDE_SLOT),
        record=record_attention_map,
    )
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY, hooks.apply_model_wrapper)
    if record_attention_map:
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, HOOK_KEY, hooks.reset_per_run)
    transformer_options[OVERRIDE_SLOT] = hooks.attention_override
    if adapter.marks_cross_attention:
        patched.set_model_attn2_patch(hooks.mark_cross_attention)
    positions_patch = adapter.text_positions_patch(patched.get_model_object("diffusion_model"))
    if positions_patch:
        patched.set_model_patch(hooks.position_negative, positions_patch)
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
                io.Model.Input("model", tooltip="The diffusion model to patch: SD1.5/SDXL, SD3/SD3.5, Flux, Flux.2, Chroma, Qwen-Image, Wan 2.1/2.2, Z-Image, HiDream, Hunyuan Video 1.5 / 1.0, HunyuanImage 2.1."),
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
        adapter = family_adapter_of(model, "NegGuideVSF", SUPPORTED_FAMILIES)
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
        tokens = encode_negative(clip, negative, extra_inputs=adapter.extra_text_inputs)
        patched = apply_vsf(model, adapter, tokens, scale, bias, window, record_attention_map)
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
