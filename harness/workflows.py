"""The bundled workflows (workflows/*.json) as tests and tools see them.

    from negguide.harness import workflows
    for path in workflows.workflow_files():
        workflow = workflows.load(path)
        assert not workflows.structure_errors(workflow)
        assert not workflows.widget_errors(workflow, server.object_info())
        workflows.stage_files(workflow, server.base_dir, standins=True)   # before server.start()
        server.run(workflows.to_api(workflow, object_info))

* UI format (0.4, what users open): nodes with positional ``widgets_values`` and links
  ``[id, src, src_slot, dst, dst_slot, type]``. Which widget a value belongs to follows the
  frontend's rules, from the node's /object_info entry: every INT / FLOAT / STRING / BOOLEAN /
  COMBO input (in ``input_order``, required before optional; ``forceInput`` ones are sockets) is one
  widget; an INT or COMBO with ``control_after_generate`` (or named ``seed`` / ``noise_seed``) is
  followed by its "control after generate" value; an upload combo (LoadImage) by its upload
  button's value. Widgets converted to inputs keep their value in ``widgets_values``.
* API format (what /prompt takes): ``{"id": {"class_type", "inputs"}}``, widget values by name and
  links as ``[src_id, src_slot]``, exactly what the frontend's graphToPrompt sends (the browser test
  compares the two). Notes are dropped; Reroutes are followed to their source; a PrimitiveNode's
  value is already the target widget's value.
* Model files: a workflow names real files (its loader nodes' "models" entries, the BLIP-2
  directory, LoadImage's image). ``stage_files`` puts, under those names, either placeholders
  (enough for listing, validation and the frontend) or stand-ins that the stock loaders really
  load (harness/standins.py, a tiny BLIP-2, a drawn image): the same graph, only the files differ.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .host import REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / "workflows"
UI_VERSION = 0.4
NOTE_NODES = frozenset({"Note", "MarkdownNote"})
"""Frontend-only nodes that carry text and never reach the server."""
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
MODES = {0: "always", 2: "never (muted)", 4: "bypass"}
CPU_DEMO_MARK = "CPU demo - "
"""In the name of a bundled workflow that runs on the bundled shapes-world models (no downloads,
seconds on a CPU), after its position: "01 CPU demo - VSF - shapes world SD3 - ..."."""
POSITION = re.compile(r"^(\d\d) ")
"""Every bundled workflow's name starts with its position in the Templates browser."""
VIEW_SIZE = (1860, 900)
"""The canvas of the ComfyUI frontend in a 1920x1080 browser window, about (the frontend's side
bar and menu and the browser's own bars take the rest): every workflow opens fitted into it."""
VIEW_MARGIN = 40
READABLE_SCALE = 0.7
VIEW_ANCHOR = (90, 70)
"""Where a graph too large to fit at READABLE_SCALE puts its top-left corner on screen: right of
the frontend's side bar and below its tab and tool bars (1.49)."""
"""The smallest zoom a workflow opens at: below ~0.6 the frontend draws nodes without their
widgets (LiteGraph's low-quality rendering) and titles become hard to read."""

