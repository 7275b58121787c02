"""The comparison node: one row per connected track set, metrics against the ground truth, carried seconds,
the CSV written under the output folder, and the time each pack node adds along a chain."""
from __future__ import annotations

import csv
import os

import folder_paths
import pytest
import torch

from vdtrack.nodes.evaluation import VDT_CompareTrackers, format_table, parse_names
from vdtrack.nodes.features import VDT_PixelFeatures
from vdtrack.nodes.tracking import VDT_FlowTracker
from vdtrack.nodes.timing import seconds_of
from vdtrack.nodes.tracking import VDT_TrackPoints


def gt_tracks(t=6, n=4, h=64, w=96):
    g = torch.Generator().manual_seed(0)
    path = torch.stack([torch.rand(t, n, generator=g) * (w - 1), torch.rand(t, n, generator=g) * (h - 1)], -1)
    return {"track_path": path, "track_visibility": torch.ones(t, n, dtype=torch.bool), "frame_size": (h, w)}


def test_names():
    assert parse_names("flow, , HeFT", 4) == ["flow", "tracks_2", "HeFT", "tracks_4"]
    with pytest.raises(ValueError, match="method_names"):
        parse_names('a"b', 2)


def test_rows_metrics_seconds_and_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    gt = gt_tracks()
    perfect = {**gt, "seconds": 1.5}
    off = {**gt, "track_path": gt["track_path"] + 40.0}        # 40 px off on a 96 px frame: beyond 16/256*96 px
    out = VDT_CompareTrackers.execute(gt, "exact, far", "first", "cmp/run", tracks_1=perfect, tracks_3=off)
    report, rel = out.result
    lines = [l.split() for l in report.splitlines() if l.startswith(("exact", "tracks_3"))]
    assert lines[0][1:5] == ["100.00", "100.00", "100.00", "1.50"]
    # the second name belongs to tracks_2 (unconnected); tracks_3 keeps its input name and carries no time
    assert lines[1][0] == "tracks_3" and lines[1][2] == "0.00" and lines[1][4] == "-"
    assert "far" not in report
    with open(os.path.join(tmp_path, rel), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["exact", "tracks_3"]
    assert float(rows[0]["AJ"]) == 100.0 and float(rows[0]["seconds"]) == 1.5
    assert float(rows[1]["delta_avg"]) == 0.0 and rows[1]["seconds"] == ""
    assert rel.startswith("cmp/") and rel.endswith(".csv")


def test_errors_name_the_input():
    gt = gt_tracks()
    with pytest.raises(ValueError, match="tracks_1"):
        VDT_CompareTrackers.execute(gt, "", "first", "")
    fewer = {**gt, "track_path": gt["track_path"][:, :3], "track_visibility": gt["track_visibility"][:, :3]}
    with pytest.raises(ValueError, match="tracks_2: 3 points"):
        VDT_CompareTrackers.execute(gt, "", "first", "", tracks_2=fewer)


def test_table_is_aligned():
    rows = [{"method": "a", "AJ": 1.0, "delta_avg": float("nan"), "OA": 3.0, "seconds": None, "points": 2,
             "frames": 5}]
    text = format_table(rows)
    assert "nan" in text and " - " in text + " "
    assert len({len(l) for l in text.splitlines()}) == 1


def test_seconds_accumulate_along_a_chain():
    """Features carry their time; a tracker adds its own to it; the flow tracker stamps its own."""
    frames = torch.rand(4, 32, 32, 3)
    feats = VDT_PixelFeatures.execute(frames, 4, 0, 0, True, 0.0).result[0]
    f_s = seconds_of(feats)
    assert f_s is not None and f_s >= 0
    feats["meta"]["seconds"] = 100.0                         # pretend the extraction took 100 s
    tr = VDT_TrackPoints.execute(feats, "10,10", "nearest_neighbour", 0.6, 0, 0.05, 17.0, 42.0, 18.0, 0.05, 1.0,
                                 "feature grid", "sequential", "heads").result[0]
    assert 100.0 <= tr["seconds"] < 200.0
    flow = VDT_FlowTracker.execute(frames, "10,10").result[0]
    assert 0.0 <= flow["seconds"] < 100.0
    # keypoint propagation is a tracker over features too: it carries the chain's time like the others
    from vdtrack.nodes.propagation import VDT_PropagateKeypoints
    kp = VDT_PropagateKeypoints.execute(feats, "10,10", 20, 3, 10, 0.1, 0.5).result[0]
    assert 100.0 <= kp["seconds"] < 200.0


def test_average_features_is_the_mean_and_names_bad_inputs():
    from vdtrack.nodes.features import VDT_AverageFeatures

    def fd(x, seed):
        return {"features": x, "stride": (4.0, 4.0), "frame_size": (8, 8), "meta": {"seed": seed, "seconds": 2.0}}
    a, b, c = torch.rand(3, 2, 5, 2, 2).unbind(0)
    out = VDT_AverageFeatures.execute(fd(a, 0), features_3=fd(b, 1), features_5=fd(c, 2)).result[0]
    assert torch.allclose(out["features"], (a + b + c) / 3)
    assert out["meta"]["ensemble_size"] == 3 and out["meta"]["ensemble_seeds"] == [0, 1, 2]
    assert out["meta"]["seconds"] >= 6.0
    with pytest.raises(ValueError, match="features_2"):
        VDT_AverageFeatures.execute(fd(a, 0), features_2=fd(torch.rand(2, 5, 3, 2), 1))
