"""NegGuideNegToMe through the real ComfyUI model code of every supported zoo architecture."""

import itertools
import types

import pytest
import torch

import comfy.patcher_extension
import comfy.samplers
import nodes

from negguide.attention_patches.calls import chunk_groups
from negguide.attention_patches.families.base import SELF_ATTENTION_OUTPUT_PATCH
from negguide.attention_patches.negtome_hooks import HOOK_KEY, ModelCall
from negguide.harness import zoo
from negguide.harness.attention_calls import record_above, record_below
from negguide.nodes import negtome as negtome_node
from negguide.nodes.negtome import NegGuideNegToMe, apply_negtome
from negguide.nodes.model_family import family_adapter_of
from negguide.nodes.schedule import SigmaWindow

SUPPORTED = [name for name in zoo.ARCHITECTURES if zoo.FAMILIES[name] in negtome_node.SUPPORTED_FAMILIES]
PROMPT = "a blue circle on grass"


def patch(model, alpha=0.9, threshold=0.0, start=0.0, end=1.0, mode="batch diversity", **kw):
    return NegGuideNegToMe.execute(model, alpha, threshold, start, end, mode, **kw).args[0]


def sample(entry, model, *, cfg=1.0, batch=3, steps=2, seed=7, negative=""):
    latent = entry.empty_latent(64, 64, batch)
    return nodes.common_ksampler(model, seed, steps, cfg, "euler", "normal",
                                 entry.encode(PROMPT), entry.encode(negative), latent)[0]["samples"]


def pairwise_l2(x: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of batch rows (each row flattened)."""
    x = x.flatten(1).double()
    return torch.stack([(x[i] - x[j]).norm() for i, j in itertools.combinations(range(x.shape[0]), 2)]).mean().item()


def with_feature_recorder(entry, model):
    """A clone of ``model`` that records the image tokens of every hooked self-attention output
    AFTER NegToMe (UNet: an attn1_output_patch added after NegToMe's; DiTs: an attention override
    installed on top that chains NegToMe's). Records (sigma, layout or None, features [B, I, D])."""
    records = []
    model = model.clone()
    adapter = family_adapter_of(model, "test", negtome_node.SUPPORTED_FAMILIES)

    if adapter.negtome_point == SELF_ATTENTION_OUTPUT_PATCH:
        def after(n, extra_options):
            records.append((float(extra_options["sigmas"].max()), extra_options.get(HOOK_KEY), n.detach().clone()))
            return n
        model.set_model_attn1_output_patch(after)
        return model, records

    options = model.model_options.setdefault("transformer_options", {})
    previous = options.get("optimized_attention_override")
    def recorder(func, q, k, v, heads, mask=None, **kwargs):
        out = previous(func, q, k, v, heads, mask=mask, **kwargs) if previous else func(q, k, v, heads, mask=mask, **kwargs)
        t_opts = kwargs["transformer_options"]
        layout = t_opts.get(HOOK_KEY)
        span_layout = layout or t_opts.get("negtome_test_layout")
        seq_dim = 2 if kwargs.get("skip_reshape") else 1
        span = span_layout.layout.image_span(q.shape[seq_dim], k.shape[seq_dim]) if span_layout else None
        if span is not None:
            lo, hi = span
            feats = out[:, :, lo:hi].transpose(1, 2).flatten(2) if kwargs.get("skip_output_reshape") else out[:, lo:hi]
            records.append((float(t_opts["sigmas"].max()), layout, feats.detach().clone()))
        return out

    def layout_wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        """Records the layout of every call (also outside NegToMe's window / unpatched)."""
        layout = ModelCall(chunk_groups(x.shape[0], transformer_options.get("cond_or_uncond")), None,
                           adapter.call_layout(executor.class_obj.diffusion_model, tuple(x.shape), c_crossattn.shape[1], 0,
                                               kwargs, "test"))
        return executor(x, t, c_concat, c_crossattn, control, {**transformer_options, "negtome_test_layout": layout}, **kwargs)

    options["optimized_attention_override"] = recorder
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "negtome_test", layout_wrapper)
    return model, records


def feature_diversity(records) -> float:
    return sum(pairwise_l2(f) for _, _, f in records) / len(records)


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SUPPORTED)
def test_full_ksampler_run_makes_batch_features_more_different(name):
    """Same seeds, batch 3, 2 steps, full window, alpha 0.9, tau 0: the mean pairwise L2 between
    the batch images' self-attention outputs (image tokens, after NegToMe, averaged over every
    hooked call of the run) grows, and the merge really ran."""
    entry = zoo.build(name)
    plain_model, plain_records = with_feature_recorder(entry, entry.model)
    patched_model, records = with_feature_recorder(entry, patch(entry.model))
    plain = sample(entry, plain_model)
    out = sample(entry, patched_model)
    assert torch.isfinite(out).all() and out.shape == plain.shape
    assert len(records) == len(plain_records) > 0
    assert all(layout is not None for _, layout, _ in records)
    ratio = feature_diversity(records) / feature_diversity(plain_records)
    print(f"{name}: feature pairwise-L2 ratio {ratio:.3f}, output latent ratio {pairwise_l2(out) / pairwise_l2(plain):.4f}")
    assert ratio > 1.02


