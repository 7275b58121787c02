"""vdtrack-batch (vdtrack.batch.cli) on one real ComfyUI, without Ray: a folder of synthetic mp4 clips through the
shipped LoadVideo workflow with a swept input, each job's outputs in its own folder (on the server and in the
results folder), the summary, --resume from the manifest, a corrupt clip failing alone, report metrics
aggregated per swept value, and bad arguments failing before anything is queued."""
from __future__ import annotations

import csv
import json
import os
import threading
import uuid

import numpy as np
import pytest

from vdt_dev.paths import ROOT
from vdt_dev.make_synthetic import write_clip_mp4
from vdtrack.batch import cli

pytestmark = pytest.mark.e2e

UI_WORKFLOW = os.path.join(ROOT, "workflows", "vdtrack_video_flow_tracking.json")
API_WORKFLOW = os.path.join(ROOT, "tools", "workflow_api", "vdtrack_video_flow_tracking.json")
DEMO_WORKFLOW = os.path.join(ROOT, "tools", "workflow_api", "vdtrack_flow_tracking_demo.json")
FRAMES = 12


def _clips(folder, names):
    os.makedirs(folder, exist_ok=True)
    return [write_clip_mp4(os.path.join(folder, name), seed=i, frames=FRAMES, size=(160, 160))
            for i, name in enumerate(names)]


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                  for d, _, fs in os.walk(root) for f in fs)


def test_clips_times_sweep_each_in_its_own_folder_then_resume(server, tmp_path, capsys):
    folder = tmp_path / "clips"
    # 'a b.mp4' and 'a_b.mp4' made the same folder name in the old script; a points file beside one clip
    _clips(str(folder), ["a b.mp4", "a_b.mp4"])
    (folder / "a_b.points.json").write_text('[{"x": 20, "y": 30}, {"x": 40, "y": 50}, {"x": 60, "y": 70}]')
    prefix = f"batchtest_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "results"
    args = [UI_WORKFLOW, str(folder), "--out", str(out), "--server", server.url, "--no-ray", "--prefix", prefix,
            "--set", "VDT_FlowTracker.fb_threshold=1.5,3", "--quiet"]
    seen = []
    code = cli.main(args, on_result=seen.append)
    text = capsys.readouterr()
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    keys = [j["key"] for j in summary["jobs"]]
    assert len(keys) == 4 and len(set(keys)) == 4 and sorted(keys) == sorted(r["key"] for r in seen)
    clip_dirs = sorted({k.split("/")[0] for k in keys})
    assert len(clip_dirs) == 2 and "a_b" in clip_dirs, clip_dirs        # the unchanged name keeps its stem
    for job in summary["jobs"]:
        assert job["status"] == "success" and job["error"] is None, job
        assert job["values"]["3.fb_threshold"] in (1.5, 3.0)
        # the server wrote this job's files under PREFIX/<job>/ and the results folder holds the same
        server_files = _files(server.path("output", prefix, *job["key"].split("/")))
        npz = [f for f in server_files if f.startswith("video_tracks") and f.endswith(".npz")]
        assert len(npz) == 1
        assert sum(f.startswith("video_overlay_0") and f.endswith(".png") for f in server_files) == FRAMES
        local = _files(out / job["key"])
        assert sorted(job["downloaded"]) == sorted(f for f in server_files if f != npz[0])   # history lists images
        assert sorted(local) == sorted(job["downloaded"] + ["job.json"])
        n_points = 3 if job["clip"].endswith("a_b.mp4") else 2
        with np.load(server.path("output", prefix, *job["key"].split("/"), npz[0])) as tracks:
            assert tracks["tracks"].shape == (n_points, FRAMES, 2)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["job"] for r in rows] == keys and {r["3.fb_threshold"] for r in rows} == {"1.5", "3.0"}
    assert [(v["value"], v["jobs"], v["succeeded"]) for v in summary["by_value"]["3.fb_threshold"]] == \
        [(1.5, 2, 2), (3.0, 2, 2)]
    assert "4/4 jobs succeeded" in text.out
    manifest = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in manifest) == sorted(keys)

    # the same folder again needs --resume; with it nothing that finished runs again
    assert cli.main(args) == 2
    assert "--resume" in capsys.readouterr().err
    redone = []
    assert cli.main(args + ["--resume"], on_result=redone.append) == 0
    assert redone == []
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4
    # a changed sweep value is a new job; the finished ones are still skipped
    assert cli.main(args[:-2] + ["VDT_FlowTracker.fb_threshold=1.5,3,6", "--quiet", "--resume"],
                    on_result=redone.append) == 0
    assert sorted(r["values"]["3.fb_threshold"] for r in redone) == [6.0, 6.0]


