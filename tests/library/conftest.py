"""Library tier: ComfyUI imported in this process (CPU, PyTorch attention)."""

import pytest
import torch

from negguide.harness import host

host.boot_library_mode()

import comfy.utils  # noqa: E402  (importable only after the boot above)

from negguide.harness import zoo  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "zoo_architecture(name, ...): the test builds these zoo architectures (skipped where "
        "the host cannot build one)")


def pytest_collection_modifyitems(config, items):
    """A test parametrised with a zoo architecture this host cannot build (e.g. Flux.2 Klein on a
    ComfyUI without the Klein text encoder), or marked ``zoo_architecture(name)`` with one, is
    skipped with the reason zoo.unavailable_reason gives, so no test has to check it itself."""
    reasons = {name: zoo.unavailable_reason(name) for name in zoo.ARCHITECTURES}
    for item in items:
        names = [value for value in getattr(getattr(item, "callspec", None), "params", {}).values()
                 if isinstance(value, str)]
        names += [name for marker in item.iter_markers("zoo_architecture") for name in marker.args]
        reason = next((reasons[name] for name in names if reasons.get(name)), None)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _quiet_progress_bars(monkeypatch):
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_ENABLED", False)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models: two OpenMP threads on the 2-core CPU are 4-5x SLOWER than one (barrier
    waits, worse when other processes share the cores)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
