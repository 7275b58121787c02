"""Paths and small helpers shared by the end-to-end tests."""
from __future__ import annotations

import glob
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
SCREENS = os.path.join(ROOT, ".vdt", "screens")


def load_workflow(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
