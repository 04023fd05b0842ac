"""The ComfyUI frontend in a real browser: headless Chromium (Debian's chromium + chromium-driver,
installed by scripts/setup_host.sh; selenium is pointed at /usr/bin/chromedriver, so nothing is
downloaded) opens the frontend that the test server serves.

* Every bundled workflow loads as the Templates menu loads it (fetched from
  /api/workflow_templates/negguide/, then app.loadGraphData): no missing node types, no missing
  models (the server's folders hold files of the real names), every widget of every node shows
  exactly the file's value (none shifted, combos among their choices, numbers in range), and the
  frontend's own API conversion (graphToPrompt) equals harness/workflows.py ``to_api``.
* The first CPU demo workflow ("01 CPU demo - *") is queued with the Run button and its image
  appears on its SaveImage node (loaded in the page from /view). A screenshot is kept: its path is
  printed and it lies in out/browser/ (git-ignored).
* A no-op says so on the node (web/js/negguide_node_text.js): VSF with an empty negative (UI text
  of the node) and NegToMe batch diversity with a batch of 1 (a message sent while sampling); the
  text is both the node's text widget value and visible in the page.

Node ids: the file (and some frontends) give LiteGraph node ids as ints, other frontends as strings;
ids are compared by their spelling (``node_key``), so the test holds for both.

Another frontend (not used in CI): ``NEGGUIDE_FRONTEND_ROOT=/path/to/comfyui_frontend_package/static``
starts the test server with ``--front-end-root`` that folder (e.g. the ``static`` folder of an
unzipped comfyui-frontend-package wheel) instead of the frontend installed in the host's venv.
"""

from __future__ import annotations

import os
import time

import pytest

from negguide.harness import workflows as wf
from negguide.harness.host import REPO_ROOT
from negguide.harness.server import ComfyServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_DIR = REPO_ROOT / "out" / "browser"
PAGE_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0
WORKFLOWS = wf.workflow_files()
FRONTEND_ROOT_ENV = "NEGGUIDE_FRONTEND_ROOT"

# Runs in the page: load one bundled workflow like the Templates menu does and report what the
# frontend made of it. Missing nodes / models are what loadGraphData would show in its dialogs.
LOAD_WORKFLOW_JS = """
const [name, done] = [arguments[0], arguments[arguments.length - 1]];
const missing = {nodes: [], models: []};
const dialogs = [app.showMissingNodesError, app.showMissingModelsError];
app.showMissingNodesError = (types) => missing.nodes.push(...types.map(t => typeof t === 'string' ? t : t.type));
app.showMissingModelsError = (models) => missing.models.push(...models.map(m => m.directory + '/' + m.name));
(async () => {
  try {
    const response = await fetch('api/workflow_templates/negguide/' + encodeURIComponent(name) + '.json');
    await app.loadGraphData(await response.json(), true, true, name);
    const nodes = app.graph.nodes.map(node => ({
      id: node.id, type: node.type,
      widgets: (node.widgets || []).map(w => ({
        name: w.name, value: w.value, serialize: w.serialize !== false,
        choices: Array.isArray(w.options?.values) ? w.options.values : null,
        min: w.options?.min ?? null, max: w.options?.max ?? null,
      })),
    }));
    const prompt = await app.graphToPrompt();
    done({missing, nodes, output: prompt.output});
  } catch (error) {
    done({error: String(error && error.stack || error)});
  } finally {
    [app.showMissingNodesError, app.showMissingModelsError] = dialogs;
  }
})();
"""

APP_READY_JS = """
return Boolean(window.app && window.app.graph && window.LiteGraph
               && 'KSampler' in window.LiteGraph.registered_node_types
               && 'NegGuideVSF' in window.LiteGraph.registered_node_types);
"""

SKIP_FIRST_VISIT_JS = """
const done = arguments[arguments.length - 1];
fetch('/api/settings/Comfy.TutorialCompleted', {method: 'POST', body: 'true'}).then(r => done(r.status));
"""

SET_VIEW_JS = """
// The frontend loads an output image when its node is on screen: show the whole graph first.
const [scale, offset] = arguments;
app.canvas.ds.scale = scale;
app.canvas.ds.offset = offset;
app.canvas.setDirty(true, true);
"""


