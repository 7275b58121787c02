"""The report text of a vdtrack node (TAP-Vid, DAVIS) is visible IN the node after a run, in the frontend that
ships with ComfyUI 0.3.75 and in the newest one (installed by `tools/setup.sh --tests` into .vdt/frontends and
served by a second server started with --front-end-root): the pack's web extension (web/report_text.js) puts
the node's `ui.text` in a read-only text box. Read back from the page, as a user sees it."""
from __future__ import annotations

import glob
import os

import pytest

from vdt_dev.browser import chromium_path, load_workflow as load_in_app, open_app
from vdt_dev.comfy_server import ComfyServer
from vdt_dev.paths import ROOT, VDT, load_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.ui]

# workflow -> (report node type, a line its report always has)
CASES = {"vdtrack_red_marker_tracking": ("VDT_TapVidReport", "TAP-Vid metrics"),
         "vdtrack_label_propagation": ("VDT_DavisReport", "J&F")}


def newest_frontend() -> str:
    """The static folder of the newest frontend tools/setup.sh --tests put under .vdt/frontends."""
    found = sorted(glob.glob(os.path.join(VDT, "frontends", "*", "index.html")),
                   key=lambda p: [int(x) for x in os.path.basename(os.path.dirname(p)).split(".")])
    assert found, "no newer frontend under .vdt/frontends: run tools/setup.sh --tests"
    return os.path.dirname(found[-1])


@pytest.fixture(scope="module", params=["bundled", "newest"])
def frontend(request, server):
    """(server, page, version) for the bundled frontend (the session's server) and the newest one."""
    assert chromium_path(), "Debian's chromium is not installed (tools/setup.sh --tests installs it)"
    if request.param == "bundled":
        with open_app(server) as (page, report):
            yield server, page, report
        return
    with ComfyServer(extra_args=["--front-end-root", newest_frontend()]) as srv:
        with open_app(srv) as (page, report):
            yield srv, page, report


def _run(srv, page) -> dict:
    """Queue the loaded graph the way the Run button does; the history entry of that prompt."""
    before = set(srv.get("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    new: set = set()
    for _ in range(600):
        q = srv.get("/queue")
        new = (set(srv.get("/history")) | {e[1] for k in ("queue_running", "queue_pending") for e in q.get(k, [])}) \
            - before
        if new:
            break
        page.wait_for_timeout(100)
    assert new, "the frontend did not queue the workflow"
    return srv.wait(new.pop(), timeout=600)


@pytest.mark.parametrize("name", sorted(CASES))
def test_report_text_is_shown_in_the_node(frontend, name):
    srv, page, report = frontend
    node_type, expected = CASES[name]
    load_in_app(page, load_workflow(os.path.join(ROOT, "workflows", name + ".json")))
    page.wait_for_timeout(300)
    h = _run(srv, page)
    assert h["status"]["status_str"] == "success", h["status"]
    node_id = next(k for k, v in h["prompt"][2].items() if v["class_type"] == node_type)
    sent = "\n".join(h["outputs"][node_id]["text"])
    assert expected in sent
    # the node's text box, as drawn on the page: wait until the executed message reached the node
    page.wait_for_function(
        "([id, text]) => { const n = window.app.graph.getNodeById(Number(id));"
        " const w = n && (n.widgets || []).find(w => w.name === 'vdtrack_report');"
        " return !!(w && w.element && w.element.value === text); }", arg=[node_id, sent], timeout=60000)
    page.evaluate("([id]) => { const n = window.app.graph.getNodeById(Number(id));"
                  " window.app.canvas.centerOnNode(n); window.app.canvas.setDirty(true, true); }", [node_id])
    page.wait_for_timeout(500)
    box = page.locator(f'textarea.vdtrack-report[data-node-id="{node_id}"]')
    box.wait_for(state="visible", timeout=30000)
    shown = box.input_value()
    assert shown == sent
    assert box.evaluate("e => e.readOnly")
    bb = box.bounding_box()
    assert bb and bb["width"] > 100 and bb["height"] > 40, bb
    # the box is the top element at its own centre (drawn over the canvas, not hidden behind it)
    assert box.evaluate("e => { const r = e.getBoundingClientRect();"
                        " return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === e; }")
    # it is not an input of the node: the prompt the frontend builds does not carry it
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert all("vdtrack_report" not in v["inputs"] for v in prompt.values())
    assert not report["page_errors"], report["page_errors"]