# Real file name -> harness/standins.py stand-in. Every "models" entry of a bundled workflow must
# have one or a NO_STANDIN reason (tests/server/test_workflows.py checks), so a new workflow on a
# new model fails loudly.
STANDIN_OF: dict[str, str] = {
    "v1-5-pruned-emaonly-fp16.safetensors": "sd15",
    "sd_xl_base_1.0.safetensors": "sdxl_base",
    "sdxl_lightning_4step.safetensors": "sdxl_base",
    "sd3.5_large_turbo.safetensors": "sd35_large",
    "flux1-schnell.safetensors": "flux1_schnell",
    "flux1-dev.safetensors": "flux1_dev",
    "clip_l.safetensors": "clip_l",
    "clip_g.safetensors": "clip_g",
    "t5xxl_fp8_e4m3fn_scaled.safetensors": "t5xxl_fp8",
    "ae.safetensors": "taesd16",
}
NO_STANDIN: dict[str, str] = {
    name: f"no stand-in for {name}: the stock CLIPLoader builds {encoder} at its fixed full size (its detection "
          "reads a few keys of the file; every other dimension is fixed), so a stand-in is a multi-GB random encoder (like t5xxl_fp8) that has not been "
          "built for this workflow yet"
    for name, encoder in (
        ("qwen_3_4b.safetensors", "Qwen3-4B (36 layers, hidden 2560, ~4.0 B values)"),
        ("qwen_2.5_vl_7b_fp8_scaled.safetensors", "Qwen2.5-VL-7B with its vision tower (~8 B values)"),
        ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "the UMT5-XXL encoder (~5.7 B values)"),
    )
}
"""Real files of bundled workflows that have no stand-in (why, in words). Their workflows are
validated and loaded in the browser on every host, but not executed (the execution test skips
them with this reason). The diffusion models and VAEs of these workflows are not listed: a
workflow is skipped at its first file without a stand-in."""
NO_STANDIN.update({
    name: f"no stand-in for {name} (its workflow's text encoder has none either, so a diffusion-model or VAE "
          "stand-in alone would not let it run)"
    for name in ("z_image_turbo_bf16.safetensors", "flux-2-klein-4b.safetensors", "flux2-vae.safetensors",
                 "qwen_image_fp8_e4m3fn.safetensors", "qwen_image_vae.safetensors",
                 "Qwen-Image-Lightning-8steps-V1.1.safetensors", "wan2.2_ti2v_5B_fp16.safetensors",
                 "wan2.2_vae.safetensors", "Wan22_TI2V_5B_Turbo_lora_rank_64_fp16.safetensors")
})

SLOW_STANDINS = frozenset({"sdxl_base", "flux1_dev", "flux1_schnell", "t5xxl_fp8"})
"""Stand-ins whose workflows take minutes on a 2-core CPU: SDXL (~12 s per model evaluation at
1024 px) and Flux (~24 s) at their detectable width, and T5-XXL (~44 s per encode at full size)."""


class WorkflowError(ValueError):
    """A workflow cannot be converted (unknown node type, unsupported mode, broken link)."""


# ------------------------------------------------------------------------------ loading


def workflow_files(directory: Path = WORKFLOWS_DIR) -> list[Path]:
    """Every workflow of the folder ComfyUI serves as this pack's templates, sorted by name."""
    return sorted(Path(directory).glob("*.json"))


def is_cpu_demo(path: str | os.PathLike) -> bool:
    """Whether a bundled workflow runs on the bundled shapes-world models (its name says so)."""
    return POSITION.sub("", Path(path).stem).startswith(CPU_DEMO_MARK)


def cpu_demo_files(directory: Path = WORKFLOWS_DIR) -> list[Path]:
    """The CPU-runnable bundled workflows (what `make demo` runs), in their Templates order."""
    return [path for path in workflow_files(directory) if is_cpu_demo(path)]


def short_name(path: str | os.PathLike) -> str:
    """A workflow's name without its position and CPU mark: "VSF - shapes world SD3 - ..."."""
    return POSITION.sub("", Path(path).stem).removeprefix(CPU_DEMO_MARK)


def graph_bounds(nodes: list[dict], title_height: float = 30) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the nodes on the canvas, title bars included."""
    lefts = [n["pos"][0] for n in nodes]
    tops = [n["pos"][1] - title_height for n in nodes]
    rights = [n["pos"][0] + n["size"][0] for n in nodes]
    bottoms = [n["pos"][1] + n["size"][1] for n in nodes]
    return min(lefts), min(tops), max(rights), max(bottoms)


def fit_view(nodes: list[dict], view: tuple[int, int] = VIEW_SIZE, margin: int = VIEW_MARGIN,
             min_scale: float = READABLE_SCALE) -> dict:
    """The workflow's ``extra.ds`` (LiteGraph's canvas offset and scale: screen = (pos + offset) *
    scale): every node, centred, in ``view``, never enlarged beyond 1:1 — unless that needs a zoom
    below ``min_scale``; then the graph opens at ``min_scale`` with its top-left corner (the note
    and the first nodes, where a graph is read from) at VIEW_ANCHOR, and the rest is a pan away. ``min_scale=0`` always fits the whole graph."""
    left, top, right, bottom = graph_bounds(nodes)
    scale = min(1.0, (view[0] - 2 * margin) / (right - left), (view[1] - 2 * margin) / (bottom - top))
    scale = math.floor(scale * 1000) / 1000
    if scale < min_scale:
        return {"scale": min_scale, "offset": [round(VIEW_ANCHOR[0] / min_scale - left, 1),
                                               round(VIEW_ANCHOR[1] / min_scale - top, 1)]}
    offset = [round((view[0] / scale - (right - left)) / 2 - left, 1),
              round((view[1] / scale - (bottom - top)) / 2 - top, 1)]
    return {"scale": scale, "offset": offset}


def load(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def thumbnail(path: Path) -> Path:
    """The Templates menu's picture of a workflow: the same name with .jpg."""
    return Path(path).with_suffix(".jpg")


