"""Server tier: a real ComfyUI main.py, driven over HTTP on 127.0.0.1.

One session-scoped server (test nodes on, stand-in models linked in) serves most tests; the few
tests that need another configuration start their own. Stand-in files are generated into the
cache on first use (harness/standins.py)."""

import pytest

from negguide.harness import standins
from negguide.harness.server import ComfyServer, pid_alive

# Stand-ins the session server offers, by name (see harness/standins.py).
SESSION_STANDINS = ("sd3", "taesd16", "sd15")


@pytest.fixture(scope="session")
def standin_files() -> dict:
    return {name: standins.ensure(name) for name in SESSION_STANDINS}


@pytest.fixture(scope="session")
def server(standin_files):
    models: dict[str, list] = {}
    for name, path in standin_files.items():
        models.setdefault(standins.STANDINS[name].folder, []).append(path)
    # API nodes (paid cloud services) are irrelevant here and cost ~3 s of every start; the
    # quick test and the user-setting server keep them.
    with ComfyServer(test_nodes=True, models=models, extra_args=["--disable-api-nodes"]) as running:
        yield running
    assert not pid_alive(running.pid), f"ComfyUI (PID {running.pid}) still running after stop()"
