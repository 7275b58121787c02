"""VDT Clip Folder (a folder of clips as lists, with points and ground truth beside each clip) and VDT Batch
Report (per-clip TAP-Vid / DAVIS rows, the mean, the CSV) called directly, with ComfyUI folders in tmp_path."""
from __future__ import annotations

import csv
import json
import math
import os
from fractions import Fraction

import pytest
import torch
from comfy_api.latest import InputImpl, Types

from vdtrack.kernels.synthetic import make_clip
from vdtrack.kernels.tracks_io import save_tracks_npz
from vdtrack.nodes import batch as batch_nodes
from vdtrack.nodes.batch import VDT_BatchReport, VDT_ClipFolder
from vdtrack.nodes.evaluation import VDT_DavisReport, VDT_TapVidReport


def _write_clip(folder, name, seed, truth=True, frames=6, size=32):
    clip = make_clip(frames=frames, height=size, width=size, num_objects=1, points_per_object=3, seed=seed)
    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=clip.video, frame_rate=Fraction(8)))
    os.makedirs(folder, exist_ok=True)
    video.save_to(os.path.join(folder, name), format=Types.VideoContainer.MP4, codec=Types.VideoCodec.H264)
    if truth:
        save_tracks_npz(os.path.join(folder, os.path.splitext(name)[0] + ".tracks.npz"), clip.track_path,
                        clip.track_visibility, clip.query_points, clip.frame_size)
    return clip


def test_clip_folder_lists_clips_points_and_truth(comfy_folders):
    d = comfy_folders / "input" / "shots"
    clips = {n: _write_clip(str(d), n, seed) for seed, n in enumerate(["b.mp4", "a.mp4", "c.mp4"])}
    (d / "b.points.json").write_text('[{"x": 3, "y": 4}]')
    (d / "notes.txt").write_text("not a clip")
    out = VDT_ClipFolder.execute("shots", 0, 0, True)
    videos, names, points, truths = out.args
    assert names == ["a.mp4", "b.mp4", "c.mp4"] and len(videos) == len(truths) == 3
    assert videos[0].get_frame_count() == 6 and videos[0].get_dimensions() == (32, 32)
    assert points[1] == '[{"x": 3, "y": 4}]'                        # the file beside b.mp4
    q = clips["a.mp4"].query_points                                  # else the ground truth's query points
    got = torch.tensor([[p["t"], p["x"], p["y"]] for p in json.loads(points[0])])
    assert torch.allclose(got, q, atol=1e-3)
    assert torch.equal(truths[2]["track_visibility"].bool(), clips["c.mp4"].track_visibility)
    _, names, _, truths = VDT_ClipFolder.execute("shots", 1, 1, False).args
    assert names == ["b.mp4"] and truths == []
    schema = VDT_ClipFolder.GET_SCHEMA()
    assert all(o.is_output_list for o in schema.outputs)