# ------------------------------------------------------------------------------ object_info


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of a node's ``widgets_values``: an input's value ("value"), the control after
    generate of the input before it ("control") or an upload button ("upload")."""

    name: str
    kind: str
    spec: tuple


def spec_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def spec_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_choices(spec) -> list:
    return spec[0] if isinstance(spec[0], list) else spec_options(spec).get("options", [])


def ordered_inputs(node_info: dict) -> list[tuple[str, tuple, bool]]:
    """(name, spec, optional) of every required and optional input, in the node's declared order."""
    result = []
    for section in ("required", "optional"):
        specs = node_info.get("input", {}).get(section, {})
        order = node_info.get("input_order", {}).get(section, list(specs))
        result += [(name, tuple(specs[name]), section == "optional") for name in order]
    return result


def is_widget(spec) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput")


def widget_slots(node_info: dict) -> list[WidgetSlot]:
    """The node's ``widgets_values`` layout, as the frontend builds it."""
    slots = []
    for name, spec, _ in ordered_inputs(node_info):
        if not is_widget(spec):
            continue
        slots.append(WidgetSlot(name, "value", spec))
        options = spec_options(spec)
        control = options.get("control_after_generate", spec_type(spec) == "INT" and name in SEED_NAMES)
        if control and spec_type(spec) in ("INT", "COMBO"):
            slots.append(WidgetSlot(name, "control", spec))
        if spec_type(spec) == "COMBO" and any(options.get(o) for o in UPLOAD_OPTIONS):
            slots.append(WidgetSlot(name, "upload", spec))
    return slots


def socket_inputs(node_info: dict) -> list[tuple[str, str, bool]]:
    """(name, type, optional) of the inputs that are sockets, not widgets."""
    return [(name, spec_type(spec), optional) for name, spec, optional in ordered_inputs(node_info)
            if not is_widget(spec)]


def value_errors(name: str, value, spec) -> list[str]:
    """Why ``value`` does not fit the input spec (type, range, choices); empty when it fits."""
    kind, options = spec_type(spec), spec_options(spec)
    if kind == "COMBO":
        choices = combo_choices(spec)
        return [] if value in choices else [f"{name}: {value!r} is not one of {choices[:8]}"]
    expected = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}[kind]
    if isinstance(value, bool) != (kind == "BOOLEAN") or not isinstance(value, expected):
        return [f"{name}: {value!r} is not a {kind}"]
    if kind in ("INT", "FLOAT"):
        if not math.isfinite(value):
            return [f"{name}: {value!r} is not finite"]
        low, high = options.get("min", -math.inf), options.get("max", math.inf)
        if not low <= value <= high:
            return [f"{name}: {value!r} is outside [{low}, {high}]"]
    return []


# ------------------------------------------------------------------------------ checks


