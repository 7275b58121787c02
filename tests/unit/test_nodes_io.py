"""tracks / visualize / data / flow-tracker nodes called directly (execute), with ComfyUI folders in tmp_path."""
from __future__ import annotations

import json
import os

import av
import pytest
import torch

from vdtrack.nodes import data, tracking, tracks as vdt_io, visualize
from vdtrack.nodes.data import VDT_SyntheticClip
from vdtrack.nodes.tracking import VDT_FlowTracker
from vdtrack.nodes.tracks import (VDT_ATIToTracks, VDT_LoadTracks, VDT_PointsFromString, VDT_SaveTracks,
                                  VDT_TracksToATI, VDT_TracksToMask)
from vdtrack.nodes.visualize import VDT_VisualizeTracks


def small_tracks(t=5, n=3):
    g = torch.Generator().manual_seed(0)
    return {"track_path": torch.rand(t, n, 2, generator=g) * 30, "track_visibility": torch.rand(t, n, generator=g) > 0.2,
            "query_points": torch.tensor([[0, 1.0, 2.0], [1, 3.0, 4.0], [0, 5.0, 6.0]]), "frame_size": (32, 40)}


def test_schemas():
    expect = {vdt_io: ("tracks", {"VDT_PointsFromString", "VDT_SaveTracks", "VDT_LoadTracks", "VDT_TracksToATI",
                              "VDT_ATIToTracks", "VDT_TracksToMask"}),
              visualize: ("visualize", {"VDT_VisualizeTracks"}),
              data: ("data", {"VDT_SyntheticClip"}),
              tracking: ("tracking", {"VDT_FlowTracker"})}
    for module, (family, ids) in expect.items():
        assert ids <= {n.define_schema().node_id for n in module.NODES}
        for n in module.NODES:
            s = n.define_schema()
            assert s.display_name.startswith("VDT ") and s.category == f"vdtrack/{family}"
            assert all(i.tooltip for i in s.inputs), s.node_id
            n.GET_SCHEMA()                        # ComfyUI's own schema validation (unique ids etc.)


def test_points_from_string():
    video = torch.zeros(4, 32, 40, 3)
    text, count = VDT_PointsFromString.execute("1,2\n3.5,4,2", video).result
    assert count == 2 and json.loads(text) == [{"x": 1, "y": 2, "t": 0}, {"x": 3.5, "y": 4, "t": 2}]
    with pytest.raises(ValueError, match="points"):
        VDT_PointsFromString.execute("50,2", video)          # outside the 40 px width
    with pytest.raises(ValueError, match="images"):
        VDT_PointsFromString.execute("1,2", torch.zeros(32, 40))


@pytest.mark.parametrize("fmt", ["npz", "json", "csv"])
def test_save_and_load_tracks(comfy_folders, fmt):
    tr = small_tracks()
    out = VDT_SaveTracks.execute(tr, fmt, "vdtrack/tracks")
    (path,) = out.result
    assert path.startswith(str((comfy_folders / "output"))) and path.endswith(f".{fmt}") and os.path.isfile(path)
    assert out.ui is not None
    rel = os.path.relpath(path, (comfy_folders / "output")).replace(os.sep, "/")
    assert f"{rel} [output]" in VDT_LoadTracks.define_schema().inputs[0].options
    for file, text in ((f"{rel} [output]", ""), (vdt_io.USE_PATH, rel), (vdt_io.USE_PATH, f"{rel} [output]")):
        (back,) = VDT_LoadTracks.execute(file, text).result
        assert torch.equal(back["track_path"], tr["track_path"])
        assert torch.equal(back["track_visibility"], tr["track_visibility"])
        assert torch.equal(back["query_points"], tr["query_points"]) and tuple(back["frame_size"]) == (32, 40)
    fp1 = VDT_LoadTracks.fingerprint_inputs(f"{rel} [output]", "")
    assert fp1 == VDT_LoadTracks.fingerprint_inputs(f"{rel} [output]", "")


def test_save_rejects_traversal_and_load_rejects_outside(comfy_folders, tmp_path):
    tr = small_tracks()
    for bad in ("../evil", "/abs/evil", "a/../../evil", ""):
        with pytest.raises(ValueError, match="filename_prefix"):
            VDT_SaveTracks.execute(tr, "npz", bad)
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"x")
    for bad in ("../outside.npz", str(outside), "..\\outside.npz", "missing.npz", "notes.txt"):
        with pytest.raises(ValueError, match="path"):
            VDT_LoadTracks.execute(vdt_io.USE_PATH, bad)
    ((comfy_folders / "input") / "link.npz").symlink_to(outside)         # a link that escapes the folder
    with pytest.raises(ValueError, match="outside"):
        VDT_LoadTracks.execute(vdt_io.USE_PATH, "link.npz")


