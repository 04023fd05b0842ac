"""The pack inside a real ComfyUI server: it loads cleanly, registers its test nodes only on
request, and API-format graphs run end to end over /prompt and /history, on stand-in models
read by the STOCK loaders and on zoo models."""

import numpy as np
import pytest
from PIL import Image

from negguide.harness import zoo
from negguide.harness.server import ComfyServer, ServerError, pack_import_errors, pid_alive, quick_test

ZOO_NODE = "NegGuideTestZooLoader"
SIZE = 64  # pixels; an 8x8 latent
PROMPT = "a blue circle on green grass"

# The stock empty-latent node of each zoo architecture: (class_type, extra inputs).
EMPTY_LATENT = {
    "sd15": ("EmptyLatentImage", {}),
    "sdxl": ("EmptyLatentImage", {}),
    "sd3": ("EmptySD3LatentImage", {}),
    "flux": ("EmptySD3LatentImage", {}),
    "chroma": ("EmptySD3LatentImage", {}),
    "wan21": ("EmptyHunyuanLatentVideo", {"length": 1}),
    "qwen_image": ("EmptyHunyuanLatentVideo", {"length": 1}),
}


def sampling_graph(model, clip, vae, latent_node, prefix, *, steps=2, cfg=2.0, extra=None):
    """text -> KSampler -> VAEDecode -> SaveImage, wired to the given [node, slot] sources."""
    latent_class, latent_inputs = latent_node
    graph = {
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": PROMPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": ""}},
        "latent": {"class_type": latent_class,
                   "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1, **latent_inputs}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 7, "steps": steps, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": vae}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }
    graph.update(extra or {})
    return graph


def zoo_graph(architecture, prefix):
    graph = sampling_graph(["zoo", 0], ["zoo", 1], ["zoo", 2], EMPTY_LATENT[architecture], prefix)
    graph["zoo"] = {"class_type": ZOO_NODE, "inputs": {"architecture": architecture, "seed": 0}}
    return graph


def saved_pixels(server, history) -> np.ndarray:
    paths = server.output_images(history)
    assert len(paths) == 1, paths
    assert paths[0].is_file(), paths[0]
    with Image.open(paths[0]) as image:
        assert image.size == (SIZE, SIZE)
        return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------ loading


def test_log_helper_finds_our_failures_only():
    ours = "/srv/comfy/custom_nodes/negguide"
    log = "\n".join([
        "Traceback (most recent call last):",
        '  File "/srv/comfy/nodes.py", line 2146, in load_custom_node',
        '  File "/srv/comfy/comfy_extras/nodes_audio.py", line 4, in <module>',
        "ModuleNotFoundError: No module named 'torchaudio'",
        "Cannot import /srv/comfy/comfy_extras/nodes_audio.py module for custom nodes: x",
        "IMPORT FAILED: nodes_audio.py",
        "   0.0 seconds (IMPORT FAILED): /srv/comfy/custom_nodes/negguide_other",
        "   0.1 seconds: " + ours,
    ])
    assert pack_import_errors(log) == []
    failing = "\n".join([
        "Traceback (most recent call last):",
        '  File "/srv/comfy/nodes.py", line 2146, in load_custom_node',
        f'  File "{ours}/nodes/__init__.py", line 3, in <module>',
        "ImportError: boom",
        f"Cannot import {ours} module for custom nodes: boom",
        f"   0.0 seconds (IMPORT FAILED): {ours}",
        f"Error while calling comfy_entrypoint in {ours}: boom",
    ])
    found = pack_import_errors(failing)
    assert len(found) == 4, found
    assert found[-1].startswith("Traceback") and "ImportError: boom" in found[-1]


def test_quick_test_for_ci_loads_the_pack_cleanly():
    code, log = quick_test()
    assert code == 0, log[-4000:]
    assert "custom_nodes/negguide" in log, "the pack was not even tried:\n" + log[-4000:]
    assert pack_import_errors(log) == []


def test_session_server_loaded_the_pack_without_errors(server):
    assert server.is_running()
    assert server.import_errors() == []