IMAGE_SHOWN_JS = """
// Node ids are ints in some frontends, strings in others: match the id's spelling, not its type.
const node = app.graph.nodes.find(n => String(n.id) === String(arguments[0]));
const image = node && node.imgs && node.imgs[0];
return image && image.complete && image.naturalWidth > 0 ? image.src : null;
"""


SET_WIDGET_JS = """
const [nodeId, name, value] = arguments;
const node = app.graph.nodes.find(n => String(n.id) === String(nodeId));
const widget = node.widgets.find(w => w.name === name);
widget.value = value;
widget.callback?.(value);
return widget.value;
"""

# The text a NegGuide node shows: its text widget's value, and whether the page shows that text
# (a visible element holding it: core's text preview component, or a textarea on older frontends).
NODE_TEXT_JS = """
const [nodeId, needle] = arguments;
const node = app.graph.nodes.find(n => String(n.id) === String(nodeId));
const widget = node && (node.widgets || []).find(w => w.name === 'preview_text' || w.name === 'negguide_text');
const value = widget ? String(widget.value) : null;
if (!value || !value.includes(needle)) return {value, visible: false};
app.canvas.ds.scale = 1;  // at low zoom frontends draw nodes without their widgets
app.canvas.centerOnNode(node);
app.canvas.setDirty(true, true);
const visible = [...document.querySelectorAll('textarea, [contenteditable], div, p, span, pre')].some(el => {
  const text = el.tagName === 'TEXTAREA' ? el.value : el.innerText;
  if (!text || !text.includes(needle) || el.closest('.comfy-modal, .p-dialog')) return false;
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0
         && r.top < window.innerHeight && r.left < window.innerWidth && getComputedStyle(el).visibility !== 'hidden';
});
return {value, visible};
"""


