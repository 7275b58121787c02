"""Run a shipped workflow headless in a real ComfyUI (the one tools/setup.sh installed) and collect what it
wrote into demo_output/. Prints the paths of the images (overlays, regenerated clip), the tracks file and the
report. For the default demo it also composes demo_output/demo_overview.png: every 4th frame of the
ground-truth, Point Prompting, HeFT and optical-flow overlays, one row each (the README's picture).

usage: .vdt/venv/bin/python tools/run_demo.py [workflows/NAME.json] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from vdt_dev.comfy_server import ComfyServer
from vdt_dev.paths import ROOT
from vdtrack.batch.workflow import ui_to_api

DEFAULT = os.path.join(ROOT, "workflows", "vdtrack_embedded_demo.json")
# overview rows: (label, SaveImage prefix of the demo workflow's overlay frames under output/vdtrack/)
OVERVIEW_ROWS = (("ground truth", "demo_overlay_truth"), ("Point Prompting", "demo_overlay_pp"),
                 ("HeFT", "demo_overlay_heft"), ("optical flow", "demo_overlay_flow"))


def kind_of(path: str) -> str:
    name = os.path.basename(path).lower()
    if "report" in name:
        return "report"
    if name.endswith((".npz", ".csv")) or (name.endswith(".json") and "track" in name):
        return "tracks"
    if name.endswith((".png", ".webp", ".mp4", ".gif", ".jpg")):
        return "images"
    return "other"


def overview(out_dir: str, path: str, step: int = 4, scale: int = 3) -> bool:
    """Compose the overlay frames the demo saved into one picture (rows OVERVIEW_ROWS, every `step`-th frame,
    upscaled `scale` x, nearest). False when the workflow saved no such frames (another workflow was run)."""
    from PIL import Image, ImageDraw

    rows = []
    for label, prefix in OVERVIEW_ROWS:
        frames = sorted(f for f in os.listdir(os.path.join(out_dir, "vdtrack")) if f.startswith(prefix + "_"))
        if not frames:
            return False
        rows.append((label, [Image.open(os.path.join(out_dir, "vdtrack", f)).convert("RGB")
                             for f in frames[::step]]))
    w, h = rows[0][1][0].size
    w, h, label_w, cols = w * scale, h * scale, 120, max(len(r) for _, r in rows)
    sheet = Image.new("RGB", (label_w + cols * (w + 2), len(rows) * (h + 2)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (label, imgs) in enumerate(rows):
        draw.text((6, r * (h + 2) + h // 2 - 6), label, fill=(230, 230, 230))
        for c, img in enumerate(imgs):
            sheet.paste(img.resize((w, h), Image.NEAREST), (label_w + c * (w + 2), r * (h + 2)))
    sheet.save(path)
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workflow", nargs="?", default=DEFAULT)
    ap.add_argument("--out", default=os.path.join(ROOT, "demo_output"))
    args = ap.parse_args()
    with open(args.workflow) as f:
        workflow = json.load(f)
    with ComfyServer() as srv:
        print(f"ComfyUI started on {srv.url} in {srv.startup_s:.1f}s")
        prompt = ui_to_api(workflow, srv.object_info())
        t0 = time.monotonic()
        h = srv.run(prompt, timeout=900)
        print(f"ran {os.path.basename(args.workflow)} ({len(prompt)} nodes) in {time.monotonic() - t0:.1f}s")
        out_dir = os.path.abspath(args.out)
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(srv.path("output"), out_dir)
        texts = [t for o in h["outputs"].values() for t in o.get("text", []) if isinstance(t, str)]
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(out_dir) for f in fs)
    sheet = os.path.join(out_dir, "demo_overview.png")
    if os.path.isdir(os.path.join(out_dir, "vdtrack")) and overview(out_dir, sheet):
        print(f"overview: {sheet} (rows: {', '.join(label for label, _ in OVERVIEW_ROWS)}; every 4th frame)")
    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(kind_of(f), []).append(f)
    for text in texts:
        print("\n" + text)
    print()
    for kind in ("images", "tracks", "report", "other"):
        fs = groups.get(kind, [])
        if fs:
            shown = fs if len(fs) <= 4 else fs[:2] + [f"... ({len(fs)} files)"] + fs[-1:]
            print(f"{kind:8s}: " + "\n          ".join(shown))
    if not files:                       # every shipped workflow saves something; what depends on the workflow
        print("the workflow ran but wrote no output files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
