"""auto-DNP end to end on a real ComfyUI server, in ONE prompt, with a zoo model (sd15) and a tiny
random BLIP-2 (transformers, save_pretrained) in the server's models/blip2 folder:

    prompt -> KSampler(NegGuideDNS model, positive = prompt, negative = "") -> VAEDecode
           -> NegGuideBLIP2Caption -> CLIPTextEncode(text = the caption) as the negative
           -> KSampler(unpatched model, same seed, positive = prompt) -> VAEDecode -> SaveImage

Asserted through the graph's outputs: the caption shown by the caption node (ui text), and the
final image, which equals a separate run whose negative is that caption typed in, and differs
from the same seed's run with an empty negative."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from negguide.harness.server import ComfyServer
from negguide.harness.tiny_blip2 import WORDS, build_tiny_blip2

ZOO = "NegGuideTestZooLoader"
PROMPT = "a blue circle on green grass"
SIZE = 64
SEED = 7
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("dnp_server")
    build_tiny_blip2(str(base / "models" / "blip2" / "tiny-blip2"))
    with ComfyServer(test_nodes=True, base_dir=base, extra_args=["--disable-api-nodes"]) as running:
        info = running.object_info()
        missing = [n for n in ("NegGuideDNS", "NegGuideBLIP2Loader", "NegGuideBLIP2Caption") if n not in info]
        assert not missing, f"nodes not registered in nodes/__init__.py: {missing}"
        yield running


def final_stage(negative_text, prefix):
    """The normal run: unpatched model, the prompt, the given negative text (a string or a link)."""
    return {
        "zoo": {"class_type": ZOO, "inputs": {"architecture": "sd15", "seed": 0}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["zoo", 1], "text": PROMPT}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["zoo", 1], "text": negative_text}},
        "final": {"class_type": "KSampler", "inputs": {
            "model": ["zoo", 0], "seed": SEED, "steps": 2, "cfg": 4.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "denoise": 1.0}},
        "final_decode": {"class_type": "VAEDecode", "inputs": {"samples": ["final", 0], "vae": ["zoo", 2]}},
        "final_save": {"class_type": "SaveImage", "inputs": {"images": ["final_decode", 0], "filename_prefix": prefix}},
    }


def auto_dnp_graph():
    graph = final_stage(["caption", 0], "auto_dnp")
    graph.update({
        "empty": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["zoo", 1], "text": ""}},
        "dns_model": {"class_type": "NegGuideDNS", "inputs": {"model": ["zoo", 0]}},
        "dns": {"class_type": "KSampler", "inputs": {
            "model": ["dns_model", 0], "seed": SEED, "steps": 2, "cfg": 4.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["empty", 0],
            "latent_image": ["latent", 0], "denoise": 1.0}},
        "dns_decode": {"class_type": "VAEDecode", "inputs": {"samples": ["dns", 0], "vae": ["zoo", 2]}},
        "blip2": {"class_type": "NegGuideBLIP2Loader", "inputs": {"model_name": "tiny-blip2", "dtype": "fp32"}},
        "caption": {"class_type": "NegGuideBLIP2Caption", "inputs": {
            "blip2_model": ["blip2", 0], "image": ["dns_decode", 0], "prompt": "", "max_new_tokens": 6,
            "num_beams": 1}},
    })
    return graph


def pixels(server, history, prefix):
    paths = [p for p in server.output_images(history) if p.name.startswith(prefix)]
    assert len(paths) == 1, paths
    with Image.open(paths[0]) as image:
        return np.asarray(image.convert("RGB"))


def test_auto_dnp_loop_in_one_prompt(server):
    history = server.run(auto_dnp_graph(), timeout=180)
    caption_ui = history["outputs"]["caption"]["text"]
    assert len(caption_ui) == 1 and isinstance(caption_ui[0], str)
    caption = caption_ui[0]
    assert caption and set(caption.split()) <= set(WORDS), caption
    final = pixels(server, history, "auto_dnp")
    assert final.shape == (SIZE, SIZE, 3) and final.std() > 0

    # The final sample used the caption as its negative: typing the caption in gives the same
    # image, an empty negative (same seed) a different one.
    typed = pixels(server, server.run(final_stage(caption, "typed"), timeout=120), "typed")
    plain = pixels(server, server.run(final_stage("", "plain"), timeout=120), "plain")
    assert np.array_equal(final, typed)
    assert not np.array_equal(final, plain)
    assert server.import_errors() == []