def test_load_from_input_folder(comfy_folders):
    tr = small_tracks()
    VDT_SaveTracks.execute(tr, "json", "x/t")
    src = next(((comfy_folders / "output") / "x").iterdir())
    ((comfy_folders / "input") / "mine.json").write_text(src.read_text())
    assert "mine.json" in VDT_LoadTracks.define_schema().inputs[0].options
    (back,) = VDT_LoadTracks.execute("mine.json", "").result
    assert torch.equal(back["track_path"], tr["track_path"])


def test_ati_nodes_round_trip():
    t = torch.arange(9, dtype=torch.float32)
    tr = {"track_path": torch.stack([3 + t, 20 - 2 * t], -1)[:, None], "track_visibility": torch.ones(9, 1, dtype=torch.bool)}
    (text,) = VDT_TracksToATI.execute(tr, 121).result
    assert len(json.loads(text)[0]) == 121
    (back,) = VDT_ATIToTracks.execute(text, 9, False).result
    assert torch.allclose(back["track_path"], tr["track_path"], atol=1e-3) and back["track_visibility"].all()
    with pytest.raises(ValueError, match="tracks"):
        VDT_ATIToTracks.execute("not json", 9, False)


def test_tracks_to_mask_node():
    tr = {"track_path": torch.tensor([[[10.0, 8.0]], [[12.0, 8.0]]]), "track_visibility": torch.tensor([[True], [False]])}
    (mask,) = VDT_TracksToMask.execute(tr, torch.zeros(2, 16, 24, 3), 3.0).result
    assert mask.shape == (2, 16, 24) and float(mask[0, 8, 10]) == 1.0 and float(mask[1].sum()) == 0


def test_visualize_writes_playable_preview(comfy_folders):
    video = torch.rand(4, 31, 40, 3)                          # odd height: the preview crops to even
    tr = {"track_path": torch.tensor([[[10.0, 8.0]]] * 4), "track_visibility": torch.ones(4, 1, dtype=torch.bool)}
    out = VDT_VisualizeTracks.execute(video, tr, 3.0, 4, 8.0)
    (img,) = out.result
    assert img.shape == video.shape and not torch.equal(img, video)
    ui = out.ui.as_dict()
    entry = ui["images"][0]
    assert entry["type"] == "temp" and entry["filename"].endswith(".mp4")
    with av.open(os.path.join((comfy_folders / "temp"), entry["subfolder"], entry["filename"])) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4
    # tracks computed on a half-size frame are scaled to the video (pixel centres on integers at both sizes)
    video32 = torch.rand(4, 32, 40, 3)
    (full,) = VDT_VisualizeTracks.execute(video32, tr, 3.0, 4, 8.0).result
    tr_half = dict(tr, track_path=torch.tensor([[[4.75, 3.75]]] * 4), frame_size=(16, 20))
    (half,) = VDT_VisualizeTracks.execute(video32, tr_half, 3.0, 4, 8.0).result
    assert torch.allclose(full, half, atol=1e-5)
    with pytest.raises(ValueError, match="tracks"):
        VDT_VisualizeTracks.execute(video[:3], tr, 3.0, 4, 8.0)


def test_synthetic_node_feeds_flow_tracker(comfy_folders):
    images, tracks, union, labels, query = VDT_SyntheticClip.execute(1, 8, 64, 48, 2, 4, 4, "moving_objects").result
    assert images.shape == (8, 48, 64, 3) and union.shape == (8, 48, 64) and labels.shape == (8, 48, 64)
    assert set(labels.unique().tolist()) <= {0.0, 1.0, 2.0} and float(union.max()) <= 1.0
    assert tracks["track_path"].shape == (8, 12, 2) and tracks["frame_size"] == (48, 64)
    assert len(json.loads(query)) == 12
    (pred,) = VDT_FlowTracker.execute(images, query, "dis", 1.5).result
    assert pred["track_path"].shape == (8, 12, 2) and pred["frame_size"] == (48, 64)
    err = (pred["track_path"] - tracks["track_path"]).norm(dim=-1)[tracks["track_visibility"]]
    assert float(err.median()) < 2.0
    _, tracks2, *_ = VDT_SyntheticClip.execute(1, 8, 64, 48, 2, 4, 4, "identical_objects").result
    assert tracks2["track_path"].shape[1] == 12
    with pytest.raises(ValueError, match="variant"):
        VDT_SyntheticClip.execute(1, 8, 64, 48, 2, 4, 4, "bogus")


def test_synthetic_clip_node_rejects_a_clip_too_large_for_memory():

    with pytest.raises(ValueError, match="frames"):
        VDT_SyntheticClip.execute(seed=0, frames=1000, width=4096, height=4096, num_objects=1, points_per_object=1)
