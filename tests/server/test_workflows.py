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
with that reason.
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
SHAPES_PREFIX = "Shapes world - "


def _execution_params():
    params = []
    for path in WORKFLOWS:
        if wf.is_slow(wf.load(path)):
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
    with ComfyServer(base_dir=base, extra_args=["--disable-api-nodes"]) as running:
        yield running


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def test_every_method_has_bundled_workflows():
    names = [path.stem for path in WORKFLOWS]
    for prefix in METHOD_PREFIXES:
        assert any(name.startswith(prefix) for name in names), f"no workflow named {prefix}*: {names}"
    unexpected = [n for n in names if not n.startswith(METHOD_PREFIXES + (SHAPES_PREFIX,))]
    assert not unexpected, f"workflow names must start with a method or {SHAPES_PREFIX!r}: {unexpected}"


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
    unmapped = [f.name for f in wf.required_files(workflow) if f.standin is None]
    assert not unmapped, f"no stand-in for {unmapped}: add them to harness/workflows.py STANDIN_OF"


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
