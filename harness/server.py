"""Drive a real ComfyUI ``main.py`` (the host's, see host.comfyui_root()) over HTTP on 127.0.0.1.

    with ComfyServer(test_nodes=True, models={"vae": [taesd_file]}) as server:
        prompt_id = server.queue(graph)           # API-format graph {"id": {"class_type", "inputs"}}
        history = server.wait(prompt_id, timeout=120)
        images = server.output_images(history)     # paths of the saved files
        assert not pack_import_errors(server.log())

Each server gets its own temporary base directory (custom_nodes/negguide linked to this
checkout, models/<folder>/ with the requested files linked in, input/, output/, user/ with the
SQLite database), so nothing touches the host's own folders. The process is started with the
Python running this code, bound to 127.0.0.1 only, and always stopped by its PID on exit.
``quick_test()`` runs ``main.py --quick-test-for-ci`` (import everything, then exit).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

from .host import PACK_MODULE, REPO_ROOT, comfyui_root

HOST = "127.0.0.1"
TEST_PACK = "negguide_test_nodes"
"""Folder name of the test-only pack (harness/test_pack/) in a test server's custom_nodes/."""
TEST_PACK_SOURCE = REPO_ROOT / "harness" / "test_pack"
BASE_ARGS = ("--cpu", "--use-pytorch-cross-attention")
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae", "vae_approx", "loras")
STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
PORT_ATTEMPTS = 3
HTTP_TIMEOUT = 30.0

# urllib would otherwise honour *_proxy variables, even for 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """The server did not start, refused a graph, or a graph failed; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def prepare_base_dir(base: Path, models: Mapping[str, Iterable[str | os.PathLike]] | None = None,
                     test_nodes: bool = False) -> Path:
    """Lay out a ComfyUI ``--base-directory``: the pack linked as custom_nodes/negguide (and, with
    ``test_nodes``, the test-only pack as custom_nodes/negguide_test_nodes; without, it is
    removed), empty model folders, and each file of ``models[folder]`` linked as
    models/<folder>/<its name>."""
    base = Path(base)
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_MODULE
    if not link.is_symlink():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    test_link = base / "custom_nodes" / TEST_PACK
    if test_nodes and not test_link.is_symlink():
        test_link.symlink_to(TEST_PACK_SOURCE, target_is_directory=True)
    elif not test_nodes and test_link.is_symlink():
        test_link.unlink()
    for sub in ("input", "output", "user", "temp"):
        (base / sub).mkdir(exist_ok=True)
    for folder in MODEL_FOLDERS:
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
    for folder, files in (models or {}).items():
        target_dir = base / "models" / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        for file in files:
            file = Path(file).resolve()
            if not file.is_file():
                raise FileNotFoundError(file)
            dest = target_dir / file.name
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            dest.symlink_to(file)
    return base


