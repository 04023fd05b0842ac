"""BLIP-2 captioning for auto-DNP (paper: Desai & Vasconcelos, ECCV 2024, Sec. 4: the DNS image is
captioned by BLIP-2 and the caption becomes the negative prompt).

* ``NegGuideBLIP2Loader``: a transformers ``Blip2ForConditionalGeneration`` + ``Blip2Processor``
  from a LOCAL model directory (what ``huggingface-cli download Salesforce/blip2-opt-2.7b
  --local-dir models/blip2/blip2-opt-2.7b`` gives) in ComfyUI's "blip2" models folder, registered
  here as <models>/blip2 (more paths can be added with extra_model_paths.yaml, key ``blip2``);
  the combo lists the model directories of every configured path. Nothing is ever downloaded.
  The model is wrapped in a ``comfy.model_patcher.ModelPatcher`` so ComfyUI's memory manager
  loads it to the GPU for captioning (``load_model_gpu``) and offloads it when other models need
  the memory.
* ``NegGuideBLIP2Caption``: one caption STRING per image of an IMAGE batch (greedy by default,
  max_new_tokens 50, special tokens skipped: the public auto-DNP reproduction's settings), shown
  on the node and returned as a list-valued STRING output (one string per image).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

import comfy.model_management
import comfy.model_patcher
import folder_paths
from comfy_api.latest import io, ui

LOG = logging.getLogger(__name__)
FOLDER = "blip2"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
WEIGHT_SUFFIXES = (".safetensors", ".bin")
EXAMPLE = "huggingface-cli download Salesforce/blip2-opt-2.7b --local-dir <models>/blip2/blip2-opt-2.7b"
BLIP2_MODEL = io.Custom("BLIP2_MODEL")


def register_folder() -> None:
    """Register <models>/blip2 (idempotent; extra_model_paths.yaml may add more paths)."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


register_folder()


def folder_paths_of_blip2() -> list[str]:
    try:
        return folder_paths.get_folder_paths(FOLDER)
    except KeyError:
        return []


def list_models() -> list[str]:
    """The model directories (sub-directories) of every configured blip2 path; never raises."""
    names: list[str] = []
    for base in folder_paths_of_blip2():
        try:
            entries = sorted(os.listdir(base))
        except OSError:
            continue
        for name in entries:
            if not name.startswith(".") and os.path.isdir(os.path.join(base, name)) and name not in names:
                names.append(name)
    return names


NO_MODEL = "none found: put a BLIP-2 model folder into models/blip2/<folder>"
"""The loader's only choice when no model directory exists (an empty combo shows "undefined")."""


def where_to_put() -> str:
    paths = folder_paths_of_blip2()
    listed = ", ".join(paths) if paths else os.path.join(folder_paths.models_dir, FOLDER)
    return (f"Put each BLIP-2 model as a directory (config.json, the weights, the processor and tokenizer files) "
            f"into one of: {listed} (e.g. {EXAMPLE}).")


def resolve_model_dir(name: str) -> str:
    """The directory of model ``name``; ValueError naming where models belong otherwise."""
    paths = folder_paths_of_blip2()
    if not any(os.path.isdir(p) for p in paths):
        raise ValueError(f"NegGuideBLIP2Loader: no BLIP-2 models folder exists. {where_to_put()}")
    if not name or name != os.path.basename(name) or name in (".", ".."):
        raise ValueError(f"NegGuideBLIP2Loader: {name!r} is not a model directory name. {where_to_put()}")
    for base in paths:
        candidate = os.path.join(base, name)
        if os.path.isdir(candidate):
            return candidate
    available = list_models()
    raise ValueError(
        f"NegGuideBLIP2Loader: BLIP-2 model {name!r} not found (available: {available or 'none'}). {where_to_put()}"
    )


