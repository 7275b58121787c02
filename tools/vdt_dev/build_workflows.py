"""Build the shipped UI-format workflows (workflows/*.json) from their API-format sources
(tools/workflow_api/*.json) with ComfyUI's own frontend: `app.loadApiJson` lays the graph out, seeds are
fixed, and `app.graph.serialize()` is what a user would save. Also writes a .jpg thumbnail beside each
(the template browser shows it): a screenshot of the graph alone (focus mode, no minimap or canvas info, full-
quality node rendering), clipped to the nodes' bounds, scaled to at most THUMB_SIZE pixels and centred on a
square of the canvas colour (the template browser shows square cards, cropping anything else).

usage: .vdt/venv/bin/python tools/vdt_dev/build_workflows.py [--thumbnails-only] [NAME ...]
  --thumbnails-only: remake only the thumbnails, from the shipped workflows/NAME.json
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
THUMB_SIZE = 1024
VIEWPORT = (2400, 2000)          # large enough that the graphs fit at a zoom where their text stays readable


def prepare_for_thumbnails(page) -> None:
    """Hide everything but the graph (focus mode, minimap, canvas info) and draw nodes in full quality at any
    zoom: LiteGraph switches to a text-less rendering when zoomed out (MinFontSizeForLOD, 0 = never; older
    frontends: LowQualityRenderingZoomThreshold)."""
    page.evaluate("""async () => {
        const s = window.app.extensionManager.setting;
        await s.set('Comfy.Minimap.Visible', false);
        await s.set('Comfy.Graph.CanvasInfo', false);
        await s.set('LiteGraph.Canvas.MinFontSizeForLOD', 0);
        await s.set('LiteGraph.Canvas.LowQualityRenderingZoomThreshold', 0.1);
        await window.app.extensionManager.command.execute('Workspace.ToggleFocusMode');
    }""")
    page.wait_for_timeout(300)


def graph_thumbnail(page, path: str) -> float:
    """Screenshot of the graph's nodes (fitted to the view, a small margin around them) on a square of the
    canvas colour, THUMB_SIZE wide; returns the zoom the graph was drawn at."""
    from PIL import Image

    fit_view(page)
    page.wait_for_timeout(300)
    box = page.evaluate("""() => {
        const c = window.app.canvas, r = c.canvas.getBoundingClientRect(), th = LiteGraph.NODE_TITLE_HEIGHT;
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of window.app.graph._nodes) {
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - th);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        const a = c.ds.convertOffsetToCanvas([x0, y0]), b = c.ds.convertOffsetToCanvas([x1, y1]);
        const m = 24;
        const left = Math.max(r.left, r.left + a[0] - m), top = Math.max(r.top, r.top + a[1] - m);
        const right = Math.min(r.right, r.left + b[0] + m), bottom = Math.min(r.bottom, r.top + b[1] + m);
        return {x: left, y: top, width: right - left, height: bottom - top, scale: c.ds.scale};
    }""")
    scale = box.pop("scale")
    page.screenshot(path=path + ".png", clip=box)
    img = Image.open(path + ".png").convert("RGB")
    os.remove(path + ".png")
    side = max(img.size)
    square = Image.new("RGB", (side, side), img.getpixel((2, 2)))          # the canvas colour at the margin
    square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    if side > THUMB_SIZE:
        square = square.resize((THUMB_SIZE, THUMB_SIZE), Image.LANCZOS)
    square.save(path, "JPEG", quality=85)
    return scale


def drop_nulls(value):
    """The frontend's serialize() leaves null where its own schema check wants the key absent (slot_index,
    floatingLinks, extra.reroutes, definitions...); loading such a file shows a validation alert. Drop them,
    keeping `link`/`links` (null there means "not connected")."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None or k in ("link", "links")}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def main(names: list[str], thumbnails_only: bool = False) -> None:
    files = sorted(glob.glob(os.path.join(DST if thumbnails_only else SRC, "*.json")))
    if names:
        files = [f for f in files if os.path.splitext(os.path.basename(f))[0] in names]
    os.makedirs(DST, exist_ok=True)
    with ComfyServer() as srv, open_app(srv, viewport=VIEWPORT) as (page, report):
        prepare_for_thumbnails(page)
        for f in files:
            name = os.path.splitext(os.path.basename(f))[0]
            if thumbnails_only:
                page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", json.load(open(f)))
            else:
                build_one(page, f, name)
            scale = graph_thumbnail(page, os.path.join(DST, name + ".jpg"))
            print(f"wrote workflows/{name}.jpg (graph drawn at zoom {scale:.2f})")
    if report["external_requests"]:
        print("blocked external requests:", report["external_requests"][:5])


def build_one(page, src: str, name: str) -> None:
    """workflows/NAME.json from the API-format source, laid out by the frontend, seeds fixed."""
    api = json.load(open(src))
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
    print(f"wrote workflows/{name}.json ({len(ui['nodes'])} nodes)")


if __name__ == "__main__":
    args = sys.argv[1:]
    main([a for a in args if a != "--thumbnails-only"], thumbnails_only="--thumbnails-only" in args)
