#!/usr/bin/env bash
# Set up everything (pinned ComfyUI, CPU torch, the pack, test tools, Debian's chromium) and run all tests:
# kernel unit tests, backbone tests on tiny models, and end-to-end tests against a real ComfyUI server and
# its real frontend.   usage: tools/test.sh [pytest args...]
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/tools/setup.sh" --tests || exit 1
cd "$ROOT"
.vdt/venv/bin/python -m pytest -q -rs "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests (exit 5): nothing to run with these arguments"
  exit 0
fi
exit "$rc"
