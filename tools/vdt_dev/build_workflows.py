"""Build the shipped UI-format workflows (workflows/*.json) from their API-format sources
(tools/workflow_api/*.json) with ComfyUI's own frontend: `app.loadApiJson` lays the graph out, seeds are
fixed, and `app.graph.serialize()` is what a user would save. Also writes a .jpg thumbnail beside each
(the template browser shows it).

usage: .vdt/venv/bin/python tools/vdt_dev/build_workflows.py [NAME ...]
"""
from __future__ import annotations

import glob
import json
import os
import sys

from vdt_dev.browser import fit_view, open_app
from vdt_dev.comfy_server import ComfyServer
from vdt_dev.paths import ROOT, WORKFLOW_API

SRC = WORKFLOW_API
DST = os.path.join(ROOT, "workflows")


def drop_nulls(value):
    """The frontend's serialize() leaves null where its own schema check wants the key absent (slot_index,
    floatingLinks, extra.reroutes, definitions...); loading such a file shows a validation alert. Drop them,
    keeping `link`/`links` (null there means "not connected")."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None or k in ("link", "links")}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def main(names: list[str]) -> None:
    files = sorted(glob.glob(os.path.join(SRC, "*.json")))
    if names:
        files = [f for f in files if os.path.splitext(os.path.basename(f))[0] in names]
    os.makedirs(DST, exist_ok=True)
    with ComfyServer() as srv, open_app(srv) as (page, report):
        for f in files:
            name = os.path.splitext(os.path.basename(f))[0]
            api = json.load(open(f))
            page.evaluate("async ([api, name]) => { await window.app.loadApiJson(api, name); }", [api, name])
            # fixed seeds: a shipped workflow gives the same result every run
            ui = page.evaluate("""() => {
                for (const n of window.app.graph._nodes)
                    for (const w of (n.widgets || []))
                        if (w.name === 'control_after_generate') w.value = 'fixed';
                return window.app.graph.serialize();
            }""")
            with open(os.path.join(DST, name + ".json"), "w") as out:
                json.dump(drop_nulls(ui), out, indent=1)
            fit_view(page)
            page.wait_for_timeout(300)
            page.screenshot(path=os.path.join(DST, name + ".jpg"), type="jpeg", quality=70)
            print(f"wrote workflows/{name}.json ({len(ui['nodes'])} nodes)")
    if report["external_requests"]:
        print("blocked external requests:", report["external_requests"][:5])


if __name__ == "__main__":
    main(sys.argv[1:])