def structure_errors(workflow: dict) -> list[str]:
    """What makes ``workflow`` an invalid 0.4 UI workflow: version, required fields, unique ids,
    the id counters, and links that agree with both ends' slots."""
    errors = []
    if workflow.get("version") != UI_VERSION:
        errors.append(f"version is {workflow.get('version')!r}, not {UI_VERSION}")
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra"):
        if key not in workflow:
            errors.append(f"missing top-level {key!r}")
    nodes = {}
    for node in workflow.get("nodes", []):
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "properties"):
            if key not in node:
                errors.append(f"node {node.get('id')}: missing {key!r}")
        if node.get("id") in nodes:
            errors.append(f"node id {node.get('id')} is used twice")
        nodes[node.get("id")] = node
    if nodes and max(nodes) > workflow.get("last_node_id", -1):
        errors.append(f"last_node_id {workflow.get('last_node_id')} < largest node id {max(nodes)}")
    links = workflow.get("links", [])
    if links and max(link[0] for link in links) > workflow.get("last_link_id", -1):
        errors.append(f"last_link_id {workflow.get('last_link_id')} is smaller than a link id")
    for link in links:
        if len(link) != 6:
            errors.append(f"link {link}: not [id, src, src_slot, dst, dst_slot, type]")
            continue
        link_id, src, src_slot, dst, dst_slot, _ = link
        if src not in nodes or dst not in nodes:
            errors.append(f"link {link_id}: node {src if src not in nodes else dst} does not exist")
            continue
        outputs, inputs = nodes[src].get("outputs") or [], nodes[dst].get("inputs") or []
        if src_slot >= len(outputs) or link_id not in (outputs[src_slot].get("links") or []):
            errors.append(f"link {link_id}: not listed on output {src_slot} of node {src}")
        if dst_slot >= len(inputs) or inputs[dst_slot].get("link") != link_id:
            errors.append(f"link {link_id}: not the link of input {dst_slot} of node {dst}")
    return errors


def widget_errors(workflow: dict, object_info: dict) -> list[str]:
    """Unknown node types, and widget values that do not fit their inputs (count, type, range,
    choices, control values), checked against a live server's /object_info."""
    errors = []
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in NOTE_NODES or node["type"] in (REROUTE, PRIMITIVE):
            continue
        info = object_info.get(node["type"])
        if info is None:
            errors.append(f"{where}: node type not in /object_info")
            continue
        slots, values = widget_slots(info), node.get("widgets_values") or []
        if len(values) != len(slots):
            errors.append(f"{where}: {len(values)} widget values for {len(slots)} widgets "
                          f"{[s.name + ('' if s.kind == 'value' else ':' + s.kind) for s in slots]}")
            continue
        for slot, value in zip(slots, values):
            if slot.kind == "value":
                errors += [f"{where}: {e}" for e in value_errors(slot.name, value, slot.spec)]
            elif slot.kind == "control" and value not in CONTROL_VALUES:
                errors.append(f"{where}: control_after_generate of {slot.name} is {value!r}")
    return errors


def missing_standins(workflow: dict) -> list[str]:
    """NO_STANDIN reasons of the files ``workflow`` names (why it cannot execute on stand-ins)."""
    names = {f.name for f in required_files(workflow) if f.standin is None}
    return [reason for name, reason in NO_STANDIN.items() if name in names]  # text encoders first