def server_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The child's environment: ours with ``env`` applied on top (a value of None removes the
    variable)."""
    result = dict(os.environ)
    result["PYTHONUNBUFFERED"] = "1"  # the log file stays current
    for key, value in (env or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def main_command(base: Path, *extra_args: str) -> list[str]:
    root = comfyui_root()
    return [
        sys.executable, str(root / "main.py"), *BASE_ARGS,
        "--base-directory", str(base),
        "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}",
        *extra_args,
    ]


# What ComfyUI's nodes.py logs when a custom node pack fails (load_custom_node and
# init_external_custom_nodes); each names the pack by its folder, custom_nodes/negguide (or the
# test-only pack, custom_nodes/negguide_test_nodes).
_PACK_DIR = r"[/\\]custom_nodes[/\\](?:" + PACK_MODULE + "|" + TEST_PACK + r")(?![\w.-])"
_FAILURE_PATTERNS = tuple(re.compile(p) for p in (
    r"\(IMPORT FAILED\): .*" + _PACK_DIR,
    r"Cannot import .*" + _PACK_DIR + r".* module for custom nodes",
    r"Error while calling comfy_entrypoint in .*" + _PACK_DIR,
    r"comfy_entrypoint in .*" + _PACK_DIR + r".* (is not callable|did not return)",
    r"Skip .*" + _PACK_DIR + r" module for custom nodes",
))


def _is_our_file(path: str) -> bool:
    """A traceback frame's file belongs to this pack: under custom_nodes/negguide/, or under this
    checkout but outside its hidden folders (.host/ holds the ComfyUI hosts, .venv-<host>/ their venvs)."""
    if re.search(_PACK_DIR + r"[/\\]", path):
        return True
    if not os.path.isabs(path):  # "<frozen importlib._bootstrap>", "<string>"
        return False
    try:
        rel = Path(path).resolve().relative_to(REPO_ROOT)
    except (ValueError, OSError):
        return False
    return bool(rel.parts) and not rel.parts[0].startswith(".")


def pack_import_errors(log: str) -> list[str]:
    """Lines (and whole tracebacks) of a ComfyUI log that show this pack failing to load or
    raising: the "(IMPORT FAILED)" import-times line naming it, "Cannot import ... negguide
    module", entry-point errors, and any traceback with a frame in this pack's files.
    Empty when the pack is clean."""
    problems: list[str] = []
    lines = log.splitlines()
    for line in lines:
        if any(p.search(line) for p in _FAILURE_PATTERNS):
            problems.append(line.strip())
    frame = re.compile(r'^\s*File "([^"]+)", line \d+')
    block: list[str] = []
    for line in lines + [""]:
        if line.startswith("Traceback (most recent call last)"):
            block = [line]
        elif block:
            block.append(line)
            # A traceback ends at its first non-indented line (the exception line).
            if line and not line.startswith((" ", "\t")):
                files = [m.group(1) for m in map(frame.match, block) if m]
                if any(_is_our_file(f) for f in files):
                    problems.append("\n".join(block))
                block = []
    return problems


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the process that started us dies
    (even by SIGKILL), so no server outlives a killed test run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(command: list[str], log_file, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=comfyui_root(), stdin=subprocess.DEVNULL, stdout=log_file,
        stderr=subprocess.STDOUT, env=env, start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (a reaped child's PID does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """Terminate, then kill, exactly this process (by its PID); waits for it to be reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.kill()
    proc.wait(timeout=timeout)


def quick_test(test_nodes: bool = False, env: Mapping[str, str | None] | None = None,
               timeout: float = 180.0) -> tuple[int, str]:
    """Run ``main.py --quick-test-for-ci`` (loads ComfyUI and every custom node, then exits) in a
    temporary base directory; returns (exit code, log)."""
    with tempfile.TemporaryDirectory(prefix="ngtest-quick-") as tmp:
        base = prepare_base_dir(Path(tmp), test_nodes=test_nodes)
        log_path = base / "comfyui.log"
        with open(log_path, "wb") as log_file:
            proc = _spawn(main_command(base, "--quick-test-for-ci"), log_file, server_env(env))
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ServerError(f"--quick-test-for-ci did not exit in {timeout} s:\n"
                                  + log_path.read_text(errors="replace")[-4000:])
            finally:
                _stop(proc)
        return code, log_path.read_text(errors="replace")


