"""Library tier: ComfyUI imported in this process (CPU, PyTorch attention)."""

from negguide.harness import host

host.boot_library_mode()
