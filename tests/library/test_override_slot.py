"""The single attention-override slot shared with other nodes (core ModelAttentionBackend, other
packs): NegGuide chains what was there before it, and a node applied after it that replaces the
slot makes sampling fail with an error naming the fix, never a silent no-op."""

import pytest
import torch

import nodes

from negguide.attention_patches.override_chain import AttentionHookReplaced
from negguide.harness import zoo
from negguide.nodes.negtome import NegGuideNegToMe
from negguide.nodes.vsf import NegGuideVSF

# One cross-attention UNet (VSF's override), one joint DiT (both methods' override).
VSF_ARCHS = ("sd15", "flux", "z_image")
NEGTOME_ARCHS = ("flux", "sd3", "z_image")


def vsf(entry, model):
    return NegGuideVSF.execute(model, entry.clip, "a red square", 3.0, 0.1, 0.0, 1.0).args[0]


def negtome(entry, model):
    return NegGuideNegToMe.execute(model, 0.9, -1.0, 0.0, 1.0, "batch diversity").args[0]


def sample(entry, model, batch=1):
    return nodes.common_ksampler(model, 7, 2, 1.0, "euler", "normal", entry.encode("a blue circle"),
                                 entry.encode(""), entry.empty_latent(64, 64, batch))[0]["samples"]


def replace_slot(model):
    """What a node that does not chain does: its own override in the slot."""
    model = model.clone()

    def other_packs_attention(func, *args, **kwargs):
        return func(*args, **kwargs)

    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = other_packs_attention
    return model


def model_attention_backend():
    """Core ModelAttentionBackend (0.33: comfy_extras/nodes_model_advanced.py), or None where the
    host has no such node."""
    import comfy.ldm.modules.attention
    import comfy.model_patcher

    if not hasattr(comfy.model_patcher.ModelPatcher, "set_model_optimized_attention"):
        return None
    import comfy_extras.nodes_model_advanced as advanced

    node = getattr(advanced, "ModelAttentionBackend", None)
    if node is None or not hasattr(comfy.ldm.modules.attention, "get_attention_function"):
        return None
    return lambda model: node().patch(model, "pytorch attention")[0]


METHODS = [("vsf", vsf, name, 1) for name in VSF_ARCHS] + [("negtome", negtome, name, 2) for name in NEGTOME_ARCHS]


@pytest.mark.parametrize("method,apply,name,batch", METHODS, ids=[f"{m}-{n}" for m, _, n, _ in METHODS])
def test_a_later_node_replacing_the_slot_is_an_error_that_names_the_fix(method, apply, name, batch):
    entry = zoo.build(name)
    patched = replace_slot(apply(entry, entry.model))
    node = "NegGuideVSF" if method == "vsf" else "NegGuideNegToMe"
    with pytest.raises(AttentionHookReplaced, match=f"{node} did not run: .*other_packs_attention.*Apply {node} after"):
        sample(entry, patched, batch)
    # Nothing is left behind: the same shared model samples as before, and so does the method alone.
    assert torch.equal(sample(entry, entry.model, batch), sample(entry, zoo.build(name).model, batch))
    assert not torch.equal(sample(entry, apply(entry, entry.model), batch), sample(entry, entry.model, batch))


@pytest.mark.parametrize("method,apply,name,batch", METHODS, ids=[f"{m}-{n}" for m, _, n, _ in METHODS])
def test_model_attention_backend_after_negguide_is_an_error(method, apply, name, batch):
    backend = model_attention_backend()
    if backend is None:
        pytest.skip("this ComfyUI host has no ModelAttentionBackend node (added after 0.3.75)")
    entry = zoo.build(name)
    with pytest.raises(AttentionHookReplaced, match="ModelAttentionBackend does this"):
        sample(entry, backend(apply(entry, entry.model)), batch)


@pytest.mark.parametrize("method,apply,name,batch", METHODS, ids=[f"{m}-{n}" for m, _, n, _ in METHODS])
def test_model_attention_backend_before_negguide_is_chained(method, apply, name, batch):
    """The working order: NegGuide keeps the backend's attention function and runs inside it.
    On a CPU the backend's PyTorch attention is the host's own, so the result equals NegGuide
    alone, and differs from the backend alone."""
    backend = model_attention_backend()
    if backend is None:
        pytest.skip("this ComfyUI host has no ModelAttentionBackend node (added after 0.3.75)")
    entry = zoo.build(name)
    chained = sample(entry, apply(entry, backend(entry.model)), batch)
    torch.testing.assert_close(chained, sample(entry, apply(entry, entry.model), batch))
    assert not torch.equal(chained, sample(entry, backend(entry.model), batch))


def test_another_override_before_negguide_runs_too():
    """A non-core override already in the slot is chained: it sees every attention call."""
    entry = zoo.build("flux")
    seen = []

    def counting(func, *args, **kwargs):
        seen.append(1)
        return func(*args, **kwargs)

    model = entry.model.clone()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = counting
    sample(entry, model)
    plain_calls = len(seen)
    seen.clear()
    sample(entry, negtome(entry, model), 1)
    assert plain_calls > 0 and len(seen) == plain_calls
    seen.clear()
    sample(entry, vsf(entry, model), 1)
    assert len(seen) >= plain_calls  # VSF attends by query group: one joint call may become several