class ComfyServer:
    """A ComfyUI server process in a temporary base directory; a context manager.

    test_nodes: also load the test-only pack (harness/test_pack/: the nodes of
        harness/test_nodes.py); without it the server has exactly what a user installs.
    env: more environment for the child (None values remove variables).
    models: {"diffusion_models": [path, ...], "vae": [...], ...}, linked into models/<folder>/.
    extra_args: more main.py arguments.
    base_dir: use this directory instead of a temporary one (kept afterwards).
    """

    def __init__(self, *, test_nodes: bool = False, env: Mapping[str, str | None] | None = None,
                 models: Mapping[str, Iterable[str | os.PathLike]] | None = None,
                 extra_args: Iterable[str] = (), base_dir: str | os.PathLike | None = None,
                 startup_timeout: float = STARTUP_TIMEOUT):
        self.test_nodes = test_nodes
        self.env = dict(env or {})
        self.models = {k: list(v) for k, v in (models or {}).items()}
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._given_base = Path(base_dir) if base_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_file = None
        self._final_log: str | None = None  # the log, kept when the temporary directory goes

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.base_dir / "comfyui.log"

    def start(self) -> "ComfyServer":
        if self.proc is not None:
            raise ServerError("already started")
        if self._given_base is not None:
            self.base_dir = self._given_base
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="ngtest-server-")
            self.base_dir = Path(self._tmp.name)
        prepare_base_dir(self.base_dir, self.models, test_nodes=self.test_nodes)
        self._log_file = open(self.log_path, "ab")
        start = time.monotonic()
        try:
            # The free port can be taken before ComfyUI binds it: then try another one.
            for _ in range(PORT_ATTEMPTS):
                self.port = free_port()
                self.proc = _spawn(
                    main_command(self.base_dir, "--listen", HOST, "--port", str(self.port), *self.extra_args),
                    self._log_file, server_env(self.env))
                if self._wait_until_up(start + self.startup_timeout):
                    break
            else:
                raise ServerError(f"no free port on {HOST} after {PORT_ATTEMPTS} attempts:\n" + self.log()[-3000:])
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - start
        return self

    def _wait_until_up(self, deadline: float) -> bool:
        """True once our process answers; False when it exited because its port was taken."""
        while True:
            if self.proc.poll() is not None:
                if "address already in use" in self.log().lower()[-3000:]:
                    return False
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode} while starting:\n"
                                  + self.log()[-6000:])
            try:
                stats = self._request("GET", "/system_stats", timeout=2.0)
                # Another server may hold the port: ours is the one started with our base dir.
                if str(self.base_dir) in (stats.get("system") or {}).get("argv", []):
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"ComfyUI did not answer on {self.url} in {self.startup_timeout} s:\n"
                                  + self.log()[-6000:])
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop the process (terminate, then kill, by PID) and remove the temporary directory."""
        try:
            if self.proc is not None:
                _stop(self.proc)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self._tmp is not None:
                self._final_log = self.log()
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def import_errors(self) -> list[str]:
        return pack_import_errors(self.log())

    # ----------------------------------------------------------------- HTTP
    def _request(self, method: str, path: str, body=None, timeout: float = HTTP_TIMEOUT):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with _opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str, timeout: float = HTTP_TIMEOUT):
        return self._request("GET", path, timeout=timeout)

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{node_class}" if node_class else ""), timeout=60.0)

    def queue(self, graph: dict, client_id: str = "negguide-tests", workflow: dict | None = None) -> str:
        """POST an API-format graph to /prompt; returns its prompt id. ``workflow`` (the UI
        format) is sent as the frontend does, so SaveImage embeds it in the PNG. A graph that
        fails validation raises ServerError with the server's error and node_errors."""
        body = {"prompt": graph, "client_id": client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        try:
            answer = self._request("POST", "/prompt", body)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise ServerError(f"/prompt refused the graph (HTTP {e.code}): {detail}") from None
        if answer.get("node_errors"):
            raise ServerError(f"/prompt node errors: {json.dumps(answer['node_errors'])}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0, poll: float = 0.25) -> dict:
        """Poll /history/{prompt_id} until the run is finished; returns its history entry.
        Raises ServerError with the exception, node and traceback when execution failed, and
        when the server dies or the run takes longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                entry = (self.get(f"/history/{prompt_id}") or {}).get(prompt_id)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                entry = None  # a dead server is reported below; a busy one is asked again
            if entry is not None and (entry.get("status") or {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") != "success" or not status.get("completed"):
                    raise ServerError(f"prompt {prompt_id} failed: {self._describe_failure(status)}")
                return entry
            if not self.is_running():
                raise ServerError(f"ComfyUI died while running {prompt_id}:\n" + self.log()[-6000:])
            if time.monotonic() > deadline:
                raise ServerError(f"prompt {prompt_id} not finished after {timeout} s:\n" + self.log()[-4000:])
            time.sleep(poll)

    @staticmethod
    def _describe_failure(status: dict) -> str:
        for event, data in status.get("messages") or []:
            if event == "execution_error":
                tb = "".join(data.get("traceback") or [])
                return (f"{data.get('node_type')} (node {data.get('node_id')}) raised "
                        f"{data.get('exception_type')}: {data.get('exception_message')}\n{tb}")
            if event == "execution_interrupted":
                return f"interrupted at {data.get('node_type')} (node {data.get('node_id')})"
        return json.dumps(status)

    def run(self, graph: dict, timeout: float = 300.0) -> dict:
        """queue() then wait()."""
        return self.wait(self.queue(graph), timeout=timeout)

    def output_images(self, history: dict) -> list[Path]:
        """Paths of the images a finished run saved (SaveImage: output/, PreviewImage: temp/)."""
        paths = []
        for node_output in (history.get("outputs") or {}).values():
            for image in node_output.get("images") or []:
                # The type names the base directory's folder: output, temp or input.
                folder = image.get("type") or "output"
                paths.append(self.base_dir / folder / image.get("subfolder", "") / image["filename"])
        return paths
