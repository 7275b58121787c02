"""Test set-up: make the vendored ComfyUI importable (CPU only) for node-level tests.

Kernel tests need nothing of ComfyUI; node tests call `Node.execute` directly; end-to-end tests
(tests/e2e) start a real server through tests/harness.py.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFYUI_DIR = os.environ.get("VDT_COMFYUI_DIR", os.path.join(ROOT, ".vdt", "ComfyUI"))


def _comfy_importable() -> None:
    if COMFYUI_DIR not in sys.path and os.path.isdir(COMFYUI_DIR):
        sys.path.append(COMFYUI_DIR)   # appended: ComfyUI's top-level `nodes`/`utils` must not shadow ours
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
    except ImportError:
        pass


_comfy_importable()
