"""The bundled workflows (every workflows/*.json, including ones added later) against a real
ComfyUI server with the pack loaded, as a user has it (no test nodes):

* each file is a valid 0.4 UI workflow that follows the pack's conventions (core + NegGuide nodes
  only, a MarkdownNote, fixed seeds, "models" download entries, a .jpg thumbnail);
* every node type is in the live /object_info and every widget value fits its input (count, type,
  range, choices; the model names are listed because the server's folders hold files of those
  names);
* /api/workflow_templates lists all of them for the pack, and serves them;
* converted to the API format, each one executes on the server with stand-in files under the real
  model names (the same graph, only the files differ) and produces every output;
* every node of the pack has a help page (web/docs/<NodeId>.md) that covers each of its inputs,
  recommended settings and when to use which method.

Execution on SDXL / Flux / T5-XXL stand-ins takes 2-25 minutes per workflow on a 2-core CPU
(harness/workflows.py SLOW_STANDINS; ~2 h for all nine, times in the README): those are marked ``heavy`` and run by
``make test-workflows-heavy`` (NEGGUIDE_HEAVY_WORKFLOWS=1); ``make test`` reports them as skipped
with that reason. Workflows naming a file without a stand-in (harness/workflows.py NO_STANDIN: the
full-size text encoders of the 2026 few-step models) are validated and loaded in the browser but
skipped here with that reason.
"""

from __future__ import annotations

import copy
import json
import os
import re
import urllib.parse

import pytest

from negguide.harness import workflows as wf
from negguide.harness.host import REPO_ROOT
from negguide.harness.server import ComfyServer

HEAVY_ENV = "NEGGUIDE_HEAVY_WORKFLOWS"
PACK = "negguide"
WORKFLOWS = wf.workflow_files()
METHOD_PREFIXES = ("VSF - ", "NegToMe - ", "DNG - ", "auto-DNP - ")
RENAME_HINT = "consider renaming it to 'example_workflows'"