@pytest.mark.parametrize("name", ["flux", "chroma"])
def test_output_latents_become_more_different(name):
    """Output-level diversity (mean pairwise L2 of the final latents, same seeds, batch 3,
    4 steps, alpha 0.9, full window). Measured on the random-weight zoo: flux 1.007x, chroma
    1.07x; the random UNet/SD3/Wan/Qwen zoo models do not turn feature diversity into latent
    diversity reliably (+-0.5%), so only these two are asserted."""
    entry = zoo.build(name)
    plain = sample(entry, entry.model, steps=4, seed=3, batch=4)
    out = sample(entry, patch(entry.model), steps=4, seed=3, batch=4)
    assert pairwise_l2(out) > 1.003 * pairwise_l2(plain)


@pytest.mark.parametrize("name", ["sd15", "flux"])
def test_window_gating_by_sigma(name):
    entry = zoo.build(name)
    model = patch(entry.model, start=0.3, end=0.7)
    sampling = model.get_model_object("model_sampling")
    hi, lo = float(sampling.percent_to_sigma(0.3)), float(sampling.percent_to_sigma(0.7))
    model, records = with_feature_recorder(entry, model)
    sample(entry, model, steps=8, batch=2)
    seen = {(round(sigma, 5), layout is not None) for sigma, layout, _ in records}
    assert any(active for _, active in seen) and any(not active for _, active in seen)
    for sigma, active in seen:
        assert active == (lo <= sigma <= hi), (sigma, lo, hi)


@pytest.mark.parametrize("name", SUPPORTED)
def test_identity_when_nothing_can_match_and_at_alpha_zero(name):
    """tau = 2 (no cosine exceeds it): every hook runs and changes nothing, bit for bit;
    alpha 0: the node returns the model unchanged."""
    entry = zoo.build(name)
    plain = sample(entry, entry.model, batch=2)
    adapter = family_adapter_of(entry.model, "test", negtome_node.SUPPORTED_FAMILIES)
    unmatched = apply_negtome(entry.model, adapter, 0.9, 2.0, SigmaWindow.from_percents(entry.model, 0.0, 1.0, "test"))
    assert torch.equal(sample(entry, unmatched, batch=2), plain)
    assert patch(entry.model, alpha=0.0) is entry.model


