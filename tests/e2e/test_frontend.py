"""Every shipped workflow through ComfyUI's real web frontend in Debian's chromium: loaded the way a user
loads it, converted by the frontend, queued, run to success, and screenshotted."""
from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest

from vdt_dev.browser import chromium_path, graph_to_prompt, load_workflow as load_in_app, open_app
from vdt_dev.paths import SCREENS, WORKFLOWS, load_workflow
from vdtrack.batch.workflow import ui_to_api

pytestmark = [pytest.mark.e2e, pytest.mark.ui]


@pytest.fixture(scope="module")
def app(server):
    assert chromium_path(), "Debian's chromium is not installed (tools/setup.sh --tests installs it)"
    os.makedirs(SCREENS, exist_ok=True)
    with open_app(server) as (page, report):
        yield page, report
    # the frontend asks its own registry about releases and node packs (blocked here); nothing else goes out
    others = [u for u in report["external_requests"] if urlparse(u).hostname != "api.comfy.org"]
    assert not others, others


@pytest.mark.parametrize("path", WORKFLOWS, ids=[os.path.basename(p) for p in WORKFLOWS])
def test_workflow_in_frontend(server, object_info, app, path):
    page, report = app
    workflow = load_workflow(path)
    types = load_in_app(page, workflow)
    page.wait_for_timeout(300)
    assert page.get_by_text("Invalid workflow").count() == 0, "the frontend rejected the workflow's schema"
    assert sorted(types) == sorted(n["type"] for n in workflow["nodes"])
    converted = graph_to_prompt(page)
    prompt = converted["output"]
    # the headless converter the demo uses agrees with the frontend's, except that the frontend also sends its
    # LoadVideo preview DOM widget ("video-preview", present once the preview has loaded), which no node declares
    # and ComfyUI ignores
    for v in prompt.values():
        if "video-preview" in v["inputs"]:
            declared = object_info[v["class_type"]]["input"]
            assert not any("video-preview" in declared.get(s, {}) for s in ("required", "optional"))
    assert ui_to_api(workflow, object_info) == {
        k: {"class_type": v["class_type"], "inputs": {n: x for n, x in v["inputs"].items() if n != "video-preview"}}
        for k, v in prompt.items()}
    def known() -> set:
        """Prompt ids the server has: finished (history), running or pending (queue); a long workflow is
        still running when the frontend's request has long been accepted."""
        q = server.get("/queue")
        return set(server.get("/history")) | {e[1] for k in ("queue_running", "queue_pending") for e in q.get(k, [])}

    before = known()
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")   # the Queue button's code path
    # the Queue button awaits the server's answer, so the prompt is known (queued, running or done) by now: no
    # waiting on the machine's speed
    new = known() - before
    assert new, "the frontend did not queue the workflow"
    h = server.wait(new.pop(), timeout=600)
    assert h["status"]["status_str"] == "success", h["status"]
    page.wait_for_timeout(500)
    page.screenshot(path=os.path.join(SCREENS, os.path.basename(path).replace(".json", ".png")))
    assert not report["page_errors"], report["page_errors"]
