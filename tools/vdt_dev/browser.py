"""Drive ComfyUI's real web frontend with Playwright and Debian's chromium (never `playwright install`)."""
from __future__ import annotations

import contextlib
import os
import shutil
from urllib.parse import urlparse

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def open_app(server, wait_for_node: str = "VDT_SyntheticClip", viewport=(1600, 1000)):
    """Yields (page, report) with the ComfyUI app loaded; every request off the local server is blocked
    and recorded in report["external_requests"]; page errors go to report["page_errors"]."""
    from playwright.sync_api import sync_playwright

    report = {"external_requests": [], "page_errors": [], "console_errors": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()

            def route(r):
                if urlparse(r.request.url).hostname in ("127.0.0.1", "localhost"):
                    r.continue_()
                else:
                    report["external_requests"].append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("pageerror", lambda e: report["page_errors"].append(str(e)[:300]))
            page.on("console", lambda m: report["console_errors"].append(m.text[:300]) if m.type == "error" else None)
            page.goto(server.url + "/", wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=90000)
            page.wait_for_function(f"() => !!(window.LiteGraph && LiteGraph.registered_node_types['{wait_for_node}'])",
                                   timeout=90000)
            page.keyboard.press("Escape")
            yield page, report
        finally:
            browser.close()


def load_workflow(page, workflow: dict) -> list[str]:
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.evaluate("() => window.app.canvas.setDirty(true, true)")
    return page.evaluate("() => window.app.graph._nodes.map(n => n.type)")


def graph_to_prompt(page) -> dict:
    return page.evaluate("async () => { const p = await window.app.graphToPrompt();"
                         " return {output: p.output, workflow: p.workflow}; }")


def fit_view(page) -> None:
    """Fit the whole graph on screen (the frontend's "." shortcut), for screenshots and thumbnails."""
    page.mouse.click(5, 500)          # focus the canvas without selecting a node
    page.keyboard.press(".")
    page.wait_for_timeout(200)