@pytest.mark.parametrize("name", ["sd15", "flux", "sd3"])
def test_cond_and_uncond_never_mix(name):
    """cfg 3 runs cond and uncond in one batch: the patched cond prediction equals the patched
    cond prediction of a cfg-1 run (cond alone), so no uncond row was used as a reference."""
    entry = zoo.build(name)
    model = patch(entry.model)
    torch.manual_seed(0)
    sampling = model.get_model_object("model_sampling")
    sigma = float(sampling.percent_to_sigma(0.2))
    x = torch.randn_like(entry.empty_latent(64, 64, 3)["samples"]) * sigma

    def cond_prediction(cfg):
        captured = {}

        def capture(args):
            captured["cond"] = args["cond_denoised"]
            captured["calls"] = captured.get("calls", 0) + 1
            return args["denoised"]

        m = model.clone()
        m.set_model_sampler_post_cfg_function(capture)
        guider = comfy.samplers.CFGGuider(m)
        guider.set_conds(entry.encode(PROMPT), entry.encode("ugly"))
        guider.set_cfg(cfg)
        guider.sample(x.clone(), x.clone(), comfy.samplers.sampler_object("euler"), torch.tensor([sigma, 0.0]),
                      seed=1, disable_pbar=True)
        return captured["cond"]

    torch.testing.assert_close(cond_prediction(3.0), cond_prediction(1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sd15", "flux"])
def test_input_model_is_left_untouched(name):
    entry = zoo.build(name)
    options_before, wrappers_before = repr(entry.model.model_options), repr(entry.model.wrappers)
    patched = patch(entry.model)
    assert patched is not entry.model
    assert repr(entry.model.model_options) == options_before
    assert repr(entry.model.wrappers) == wrappers_before
    assert torch.equal(sample(entry, entry.model, batch=2), sample(entry, zoo.build(name).model, batch=2))


def test_unsupported_model_and_bad_inputs_raise_clear_errors():
    fake = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=torch.nn.Linear(1, 1)))
    with pytest.raises(ValueError, match="NegGuideNegToMe does not support"):
        patch(fake)
    entry = zoo.build("flux")
    with pytest.raises(ValueError, match="unknown mode"):
        patch(entry.model, mode="diversity")
    with pytest.raises(ValueError, match="needs reference_image"):
        patch(entry.model, mode="reference image")
    with pytest.raises(ValueError, match="after end_percent"):
        patch(entry.model, start=0.8, end=0.2)


def distance_to_reference_rows(records) -> float:
    """Mean L2 between each source row's hooked features and its group's reference row's."""
    values = []
    for _, layout, feats in records:
        for group, ref in zip(layout.groups, layout.reference_rows):
            values += [(feats[r] - feats[ref]).norm().item() for r in group if r != ref]
    return sum(values) / len(values)


@pytest.mark.parametrize("name", ["sd15", "flux"])
def test_reference_mode_keeps_batch_size_and_moves_away_from_reference(name):
    """The reference (image 0 of a plain run) rides in an extra batch slot per cond/uncond chunk
    (cfg 2: two chunks) and never reaches the output. Against the same run with nothing matched
    (tau = 2, same extra slots), the generated rows' self-attention outputs move away from the
    reference row's (alpha 1.5) or toward it (alpha -0.9), and the output latents move away from
    the reference latent."""
    entry = zoo.build(name)
    adapter = family_adapter_of(entry.model, "test", negtome_node.SUPPORTED_FAMILIES)
    plain = sample(entry, entry.model, batch=2, steps=3, cfg=2.0)
    reference = plain[:1].clone()
    runs = {}
    for label, alpha, tau in (("none", 1.5, 2.0), ("away", 1.5, 0.0), ("toward", -0.9, 0.0)):
        model, records = with_feature_recorder(
            entry, apply_negtome(entry.model, adapter, alpha, tau, SigmaWindow.from_percents(entry.model, 0.0, 1.0, "test"),
                          reference=reference, seed=5))
        out = sample(entry, model, batch=2, steps=3, cfg=2.0)
        assert out.shape == plain.shape and torch.isfinite(out).all()
        assert records and all(len(layout.groups) == 2 and all(len(g) == 3 for g in layout.groups)
                               for _, layout, _ in records)
        runs[label] = (out, distance_to_reference_rows(records))
    latent_distance = {k: (v[0] - reference).flatten(1).norm(dim=1).mean().item() for k, v in runs.items()}
    print(f"{name}: feature distance to reference none {runs['none'][1]:.3f} away {runs['away'][1]:.3f} "
          f"toward {runs['toward'][1]:.3f}; latent distance plain-slot {latent_distance['none']:.3f} "
          f"away {latent_distance['away']:.3f}")
    assert runs["away"][1] > 1.05 * runs["none"][1] > 1.05 * runs["toward"][1]
    assert latent_distance["away"] > latent_distance["none"]
    # the reference slot alone (nothing matched) leaves the generated rows exactly as without it
    torch.testing.assert_close(runs["none"][0], plain, rtol=1e-5, atol=1e-4 * plain.abs().max().item())


