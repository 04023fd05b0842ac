"""End-to-end sampling through ComfyUI's own KSampler path with every zoo architecture.

Each model is sampled with ``nodes.common_ksampler`` (what the KSampler node runs) and decoded with
``nodes.VAEDecode``; the tests check shapes, finiteness, prompt dependence, seed reproducibility
and the determinism of the random weights (in-process and across processes).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import nodes

from negguide.harness import host, zoo

STEPS = 3
WIDTH, HEIGHT = 64, 64  # pixels
BATCH = 2
EXPECTED = ("sd15", "sdxl", "sd3", "flux", "chroma", "flux2", "flux2_dev", "wan21", "wan22", "qwen_image", "z_image",
            "hidream", "hunyuan_video15")


def sample(z, positive, negative, cfg, seed=7, batch_size=BATCH, steps=STEPS):
    latent = z.empty_latent(WIDTH, HEIGHT, batch_size=batch_size)
    return nodes.common_ksampler(z.model, seed, steps, cfg, "euler", "simple", positive, negative, latent)[0]


def latent_shape(z, batch_size=BATCH):
    down = zoo.LATENT_DOWNSCALE[z.name]
    shape = [batch_size, z.latent_channels, HEIGHT // down, WIDTH // down]
    if z.name in zoo.VIDEO_LATENT:
        shape.insert(2, 1)
    return tuple(shape)


def test_architectures_cover_every_family():
    assert zoo.ARCHITECTURES == EXPECTED
    assert {zoo.FAMILIES[n] for n in zoo.ARCHITECTURES} == {"unet", "mmdit", "flux", "flux2", "wan", "qwen_image", "z_image",
                                                                 "hidream", "hunyuan_video"}


def test_unavailable_architectures_say_why_and_refuse_to_build():
    """flux2 needs classes 0.3.75 lacks, flux2_dev a Mistral tokenizer that works on the host (0.3.75's
    needs an older transformers), hidream a tokenizer file the 0.33.0 snapshot lacks; every other
    architecture builds on every supported host."""
    optional = ("flux2", "flux2_dev", "hidream")
    assert all(zoo.unavailable_reason(n) is None for n in EXPECTED if n not in optional)
    assert zoo.available_architectures() == tuple(n for n in EXPECTED if zoo.unavailable_reason(n) is None)
    for name in optional:
        reason = zoo.unavailable_reason(name)
        if reason is None:
            continue
        assert name in reason and "lacks" in reason
        with pytest.raises(RuntimeError, match="lacks"):
            zoo.build(name)


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError) as err:
        zoo.build("sd9")
    for name in zoo.ARCHITECTURES:
        assert name in str(err.value)


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_zoo_model_is_built_from_comfy_classes(name):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.sd

    z = zoo.build(name)
    assert z.name == name and z.family == zoo.FAMILIES[name]
    assert isinstance(z.model, comfy.model_patcher.ModelPatcher)
    assert isinstance(z.model.model, comfy.model_base.BaseModel)
    assert isinstance(z.clip, comfy.sd.CLIP) and isinstance(z.vae, comfy.sd.VAE)
    assert z.model.model.latent_format.latent_channels == z.latent_channels
    assert z.vae.latent_channels == z.latent_channels
    for p in z.model.model.diffusion_model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    # every build() hands out fresh clones of the cached model: patching one leaves the others alone
    other = zoo.build(name)
    assert other.model is not z.model and other.model.is_clone(z.model)
    z.model.model_options["transformer_options"]["probe"] = 1
    assert "probe" not in other.model.model_options["transformer_options"]


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_sample_and_decode(name):
    z = zoo.build(name)
    pos = z.encode("a red cat sitting on a mat")
    pos_other = z.encode("a lighthouse in a storm at night")
    neg = z.encode("blurry, low quality")
    neg_other = z.encode("oversaturated cartoon")

    base = sample(z, pos, neg, cfg=1.0)["samples"]
    assert tuple(base.shape) == latent_shape(z)
    assert torch.isfinite(base).all()
    assert base.abs().max() > 0
    assert not torch.equal(base[0], base[1]), "batch items got the same noise"

    # same seed reproduces bit for bit; another seed does not
    assert torch.equal(base, sample(z, pos, neg, cfg=1.0)["samples"])
    assert not torch.allclose(base, sample(z, pos, neg, cfg=1.0, seed=8)["samples"])
    # the prompt reaches the output
    assert not torch.allclose(base, sample(z, pos_other, neg, cfg=1.0)["samples"])
    # cfg 1 never evaluates the negative (ComfyUI skips uncond at cfg 1) ...
    assert torch.equal(base, sample(z, pos, neg_other, cfg=1.0)["samples"])
    # ... cfg > 1 does, and it changes the result
    guided = sample(z, pos, neg, cfg=3.5)["samples"]
    assert tuple(guided.shape) == latent_shape(z) and torch.isfinite(guided).all()
    assert not torch.allclose(guided, base)
    assert not torch.allclose(guided, sample(z, pos, neg_other, cfg=3.5)["samples"])
    assert torch.equal(guided, sample(z, pos, neg, cfg=3.5)["samples"])

    images = nodes.VAEDecode().decode(z.vae, {"samples": guided})[0]
    assert tuple(images.shape) == (BATCH, HEIGHT, WIDTH, 3)
    assert torch.isfinite(images).all()
    if z.vae.process_output(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]:
        assert images.min() >= 0 and images.max() <= 1
    else:  # ComfyUI passes TAEHV's output (the Wan 2.2 VAE of the zoo) through unclamped
        assert z.name == "wan22"
    assert images.std() > 0


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_empty_latent_matches_the_stock_nodes(name):
    z = zoo.build(name)
    latent = z.empty_latent(96, 64, batch_size=3)["samples"]
    assert torch.count_nonzero(latent) == 0
    h, w = 64 // zoo.LATENT_DOWNSCALE[name], 96 // zoo.LATENT_DOWNSCALE[name]
    if z.name in zoo.VIDEO_LATENT:
        assert tuple(latent.shape) == (3, z.latent_channels, 1, h, w)
    else:
        assert tuple(latent.shape) == (3, z.latent_channels, h, w)
    if z.latent_channels == 4:
        stock = nodes.EmptyLatentImage().generate(96, 64, 3)[0]["samples"]
        assert stock.shape == latent.shape
    if zoo.FAMILIES[name] == "flux2":
        from comfy_extras.nodes_flux import EmptyFlux2LatentImage

        stock = EmptyFlux2LatentImage.execute(96, 64, 3).args[0]["samples"]
        assert stock.shape == latent.shape and stock.dtype == latent.dtype


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_encode_is_clip_text_encode(name):
    z = zoo.build(name)
    ours = z.encode("a red cat")
    stock = nodes.CLIPTextEncode().encode(z.clip, "a red cat")[0]
    assert len(ours) == len(stock) == 1
    assert torch.equal(ours[0][0], stock[0][0])
    assert ours[0][1].keys() == stock[0][1].keys()
    assert not torch.equal(ours[0][0], z.encode("a blue dog")[0][0])


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_build_is_deterministic(name):
    cached = zoo.digest(zoo.build(name, seed=0))
    assert zoo.digest(zoo.build(name, seed=0, cached=False)) == cached
    assert zoo.digest(zoo.build(name, seed=1, cached=False)) != cached


def test_build_is_deterministic_across_processes():
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location(
            "negguide", {str(host.REPO_ROOT / "__init__.py")!r}, submodule_search_locations=[{str(host.REPO_ROOT)!r}])
        sys.modules["negguide"] = m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        from negguide.harness import host, zoo
        host.boot_library_mode()
        print("DIGESTS=" + json.dumps({{n: zoo.digest(zoo.build(n, seed=0)) for n in zoo.available_architectures()}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "12345"}  # another hash seed on purpose
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=str(host.REPO_ROOT.parent), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("DIGESTS=")][-1]
    theirs = json.loads(line[len("DIGESTS="):])
    ours = {n: zoo.digest(zoo.build(n, seed=0)) for n in zoo.available_architectures()}
    assert theirs == ours


@pytest.mark.zoo_architecture("flux2_dev")
def test_flux2_dev_encodes_with_comfys_mistral_over_the_generated_tekken_vocabulary():
    """Flux.2 dev's tokenizer reads the generated tekken file as it reads a real encoder file's:
    start token 1, Flux.2's system-prompt template, no padding, every id inside the tiny
    vocabulary, listed words as one token each; a clone tokenizes the same and CLIP.get_sd carries
    the file as the uint8 tensor a checkpoint stores. The pruned 30-layer encoder (no final norm)
    gives exactly the states of layers 10, 20 and 30 of a 40-layer one with the same weights."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.flux

    z = zoo.build("flux2_dev")
    tokenizer = z.clip.tokenizer
    ids = [token[0] for token in z.clip.tokenize("a red car")["mistral3_24b"][0]]
    empty = [token[0] for token in z.clip.tokenize("")["mistral3_24b"][0]]
    assert ids[0] == 1 and tokenizer.mistral3_24b.pad_token not in ids and max(ids) < zoo.TEKKEN_VOCAB_SIZE
    assert tokenizer.mistral3_24b.decode(ids, skip_special_tokens=False) == "<s>" + tokenizer.llama_template.format(
        "a red car")
    assert len(ids) == len(empty) + 3  # "a", " red", " car"
    assert [token[0] for token in z.clip.clone().tokenize("a red car")["mistral3_24b"][0]] == ids
    tekken = z.clip.get_sd()["tekken_model"]
    assert tekken.dtype == torch.uint8 and bytes(tekken.numpy()) == zoo.tekken_json()

    config = {**zoo._llm_config(32, layers=40), "vocab_size": zoo.TEKKEN_VOCAB_SIZE}
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.flux.Flux2Tokenizer,
                                                    comfy.text_encoders.flux.flux2_te())
    full = comfy.sd.CLIP(target, tokenizer_data={"tekken_model": tekken},
                         model_options={"dtype": torch.float32, "mistral3_24b_model_config": config})
    assert len(full.cond_stage_model.mistral3_24b.transformer.model.layers) == 40
    zoo.initialise(full.cond_stage_model, torch.Generator().manual_seed(0))  # layers 30-39 and the final norm
    missing, unexpected = full.cond_stage_model.load_state_dict(z.clip.cond_stage_model.state_dict(), strict=False)
    assert not unexpected
    missing_layers = {key.split(".layers.")[1].split(".")[0] for key in missing if ".layers." in key}
    assert missing_layers == {str(i) for i in range(30, 40)}
    assert torch.equal(nodes.CLIPTextEncode().encode(full, "a red car")[0][0][0], z.encode("a red car")[0][0])