def test_test_nodes_are_listed_when_requested(server):
    info = server.object_info()
    assert ZOO_NODE in info
    node = info[ZOO_NODE]
    assert node["category"] == "_for_testing/negguide"
    assert node["output"] == ["MODEL", "CLIP", "VAE"]
    assert node["input"]["required"]["architecture"][1]["options"] == list(zoo.ARCHITECTURES)


def test_user_server_has_no_test_nodes_and_stops_by_pid():
    # What a user runs: the pack alone, without the test-only pack.
    with ComfyServer(test_nodes=False) as user_server:
        info = user_server.object_info()
        assert ZOO_NODE not in info
        assert "KSampler" in info
        assert user_server.import_errors() == []
        pid = user_server.pid
        assert pid_alive(pid)
    assert not pid_alive(pid)
    assert not user_server.is_running()


# ------------------------------------------------------------------------------ graphs


def test_sd3_standin_through_stock_loaders_matches_the_zoo_model(server, standin_files):
    """UNETLoader(SD3 stand-in) + VAELoader(TAESD stand-in), conditioned by the zoo's SD3 text
    encoder: runs end to end, and since the stand-ins are the zoo's own weights, gives the very
    image the zoo model gives."""
    stock = sampling_graph(["unet", 0], ["zoo", 1], ["vae", 0], EMPTY_LATENT["sd3"], "stock_sd3", extra={
        "unet": {"class_type": "UNETLoader",
                 "inputs": {"unet_name": standin_files["sd3"].name, "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": standin_files["taesd16"].name}},
        "zoo": {"class_type": ZOO_NODE, "inputs": {"architecture": "sd3", "seed": 0}},
    })
    stock_pixels = saved_pixels(server, server.run(stock, timeout=180))
    zoo_pixels = saved_pixels(server, server.run(zoo_graph("sd3", "zoo_sd3"), timeout=180))
    assert stock_pixels.std() > 0  # not a blank image
    assert np.array_equal(stock_pixels, zoo_pixels)


def test_sd15_standin_checkpoint_runs_with_stock_nodes_only(server, standin_files):
    """CheckpointLoaderSimple detects the SD1.5 stand-in (model, CLIP-L and TAESD VAE from one
    file) and a stock-only graph samples and saves an image."""
    graph = sampling_graph(["ckpt", 0], ["ckpt", 1], ["ckpt", 2], EMPTY_LATENT["sd15"], "stock_sd15",
                           steps=1, extra={"ckpt": {"class_type": "CheckpointLoaderSimple",
                                                    "inputs": {"ckpt_name": standin_files["sd15"].name}}})
    graph["sample"]["inputs"]["negative"] = ["pos", 0]  # one text encoding: CLIP-L is fp16 on CPU
    del graph["neg"]
    pixels = saved_pixels(server, server.run(graph, timeout=300))
    assert pixels.shape == (SIZE, SIZE, 3)
    assert "no CLIP/text encoder weights in checkpoint" not in server.log()


@pytest.mark.parametrize("architecture", ["sd15", "flux"])
def test_zoo_graph_runs(server, architecture):
    history = server.run(zoo_graph(architecture, f"zoo_{architecture}"), timeout=180)
    assert saved_pixels(server, history).shape == (SIZE, SIZE, 3)


def test_invalid_graph_is_refused_with_the_validation_error(server):
    graph = zoo_graph("sd3", "invalid")
    graph["sample"]["inputs"]["sampler_name"] = "no-such-sampler"
    with pytest.raises(ServerError, match="value_not_in_list.*no-such-sampler"):
        server.queue(graph)


def test_failing_graph_raises_with_the_execution_error(server, standin_files):
    # Valid graph, wrong conditioning width: the SD3 stand-in fed the zoo's SD1.5 text encoder.
    graph = sampling_graph(["unet", 0], ["zoo", 1], ["zoo", 2], EMPTY_LATENT["sd3"], "mismatch", extra={
        "unet": {"class_type": "UNETLoader",
                 "inputs": {"unet_name": standin_files["sd3"].name, "weight_dtype": "default"}},
        "zoo": {"class_type": ZOO_NODE, "inputs": {"architecture": "sd15", "seed": 0}},
    })
    with pytest.raises(ServerError, match=r"KSampler \(node sample\) raised RuntimeError"):
        server.run(graph, timeout=120)


def test_no_pack_errors_after_the_graphs(server):
    assert server.import_errors() == []
