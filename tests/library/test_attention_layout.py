"""Where text and image tokens sit in every attention call, per architecture, proven on the zoo.

A probe in ``transformer_options["optimized_attention_override"]`` (the single slot that
comfy/ldm/modules/attention.py ``wrap_attn`` calls as ``override(func, q, k, v, heads, *args,
**kwargs)``) records every attention call of one model evaluation (1 sampling step, cfg 1, so
exactly one ``apply_model`` call). Positions are proven by perturbation, not only by shapes: in
the FIRST attention of the network, changing only the text tokens (same pooled vector) must change
exactly the text rows and changing only the latent noise exactly the image rows.

Layouts found (ComfyUI 0.3.75):

- Flux / Chroma: joint [txt | img], q/k/v [B, H, txt+img, D] (skip_reshape=True), q/k already
  RoPE'd (text positions are 0, so text rows are unrotated); transformer_options has block_type
  "double"/"single", block_index, total_blocks; every double and single block calls the override.
- Flux.2 (Klein, 0.33): the same calls, 512 text tokens (padded), one image token per cell of the
  128-channel latent (patch 1: (H/16) x (W/16) for an H x W image); text rows are RoPE'd too
  (positions 0..511 on the 4th axis); single blocks also get img_slice = [txt, txt + img].
- SD3 MMDiT: joint [context | x], q and k [B, txt+img, H*D] but v [B, txt+img, H, D] (4-D!),
  skip_reshape not passed; no block_type/block_index.
- UNet (SD1.5/SDXL): attn1 self-attention over image tokens only, attn2 queries image tokens and
  takes k/v from the 77-per-chunk CLIP tokens; q/k/v [B, L, H*D]; transformer_options["block"] =
  ("input"|"middle"|"output", id) and block_index; attn_precision kwarg.
- Wan 2.1: per block a self-attention over image tokens (q/k RoPE'd) then a cross-attention to the
  512 text tokens; q/k/v [B, L, H*D]; no UNet block info; block_type/index/total_blocks only
  on hosts that set them (0.33: block_type "double").
- Qwen-Image: joint [txt | img] like Flux, q/k/v [B, H, txt+img, D], RoPE'd on BOTH (text
  positions start after the image's half-size), the mask is passed POSITIONALLY (args[0]);
  block_type "double", block_index.
- cfg > 1: cond and uncond run in one batch when their conditioning shapes allow it,
  transformer_options["cond_or_uncond"] == [1, 0] (uncond first), batch = 2 * batch_size. UNets
  use CONDCrossAttn, which batches different token counts by REPEATING the shorter one up to the
  LCM (77 uncond tokens appear twice next to a 154-token prompt); the DiTs use CONDRegular and run
  prompts of different lengths as separate model calls.
"""

import dataclasses

import pytest
import torch

import nodes

from negguide.attention_patches.families import ADAPTERS, JOINT
from negguide.harness import zoo

WIDTH, HEIGHT = 96, 64  # pixels -> latent 12 x 8, deliberately not square
LAT_H, LAT_W = HEIGHT // 8, WIDTH // 8
PROMPT_A = "a red cat"
PROMPT_B = "a blue dog"  # same token count as PROMPT_A with every tokenizer in the zoo


@dataclasses.dataclass
class Call:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    heads: int
    args: tuple
    kwargs: dict
    options: dict

    def rows(self, which: str, dim: int, start: int, length: int) -> torch.Tensor:
        return getattr(self, which).narrow(dim, start, length)