def check_model_dir(path: str) -> None:
    """ValueError when the directory is not a transformers BLIP-2 model with its processor."""
    problems = []
    config_file = os.path.join(path, "config.json")
    files = os.listdir(path)
    if not os.path.isfile(config_file):
        problems.append("config.json is missing")
    else:
        try:
            with open(config_file, encoding="utf-8") as f:
                model_type = json.load(f).get("model_type")
        except (OSError, ValueError) as e:
            model_type = None
            problems.append(f"config.json cannot be read ({e})")
        if model_type is not None and model_type != "blip-2":
            problems.append(f"config.json is a {model_type!r} model, not 'blip-2'")
    if not any(f.endswith(WEIGHT_SUFFIXES) for f in files):
        problems.append("no weights (*.safetensors or *.bin)")
    if "preprocessor_config.json" not in files and "processor_config.json" not in files:
        problems.append("no image processor (preprocessor_config.json)")
    if not any(f in files for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        problems.append("no tokenizer files (tokenizer.json / vocab.json)")
    if problems:
        raise ValueError(
            f"NegGuideBLIP2Loader: {path} is not a complete BLIP-2 model directory: {'; '.join(problems)}. "
            f"{where_to_put()}"
        )


class Blip2Module(torch.nn.Module):
    """Holds the transformers model for ModelPatcher (which writes ``.device``, a read-only
    property on transformers models)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.blip2 = model
        self.device = device


@dataclass
class Blip2Model:
    """The BLIP2_MODEL value: the patcher (memory managed by ComfyUI) and the processor."""

    patcher: comfy.model_patcher.ModelPatcher
    processor: object
    dtype: torch.dtype
    name: str

    @property
    def model(self):
        return self.patcher.model.blip2


EXPECTED_FILES = (
    "config.json (model_type 'blip-2'); the weights: model.safetensors, or model-*-of-*.safetensors shards with "
    "model.safetensors.index.json, or pytorch_model*.bin; preprocessor_config.json (or processor_config.json); "
    "the tokenizer files (tokenizer.json, or vocab.json + merges.txt, and tokenizer_config.json)"
)


def broken_model(path: str, what: str) -> ValueError:
    """The error for a model directory whose files exist but cannot be used: what is wrong, and
    what to do about it (re-download the whole folder; which files it needs)."""
    name = os.path.basename(os.path.normpath(path))
    return ValueError(
        f"NegGuideBLIP2Loader: the BLIP-2 model folder {path} is broken: {what}. Re-download the whole folder "
        f"models/blip2/{name} (delete it first; e.g. huggingface-cli download Salesforce/blip2-opt-2.7b "
        f"--local-dir {path}, or the repository this model came from). The folder needs: {EXPECTED_FILES}."
    )


def is_resource_error(err: BaseException) -> bool:
    """Out of memory is not a broken file: such errors pass through unchanged."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", MemoryError)
    return isinstance(err, (MemoryError, oom))


@contextlib.contextmanager
def reported_as_broken(path: str, what, limit: int | None = None):
    """Any error raised inside (except running out of memory) becomes ``broken_model(path, ...)``:
    ``what`` (or ``what(err)``) followed by the error's type and text (cut to ``limit`` characters),
    the original chained."""
    try:
        yield
    except Exception as err:
        if is_resource_error(err):
            raise
        described = what(err) if callable(what) else what
        raise broken_model(path, f"{described} ({type(err).__name__}: {str(err)[:limit]})") from err


def _weights_error(err: BaseException) -> str:
    text = str(err).lower()
    if "mismatch" in text or ("size" in text and "shape" in text):
        return "config.json does not match the weights (tensor shapes differ)"
    return ("the weights cannot be loaded with this config.json (a weight file is damaged or incomplete, or "
            "config.json belongs to another model)")


def check_weight_files(path: str) -> None:
    """ValueError naming the file when a safetensors weight file is garbage or truncated (its
    header does not parse, or the file is shorter than the header says), or a shard that the
    index lists is missing. (.bin files can only be checked by loading them.)"""
    import safetensors

    files = sorted(os.listdir(path))
    index_file = "model.safetensors.index.json"
    if index_file in files:
        try:
            with open(os.path.join(path, index_file), encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise broken_model(path, f"{index_file} cannot be read ({err})") from err
        missing = [shard for shard in shards if shard not in files]
        if missing:
            raise broken_model(path, f"{index_file} lists weight files that are missing: {', '.join(missing)}")
    for file in files:
        if not file.endswith(".safetensors"):
            continue
        # safetensors raises its own SafetensorError (and OSError)
        with reported_as_broken(path, f"the weight file {file} is damaged or incomplete"):
            with safetensors.safe_open(os.path.join(path, file), framework="pt") as f:
                f.keys()


def load_blip2(path: str, dtype: torch.dtype, name: str = "") -> Blip2Model:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    check_model_dir(path)
    check_weight_files(path)
    with reported_as_broken(path, "config.json is not a valid BLIP-2 configuration"):
        config = Blip2Config.from_pretrained(path, local_files_only=True)
    with reported_as_broken(path, "the image processor or tokenizer files (preprocessor_config.json / "
                                  "processor_config.json, tokenizer.json / vocab.json, tokenizer_config.json) cannot "
                                  "be read"):
        processor = Blip2Processor.from_pretrained(path, local_files_only=True)
    with reported_as_broken(path, _weights_error, limit=500):
        model, info = Blip2ForConditionalGeneration.from_pretrained(
            path, config=config, dtype=dtype, local_files_only=True, output_loading_info=True)
    problems = []
    for key, meaning in (("missing_keys", "missing from the weights"), ("mismatched_keys", "of another shape in the weights")):
        keys = sorted(str(k) for k in (info.get(key) or ()))
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} tensors that config.json describes are {meaning} ({shown})")
    if problems:
        raise broken_model(path, "config.json does not match the weights: " + "; ".join(problems))
    if info.get("unexpected_keys"):
        LOG.warning("NegGuideBLIP2Loader: %s: %d tensors of the weights are not used by this config.json (e.g. %s); "
                    "if the captions are nonsense, config.json belongs to another model: re-download the folder.",
                    path, len(info["unexpected_keys"]), min(info["unexpected_keys"]))
    model.eval()
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    if dtype == torch.float16 and load_device.type == "cpu":
        LOG.warning("NegGuideBLIP2Loader: fp16 on the CPU is slow and may be unsupported by some operations; use fp32.")
    model.to(offload_device)
    module = Blip2Module(model, offload_device)
    patcher = comfy.model_patcher.ModelPatcher(module, load_device=load_device, offload_device=offload_device)
    if getattr(processor, "num_query_tokens", None) is None:
        processor.num_query_tokens = model.config.num_query_tokens
    return Blip2Model(patcher, processor, dtype, name)


