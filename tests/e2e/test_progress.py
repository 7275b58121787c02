"""Our long nodes drive ComfyUI's progress bar: the websocket a frontend listens to receives `progress`
messages for them, counting up to their number of steps."""
from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest

pytestmark = pytest.mark.e2e

FRAMES = 12
PROMPT = {
    "1": {"class_type": "VDT_SyntheticClip",
          "inputs": {"seed": 11, "frames": FRAMES, "width": 96, "height": 96, "num_objects": 2,
                     "points_per_object": 2, "background_points": 2, "variant": "moving_objects"}},
    "2": {"class_type": "VDT_FlowTracker",
          "inputs": {"images": ["1", 0], "points": ["1", 4], "method": "dis", "fb_threshold": 1.5}},
    "3": {"class_type": "VDT_SaveTracks",
          "inputs": {"tracks": ["2", 0], "format": "json", "filename_prefix": "vdtrack/progress"}},
}


async def _run_and_listen(server) -> list[dict]:
    client_id = uuid.uuid4().hex
    messages = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url.replace('http', 'ws')}/ws?clientId={client_id}") as ws:
            async with session.post(f"{server.url}/prompt", json={"prompt": PROMPT, "client_id": client_id}) as r:
                assert r.status == 200, await r.text()
                prompt_id = (await r.json())["prompt_id"]
            while True:
                msg = await asyncio.wait_for(ws.receive(), timeout=120)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                messages.append(m)
                d = m.get("data", {})
                if m["type"] == "executing" and d.get("node") is None and d.get("prompt_id") == prompt_id:
                    return messages
                if m["type"] == "execution_error":
                    raise AssertionError(d)


def test_flow_tracker_reports_progress_over_the_websocket(server):
    messages = asyncio.run(_run_and_listen(server))
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"].get("node") == "2"]
    assert progress, [m["type"] for m in messages]
    assert progress[-1]["max"] >= FRAMES - 1
    assert progress[-1]["value"] == progress[-1]["max"]
    assert [p["value"] for p in progress] == sorted(p["value"] for p in progress)