def test_a_corrupt_clip_fails_alone(server, tmp_path, capsys):
    folder = tmp_path / "clips"
    _clips(str(folder), ["clip_1.mp4", "clip_2.mp4"])
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    prefix = f"batchtest_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "results"
    # (an upload subfolder without "vdtrack" in its name: test_server's import check reads every traceback in
    # the shared server's log, and the corrupt clip's one names its path)
    code = cli.main([API_WORKFLOW, str(folder), "--out", str(out), "--server", server.url, "--no-ray",
                     "--prefix", prefix, "--subfolder", "batchtest_inputs", "--quiet"])
    text = capsys.readouterr()
    assert code == 1, text
    by_key = {j["key"]: j for j in json.loads((out / "summary.json").read_text())["jobs"]}
    assert sorted(by_key) == ["broken", "clip_1", "clip_2"]
    broken = by_key["broken"]
    assert broken["status"] == "error" and broken["outputs"] == []
    assert "\n" not in broken["error"] and "node" in broken["error"], broken
    assert broken["error"] in text.out
    for key in ("clip_1", "clip_2"):
        assert by_key[key]["status"] == "success" and by_key[key]["outputs"], by_key[key]
    assert not os.path.exists(server.path("output", prefix, "broken"))
    assert os.path.isfile(server.path("input", "batchtest_inputs", "broken.mp4"))
    assert "2/3 jobs succeeded" in text.out
    assert server.get("/system_stats")                    # still serving


def test_report_metrics_aggregated_per_swept_value(server, tmp_path, capsys):
    """No clips: the demo workflow makes its own synthetic clip; sweeping its seed and the tracker's method
    gives a grid whose TAP-Vid metrics land in the summary, averaged per setting and per value."""
    out = tmp_path / "results"
    code = cli.main([DEMO_WORKFLOW, "--out", str(out), "--server", server.url, "--no-ray", "--quiet",
                     "--prefix", f"batchtest_{uuid.uuid4().hex[:8]}",
                     "--set", "1.seed=0,1", "--set", "1.frames=8", "--set", "1.width=128", "--set", "1.height=128",
                     "--set", "2.method=dis,farneback", "--no-download"])
    text = capsys.readouterr()
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    jobs = summary["jobs"]
    assert len(jobs) == 4
    for j in jobs:
        aj = j["metrics"]["7"]["average_jaccard"]
        report = [t for t in j["texts"] if t.startswith("TAP-Vid")]
        assert 0 <= aj <= 100 and f"AJ        {aj:6.2f}" in report[0]    # the node's own report agrees
        assert os.listdir(out / j["key"]) == ["job.json"]                     # --no-download
    for v in summary["by_value"]["2.method"]:
        mine = [j["metrics"]["7"]["average_jaccard"] for j in jobs if j["values"]["2.method"] == v["value"]]
        assert v["metrics"]["7.average_jaccard"] == pytest.approx(sum(mine) / 2)
    assert len(summary["by_setting"]) == 4
    assert "7.average_jaccard" in text.out


def test_bad_arguments_fail_before_queueing(server, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a clip")
    base = ["--out", str(tmp_path / "r"), "--server", server.url, "--no-ray"]
    assert cli.main([UI_WORKFLOW, str(tmp_path / "missing")] + base) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main([UI_WORKFLOW, str(empty)] + base) == 2
    err = capsys.readouterr().err
    assert "no clips in" in err and ".mp4" in err
    _clips(str(tmp_path / "one"), ["c.mp4"])
    one = str(tmp_path / "one")
    # a workflow without a loader names the options to use
    assert cli.main([DEMO_WORKFLOW, one] + base) == 2
    err = capsys.readouterr().err
    assert "--input-node" in err and "--input-name" in err
    assert cli.main([DEMO_WORKFLOW, one, "--input-node", "1"] + base) == 2
    assert "--input-name" in capsys.readouterr().err
    assert cli.main([API_WORKFLOW, one, "--input-node", "1", "--input-name", "nope"] + base) == 2
    assert "no input 'nope'" in capsys.readouterr().err
    assert cli.main([API_WORKFLOW, one, "--set", "3.fb_threshold=1,x"] + base) == 2
    assert "'x' is not a valid float" in capsys.readouterr().err
    assert cli.main([API_WORKFLOW, one, "--set", "9.fb_threshold=1"] + base) == 2
    assert "no node '9'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "manifest.jsonl").exists()


def test_clip_folder_workflow_runs_once_per_clip(server, object_info):
    """The shipped clip-folder workflow: the clip list (input/vdtrack_clips, written by conftest with ground
    truth beside each clip) drives the tracker and the overlay once per clip; the batch report scores every
    clip in one table, shows it and saves it as CSV."""
    from vdtrack.batch.workflow import ui_to_api
    wf = json.load(open(os.path.join(ROOT, "workflows", "vdtrack_clip_folder_report.json")))
    prompt = ui_to_api(wf, object_info)
    report_id = next(k for k, v in prompt.items() if v["class_type"] == "VDT_BatchReport")
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "SaveAnimatedWEBP")
    h = server.run(prompt, timeout=600)
    text = h["outputs"][report_id]["text"][0]
    names = sorted(os.path.basename(f) for f in os.listdir(server.path("input", "vdtrack_clips")) if f.endswith(".mp4"))
    assert len(names) == 3
    rows = [l for l in text.splitlines() if l.split() and l.split()[0] in names]
    assert [r.split()[0] for r in rows] == names
    assert len(h["outputs"][save_id]["images"]) == 3                          # one overlay per clip
    saved = text.splitlines()[-1].split()[1]
    table = list(csv.reader(open(server.path("output", *saved.split("/")))))
    assert [r[0] for r in table] == ["clip", *names, "mean"]
    aj = [float(r[1]) for r in table[1:4]]
    assert float(table[4][1]) == pytest.approx(sum(aj) / 3, abs=1e-3)
    assert h["outputs"][report_id]["vdtrack_metrics"][0]["average_jaccard"] == pytest.approx(sum(aj) / 3, abs=1e-3)


