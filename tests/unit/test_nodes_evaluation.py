"""Evaluation nodes called directly: report text, outputs, validation and the saved JSON."""
from __future__ import annotations

import json
import os

import folder_paths
import numpy as np
import pytest
import torch

from vdtrack.nodes.evaluation import NODES, VDT_DavisReport, VDT_TapVidReport


def tracks(t=6, n=4, h=256, w=512, seed=0, frame_size=True):
    g = torch.Generator().manual_seed(seed)
    path = torch.stack([torch.randint(0, w, (t, n), generator=g), torch.randint(0, h, (t, n), generator=g)], -1)
    out = {"track_path": path.float(), "track_visibility": torch.ones(t, n, dtype=torch.bool)}
    if frame_size:
        out["frame_size"] = (h, w)
    return out


def test_schema_ids():
    ids = {n.define_schema().node_id for n in NODES}
    assert ids == {"VDT_TapVidReport", "VDT_DavisReport", "VDT_CompareTrackers"}
    for n in NODES:
        s = n.define_schema()
        assert s.display_name.startswith("VDT ") and s.category == "vdtrack/evaluation"
        assert all(i.tooltip for i in s.inputs)


def test_tapvid_perfect_prediction_reports_100():
    gt = tracks()
    out = VDT_TapVidReport.execute(tracks(), gt, "first")
    report, aj, delta, oa = out.result
    assert aj == 100.0 and delta == 100.0 and oa == 100.0
    assert "AJ" in report and "delta_avg" in report and "256x256" in report
    assert "queries: 4" in report and "frames: 6" in report
    assert out.ui is not None


def test_tapvid_one_px_off_at_eval_frame_and_occlusion():
    gt = tracks()
    gt["track_visibility"][3:, 0] = False            # track 0 occluded from frame 3
    pred = tracks()
    pred["track_path"] = pred["track_path"] + torch.tensor([2.0, 0.0])   # 1 px at 256 wide
    report, aj, delta, oa = VDT_TapVidReport.execute(pred, gt, "first").result
    # visible evaluated points: 3 tracks * 5 + track 0 frames 1,2 = 17; occluded evaluated: 3 (frames 3..5)
    # pts_within_1 = 0, others 1 -> delta_avg = 80; OA = 17/20 (pred always visible)
    assert delta == pytest.approx(80.0)
    assert oa == pytest.approx(100 * 17 / 20)
    # jaccard_d (d >= 2) = 17 / (17 + 3 FP) = 0.85; jaccard_1 = 0 -> AJ = 4 * 85 / 5 = 68
    assert aj == pytest.approx(68.0)


def test_tapvid_frame_size_sources_and_errors():
    gt = tracks(frame_size=False)
    pred = tracks(frame_size=False)
    with pytest.raises(ValueError, match="predicted_tracks: no frame size"):
        VDT_TapVidReport.execute(pred, gt, "first")
    images = torch.zeros(6, 256, 512, 3)
    assert VDT_TapVidReport.execute(pred, gt, "strided", images=images).result[1] == 100.0
    with pytest.raises(ValueError, match="images"):
        VDT_TapVidReport.execute(tracks(), gt, "first", images=torch.zeros(6, 128, 128, 3))
    short = tracks(t=5)
    with pytest.raises(ValueError, match="predicted_tracks: 5 frames"):
        VDT_TapVidReport.execute(short, tracks(), "first")
    with pytest.raises(ValueError, match="predicted_tracks: 3 points"):
        VDT_TapVidReport.execute(tracks(n=3), tracks(), "first")
    with pytest.raises(ValueError, match="ground_truth_tracks"):
        VDT_TapVidReport.execute(tracks(), {"points": 1}, "first")


def test_tapvid_uses_gt_query_points_and_saves_json(tmp_path):
    gt = tracks()
    gt["query_points"] = torch.tensor([[2.0, 1.0, 1.0]] * 4)         # (t,x,y): queried at frame 2
    pred = tracks()
    pred["track_path"][:3] += 100.0                                    # wrong up to the query frame: ignored
    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        report, aj, _, _ = VDT_TapVidReport.execute(pred, gt, "first", filename_prefix="evals/tap").result
    finally:
        folder_paths.set_output_directory(old)
    assert aj == 100.0 and "(given)" in report
    saved = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs]
    assert len(saved) == 1 and saved[0].endswith(".json") and "evals" in saved[0]
    data = json.load(open(saved[0]))
    assert data["average_jaccard"] == 100.0 and data["num_evaluated_points"] == 4 * 3


def test_tapvid_nan_is_reported():
    gt = tracks()
    gt["track_visibility"][:] = False
    gt["track_visibility"][-1] = True                  # visible only at the last frame -> nothing evaluated
    report, aj, _, _ = VDT_TapVidReport.execute(tracks(), gt, "first").result
    assert np.isnan(aj) and "NaN average_jaccard" in report


def masks(t=5, h=40, w=60):
    m = torch.zeros(t, h, w)
    m[:, 10:30, 15:45] = 1.0
    return m


def test_davis_identical_and_partial():
    report, jf, j, f = VDT_DavisReport.execute(masks(), masks(), "binary").result
    assert jf == 100.0 and j == 100.0 and f == 100.0
    assert "J&F-Mean" in report and "evaluated frames: 3" in report
    pred = masks()
    pred[2] = 0.0                                       # one of 3 evaluated frames empty -> J = F = 2/3
    _, jf, j, f = VDT_DavisReport.execute(pred, masks(), "binary").result
    assert j == pytest.approx(200 / 3) and f == pytest.approx(200 / 3) and jf == pytest.approx(200 / 3)
    _, jf_all, _, _ = VDT_DavisReport.execute(pred, masks(), "binary", drop_first_last=False).result
    assert jf_all == pytest.approx(80.0)


def test_davis_label_map_and_errors():
    gt = masks()
    gt[:, 32:38, 2:10] = 2.0
    pred = gt.clone()
    pred[pred == 2] = 0                                 # object 2 missing -> its J = F = 0
    report, jf, j, _ = VDT_DavisReport.execute(pred, gt, "label map").result
    assert j == pytest.approx(50.0) and "object" in report
    with pytest.raises(ValueError, match="predicted_mask: 4 frames"):
        VDT_DavisReport.execute(masks(t=4), masks(), "binary")
    with pytest.raises(ValueError, match="predicted_mask"):
        VDT_DavisReport.execute(masks(w=50), masks(), "binary")
    with pytest.raises(ValueError, match="ground_truth_mask"):
        VDT_DavisReport.execute(masks(), torch.zeros(5, 40, 60), "binary")
    with pytest.raises(ValueError, match="predicted_mask"):
        VDT_DavisReport.execute(masks() * 0.5, masks(), "label map")
