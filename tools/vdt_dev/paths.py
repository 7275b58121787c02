"""Where things are in a development checkout (the repository root, its .vdt environment, the shipped
workflows), for the development tools, the benchmarks and the tests."""
from __future__ import annotations

import glob
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VDT = os.path.join(ROOT, ".vdt")
COMFYUI_DIR = os.environ.get("VDT_COMFYUI_DIR", os.path.join(VDT, "ComfyUI"))
COMFY_PYTHON = os.environ.get("VDT_COMFY_PYTHON", os.path.join(VDT, "venv", "bin", "python"))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
WORKFLOW_API = os.path.join(ROOT, "tools", "workflow_api")
SCREENS = os.path.join(VDT, "screens")


def load_workflow(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