def test_reference_image_is_encoded_with_the_vae():
    entry = zoo.build("sd15")
    image = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[:, :32] = 1.0
    model = patch(entry.model, alpha=1.0, mode="reference image", reference_image=image, vae=entry.vae,
                  reference_mask=mask)
    out = sample(entry, model, batch=2, steps=2)
    assert out.shape[0] == 2 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["flux2", "flux2_dev"])
def test_flux2_merge_covers_every_image_token_and_no_text_token(name):
    """Flux.2 Klein and dev (patch 1 over 128-channel latents, text padded to 512 tokens: by
    Klein's tokenizer, by model_base.Flux2 for dev's shorter Mistral prompt): with tau = -1 every
    image token is matched, so in every double and single block each image token of the
    non-reference images changes, exactly as the closed-form merge of the raw attention output
    says, and the text tokens and the reference image (row 0) do not. A 96x64-pixel image is
    6 x 4 = 24 image tokens: a patch-2 layout would reach only 6 of them."""
    entry = zoo.build(name)
    dm = entry.model.model.diffusion_model
    alpha, text_len, image_len, batch = 0.9, 512, (96 // 16) * (64 // 16), 3

    base, raw = record_below(entry.model)
    adapter = family_adapter_of(base, "test", negtome_node.SUPPORTED_FAMILIES)
    assert adapter.family == "flux2" and adapter.patch_size(dm) == 1
    model = apply_negtome(base, adapter, alpha, -1.0, SigmaWindow.from_percents(base, 0.0, 1.0, "test"))
    merged = record_above(model)
    latent = entry.empty_latent(96, 64, batch)
    nodes.common_ksampler(model, 7, 1, 1.0, "euler", "normal", entry.encode(PROMPT), entry.encode(""), latent)

    assert len(raw) == len(merged) == len(dm.double_blocks) + len(dm.single_blocks)
    for before, after in ((b.out, a.out) for b, a in zip(raw, merged)):
        assert tuple(before.shape[:2]) == (batch, text_len + image_len)  # [B, L, H*D]
        assert torch.equal(after[:, :text_len], before[:, :text_len]), "a text token was merged"
        assert torch.equal(after[0], before[0]), "the reference image changed"
        image = before[:, text_len:].double()
        unit = torch.nn.functional.normalize(image, dim=-1)
        for row in range(1, batch):
            # each token's best reference token; near-ties (this random-weight model has
            # near-identical tokens) may go either way in float32, so any near-best one counts
            similarity = unit[row] @ unit[0].T
            candidates = similarity >= similarity.max(dim=-1, keepdim=True).values - 1e-5
            expected = (1 + alpha) * image[row][:, None] - alpha * image[0][None]  # [token, reference token, D]
            got = after[row, text_len:].double()
            error = (got[:, None] - expected).abs() - 1e-5 * (1 + expected.abs())
            fits = (error <= 1e-5).all(dim=-1) & candidates
            assert fits.any(dim=-1).all(), f"tokens not merged with a best-matching reference token: {(~fits.any(-1)).nonzero()}"
            assert (after[row, text_len:] != before[row, text_len:]).any(dim=-1).all(), "an image token was left unmerged"