class NegGuideBLIP2Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideBLIP2Loader",
            display_name="BLIP-2 Loader (NegGuide)",
            category="loaders/negguide",
            description=(
                "Loads a BLIP-2 captioning model (transformers format) from a directory in the models/blip2 folder, "
                "for auto-DNP (captioning the diffusion-negative image). Nothing is downloaded: " + EXAMPLE
            ),
            inputs=[
                io.Combo.Input("model_name", options=list_models() or [NO_MODEL],
                               tooltip="A model directory in models/blip2 (or another configured blip2 path), e.g. "
                                       "blip2-opt-2.7b downloaded from Salesforce/blip2-opt-2.7b."),
                io.Combo.Input("dtype", options=list(DTYPES), default="fp16",
                               tooltip="Weight precision: fp16 (the paper's setting, half the memory; GPU) or fp32 "
                                       "(CPU, or exact)."),
            ],
            outputs=[BLIP2_MODEL.Output(display_name="BLIP2_MODEL")],
        )

    @classmethod
    def execute(cls, model_name, dtype) -> io.NodeOutput:
        if dtype not in DTYPES:
            raise ValueError(f"NegGuideBLIP2Loader: dtype must be one of {list(DTYPES)}, not {dtype!r}.")
        if model_name == NO_MODEL:
            raise ValueError(f"NegGuideBLIP2Loader: no BLIP-2 model is installed. {where_to_put()}")
        path = resolve_model_dir(model_name)
        return io.NodeOutput(load_blip2(path, DTYPES[dtype], model_name))