def test_clip_folder_errors_name_the_input(comfy_folders, monkeypatch):
    d = comfy_folders / "input" / "shots"
    _write_clip(str(d), "a.mp4", 0, truth=False)
    for folder, words in (("../x", "folder: '../x' must be a relative"), ("/etc", "folder: '/etc' must be"),
                          ("/", "folder: '/' must be a relative"), ("nope", "folder: 'nope' is not a folder"),
                          ("", "folder: empty")):
        with pytest.raises(ValueError, match=words):
            VDT_ClipFolder.execute(folder, 0, 0, False)
    with pytest.raises(ValueError, match="ground_truth: clip 'a.mp4' has no a.tracks.npz"):
        VDT_ClipFolder.execute("shots", 0, 0, True)
    with pytest.raises(ValueError, match="start: 5 but the folder holds 1 clips"):
        VDT_ClipFolder.execute("shots", 5, 0, False)
    (d / "b.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="clip 'b.mp4' cannot be read"):
        VDT_ClipFolder.execute("shots", 0, 0, False)
    os.remove(d / "b.mp4")
    monkeypatch.setattr(batch_nodes, "MEMORY_SHARE", 1e-12)          # nothing fits: refused up front
    with pytest.raises(ValueError, match=r"max_clips: the 1 clips decode to about .* GiB"):
        VDT_ClipFolder.execute("shots", 0, 0, False)


def _tracks(seed, shift=0.0):
    clip = make_clip(frames=6, height=32, width=32, num_objects=1, points_per_object=4, seed=seed)
    gt = clip.tracks()
    pred = {**gt, "track_path": gt["track_path"] + shift}
    return pred, gt


def test_batch_report_rows_mean_and_csv(comfy_folders):
    items = [_tracks(0), _tracks(1, shift=0.3), _tracks(2, shift=0.9)]   # 2.4 and 7.2 px at 256
    pred, gt = [p for p, _ in items], [g for _, g in items]
    out = VDT_BatchReport.execute(predicted_tracks=pred, ground_truth_tracks=gt, names=["x", "y", "z"],
                                  query_mode=["first"], mask_kind=["binary"], filename_prefix=["rep/batch"])
    report, mean_aj, mean_jf = out.args
    single = [VDT_TapVidReport.execute(p, g, "first").args[1] for p, g in items]     # one clip at a time
    assert single[0] == pytest.approx(100.0) and single[2] < single[1] < 100
    assert mean_aj == pytest.approx(sum(single) / 3) and math.isnan(mean_jf)
    assert out.ui["vdtrack_metrics"][0]["average_jaccard"] == pytest.approx(mean_aj)
    assert out.ui["text"][0] == report
    saved = report.splitlines()[-1]
    assert saved.startswith("saved: rep/batch_") and saved.endswith(".csv (output folder)")
    rows = list(csv.reader(open(comfy_folders / "output" / saved.split()[1])))
    assert rows[0] == ["clip", "AJ", "delta_avg", "OA"] and [r[0] for r in rows[1:]] == ["x", "y", "z", "mean"]
    assert float(rows[2][1]) == pytest.approx(single[1], abs=1e-3)
    assert float(rows[4][1]) == pytest.approx(mean_aj, abs=1e-3)


def test_batch_report_masks_and_errors(comfy_folders):
    clip = make_clip(frames=5, height=32, width=32, num_objects=1, points_per_object=0, seed=3)
    gt = (clip.labels > 0).float()
    pred = [gt, torch.roll(gt, 3, dims=2)]
    out = VDT_BatchReport.execute(predicted_mask=pred, ground_truth_mask=[gt, gt], query_mode=["first"],
                                  mask_kind=["binary"], filename_prefix=[""])
    single = [VDT_DavisReport.execute(p, gt, "binary").args[1] for p in pred]
    assert out.args[2] == pytest.approx(sum(single) / 2) and single[0] == pytest.approx(100.0)
    assert "saved" not in out.args[0] and "\nclip 0 " in out.args[0] and "\nclip 1 " in out.args[0]
    p0, g0 = _tracks(0)
    with pytest.raises(ValueError, match="ground_truth_tracks: 1 items but predicted_tracks has 2"):
        VDT_BatchReport.execute(predicted_tracks=[p0, p0], ground_truth_tracks=[g0])
    with pytest.raises(ValueError, match="connect tracks or masks"):
        VDT_BatchReport.execute(names=["a"])
    with pytest.raises(ValueError, match="names: 2 names for 1 clips"):
        VDT_BatchReport.execute(predicted_tracks=[p0], ground_truth_tracks=[g0], names=["a", "b"])
    bad = {**g0, "track_path": g0["track_path"][:3], "track_visibility": g0["track_visibility"][:3]}
    with pytest.raises(ValueError, match=r"clip 'b' \(item 1\): predicted_tracks: 6 frames"):
        VDT_BatchReport.execute(predicted_tracks=[p0, p0], ground_truth_tracks=[g0, bad], names=["a", "b"])
