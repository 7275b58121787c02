"""tools/batch_queue.py against the session's real ComfyUI: a folder of synthetic mp4 clips through the shipped
LoadVideo workflow, each clip's outputs in its own folder; a corrupt clip fails alone; bad arguments fail
before anything is queued."""
from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest

import batch_queue
from e2e_paths import ROOT
from make_synthetic import write_clip_mp4

pytestmark = pytest.mark.e2e

UI_WORKFLOW = os.path.join(ROOT, "workflows", "vdtrack_video_flow_tracking.json")
API_WORKFLOW = os.path.join(ROOT, "tools", "workflow_api", "vdtrack_video_flow_tracking.json")
DEMO_WORKFLOW = os.path.join(ROOT, "tools", "workflow_api", "vdtrack_flow_tracking_demo.json")
FRAMES = 12


def _clips(folder, seeds):
    os.makedirs(folder, exist_ok=True)
    return [write_clip_mp4(os.path.join(folder, f"clip_{s}.mp4"), seed=s, frames=FRAMES, size=(160, 160))
            for s in seeds]


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_every_clip_runs_with_its_own_outputs(server, tmp_path, capsys):
    folder = tmp_path / "clips"
    _clips(str(folder), seeds=[11, 12, 13])
    prefix = f"batchtest_{uuid.uuid4().hex[:8]}"
    summary_path = tmp_path / "summary.json"
    code = batch_queue.main([UI_WORKFLOW, str(folder), "--server", server.url, "--prefix", prefix,
                             "--max-queued", "2", "--json", str(summary_path)])
    out = capsys.readouterr()
    assert code == 0, out
    summary = json.loads(summary_path.read_text())
    assert summary["input_node"] == "1" and summary["input_name"] == "file"
    assert [r["clip"] for r in summary["clips"]] == ["clip_11.mp4", "clip_12.mp4", "clip_13.mp4"]
    for r in summary["clips"]:
        stem = r["clip"][:-4]
        assert r["status"] == "success" and r["error"] is None, r
        assert 0 < r["seconds"] < 60
        # the files the history reports (images) plus the tracks file its text names are exactly what this
        # clip's folder in the server's output folder holds
        produced = _files(server.path("output", prefix, stem))
        npz = [f for f in produced if f.startswith("video_tracks") and f.endswith(".npz")]
        assert len(npz) == 1
        assert r["texts"] == [f"saved {prefix}/{stem}/{npz[0]} (output folder)"]
        assert r["outputs"] == sorted(f"{prefix}/{stem}/{f}".replace(os.sep, "/") for f in produced if f != npz[0])
        assert sum(f.startswith("video_overlay_0") and f.endswith(".png") for f in produced) == FRAMES
        assert sum(f.startswith("video_overlay_anim") and f.endswith(".webp") for f in produced) == 1
        with np.load(server.path("output", prefix, stem, npz[0])) as tracks:
            assert tracks["tracks"].shape == (2, FRAMES, 2)          # the workflow's two query points
        # the clip went through ComfyUI's upload into the input folder
        assert os.path.isfile(server.path("input", "vdtrack_batch", r["clip"]))
    # nothing else under the batch prefix, and the table names every clip
    assert sorted(os.listdir(server.path("output", prefix))) == ["clip_11", "clip_12", "clip_13"]
    for name in ("clip_11.mp4", "clip_12.mp4", "clip_13.mp4"):
        assert f"{name}  success" in out.out
    assert "3/3 clips succeeded" in out.out


def test_a_corrupt_clip_fails_alone(server, tmp_path, capsys):
    folder = tmp_path / "clips"
    _clips(str(folder), seeds=[21, 22])
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    prefix = f"batchtest_{uuid.uuid4().hex[:8]}"
    summary_path = tmp_path / "summary.json"
    # (an upload subfolder without "vdtrack" in its name: test_server's import check reads every traceback in
    # the shared server's log, and the corrupt clip's one names its path)
    code = batch_queue.main([API_WORKFLOW, str(folder), "--server", server.url, "--prefix", prefix,
                             "--subfolder", "batchtest_inputs", "--json", str(summary_path)])
    out = capsys.readouterr()
    assert code == 1, out
    by_clip = {r["clip"]: r for r in json.loads(summary_path.read_text())["clips"]}
    assert sorted(by_clip) == ["broken.mp4", "clip_21.mp4", "clip_22.mp4"]
    broken = by_clip["broken.mp4"]
    assert broken["status"] == "error" and broken["outputs"] == []
    assert "\n" not in broken["error"] and "node" in broken["error"], broken
    assert broken["error"] in out.out
    for name in ("clip_21.mp4", "clip_22.mp4"):
        assert by_clip[name]["status"] == "success" and by_clip[name]["outputs"], by_clip[name]
    assert not os.path.exists(server.path("output", prefix, "broken"))
    assert os.path.isfile(server.path("input", "batchtest_inputs", "broken.mp4"))
    assert "2/3 clips succeeded" in out.out
    assert server.get("/system_stats")                    # still serving


def test_bad_arguments_fail_before_queueing(server, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a clip")
    assert batch_queue.main([UI_WORKFLOW, str(tmp_path / "missing"), "--server", server.url]) == 2
    assert "clip folder not found" in capsys.readouterr().err
    assert batch_queue.main([UI_WORKFLOW, str(empty), "--server", server.url]) == 2
    err = capsys.readouterr().err
    assert "no clips in" in err and ".mp4" in err
    # a workflow without a loader names the options to use
    _clips(str(tmp_path / "one"), seeds=[31])
    assert batch_queue.main([DEMO_WORKFLOW, str(tmp_path / "one"), "--server", server.url]) == 2
    err = capsys.readouterr().err
    assert "--input-node" in err and "--input-name" in err
    assert batch_queue.main([DEMO_WORKFLOW, str(tmp_path / "one"), "--server", server.url,
                             "--input-node", "1"]) == 2
    assert "--input-name" in capsys.readouterr().err
    assert batch_queue.main([API_WORKFLOW, str(tmp_path / "one"), "--server", server.url,
                             "--input-node", "1", "--input-name", "nope"]) == 2
    assert "no such input" in capsys.readouterr().err


def test_prefixes_and_keys():
    base = {"1": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "vdtrack/overlay"}},
            "3": {"class_type": "VDT_SaveTracks", "inputs": {"filename_prefix": "tracks"}}}
    p = batch_queue.clip_prompt(base, "1", "file", "vdtrack_batch/a.mp4", "run1", "a")
    assert p["1"]["inputs"]["file"] == "vdtrack_batch/a.mp4"
    assert p["2"]["inputs"]["filename_prefix"] == "run1/a/overlay"
    assert p["3"]["inputs"]["filename_prefix"] == "run1/a/tracks"
    assert base["2"]["inputs"]["filename_prefix"] == "vdtrack/overlay"      # the template is untouched
    assert batch_queue.clip_prompt(base, "1", "file", "b.mp4", None, "b")["2"]["inputs"]["filename_prefix"] \
        == "vdtrack/overlay"
    assert batch_queue.clip_keys(["d/a.mp4", "d/a.MOV", "d/b c.mkv"]) == ["a_mp4", "a_mov", "b_c"]