def wait_for(condition, timeout: float, what: str, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Test nodes on (harmless for the bundled workflows, which are checked against the user's
    node list in test_workflows.py); every file the workflows name exists as a placeholder."""
    base = tmp_path_factory.mktemp("browser_server")
    for path in WORKFLOWS:
        wf.stage_files(wf.load(path), base, standins=False)
    extra_args = ["--disable-api-nodes"]
    frontend_root = os.environ.get(FRONTEND_ROOT_ENV)
    if frontend_root:
        assert os.path.isfile(os.path.join(frontend_root, "index.html")), \
            f"${FRONTEND_ROOT_ENV}={frontend_root} holds no index.html"
        extra_args += ["--front-end-root", frontend_root]
    with ComfyServer(test_nodes=True, base_dir=base, extra_args=extra_args) as running:
        yield running


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_script_timeout(PAGE_TIMEOUT)
        # A new user's first visit opens the Templates dialog over the graph; a returning user's
        # does not. Record the first visit as done (a user setting on the server), then open.
        driver.get(server.url + "/api/system_stats")
        driver.execute_async_script(SKIP_FIRST_VISIT_JS)
        driver.get(server.url)
        wait_for(lambda: driver.execute_script(APP_READY_JS), PAGE_TIMEOUT, "the ComfyUI frontend to start")
        yield driver
    finally:
        driver.quit()


def load_in_browser(driver, path) -> dict:
    result = driver.execute_async_script(LOAD_WORKFLOW_JS, path.stem)
    assert "error" not in result, result.get("error")
    return result


def node_key(node_id) -> str:
    """One spelling of a LiteGraph node id. The file and some frontends give ints, others give
    the same id as a string ("7"); both name node 7, so compare ids through this."""
    if isinstance(node_id, bool) or not isinstance(node_id, (int, str)):
        raise TypeError(f"unexpected node id {node_id!r} ({type(node_id).__name__})")
    return str(node_id)


def frontend_widget_errors(workflow: dict, nodes: list[dict]) -> list[str]:
    """Where the frontend's widgets differ from the file's widgets_values, or hold a value their
    own choices / range reject."""
    errors = []
    shown = {node_key(node["id"]): node for node in nodes}
    assert len(shown) == len(nodes), f"the frontend shows duplicate node ids: {[n['id'] for n in nodes]}"
    expected = {node_key(node["id"]) for node in workflow["nodes"]}
    assert set(shown) == expected, f"the frontend shows nodes {sorted(shown)}, the file has {sorted(expected)}"
    for node in workflow["nodes"]:
        widgets = shown[node_key(node["id"])]["widgets"]
        # widgets_values holds the widgets the frontend saves; one it never saves (serialize false,
        # e.g. a preview that a newer frontend adds) has no value in the file to compare with.
        values = [w["value"] for w in widgets if w["serialize"]]
        if values != node.get("widgets_values", []):
            shown_widgets = [(w["name"], w["value"]) for w in widgets]
            errors.append(f"node {node['id']} ({node['type']}): widgets show {values} (of {shown_widgets}), "
                          f"file has {node.get('widgets_values')}")
        for w in widgets:
            if w["choices"] is not None and w["value"] not in w["choices"]:
                errors.append(f"node {node['id']}.{w['name']}: {w['value']!r} not among its choices")
            if isinstance(w["value"], (int, float)) and not isinstance(w["value"], bool) and (
                    (w["min"] is not None and w["value"] < w["min"]) or (w["max"] is not None and w["value"] > w["max"])):
                errors.append(f"node {node['id']}.{w['name']}: {w['value']} outside [{w['min']}, {w['max']}]")
    return errors


def api_inputs(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_frontend_loads_workflow_without_errors(path, browser, object_info):
    workflow = wf.load(path)
    result = load_in_browser(browser, path)
    assert result["missing"] == {"nodes": [], "models": []}
    assert frontend_widget_errors(workflow, result["nodes"]) == []
    assert api_inputs(result["output"]) == wf.to_api(workflow, object_info)


def run_from_browser(browser, server) -> dict:
    """Press the frontend's Run button and wait for that run to finish; its history entry."""
    from selenium.webdriver.common.by import By

    before = set(server.get("/history") or {})
    browser.find_element(By.CSS_SELECTOR, '[data-testid="queue-button"]').click()
    prompt_id = wait_for(lambda: next(iter(set(server.get("/history") or {}) - before), None),
                         RUN_TIMEOUT, "the run queued by the browser to finish")
    return server.wait(prompt_id, timeout=RUN_TIMEOUT)


def test_shapes_world_workflow_runs_from_the_browser(browser, server, object_info):
    shapes = wf.cpu_demo_files()
    assert shapes, f"no workflows/NN {wf.CPU_DEMO_MARK}*.json to queue"
    path = shapes[0]
    workflow = wf.load(path)
    load_in_browser(browser, path)
    prompt = wf.to_api(workflow, object_info)
    savers = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert savers, f"{path.name} has no SaveImage node"

    history = run_from_browser(browser, server)
    assert server.output_images(history), "the run saved no image"
    whole = wf.fit_view(workflow["nodes"], min_scale=0)  # the workflow opens readable, not whole
    browser.execute_script(SET_VIEW_JS, whole["scale"], whole["offset"])
    sources = [wait_for(lambda node_id=node_id: browser.execute_script(IMAGE_SHOWN_JS, node_id), PAGE_TIMEOUT,
                        f"the image of node {node_id} to appear") for node_id in savers]
    assert all("/view?" in src for src in sources), sources

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / f"{path.stem}.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot: {screenshot}")


def run_in_browser_and_read_node_text(browser, server, path, changes, node_type, needle):
    """Load ``path`` as the Templates menu does, set widgets ({node type: {widget: value}}), press
    Run, and wait until the ``node_type`` node shows ``needle``; returns the text, keeps a screenshot."""
    workflow = wf.load(path)
    load_in_browser(browser, path)
    ids = {node["type"]: node["id"] for node in workflow["nodes"]}
    for node, values in changes.items():
        for name, value in values.items():
            assert browser.execute_script(SET_WIDGET_JS, ids[node], name, value) == value
    history = run_from_browser(browser, server)
    if needle is None:  # the text is what the node returned (a caption): find that on the node
        needle = history["outputs"][str(ids[node_type])]["text"][0]
    last = {}

    def shown():
        last.update(browser.execute_script(NODE_TEXT_JS, ids[node_type], needle))
        return last["visible"]

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / f"{node_type} node text.png"
    try:
        wait_for(shown, PAGE_TIMEOUT, f"{needle!r} to show on the {node_type} node")
    except AssertionError as error:
        browser.save_screenshot(str(screenshot))
        raise AssertionError(f"{error}; the node's text widget holds {last.get('value')!r} (screenshot {screenshot})")
    assert browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot: {screenshot}")
    return last["value"]


