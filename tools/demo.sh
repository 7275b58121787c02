#!/usr/bin/env bash
# Set up everything, then run the shipped demo workflow headless in a real ComfyUI and print where the
# overlay, the tracks file and the TAP-Vid report were written.   usage: tools/demo.sh [workflow.json]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/tools/setup.sh"
exec "$ROOT/.vdt/venv/bin/python" "$ROOT/tools/run_demo.py" "$@"