# ------------------------------------------------------------------------------ API format


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI workflow (what the frontend's graphToPrompt sends)."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}

    def source(link_id):
        """(node, slot) a link comes from, through any Reroutes."""
        _, src, src_slot, *_ = links[link_id]
        while nodes[src]["type"] == REROUTE:
            upstream = nodes[src]["inputs"][0].get("link")
            if upstream is None:
                raise WorkflowError(f"Reroute {src} has no input")
            _, src, src_slot, *_ = links[upstream]
        return nodes[src], src_slot

    prompt = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        if node["type"] in NOTE_NODES or node["type"] in (REROUTE, PRIMITIVE):
            continue
        if node.get("mode", 0) != 0:
            raise WorkflowError(f"node {node['id']} ({node['type']}) has mode {MODES.get(node['mode'], node['mode'])}; "
                                "bundled workflows run every node")
        info = object_info.get(node["type"])
        if info is None:
            raise WorkflowError(f"node {node['id']}: unknown node type {node['type']!r}")
        inputs = {slot.name: value for slot, value in zip(widget_slots(info), node.get("widgets_values") or [])
                  if slot.kind == "value"}
        for socket in node.get("inputs") or []:
            if socket.get("link") is None:
                continue
            src, slot = source(socket["link"])
            if src["type"] != PRIMITIVE:  # a primitive's value is already the widget's value
                inputs[socket["name"]] = [str(src["id"]), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def output_node_ids(prompt: dict, object_info: dict) -> list[str]:
    """The nodes of an API prompt that the server runs as outputs (SaveImage, PreviewImage, ...)."""
    return [node_id for node_id, node in prompt.items() if object_info[node["class_type"]].get("output_node")]


# ------------------------------------------------------------------------------ model files


@dataclass(frozen=True)
class RequiredFile:
    """A file or model directory a workflow names: ``folder`` is the models/ folder ("input" for
    images in ComfyUI's input folder); ``standin`` the harness/standins.py name, "blip2" (a tiny
    BLIP-2 directory) or "image" (a drawn picture)."""

    folder: str
    name: str
    standin: str | None


def model_entries(workflow: dict) -> list[dict]:
    """The "models" entries ({name, url, directory}) of every node, in node order."""
    return [entry for node in workflow["nodes"] for entry in (node.get("properties") or {}).get("models", [])]


def required_files(workflow: dict) -> list[RequiredFile]:
    """Every model file, BLIP-2 directory and input image the workflow names, once each."""
    found: dict[tuple[str, str], RequiredFile] = {}
    for entry in model_entries(workflow):
        found[(entry["directory"], entry["name"])] = RequiredFile(
            entry["directory"], entry["name"], STANDIN_OF.get(entry["name"]))
    for node in workflow["nodes"]:
        values = node.get("widgets_values") or []
        if node["type"] == "NegGuideBLIP2Loader" and values:
            found[("blip2", values[0])] = RequiredFile("blip2", values[0], "blip2")
        elif node["type"] == "LoadImage" and values:
            found[("input", values[0])] = RequiredFile("input", values[0], "image")
    return list(found.values())


def is_slow(workflow: dict) -> bool:
    """Whether running it on stand-ins takes minutes here (it uses a SLOW_STANDINS file)."""
    return any(f.standin in SLOW_STANDINS for f in required_files(workflow))


def draw_input_image(path: Path, size: int = 512) -> None:
    """A deterministic picture (sky, sun, a house) for LoadImage's input in tests."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (120, 170, 230))
    draw = ImageDraw.Draw(image)
    s = size / 8
    draw.rectangle([0, 5.5 * s, size, size], fill=(70, 150, 70))
    draw.ellipse([5.5 * s, 0.8 * s, 7 * s, 2.3 * s], fill=(250, 220, 80))
    draw.rectangle([1.5 * s, 3.5 * s, 4.5 * s, 6 * s], fill=(190, 60, 50))
    draw.polygon([(1.2 * s, 3.5 * s), (3 * s, 2 * s), (4.8 * s, 3.5 * s)], fill=(90, 60, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def stage_files(workflow: dict, base_dir: str | os.PathLike, *, standins: bool) -> None:
    """Put every file the workflow names into a ComfyUI base directory, under its real name:
    stand-ins the stock loaders load (``standins=True``; generated on first use) or empty
    placeholders (enough for the loaders' lists, validation and the frontend). Input images
    are always real pictures. Idempotent; a placeholder is replaced by its stand-in."""
    from . import standins as standin_files
    from .tiny_blip2 import build_tiny_blip2

    base = Path(base_dir)
    for required in required_files(workflow):
        if required.folder == "input":
            target = base / "input" / required.name
            if not target.is_file():
                draw_input_image(target)
            continue
        target = base / "models" / required.folder / required.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if required.standin == "blip2":
            if standins and not (target / "config.json").is_file():
                build_tiny_blip2(str(target))
            target.mkdir(exist_ok=True)
        elif standins:
            if required.standin is None:
                raise WorkflowError(f"no stand-in for {required.name}: add it to STANDIN_OF")
            source = standin_files.ensure(required.standin)
            if not (target.is_symlink() and target.resolve() == source.resolve()):
                target.unlink(missing_ok=True)
                target.symlink_to(source)
        elif not target.exists():
            target.touch()