class AttentionProbe:
    """Records every attention call, then runs the original attention unchanged."""

    def __init__(self):
        self.calls: list[Call] = []

    def __call__(self, func, q, k, v, heads, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        self.calls.append(Call(
            q=q.detach().clone(), k=k.detach().clone(), v=v.detach().clone(), heads=heads, args=args,
            kwargs={key: val for key, val in kwargs.items() if key != "transformer_options"},
            options={key: options.get(key) for key in
                     ("block_type", "block_index", "total_blocks", "block", "cond_or_uncond", "img_slice")},
        ))
        return func(q, k, v, heads, *args, **kwargs)


def run(z, positive, negative=None, seed=1, cfg=1.0, batch_size=1):
    """One sampling step through nodes.common_ksampler with the probe installed on a clone."""
    model = z.model.clone()
    options = model.model_options.setdefault("transformer_options", {})
    assert "optimized_attention_override" not in options
    probe = AttentionProbe()
    options["optimized_attention_override"] = probe
    latent = z.empty_latent(WIDTH, HEIGHT, batch_size=batch_size)
    nodes.common_ksampler(model, seed, 1, cfg, "euler", "simple", positive, negative or positive, latent)
    assert probe.calls, "the override was never called"
    return probe.calls


def text_only(base, other):
    """``base`` with its token embeddings replaced by ``other``'s: same pooled vector and extras,
    so only the text tokens differ."""
    assert base[0][0].shape == other[0][0].shape, "pick prompts with the same token count"
    assert not torch.equal(base[0][0], other[0][0])
    return [[other[0][0], dict(base[0][1])]]


class Captured:
    """Forward-hook outputs of a submodule of the (shared) diffusion model, for one run."""

    def __init__(self, module):
        self.outputs = []
        self.handle = module.register_forward_hook(lambda mod, inp, out: self.outputs.append(out))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def assert_rows(base, text_changed, image_changed, dim, txt, img, order, which="qkv"):
    """Text rows change only with the text, image rows only with the image, for q, k and v."""
    if order == "text_first":
        spans = {"text": (0, txt), "image": (txt, img)}
    else:
        spans = {"image": (0, img), "text": (img, txt)}
    for attr in which:
        for part, (start, length) in spans.items():
            rows = base.rows(attr, dim, start, length)
            same_under_text = torch.equal(rows, text_changed.rows(attr, dim, start, length))
            same_under_image = torch.equal(rows, image_changed.rows(attr, dim, start, length))
            if part == "text":
                assert not same_under_text, f"{attr}: text rows did not follow the prompt"
                assert same_under_image, f"{attr}: text rows changed with the image"
            else:
                assert same_under_text, f"{attr}: image rows changed with the prompt"
                assert not same_under_image, f"{attr}: image rows did not follow the latent"


def pair_norms(x: torch.Tensor) -> torch.Tensor:
    """Norms of the (even, odd) channel pairs RoPE rotates: RoPE preserves them."""
    return x.float().reshape(*x.shape[:-1], -1, 2).norm(dim=-1)


def tokens_and_prompts(z):
    a, b = z.encode(PROMPT_A), z.encode(PROMPT_B)
    return a, text_only(a, b), a[0][0].shape[1]


# ------------------------------------------------------------------------------------------------
# Flux and Chroma: joint [txt | img] in double AND single blocks


def assert_flux_blocks(calls, n_double: int, n_single: int, heads: int, head_dim: int, length: int) -> None:
    """One joint attention call per double then single block, in order, each with the block facts
    Flux passes and RoPE'd q/k/v [1, heads, text + image, head_dim] (skip_reshape)."""
    assert [(c.options["block_type"], c.options["block_index"]) for c in calls] == (
        [("double", i) for i in range(n_double)] + [("single", i) for i in range(n_single)])
    for c in calls:
        assert c.options["total_blocks"] == (n_double if c.options["block_type"] == "double" else n_single)
        assert c.kwargs.get("skip_reshape") is True and c.heads == heads
        for t in (c.q, c.k, c.v):
            assert tuple(t.shape) == (1, heads, length, head_dim)


def assert_host_slices_match_the_adapter(calls, z, txt: int) -> None:
    """Where the host publishes the image span itself (0.33: img_slice in Flux's single blocks),
    the family adapter's layout of the call must give the same span and call it joint. Hosts that
    do not publish it (0.3.75) leave nothing to compare, so at least the adapter's span must be
    the shape-derived one."""
    dm = z.model.model.diffusion_model
    layout = ADAPTERS[zoo.FAMILIES[z.name]].call_layout(
        dm, tuple(z.empty_latent(WIDTH, HEIGHT)["samples"].shape), txt, 0, {}, "test")
    for c in calls:
        assert layout.kind(c.q.shape[2], c.k.shape[2]) == JOINT
        assert layout.image_span(c.q.shape[2], c.k.shape[2]) == (txt, c.q.shape[2])
        if c.options["img_slice"] is not None:
            assert c.options["block_type"] == "single" and tuple(c.options["img_slice"]) == layout.image


@pytest.mark.parametrize("name", ["flux", "chroma"])
def test_flux_family_joint_layout(name):
    z = zoo.build(name)
    dm = z.model.model.diffusion_model
    a, a_text_b, txt = tokens_and_prompts(z)
    img = (LAT_H // 2) * (LAT_W // 2)
    heads, head_dim = dm.num_heads, dm.hidden_size // dm.num_heads
    if name == "flux":
        assert txt == 256  # T5 padded to 256 tokens for Flux
    n_double, n_single = len(dm.double_blocks), len(dm.single_blocks)
    assert n_double >= 2 and n_single >= 2

    with Captured(dm.double_blocks[0].img_attn.norm) as img_qk, Captured(dm.double_blocks[0].txt_attn.norm) as txt_qk:
        base = run(z, a)
    assert_flux_blocks(base, n_double, n_single, heads, head_dim, txt + img)
    assert_host_slices_match_the_adapter(base, z, txt)

    text_changed, image_changed = run(z, a_text_b), run(z, a, seed=2)
    assert_rows(base[0], text_changed[0], image_changed[0], dim=2, txt=txt, img=img, order="text_first")

    # q/k arrive RoPE'd: text positions are 0 (rows unrotated), image rows are rotated in pairs.
    (pre_img_q, pre_img_k), (pre_txt_q, pre_txt_k) = img_qk.outputs[0], txt_qk.outputs[0]
    first = base[0]
    for got, pre_txt, pre_img in ((first.q, pre_txt_q, pre_img_q), (first.k, pre_txt_k, pre_img_k)):
        assert torch.allclose(got[:, :, :txt], pre_txt, atol=1e-6)
        assert not torch.allclose(got[:, :, txt:], pre_img, atol=1e-3)
        assert torch.allclose(pair_norms(got[:, :, txt:]), pair_norms(pre_img), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Flux.2 (Klein): the Flux layout at patch 1 over 128-channel latents, text padded to 512 tokens


@pytest.mark.zoo_architecture("flux2")
def test_flux2_joint_layout():
    z = zoo.build("flux2")
    dm = z.model.model.diffusion_model
    a, a_text_b, txt = tokens_and_prompts(z)
    assert z.latent_channels == 128 and dm.patch_size == 1
    img = (HEIGHT // 16) * (WIDTH // 16)  # the VAE's 16x downscale, one token per latent cell
    heads, head_dim = dm.num_heads, dm.hidden_size // dm.num_heads
    assert txt == 512  # the Qwen3 tokenizer pads to 512; model_base.Flux2 would left-pad to 512
    n_double, n_single = len(dm.double_blocks), len(dm.single_blocks)
    assert n_double >= 2 and n_single >= 2

    with Captured(dm.double_blocks[0].img_attn.norm) as img_qk, Captured(dm.double_blocks[0].txt_attn.norm) as txt_qk:
        base = run(z, a)
    assert_flux_blocks(base, n_double, n_single, heads, head_dim, txt + img)
    assert_host_slices_match_the_adapter(base, z, txt)

    text_changed, image_changed = run(z, a_text_b), run(z, a, seed=2)
    assert_rows(base[0], text_changed[0], image_changed[0], dim=2, txt=txt, img=img, order="text_first")

    # RoPE on both: text positions 0..511 run along the 4th axis (txt_ids_dims [3]), so unlike
    # Flux only the first text row (position 0) and the first image token (0, 0) are unrotated.
    (pre_img_q, pre_img_k), (pre_txt_q, pre_txt_k) = img_qk.outputs[0], txt_qk.outputs[0]
    first = base[0]
    for got, pre_txt, pre_img in ((first.q, pre_txt_q, pre_img_q), (first.k, pre_txt_k, pre_img_k)):
        got_txt, got_img = got[:, :, :txt], got[:, :, txt:]
        for rotated, pre in ((got_txt, pre_txt), (got_img, pre_img)):
            assert torch.allclose(rotated[:, :, :1], pre[:, :, :1], atol=1e-6)
            assert not torch.allclose(rotated[:, :, 1:], pre[:, :, 1:], atol=1e-3)
            assert torch.allclose(pair_norms(rotated), pair_norms(pre), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# SD3 MMDiT: joint [context | x], flattened heads


def test_sd3_mmdit_joint_layout():
    z = zoo.build("sd3")
    dm = z.model.model.diffusion_model
    a, a_text_b, txt = tokens_and_prompts(z)
    img = (LAT_H // 2) * (LAT_W // 2)
    heads = dm.num_heads
    head_dim = dm.hidden_size // heads
    assert txt == 77

    base = run(z, a)
    assert len(base) == len(dm.joint_blocks)
    for c in base:
        assert c.options["block_type"] is None and c.options["block_index"] is None
        assert not c.kwargs.get("skip_reshape", False) and c.heads == heads
        assert tuple(c.q.shape) == tuple(c.k.shape) == (1, txt + img, heads * head_dim)
        assert tuple(c.v.shape) == (1, txt + img, heads, head_dim)  # v keeps its head axis

    text_changed, image_changed = run(z, a_text_b), run(z, a, seed=2)
    assert_rows(base[0], text_changed[0], image_changed[0], dim=1, txt=txt, img=img, order="text_first")


# ------------------------------------------------------------------------------------------------
# UNet: attn1 over image tokens, attn2 to the CLIP tokens


def level_tokens(level):
    return (LAT_H >> level) * (LAT_W >> level)


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_unet_self_and_cross_attention(name):
    z = zoo.build(name)
    a, a_text_b, txt = tokens_and_prompts(z)
    assert txt == 77

    base = run(z, a)
    assert len(base) % 2 == 0
    selfs, crosses = base[0::2], base[1::2]
    token_counts = {level_tokens(level) for level in range(3)}
    for s, c in zip(selfs, crosses):
        assert s.options["block"] == c.options["block"] and s.options["block"][0] in ("input", "middle", "output")
        assert s.q.ndim == 3 and s.q.shape[1] == s.k.shape[1] == s.v.shape[1] in token_counts
        assert c.q.shape[1] == s.q.shape[1]
        assert c.k.shape[1] == c.v.shape[1] == txt
        assert s.q.shape[2] == c.k.shape[2]  # heads * dim_head
        assert c.kwargs.get("attn_precision", "missing") is None
    if name == "sd15":
        assert selfs[0].options["block"] == ("input", 1) and selfs[0].q.shape[1] == level_tokens(0)
    else:  # like SDXL: no transformer at the highest resolution
        assert all(s.q.shape[1] < level_tokens(0) for s in selfs)

    text_changed, image_changed = run(z, a_text_b), run(z, a, seed=2)
    # first self-attention: image tokens only (nothing of the text reaches it)
    for attr in "qkv":
        assert torch.equal(getattr(selfs[0], attr), getattr(text_changed[0], attr))
        assert not torch.equal(getattr(selfs[0], attr), getattr(image_changed[0], attr))
    # first cross-attention: k/v are the text tokens, q the image tokens
    cross, cross_text, cross_image = crosses[0], text_changed[1], image_changed[1]
    assert torch.equal(cross.q, cross_text.q) and not torch.equal(cross.q, cross_image.q)
    for attr in "kv":
        assert not torch.equal(getattr(cross, attr), getattr(cross_text, attr))
        assert torch.equal(getattr(cross, attr), getattr(cross_image, attr))


def test_unet_cross_attention_takes_77_tokens_per_clip_chunk():
    z = zoo.build("sd15")
    long = z.encode(", ".join(["a red cat on a green mat"] * 12))
    assert long[0][0].shape[1] == 2 * 77
    calls = run(z, long)
    assert {c.k.shape[1] for c in calls[1::2]} == {2 * 77}


def test_unet_batches_uncond_repeated_to_the_lcm_of_token_counts():
    z = zoo.build("sd15")
    pos = z.encode(", ".join(["a red cat on a green mat"] * 12))  # 154 tokens
    neg = z.encode("blurry")  # 77 tokens
    calls = run(z, pos, neg, cfg=3.0)
    cross = calls[1]
    assert cross.options["cond_or_uncond"] == [1, 0]
    assert cross.k.shape[0] == 2 and cross.k.shape[1] == 154
    uncond_k = cross.k[0]
    assert torch.equal(uncond_k[:77], uncond_k[77:]), "uncond tokens are repeated, not padded"
    assert not torch.equal(cross.k[1, :77], cross.k[1, 77:])


# ------------------------------------------------------------------------------------------------
# Wan 2.1: self-attention over the video tokens, cross-attention to the 512 text tokens


def test_wan_self_and_cross_attention():
    z = zoo.build("wan21")
    dm = z.model.model.diffusion_model
    a, a_text_b, txt = tokens_and_prompts(z)
    assert txt == 512
    img = 1 * (LAT_H // 2) * (LAT_W // 2)  # T x H/2 x W/2 with patch (1, 2, 2)
    dim = dm.dim

    with Captured(dm.blocks[0].self_attn.norm_k) as self_k, Captured(dm.blocks[0].cross_attn.norm_k) as cross_k:
        base = run(z, a)
    assert len(base) == 2 * len(dm.blocks)
    selfs, crosses = base[0::2], base[1::2]
    for index, (s, c) in enumerate(zip(selfs, crosses)):
        assert s.options["block"] is None and c.options["block"] is None
        # 0.3.75 passes no block facts; 0.33 (wan/model.py) passes block_type "double", the
        # block index and the block count: either none of them or all of them, consistently.
        facts = [(call.options["block_type"], call.options["block_index"], call.options["total_blocks"]) for call in (s, c)]
        assert facts[0] == facts[1] and facts[0] in ((None, None, None), ("double", index, len(dm.blocks)))
        assert tuple(s.q.shape) == tuple(s.k.shape) == tuple(s.v.shape) == (1, img, dim)
        assert tuple(c.q.shape) == (1, img, dim) and tuple(c.k.shape) == tuple(c.v.shape) == (1, txt, dim)
        assert s.heads == c.heads == dm.num_heads

    text_changed, image_changed = run(z, a_text_b), run(z, a, seed=2)
    for attr in "qkv":
        assert torch.equal(getattr(selfs[0], attr), getattr(text_changed[0], attr))
        assert not torch.equal(getattr(selfs[0], attr), getattr(image_changed[0], attr))
    assert torch.equal(crosses[0].q, text_changed[1].q) and not torch.equal(crosses[0].q, image_changed[1].q)
    for attr in "kv":
        assert not torch.equal(getattr(crosses[0], attr), getattr(text_changed[1], attr))
        assert torch.equal(getattr(crosses[0], attr), getattr(image_changed[1], attr))

    # self-attention k is RoPE'd (rotated pairs of the normed projection), cross-attention k is not
    heads = dm.num_heads
    pre = self_k.outputs[0].reshape(1, img, heads, -1)
    got = selfs[0].k.reshape(1, img, heads, -1)
    assert not torch.allclose(got, pre, atol=1e-3)
    assert torch.allclose(pair_norms(got), pair_norms(pre), rtol=1e-4, atol=1e-5)
    assert torch.equal(crosses[0].k, cross_k.outputs[0])


# ------------------------------------------------------------------------------------------------
# Qwen-Image: joint [txt | img], RoPE on both


def test_qwen_image_joint_layout():
    z = zoo.build("qwen_image")
    dm = z.model.model.diffusion_model
    a, a_text_b, txt = tokens_and_prompts(z)
    img = (LAT_H // 2) * (LAT_W // 2)
    attn0 = dm.transformer_blocks[0].attn
    heads, head_dim = attn0.heads, attn0.dim_head

    with Captured(attn0.norm_k) as img_k, Captured(attn0.norm_added_k) as txt_k:
        base = run(z, a)
    assert [(c.options["block_type"], c.options["block_index"]) for c in base] == [
        ("double", i) for i in range(len(dm.transformer_blocks))]
    for c in base:
        assert c.kwargs.get("skip_reshape") is True and c.heads == heads
        assert len(c.args) == 1 and c.args[0] is None  # the (absent) mask, passed positionally
        for t in (c.q, c.k, c.v):
            assert tuple(t.shape) == (1, heads, txt + img, head_dim)

    text_changed, image_changed = run(z, a_text_b), run(z, a, seed=2)
    assert_rows(base[0], text_changed[0], image_changed[0], dim=2, txt=txt, img=img, order="text_first")

    k = base[0].k
    for got, pre in ((k[:, :, :txt], txt_k.outputs[0]), (k[:, :, txt:], img_k.outputs[0])):
        assert not torch.allclose(got, pre, atol=1e-3)  # both streams are rotated
        assert torch.allclose(pair_norms(got), pair_norms(pre), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Every architecture: batching of cond and uncond under cfg > 1


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_cfg_batches_uncond_first(name):
    z = zoo.build(name)
    pos, neg = z.encode(PROMPT_A), z.encode(PROMPT_B)
    guided = run(z, pos, neg, cfg=3.0, batch_size=2)
    alone = run(z, pos, batch_size=2)
    assert len(guided) == len(alone)
    for g, c in zip(guided, alone):
        assert g.options["cond_or_uncond"] == [1, 0] and c.options["cond_or_uncond"] == [0]
        assert g.q.shape[0] == 4 and c.q.shape[0] == 2
        # the second half of the guided batch is the cond-only evaluation
        for attr in "qkv":
            assert torch.allclose(getattr(g, attr)[2:], getattr(c, attr), rtol=1e-4, atol=1e-4)
    # ... and the first half is the negative prompt's (the last attention always sees the text)
    assert not torch.allclose(guided[-1].k[:2], alone[-1].k, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["flux", "chroma", "qwen_image"])
def test_dits_run_prompts_of_different_length_separately(name):
    z = zoo.build(name)
    pos, neg = z.encode("red red red red red red"), z.encode("red")
    if name == "flux":  # T5 is padded to 256 tokens: equal lengths, one batch
        assert pos[0][0].shape == neg[0][0].shape
        assert {c.q.shape[0] for c in run(z, pos, neg, cfg=3.0)} == {2}
        return
    assert pos[0][0].shape[1] != neg[0][0].shape[1]
    calls = run(z, pos, neg, cfg=3.0)
    per_pass = len(run(z, pos))
    assert len(calls) == 2 * per_pass
    assert {c.q.shape[0] for c in calls} == {1}
    assert sorted(c.options["cond_or_uncond"][0] for c in calls) == [0] * per_pass + [1] * per_pass


# ------------------------------------------------------------------------------------------------
# Z-Image (NextDiT): padded caption and image parts, text-only and image-only refiner calls


def run_sized(z, positive, width, height, seed=1):
    model = z.model.clone()
    probe = AttentionProbe()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = probe
    nodes.common_ksampler(model, seed, 1, 1.0, "euler", "simple", positive, positive,
                          z.empty_latent(width, height, batch_size=1))
    return probe.calls


@pytest.mark.zoo_architecture("z_image")
@pytest.mark.parametrize("width,height", [(96, 64), (128, 128)])  # padded caption == / != padded image
def test_z_image_layout_padding_and_refiner_calls(width, height):
    """Per model call: the text-only context_refiner calls over the caption padded to a multiple
    of 32, then the image-only noise_refiner calls over the image tokens padded to a multiple of
    32, then one joint call per layer over [caption ; pad | image ; pad]. q/k/v [B, H, L, D]
    (skip_reshape), mask None (positional), block_type/block_index only on the joint calls
    (and only on hosts that set them: 0.33 does, 0.3.75 does not). Padding sits at the
    END of each part: its value rows are one learned token, independent of prompt and noise."""
    from negguide.attention_patches.families.z_image import padded

    z = zoo.build("z_image")
    dit = z.model.model.diffusion_model
    a, a_text_b, txt = tokens_and_prompts(z)
    img = (height // 16) * (width // 16)
    cap, img_pad = padded(txt, 32), padded(img, 32)
    assert cap > txt and img_pad >= img
    refiners = len(dit.context_refiner)
    assert refiners == len(dit.noise_refiner) == 2
    base = run_sized(z, a, width, height)
    lengths = [c.q.shape[2] for c in base]
    assert lengths == [cap] * refiners + [img_pad] * refiners + [cap + img_pad] * len(dit.layers)
    for i, c in enumerate(base):
        assert c.kwargs.get("skip_reshape") is True and c.heads == 2
        assert c.args == (None,) and "mask" not in c.kwargs  # the (absent) mask is passed positionally
        assert tuple(c.q.shape) == tuple(c.k.shape) == tuple(c.v.shape) == (1, 2, lengths[i], 128)
        joint = i >= 2 * refiners
        block = (c.options["block_type"], c.options["block_index"])
        if not joint:
            assert block == (None, None)
        elif block != (None, None):  # 0.33 sets them on the main layers; 0.3.75 sets none
            assert block == ("double", i - 2 * refiners)
    text_changed, image_changed = run_sized(z, a_text_b, width, height), run_sized(z, a, width, height, seed=2)

    def same(run_, call, lo, hi, attr="v"):
        return torch.equal(getattr(base[call], attr)[:, :, lo:hi], getattr(run_[call], attr)[:, :, lo:hi])

    first_text, first_image, first_joint = 0, refiners, 2 * refiners
    # text-only call: real caption rows follow the prompt, padding rows are the pad token
    assert not same(text_changed, first_text, 0, txt) and same(text_changed, first_text, txt, cap)
    pad_v = base[first_text].v[:, :, txt:cap]
    assert torch.equal(pad_v, pad_v[:, :, :1].expand_as(pad_v))
    # image-only call: real image rows follow the noise, padding rows (if any) are the pad token
    assert not same(image_changed, first_image, 0, img) and same(text_changed, first_image, 0, img_pad)
    assert same(image_changed, first_image, img, img_pad)
    # joint call: text first; after the separate refiners the caption part depends on the text
    # only and the image part on the noise only
    for attr in "qkv":
        assert not same(text_changed, first_joint, 0, txt, attr) and same(image_changed, first_joint, 0, cap, attr)
        assert same(text_changed, first_joint, cap, cap + img_pad, attr)
        assert not same(image_changed, first_joint, cap, cap + img, attr)