def _execution_params():
    params = []
    for path in WORKFLOWS:
        missing = wf.missing_standins(wf.load(path))
        if missing:
            params.append(pytest.param(path, id=path.stem, marks=pytest.mark.skip(reason=missing[0])))
        elif wf.is_slow(wf.load(path)):
            params.append(pytest.param(path, id=path.stem, marks=[pytest.mark.heavy, pytest.mark.skipif(
                os.environ.get(HEAVY_ENV) != "1",
                reason="heavy workflow (SDXL/Flux/T5-XXL stand-ins, minutes on CPU): make test-workflows-heavy")]))
        else:
            params.append(pytest.param(path, id=path.stem))
    return params


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module; every file the workflows name exists as a placeholder until a
    test puts its stand-in there (ComfyUI re-lists a folder when it changes)."""
    base = tmp_path_factory.mktemp("workflows_server")
    for path in WORKFLOWS:
        wf.stage_files(wf.load(path), base, standins=False)
    # DEBUG: the log then shows the one line ComfyUI writes about the pack's workflows/ folder.
    with ComfyServer(base_dir=base, extra_args=["--disable-api-nodes", "--verbose", "DEBUG"]) as running:
        yield running


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def test_every_method_has_bundled_workflows_in_templates_order():
    """Names: "NN [CPU demo - ]<method> - <model> - <what it shows>"; NN is the position (01, 02,
    ... without gaps) and the CPU-runnable shapes-world ones come first."""
    names = [path.stem for path in WORKFLOWS]
    positions = [wf.POSITION.match(name) for name in names]
    assert all(positions), f"every name starts with its two-digit position: {names}"
    assert [int(m.group(1)) for m in positions] == list(range(1, len(names) + 1)), names
    cpu = [wf.is_cpu_demo(path) for path in WORKFLOWS]
    assert any(cpu) and cpu == sorted(cpu, reverse=True), f"the CPU demos come first: {names}"
    for prefix in METHOD_PREFIXES:
        for on_cpu in (True, False):
            assert any(wf.short_name(p).startswith(prefix) and wf.is_cpu_demo(p) == on_cpu for p in WORKFLOWS), \
                f"no {'CPU demo' if on_cpu else 'real-model'} workflow for {prefix}: {names}"
    unexpected = [wf.short_name(p) for p in WORKFLOWS if not wf.short_name(p).startswith(METHOD_PREFIXES)]
    assert not unexpected, f"workflow names must name a method after the position: {unexpected}"
    for path in WORKFLOWS:
        parts = wf.short_name(path).split(" - ")
        assert len(parts) == 3 and all(parts), f"{path.stem}: not '<method> - <model> - <what it shows>'"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_valid_for_the_live_server(path, object_info):
    workflow = wf.load(path)
    assert wf.structure_errors(workflow) == []
    assert wf.widget_errors(workflow, object_info) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_follows_the_conventions(path, object_info):
    workflow = wf.load(path)
    assert wf.thumbnail(path).is_file(), f"no thumbnail {wf.thumbnail(path).name}"
    notes = [n for n in workflow["nodes"] if n["type"] == "MarkdownNote"]
    assert notes and all(len(n["widgets_values"][0]) > 200 for n in notes), "a MarkdownNote explains the settings"
    assert set(workflow["extra"]) <= {"ds", "frontendVersion"}, f"leftovers in extra: {sorted(workflow['extra'])}"
    for node in workflow["nodes"]:
        if node["type"] in wf.NOTE_NODES:
            continue
        info = object_info[node["type"]]
        ours = info["python_module"].startswith(f"custom_nodes.{PACK}")
        core = not info["python_module"].startswith("custom_nodes.")
        assert ours or core, f"{node['type']} is from another pack ({info['python_module']})"
        assert not info["category"].startswith("_for_testing"), f"{node['type']} is a test-only node"
        properties = node["properties"]
        assert properties.get("cnr_id") == (PACK if ours else "comfy-core"), node["type"]
        for slot, value in zip(wf.widget_slots(info), node["widgets_values"]):
            if slot.kind == "control":
                assert value == "fixed", f"{node['type']}.{slot.name}: seed control is {value!r}"
    entries = wf.model_entries(workflow)
    for entry in entries:
        assert set(entry) == {"name", "url", "directory"}, entry
        assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith("/" + entry["name"]), entry
        assert entry["name"] == os.path.basename(entry["name"]), "plain file names only"
    named = {v for n in workflow["nodes"] for v in n.get("widgets_values") or [] if isinstance(v, str)}
    assert {e["name"] for e in entries} <= named, "every download entry is a file the workflow uses"
    unmapped = [f.name for f in wf.required_files(workflow) if f.standin is None and f.name not in wf.NO_STANDIN]
    assert not unmapped, f"no stand-in for {unmapped}: add them to harness/workflows.py STANDIN_OF (or NO_STANDIN)"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_readable_in_a_1920x1080_window(path):
    """extra.ds (LiteGraph's offset and scale) opens every workflow at a readable zoom in the canvas
    of a 1920x1080 window: the whole graph where it fits at that zoom, else its top-left corner (the
    note and the first nodes) right of the side bar; output nodes say what they show."""
    workflow = wf.load(path)
    ds = workflow["extra"].get("ds")
    assert ds and set(ds) == {"scale", "offset"}, f"no view in extra.ds: {workflow['extra']}"
    scale, (ox, oy) = ds["scale"], ds["offset"]
    assert wf.READABLE_SCALE <= scale <= 1.0, f"zoom {scale}"
    left, top, right, bottom = wf.graph_bounds(workflow["nodes"])
    width, height = wf.VIEW_SIZE
    margin = wf.VIEW_MARGIN
    fits = (right - left) * scale <= width - 2 * margin and (bottom - top) * scale <= height - 2 * margin
    if fits:
        assert 0 <= (left + ox) * scale and (right + ox) * scale <= width, (left, right, ds)
        assert 0 <= (top + oy) * scale and (bottom + oy) * scale <= height, (top, bottom, ds)
    else:
        assert scale == wf.READABLE_SCALE
        anchor_x, anchor_y = wf.VIEW_ANCHOR
        assert abs((left + ox) * scale - anchor_x) < 1 and abs((top + oy) * scale - anchor_y) < 1, ds
        note = next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")
        assert (note["pos"][0] + ox) * scale < width and (note["pos"][1] + oy) * scale < height, "the note is off screen"
    outputs = [n for n in workflow["nodes"] if n["type"] in ("SaveImage", "PreviewImage")]
    titles = [n.get("title") for n in outputs]
    assert all(titles) and len(set(titles)) == len(titles), f"output nodes need distinct titles: {titles}"


def test_the_workflows_folder_costs_one_debug_line(server):
    """The project keeps workflows/ (ComfyUI prefers example_workflows/): the templates are listed
    and served all the same (test_templates_endpoint_...), and the only trace is one DEBUG line."""
    lines = [line for line in server.log().splitlines() if "'workflows'" in line or "example_workflows" in line]
    assert len(lines) == 1 and RENAME_HINT in lines[0] and PACK in lines[0], lines


def test_vsf_with_an_empty_negative_reports_it_as_node_text(server, object_info):
    """The no-op is UI output of the node (what the frontend extension shows on it), not only a log line."""
    path = next(p for p in WORKFLOWS if wf.is_cpu_demo(p) and wf.short_name(p).startswith("VSF - "))
    workflow = wf.load(path)
    vsf = next(n for n in workflow["nodes"] if n["type"] == "NegGuideVSF")
    vsf["widgets_values"][0] = ""  # negative
    history = server.run(wf.to_api(workflow, object_info), timeout=600)
    text = history["outputs"].get(str(vsf["id"]), {}).get("text")
    assert text and "VSF is off: the negative prompt is empty" in text[0], history["outputs"].keys()


def test_the_checks_catch_broken_workflows(object_info):
    """Each kind of mistake the checks exist for is reported on a real bundled workflow."""
    path = next(p for p in WORKFLOWS if any(n["type"] == "KSampler" for n in wf.load(p)["nodes"]))
    original = wf.load(path)
    sampler_index = next(i for i, n in enumerate(original["nodes"]) if n["type"] == "KSampler")

    def broken(change):
        workflow = copy.deepcopy(original)
        change(workflow, workflow["nodes"][sampler_index])
        return workflow

    def errors(change):
        workflow = broken(change)
        return wf.structure_errors(workflow) + wf.widget_errors(workflow, object_info)

    assert errors(lambda w, n: None) == []
    assert any("widget values" in e for e in errors(lambda w, n: n["widgets_values"].pop(1)))  # no seed control
    assert any("outside" in e for e in errors(lambda w, n: n["widgets_values"].__setitem__(2, -1)))  # steps
    assert any("not one of" in e for e in errors(lambda w, n: n["widgets_values"].__setitem__(4, "nope")))
    assert any("not a FLOAT" in e for e in errors(lambda w, n: n["widgets_values"].__setitem__(3, "7")))
    assert any("not in /object_info" in e for e in errors(lambda w, n: n.__setitem__("type", "NoSuchNode")))
    assert any("not the link of input" in e for e in errors(lambda w, n: w["links"][0].__setitem__(4, 9)))
    assert any("version" in e for e in errors(lambda w, n: w.__setitem__("version", 0.3)))


def test_templates_endpoint_lists_and_serves_every_workflow(server):
    listed = server.get("/api/workflow_templates")
    assert sorted(listed.get(PACK, [])) == sorted(path.stem for path in WORKFLOWS)
    for path in WORKFLOWS:
        served = server.get(f"/api/workflow_templates/{PACK}/{urllib.parse.quote(path.name)}")
        assert served == json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", _execution_params())
def test_workflow_executes_on_standins(path, server, object_info):
    workflow = wf.load(path)
    wf.stage_files(workflow, server.base_dir, standins=True)
    prompt = wf.to_api(workflow, object_info)
    history = server.run(prompt, timeout=3600)
    outputs = history["outputs"]
    expected = wf.output_node_ids(prompt, object_info)
    assert expected and sorted(outputs) == sorted(expected), f"outputs {sorted(outputs)}, expected {expected}"
    images = server.output_images(history)
    assert images and all(p.is_file() and p.stat().st_size > 0 for p in images)
    assert server.import_errors() == []


# ------------------------------------------------------------------------------ help pages


def test_every_node_has_a_complete_help_page(object_info):
    docs = REPO_ROOT / "web" / "docs"
    ours = [name for name, info in object_info.items()
            if info["python_module"].startswith(f"custom_nodes.{PACK}") and not info["category"].startswith("_for_testing")]
    assert len(ours) >= 10, ours
    problems = []
    for name in ours:
        page = docs / f"{name}.md"
        if not page.is_file():
            problems.append(f"{name}: no web/docs/{name}.md")
            continue
        text = page.read_text(encoding="utf-8")
        for section in ("## Recommended settings", "## When to use which NegGuide method"):
            if section not in text:
                problems.append(f"{name}: no '{section}' section")
        for input_name, _, _ in wf.ordered_inputs(object_info[name]):
            if not re.search(rf"\b{re.escape(input_name)}\b", text):
                problems.append(f"{name}: input {input_name!r} is not described")
    assert problems == []
