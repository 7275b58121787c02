"""Our TRACKS link to core's TRACKS-consuming Wan nodes (Wan-Move, ComfyUI >= 0.5) where the running ComfyUI has
them; ComfyUI 0.3.75 has none, so there the check is skipped with that reason. The JSON route (VDT Tracks To
ATI -> core WanTrackToVideo) runs in every version: vdtrack_tracks_drive_wan is a shipped workflow."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def _inputs(info: dict) -> dict:
    return {**info["input"].get("required", {}), **info["input"].get("optional", {})}


def test_tracks_output_links_to_core_wanmove(object_info):
    consumers = {k: v for k, v in object_info.items()
                 if k.startswith("WanMove") and any(s[0] == "TRACKS" for s in _inputs(v).values())}
    if not consumers:
        pytest.skip(f"this ComfyUI ({len(object_info)} nodes) has no core Wan-Move node taking TRACKS "
                    "(added after 0.3.75); the ATI JSON route is tested by the shipped workflow")
    producers = [k for k, v in object_info.items() if k.startswith("VDT_") and "TRACKS" in v["output"]]
    assert {"VDT_FlowTracker", "VDT_TrackPoints"} <= set(producers)
    for name, info in consumers.items():
        assert [n for n, s in _inputs(info).items() if s[0] == "TRACKS"], name


def test_drive_workflow_uses_core_wan_track_to_video(object_info):
    assert "WanTrackToVideo" in object_info
    ins = _inputs(object_info["WanTrackToVideo"])
    assert ins["tracks"][0] == "STRING" and "start_image" in ins
