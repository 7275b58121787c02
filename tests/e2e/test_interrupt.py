"""ComfyUI's interrupt button stops our long loops: a long HeFT tracking run is cancelled within seconds,
the history says which node was interrupted, and the server runs the next prompt normally."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.e2e

CLIP = {"class_type": "VDT_SyntheticClip",
        "inputs": {"seed": 7, "frames": 96, "width": 192, "height": 192, "num_objects": 3, "points_per_object": 12,
                   "background_points": 12, "variant": "moving_objects"}}
FEATURES = {"class_type": "VDT_PixelFeatures",
            "inputs": {"images": ["1", 0], "patch_size": 4, "projection_dim": 0, "seed": 0, "center": True,
                       "coords_weight": 0.0}}
TRACK = {"class_type": "VDT_TrackPoints",
         "inputs": {"features": ["2", 0], "points": ["1", 4], "method": "heft_soft_argmax", "nn_threshold": 0.6,
                    "nn_refine_radius": 0, "nn_refine_temperature": 0.05, "argmax_radius": 17.0,
                    "search_radius": 42.0, "vis_threshold": 18.0, "ema_alpha": 0.05, "temperature": 1.0,
                    "heft_resolution": "pixels", "fb_mode": "sequential", "difftrack_scale": "heads"}}


def _messages(history: dict, kind: str) -> list[dict]:
    return [m for k, m in history["status"].get("messages", []) if k == kind]


def test_interrupt_stops_a_long_tracking_run(server):
    # 1. compute (and cache) the clip and its features, so the next prompt spends its time in the tracker alone
    server.run({"1": CLIP, "2": FEATURES, "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    status, r = server.queue({"1": CLIP, "2": FEATURES, "3": TRACK,
                              "4": {"class_type": "VDT_SaveTracks", "inputs": {"tracks": ["3", 0], "format": "json",
                                                                               "filename_prefix": "vdtrack/interrupted"}}})
    assert status == 200, r
    pid = r["prompt_id"]
    for _ in range(200):
        if any(item[1] == pid for item in server.get("/queue")["queue_running"]):
            break
        time.sleep(0.05)
    time.sleep(2.0)                               # inside the tracker: uninterrupted it runs ~4 min on CPU
    t0 = time.monotonic()
    server.post("/interrupt", {})
    h = server.wait(pid, timeout=60)
    stopped_after = time.monotonic() - t0
    assert h["status"]["status_str"] == "error", h["status"]
    interrupted = _messages(h, "execution_interrupted")
    assert interrupted and interrupted[0]["node_type"] == "VDT_TrackPoints", json.dumps(h["status"])[:2000]
    assert stopped_after < 10, f"the tracker took {stopped_after:.1f}s to notice the interrupt"
    assert "4" not in h.get("outputs", {})        # nothing was saved from the cancelled run
    # 2. the server keeps working
    h = server.run({"1": CLIP, "5": {"class_type": "VDT_FlowTracker",
                                     "inputs": {"images": ["1", 0], "points": "10,10", "method": "dis",
                                                "fb_threshold": 1.5}},
                    "6": {"class_type": "VDT_SaveTracks", "inputs": {"tracks": ["5", 0], "format": "csv",
                                                                     "filename_prefix": "vdtrack/after_interrupt"}}})
    assert h["status"]["status_str"] == "success"