def test_vsf_with_an_empty_negative_says_so_on_the_node(browser, server):
    path = next(p for p in wf.cpu_demo_files() if wf.short_name(p).startswith("VSF - "))
    text = run_in_browser_and_read_node_text(browser, server, path, {"NegGuideVSF": {"negative": ""}},
                                             "NegGuideVSF", "VSF is off")
    assert "the negative prompt is empty" in text


def test_negtome_diversity_with_a_batch_of_one_says_so_on_the_node(browser, server):
    """Only sampling sees the batch size: the text comes in a message the server sends then."""
    path = next(p for p in wf.cpu_demo_files() if wf.short_name(p).startswith("NegToMe - ")
                and "batch diversity" in p.stem)
    text = run_in_browser_and_read_node_text(browser, server, path,
                                             {"EmptySD3LatentImage": {"batch_size": 1}},
                                             "NegGuideNegToMe", "NegToMe does nothing here")
    assert "batch of 2 or more" in text


def test_a_caption_shows_on_the_caption_node(browser, server):
    """Captions are UI text of a NegGuide node (NegGuideShapesWorldCaption here; NegGuideBLIP2Caption
    returns its caption the same way and the same extension shows it)."""
    path = next(p for p in wf.cpu_demo_files() if wf.short_name(p).startswith("auto-DNP - "))
    assert run_in_browser_and_read_node_text(browser, server, path, {}, "NegGuideShapesWorldCaption", None)


ADD_BLIP2_GRAPH_JS = """
app.graph.clear();
const loader = LiteGraph.createNode('NegGuideBLIP2Loader');
const image = LiteGraph.createNode('EmptyImage');
const caption = LiteGraph.createNode('NegGuideBLIP2Caption');
for (const node of [loader, image, caption]) app.graph.add(node);
loader.connect(0, caption, 0);
image.connect(0, caption, 1);
return loader.widgets.find(w => w.name === 'model_name').value ?? null;
"""

SHOW_ERROR_DETAILS_JS = """
const details = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'View details');
if (details) details.click();
return document.body.innerText;
"""


def test_blip2_loader_without_models_says_where_to_put_one(browser, server, tmp_path):
    """A fresh loader on a ComfyUI without BLIP-2: its combo names the problem (not "undefined"),
    and Run shows the message that says where the model goes."""
    from selenium.webdriver.common.by import By

    with ComfyServer(base_dir=tmp_path / "bare", extra_args=["--disable-api-nodes"]) as bare:
        try:
            browser.get(bare.url + "/api/system_stats")
            browser.execute_async_script(SKIP_FIRST_VISIT_JS)
            browser.get(bare.url)
            wait_for(lambda: browser.execute_script(APP_READY_JS), PAGE_TIMEOUT, "the ComfyUI frontend to start")
            shown = browser.execute_script(ADD_BLIP2_GRAPH_JS)
            assert shown and "models/blip2/<folder>" in shown, f"the loader's combo shows {shown!r}"
            browser.find_element(By.CSS_SELECTOR, '[data-testid="queue-button"]').click()
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            screenshot = SCREENSHOT_DIR / "NegGuideBLIP2Loader without models.png"
            try:
                # The frontend reports the failed node (1.49: a toast whose "View details" opens the
                # message; older frontends: a dialog with the message).
                text = wait_for(lambda: (lambda t: t if "Put each BLIP-2 model" in t else None)(
                    browser.execute_script(SHOW_ERROR_DETAILS_JS)), PAGE_TIMEOUT, "the loader's error message")
            finally:
                browser.save_screenshot(str(screenshot))
            assert "blip2" in text
        finally:
            browser.get(server.url)
            wait_for(lambda: browser.execute_script(APP_READY_JS), PAGE_TIMEOUT, "the ComfyUI frontend to start")


