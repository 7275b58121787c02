"""Test set-up: make the vendored ComfyUI importable (CPU only) for node-level tests.

Kernel tests need nothing of ComfyUI; node tests call `Node.execute` directly; end-to-end tests
(tests/e2e) start a real server through tests/harness.py.
"""
from __future__ import annotations

import os
import sys

import pytest

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


@pytest.fixture
def comfy_folders(tmp_path):
    """ComfyUI's output, input and temp folders as tmp_path/output, tmp_path/input, tmp_path/temp for one test
    (restored afterwards). Returns tmp_path."""
    import folder_paths

    get = (folder_paths.get_output_directory, folder_paths.get_input_directory, folder_paths.get_temp_directory)
    put = (folder_paths.set_output_directory, folder_paths.set_input_directory, folder_paths.set_temp_directory)
    old = [g() for g in get]
    for name, set_dir in zip(("output", "input", "temp"), put):
        (tmp_path / name).mkdir()
        set_dir(str(tmp_path / name))
    yield tmp_path
    for set_dir, value in zip(put, old):
        set_dir(value)
