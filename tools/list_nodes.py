"""Print the pack's nodes as a markdown table (for the README), straight from their V3 schemas.

usage: .vdt/venv/bin/python tools/list_nodes.py
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, ".vdt", "ComfyUI"))

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True

from vdtrack.nodes import all_nodes  # noqa: E402


def main() -> None:
    rows = sorted((s.category, s.node_id, s.display_name, s.description or "")
                  for s in (cls.GET_SCHEMA() for cls in all_nodes(strict=True)))
    print("| category | node | what it does |")
    print("|---|---|---|")
    for category, node_id, name, desc in rows:
        first = desc.strip().split("\n")[0]
        print(f"| {category} | `{node_id}` ({name}) | {first} |")


if __name__ == "__main__":
    main()
