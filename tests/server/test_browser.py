"""The ComfyUI frontend in a real browser: headless Chromium (Debian's chromium + chromium-driver,
installed by scripts/setup_host.sh; selenium is pointed at /usr/bin/chromedriver, so nothing is
downloaded) opens the frontend that the test server serves.

* Every bundled workflow loads as the Templates menu loads it (fetched from
  /api/workflow_templates/negguide/, then app.loadGraphData): no missing node types, no missing
  models (the server's folders hold files of the real names), every widget of every node shows
  exactly the file's value (none shifted, combos among their choices, numbers in range), and the
  frontend's own API conversion (graphToPrompt) equals harness/workflows.py ``to_api``.
* The first "Shapes world - *" workflow is queued with the Run button and its image appears on
  its SaveImage node (loaded in the page from /view). A screenshot is kept: its path is printed and
  it lies in out/browser/ (git-ignored).

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
SHAPES_PREFIX = "Shapes world - "
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

IMAGE_SHOWN_JS = """
// Node ids are ints in some frontends, strings in others: match the id's spelling, not its type.
const node = app.graph.nodes.find(n => String(n.id) === String(arguments[0]));
const image = node && node.imgs && node.imgs[0];
return image && image.complete && image.naturalWidth > 0 ? image.src : null;
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


def test_shapes_world_workflow_runs_from_the_browser(browser, server, object_info):
    from selenium.webdriver.common.by import By

    shapes = [p for p in WORKFLOWS if p.name.startswith(SHAPES_PREFIX)]
    assert shapes, f"no workflows/{SHAPES_PREFIX}*.json to queue"
    path = shapes[0]
    workflow = wf.load(path)
    load_in_browser(browser, path)
    prompt = wf.to_api(workflow, object_info)
    savers = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert savers, f"{path.name} has no SaveImage node"
    before = set(server.get("/history") or {})

    browser.find_element(By.CSS_SELECTOR, '[data-testid="queue-button"]').click()
    prompt_id = wait_for(lambda: next(iter(set(server.get("/history") or {}) - before), None),
                         RUN_TIMEOUT, "the run queued by the browser to finish")
    history = server.wait(prompt_id, timeout=RUN_TIMEOUT)
    assert server.output_images(history), "the run saved no image"
    sources = [wait_for(lambda node_id=node_id: browser.execute_script(IMAGE_SHOWN_JS, node_id), PAGE_TIMEOUT,
                        f"the image of node {node_id} to appear") for node_id in savers]
    assert all("/view?" in src for src in sources), sources

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / f"{path.stem}.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot: {screenshot}")
