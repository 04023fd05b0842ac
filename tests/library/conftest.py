"""Library tier: ComfyUI imported in this process (CPU, PyTorch attention)."""

import pytest
import torch

from negguide.harness import host

host.boot_library_mode()

import comfy.utils  # noqa: E402  (importable only after the boot above)


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