def _mask_png(path, rows: slice, cols: slice, size: int) -> np.ndarray:
    from PIL import Image

    m = np.zeros((size, size), np.uint8)
    m[rows, cols] = 255
    Image.fromarray(m).save(path)
    return m > 127


def test_each_clip_propagates_its_own_mask_file(server, tmp_path, capsys):
    """Label propagation over a folder whose clips each carry NAME.mask.png: the CLI uploads each job's own mask
    into the workflow's LoadImageMask, and each job's propagated mask starts from exactly that mask (frame 0 of
    the saved masks) and stays on its side of the frame. Both clips are the same video, so only the masks
    differ."""
    from PIL import Image

    size = 96
    folder = tmp_path / "clips"
    _clips(str(folder), ["left.mp4"])
    (folder / "right.mp4").write_bytes((folder / "left.mp4").read_bytes())
    masks = {"left": _mask_png(folder / "left.mask.png", slice(20, 60), slice(4, 36), size),
             "right": _mask_png(folder / "right.mask.png", slice(30, 80), slice(60, 92), size)}
    workflow = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "placeholder.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": "placeholder.png", "channel": "red"}},
        "4": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "bilinear",
                                                      "width": size, "height": size, "crop": "disabled"}},
        "5": {"class_type": "VDT_PixelFeatures", "inputs": {"images": ["4", 0], "patch_size": 4, "projection_dim": 0,
                                                             "seed": 0, "center": True, "coords_weight": 0.0}},
        "6": {"class_type": "VDT_PropagateLabels", "inputs": {
            "features": ["5", 0], "images": ["4", 0], "mask": ["3", 0], "mask_kind": "binary", "n_context": 4,
            "radius": 4, "top_k": 10, "temperature": 0.1, "output_object": 0, "overlay_opacity": 0.5}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "propagated"}},
    }
    wf_path = tmp_path / "propagate.json"
    wf_path.write_text(json.dumps(workflow))
    out = tmp_path / "results"
    code = cli.main([str(wf_path), str(folder), "--out", str(out), "--server", server.url, "--no-ray", "--quiet",
                     "--prefix", f"batchtest_{uuid.uuid4().hex[:8]}", "--subfolder", "batchtest_masks"])
    assert code == 0, capsys.readouterr()
    jobs = {j["key"]: j for j in json.loads((out / "summary.json").read_text())["jobs"]}
    assert sorted(jobs) == ["left", "right"]
    propagated = {}
    for key, job in jobs.items():
        assert job["status"] == "success", job
        frames = sorted(f for f in job["downloaded"] if f.startswith("propagated") and f.endswith(".png"))
        assert len(frames) == FRAMES, frames
        propagated[key] = np.stack([np.asarray(Image.open(out / key / f).convert("L")) > 127 for f in frames])
    for key, own in masks.items():
        other = masks["right" if key == "left" else "left"]
        assert np.array_equal(propagated[key][0], own), key            # frame 0 is the clip's own mask file
        later = propagated[key][1:]
        assert later.any() and (later & own).sum() > (later & other).sum(), key


def test_ctrl_c_exits_and_resume_finishes_the_rest(server, tmp_path, capsys):
    """Ctrl-C after the first job, with one prompt running and one waiting: the command returns 130 with no
    worker left waiting on the prompt taken off the queue (it polled /history until --timeout), and the first
    --resume runs the rest to success."""
    folder = tmp_path / "clips"
    _clips(str(folder), ["c1.mp4", "c2.mp4", "c3.mp4", "c4.mp4"])
    out = tmp_path / "results"
    args = [API_WORKFLOW, str(folder), "--out", str(out), "--server", server.url, "--no-ray", "--quiet",
            "--prefix", f"batchtest_{uuid.uuid4().hex[:8]}", "--timeout", "100000", "--max-queued", "3"]

    def ctrl_c(result):
        raise KeyboardInterrupt                 # what Ctrl-C does

    before = set(threading.enumerate())
    assert cli.main(args, on_result=ctrl_c) == 130
    workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("vdtrack-batch")]
    for t in workers:
        t.join(timeout=120)                     # a bound for a broken fix only: they end at their next poll
    assert not [t for t in workers if t.is_alive()]
    rows = {r["job"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert sorted(r["status"] for r in rows.values()).count("success") == 1, rows
    capsys.readouterr()
    redone = []
    code = cli.main(args + ["--resume"], on_result=redone.append)
    assert code == 0, capsys.readouterr()
    assert len(redone) == 3 and all(r["status"] == "success" for r in redone)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["status"] for r in rows] == ["success"] * 4 and [r["retries"] for r in rows] == ["0"] * 4