def to_pil_list(image: torch.Tensor) -> list:
    from PIL import Image

    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"NegGuideBLIP2Caption: expected an IMAGE [batch, height, width, channels], got {tuple(image.shape)}.")
    arrays = (image[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if arrays.shape[-1] == 1:
        arrays = np.repeat(arrays, 3, axis=-1)
    return [Image.fromarray(a) for a in arrays]


def max_positions(config) -> int | None:
    """How many positions (image query tokens + prompt + caption) the language model holds: OPT's
    (and other decoder-only models') ``text_config.max_position_embeddings`` (2048 for
    blip2-opt-2.7b); None for encoder-decoder language models (Flan-T5: relative positions)."""
    text_config = getattr(config, "text_config", None)
    if text_config is None or getattr(text_config, "is_encoder_decoder", False):
        return None
    value = getattr(text_config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def prompt_length(config, inputs: dict) -> int:
    """The positions generate() fills before the first caption token: the image query tokens, the
    BOS and the prompt (generate() builds [image tokens] + [bos] itself without input_ids; older
    processors leave the image tokens out of input_ids and generate() puts the queries in front)."""
    queries = int(config.num_query_tokens)
    input_ids = inputs.get("input_ids")
    if input_ids is None:
        return queries + 1
    image_token = getattr(config, "image_token_id", None)
    if image_token is None:
        image_token = getattr(config, "image_token_index", None)
    has_image_tokens = image_token is not None and bool((input_ids == image_token).any())
    return int(input_ids.shape[1]) + (0 if has_image_tokens else queries)


def clamp_new_tokens(config, inputs: dict, max_new_tokens: int, prompt: str = "") -> int:
    """``max_new_tokens`` limited to what still fits into the language model's positions (a logged
    warning when it is lowered); ValueError when the prompt alone leaves no room."""
    limit = max_positions(config)
    if limit is None:
        return max_new_tokens
    used = prompt_length(config, inputs)
    room = limit - used
    if room < 1:
        raise ValueError(
            f"NegGuideBLIP2Caption: the prompt is too long: the image ({config.num_query_tokens} query tokens) and "
            f"the prompt take {used} of the language model's {limit} positions, leaving none for the caption. "
            "Shorten the prompt (or leave it empty)."
        )
    if max_new_tokens > room:
        LOG.warning(
            "NegGuideBLIP2Caption: max_new_tokens %d lowered to %d: the language model holds %d positions and the "
            "image query tokens%s take %d.", max_new_tokens, room, limit, " and the prompt" if prompt else "", used)
        return room
    return max_new_tokens


@torch.no_grad()
def caption_images(blip2: Blip2Model, image: torch.Tensor, prompt: str = "", max_new_tokens: int = 50,
                   num_beams: int = 1) -> list[str]:
    """One caption per image (greedy for num_beams = 1), special tokens skipped, the text prompt
    (if any) removed from the output."""
    comfy.model_management.load_model_gpu(blip2.patcher)
    device = blip2.patcher.load_device
    model = blip2.model
    images = to_pil_list(image)
    if prompt:
        inputs = blip2.processor(images=images, text=[prompt] * len(images), return_tensors="pt")
    else:
        inputs = blip2.processor(images=images, return_tensors="pt")
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(blip2.dtype)
    max_new_tokens = clamp_new_tokens(model.config, inputs, int(max_new_tokens), prompt)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=int(num_beams), do_sample=False)
    if prompt and "input_ids" in inputs:
        prefix = inputs["input_ids"]
        if out.shape[1] >= prefix.shape[1] and torch.equal(out[:, :prefix.shape[1]], prefix.to(out)):
            out = out[:, prefix.shape[1]:]
    elif not prompt:
        # generate() built [image tokens] + [bos] itself; drop that prefix if it is echoed.
        n = model.config.num_query_tokens + 1
        if out.shape[1] >= n and bool((out[:, :n - 1] == model.config.image_token_id).all()):
            out = out[:, n:]
    texts = blip2.processor.batch_decode(out, skip_special_tokens=True)
    return [t.strip() for t in texts]


class NegGuideBLIP2Caption(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NegGuideBLIP2Caption",
            display_name="BLIP-2 Caption (NegGuide)",
            category="conditioning/negguide",
            description=(
                "Captions every image of a batch with BLIP-2 and shows the captions. In auto-DNP, caption the "
                "diffusion-negative image (NegGuideDNS) and connect the caption to the negative prompt's text input."
            ),
            is_output_node=True,
            inputs=[
                BLIP2_MODEL.Input("blip2_model", tooltip="The model from NegGuideBLIP2Loader."),
                io.Image.Input("image", tooltip="The images to caption (any batch size): one caption each."),
                io.String.Input("prompt", default="", multiline=False, optional=True,
                                tooltip="Optional text prompt the caption continues (e.g. 'a photo of'); empty = "
                                        "plain captioning (the paper's setting)."),
                io.Int.Input("max_new_tokens", default=50, min=1, max=512,
                             tooltip="Longest caption in tokens (50 in the auto-DNP reproduction). Lowered, with a "
                                     "warning, to what the language model still holds after the image and prompt."),
                io.Int.Input("num_beams", default=1, min=1, max=16,
                             tooltip="Beam-search width; 1 = greedy decoding (the paper's setting)."),
            ],
            outputs=[io.String.Output(display_name="caption", is_output_list=True,
                                      tooltip="One caption per image (a list: downstream nodes run once per caption).")],
        )

    @classmethod
    def execute(cls, blip2_model, image, prompt="", max_new_tokens=50, num_beams=1) -> io.NodeOutput:
        if not isinstance(blip2_model, Blip2Model):
            raise ValueError("NegGuideBLIP2Caption: connect the BLIP2_MODEL output of NegGuideBLIP2Loader.")
        if max_new_tokens < 1 or num_beams < 1:
            raise ValueError("NegGuideBLIP2Caption: max_new_tokens and num_beams must be at least 1.")
        captions = caption_images(blip2_model, image, prompt or "", max_new_tokens, num_beams)
        return io.NodeOutput(captions, ui=ui.PreviewText("\n".join(captions)))
