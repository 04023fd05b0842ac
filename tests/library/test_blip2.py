"""NegGuideBLIP2Loader / NegGuideBLIP2Caption on a REAL transformers BLIP-2 (tiny random config,
saved with save_pretrained into a temporary models folder registered with folder_paths).
(harness/tiny_blip2.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch

import folder_paths

from negguide.nodes import blip2 as blip2_nodes
from negguide.harness.tiny_blip2 import WORDS, build_tiny_blip2
from negguide.nodes.blip2 import Blip2Model, NegGuideBLIP2Caption, NegGuideBLIP2Loader

@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip2_models")
    build_tiny_blip2(str(root / "tiny-blip2"))
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "readme.txt").write_text("nothing here")
    return root


@pytest.fixture
def blip2_folder(models_root, monkeypatch):
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "blip2", ([str(models_root)], set()))
    return models_root


def images(batch=2):
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, 40, 48, 3, generator=g)


def test_lists_model_directories_in_every_configured_path(blip2_folder, tmp_path, monkeypatch):
    other = tmp_path / "second"
    (other / "another-blip2").mkdir(parents=True)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "blip2",
                        ([str(blip2_folder), str(tmp_path / "missing"), str(other)], set()))
    assert blip2_nodes.list_models() == ["not-a-model", "tiny-blip2", "another-blip2"]
    options = NegGuideBLIP2Loader.define_schema().inputs[0].options
    assert options == ["not-a-model", "tiny-blip2", "another-blip2"]


def test_load_and_caption_a_batch(blip2_folder):
    loaded = NegGuideBLIP2Loader.execute("tiny-blip2", "fp32").args[0]
    assert isinstance(loaded, Blip2Model)
    assert loaded.patcher.model.blip2 is loaded.model  # the memory manager's handle on the real model
    out = NegGuideBLIP2Caption.execute(loaded, images(3), max_new_tokens=6)
    captions = out.args[0]
    assert isinstance(captions, list) and len(captions) == 3
    assert all(isinstance(c, str) and c for c in captions)
    assert all(set(c.split()) <= set(WORDS) for c in captions)  # decoded words, no special tokens
    assert out.ui.as_dict() == {"text": ("\n".join(captions),)}
    # greedy decoding is deterministic; a prompt is not echoed in the caption
    assert NegGuideBLIP2Caption.execute(loaded, images(3), max_new_tokens=6).args[0] == captions
    prompted = NegGuideBLIP2Caption.execute(loaded, images(1), prompt="a photo of", max_new_tokens=4, num_beams=2).args[0]
    assert len(prompted) == 1 and prompted[0] and len(prompted[0].split()) <= 4


def test_fp16_loads_half_weights(blip2_folder):
    loaded = NegGuideBLIP2Loader.execute("tiny-blip2", "fp16").args[0]
    assert loaded.model.language_model.lm_head.weight.dtype == torch.float16


def test_missing_folder_says_where_to_put_models(tmp_path, monkeypatch):
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "blip2", ([str(tmp_path / "nope")], set()))
    assert blip2_nodes.list_models() == []  # node listing still works
    # an empty combo shows "undefined" in the frontend: the only choice says where models go
    assert NegGuideBLIP2Loader.define_schema().inputs[0].options == [blip2_nodes.NO_MODEL]
    with pytest.raises(ValueError, match=r"no BLIP-2 model is installed.*nope"):
        NegGuideBLIP2Loader.execute(blip2_nodes.NO_MODEL, "fp32")
    with pytest.raises(ValueError, match=r"no BLIP-2 models folder exists.*nope.*blip2-opt-2.7b"):
        NegGuideBLIP2Loader.execute("tiny-blip2", "fp32")


def test_missing_model(blip2_folder):
    with pytest.raises(ValueError, match=r"'blip2-opt-2.7b' not found.*Put each BLIP-2 model as a directory"):
        NegGuideBLIP2Loader.execute("blip2-opt-2.7b", "fp32")
    with pytest.raises(ValueError, match="not a model directory name"):
        NegGuideBLIP2Loader.execute("../etc", "fp32")


def test_wrong_contents(blip2_folder, tmp_path):
    with pytest.raises(ValueError, match=r"not a complete BLIP-2 model directory: config.json is missing; no weights"):
        NegGuideBLIP2Loader.execute("not-a-model", "fp32")
    clip_like = blip2_folder / "clip-like"
    clip_like.mkdir(exist_ok=True)
    (clip_like / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(ValueError, match="a 'clip' model, not 'blip-2'"):
        NegGuideBLIP2Loader.execute("clip-like", "fp32")


def test_bad_inputs(blip2_folder):
    with pytest.raises(ValueError, match="dtype must be one of"):
        NegGuideBLIP2Loader.execute("tiny-blip2", "bf16")
    with pytest.raises(ValueError, match="connect the BLIP2_MODEL"):
        NegGuideBLIP2Caption.execute("not a model", images(1))


def test_default_folder_is_registered():
    assert os.path.join(folder_paths.models_dir, "blip2") in folder_paths.get_folder_paths("blip2")


def broken_copy(blip2_folder, name, damage):
    """A copy of tiny-blip2 named ``name`` in the models folder, then ``damage``(its Path)."""
    target = blip2_folder / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(blip2_folder / "tiny-blip2", target)
    damage(target)
    return target


def garbage_weights(d):
    (d / "model.safetensors").write_bytes(b"<html>404 Not Found</html>" * 40)


def truncated_weights(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def garbage_bin_weights(d):
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not a pickle or zip archive" * 40)


def edit_config(**text_config):
    def damage(d):
        config = json.loads((d / "config.json").read_text())
        config["text_config"].update(text_config)
        (d / "config.json").write_text(json.dumps(config))
    return damage


def garbage_tokenizer(d):
    (d / "tokenizer.json").write_text("garbage")


def missing_shard(d):
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("damage, what, chained", [
    (garbage_weights, r"the weight file model\.safetensors is damaged or incomplete", True),
    (truncated_weights, r"the weight file model\.safetensors is damaged or incomplete", True),
    (garbage_bin_weights, r"the weights cannot be loaded with this config\.json", True),
    (missing_shard, r"lists weight files that are missing: model-00002-of-00002\.safetensors", False),
    (edit_config(hidden_size=64, word_embed_proj_dim=64), r"config\.json does not match the weights", True),
    (edit_config(num_hidden_layers=2), r"config\.json does not match the weights: 16 tensors .* missing", False),
    (garbage_tokenizer, r"tokenizer files .* cannot be read", True),
    (edit_config(model_type="no-such-language-model"), r"config\.json is not a valid BLIP-2 configuration", True),
], ids=["garbage-safetensors", "truncated-safetensors", "garbage-bin", "missing-shard", "config-shapes",
        "config-extra-layer", "garbage-tokenizer", "config-unknown-text-model"])
def test_broken_model_folder_says_which_file_and_to_redownload(blip2_folder, damage, what, chained):
    """Garbage or truncated weights, or a config.json that does not match the weights: one
    ValueError naming the folder, what is broken and what to do (never a raw safetensors /
    transformers error; the original one stays chained), and never silently random weights."""
    path = broken_copy(blip2_folder, "broken-blip2", damage)
    with pytest.raises(ValueError) as caught:
        NegGuideBLIP2Loader.execute("broken-blip2", "fp32")
    message = str(caught.value)
    assert message.startswith(f"NegGuideBLIP2Loader: the BLIP-2 model folder {path} is broken: ")
    assert caught.match(what)
    assert "Re-download the whole folder models/blip2/broken-blip2" in message
    assert "config.json" in message and "model.safetensors" in message and "tokenizer.json" in message
    if chained:
        assert caught.value.__cause__ is not None  # raise ... from err: the original error is kept


def test_max_new_tokens_is_clamped_to_the_language_model_positions(blip2_folder, caplog):
    """tiny-blip2's OPT holds 64 positions (text_config.max_position_embeddings); the 4 image query
    tokens and the BOS take 5: max_new_tokens 200 is lowered to 59 with a warning (no IndexError
    inside the position embedding), and a caption of <= 59 tokens comes back."""
    loaded = NegGuideBLIP2Loader.execute("tiny-blip2", "fp32").args[0]
    assert blip2_nodes.max_positions(loaded.model.config) == 64
    with caplog.at_level(logging.WARNING):
        captions = NegGuideBLIP2Caption.execute(loaded, images(1), max_new_tokens=200).args[0]
    assert "max_new_tokens 200 lowered to 59" in caplog.text
    assert len(captions) == 1 and 0 < len(captions[0].split()) <= 59
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a prompt takes positions too
        prompted = NegGuideBLIP2Caption.execute(loaded, images(1), prompt="a photo of", max_new_tokens=200).args[0]
    assert "max_new_tokens 200 lowered to 56" in caplog.text and "the prompt" in caplog.text
    assert prompted[0] and len(prompted[0].split()) <= 56
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # within the limit: untouched, no warning
        NegGuideBLIP2Caption.execute(loaded, images(1), max_new_tokens=6)
    assert "lowered" not in caplog.text


def test_a_prompt_that_fills_the_language_model_is_refused(blip2_folder):
    loaded = NegGuideBLIP2Loader.execute("tiny-blip2", "fp32").args[0]
    with pytest.raises(ValueError, match=r"the prompt is too long: .* take 65 of the language model's 64 positions"):
        NegGuideBLIP2Caption.execute(loaded, images(1), prompt=" ".join(["cat"] * 60))
