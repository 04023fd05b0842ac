"""NegGuideBLIP2Loader / NegGuideBLIP2Caption on a REAL transformers BLIP-2 (tiny random config,
saved with save_pretrained into a temporary models folder registered with folder_paths).
(harness/tiny_blip2.py)."""

from __future__ import annotations

import os

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
    assert NegGuideBLIP2Loader.define_schema().inputs[0].options == []
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
