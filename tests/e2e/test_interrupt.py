"""ComfyUI's interrupt button stops our long loops: a long HeFT tracking run is cancelled while it works, the
history says which node was interrupted, nothing downstream runs, and the server runs the next prompt normally.

Event-driven, never timed: the interrupt is sent once the websocket reports progress from the tracker itself
(so it cannot land in an upstream node, however busy the machine is), and "stopped early" is read from the
tracker's own progress counter, not from a clock."""
from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest

pytestmark = pytest.mark.e2e

CLIP = {"class_type": "VDT_SyntheticClip",
        "inputs": {"seed": 7, "frames": 96, "width": 192, "height": 192, "num_objects": 3, "points_per_object": 12,
                   "background_points": 12, "variant": "moving_objects"}}
FEATURES = {"class_type": "VDT_PixelFeatures",
            "inputs": {"images": ["1", 0], "patch_size": 4, "projection_dim": 0, "seed": 0, "center": True,
                       "coords_weight": 0.0}}
TRACK = {"class_type": "VDT_TrackHeFT",
         "inputs": {"features": ["2", 0], "points": ["1", 4], "argmax_radius": 17.0, "search_radius": 42.0,
                    "vis_threshold": 18.0, "ema_alpha": 0.05, "temperature": 1.0, "resolution": "pixels",
                    "fb_mode": "sequential"}}
SAVE = {"class_type": "VDT_SaveTracks",
        "inputs": {"tracks": ["3", 0], "format": "json", "filename_prefix": "vdtrack/interrupted"}}


def _messages(history: dict, kind: str) -> list[dict]:
    return [m for k, m in history["status"].get("messages", []) if k == kind]


async def _interrupt_inside_tracker(server) -> tuple[str, list[dict]]:
    """Queue the prompt, interrupt on the tracker's first progress message, return (prompt id, the tracker's
    progress messages until the prompt ended)."""
    client_id = uuid.uuid4().hex
    progress, interrupted_sent = [], False
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url.replace('http', 'ws')}/ws?clientId={client_id}") as ws:
            prompt = {"1": CLIP, "2": FEATURES, "3": TRACK, "4": SAVE}
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                assert r.status == 200, await r.text()
                prompt_id = (await r.json())["prompt_id"]
            while True:
                # a generous guard against a hang only; the test advances on messages
                msg = await asyncio.wait_for(ws.receive(), timeout=600)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                d = m.get("data", {})
                if d.get("prompt_id") not in (None, prompt_id):
                    continue
                if m["type"] == "progress" and d.get("node") == "3":
                    progress.append(d)
                    if not interrupted_sent:
                        async with session.post(f"{server.url}/interrupt", json={}) as r:
                            assert r.status == 200
                        interrupted_sent = True
                if m["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                    return prompt_id, progress
                if m["type"] == "executing" and d.get("node") is None:
                    return prompt_id, progress


def test_interrupt_stops_a_long_tracking_run(server):
    pid, progress = asyncio.run(_interrupt_inside_tracker(server))
    h = server.wait(pid, timeout=600)
    assert h["status"]["status_str"] == "error", h["status"]
    interrupted = _messages(h, "execution_interrupted")
    assert interrupted and interrupted[0]["node_type"] == "VDT_TrackHeFT", json.dumps(h["status"])[:2000]
    total = progress[0]["max"]
    # interrupted after its first progress step: the tracker stopped at an interrupt check, before its last step
    assert progress[-1]["value"] < total, (progress[-1], total)
    assert "4" not in h.get("outputs", {})        # nothing was saved from the cancelled run
    # the server keeps working
    h = server.run({"1": CLIP, "5": {"class_type": "VDT_FlowTracker",
                                     "inputs": {"images": ["1", 0], "points": "10,10", "method": "dis",
                                                "fb_threshold": 1.5}},
                    "6": {"class_type": "VDT_SaveTracks", "inputs": {"tracks": ["5", 0], "format": "csv",
                                                                     "filename_prefix": "vdtrack/after_interrupt"}}})
    assert h["status"]["status_str"] == "success"
