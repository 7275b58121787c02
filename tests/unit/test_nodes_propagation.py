"""Propagation and Point Prompting nodes called directly: schemas, outputs, validation."""
from __future__ import annotations

import json

import pytest
import torch

from vdtrack.kernels.markers import draw_markers
from vdtrack.nodes import point_prompting, propagation
from vdtrack.nodes.point_prompting import (VDT_DrawMarkers, VDT_RebalanceColors, VDT_TrackRedMarkers,
                                           parse_color)
from vdtrack.nodes.propagation import VDT_PropagateKeypoints, VDT_PropagateLabels, first_label_map


def test_schemas():
    ids = {n.define_schema().node_id for n in propagation.NODES + point_prompting.NODES}
    assert ids == {"VDT_PropagateLabels", "VDT_PropagateKeypoints", "VDT_TEDPreset", "VDT_DrawMarkers",
                   "VDT_RebalanceColors", "VDT_TrackRedMarkers", "VDT_PointPromptingTracker"}
    for mod, fam in ((propagation, "propagation"), (point_prompting, "point_prompting")):
        for n in mod.NODES:
            s = n.define_schema()
            s.validate()                                   # what ComfyUI checks on load (unique ids, ...)
            assert s.display_name.startswith("VDT ") and s.category == f"vdtrack/{fam}"
            assert all(i.tooltip for i in s.inputs)


def _shift_clip(t_all=5, cells=(8, 10), stride=4, seed=0):
    """Features that move by one cell per frame (down-right) and matching frames / masks at stride 4."""
    g = torch.Generator().manual_seed(seed)
    h, w = cells
    canvas = torch.randn(16, h + t_all + 4, w + t_all + 4, generator=g)
    feats = torch.stack([canvas[:, 4 - t:4 - t + h, 4 - t:4 - t + w] for t in range(t_all)])
    size = (h * stride, w * stride)
    images = torch.rand(t_all, size[0], size[1], 3, generator=g)
    return {"features": feats, "stride": (stride, stride), "frame_size": size, "meta": {}}, images


def test_propagate_labels_two_objects():
    feats, images = _shift_clip()
    t_all, hh, ww = images.shape[:3]
    masks = torch.zeros(2, hh, ww)
    masks[0, 8:16, 8:16] = 1
    masks[1, 16:24, 20:28] = 1
    out = VDT_PropagateLabels.execute(feats, images, masks, "object per batch entry", 3, 2, 10, 0.1, 0, 0.5)
    mask, label_map, ov = out.result
    assert mask.shape == (t_all, hh, ww) and label_map.shape == (t_all, hh, ww) and ov.shape == images.shape
    assert set(label_map.unique().tolist()) <= {0.0, 1.0, 2.0}
    assert torch.equal(mask, (label_map > 0).float())
    # content moves one cell (4 px) down-right per frame: object 1 at frame 2 is [16:24, 16:24]
    assert float((label_map[2, 17:23, 17:23] == 1).float().mean()) == 1.0
    assert float((label_map[2, 25:31, 29:35] == 2).float().mean()) == 1.0
    only2 = VDT_PropagateLabels.execute(feats, images, masks, "object per batch entry", 3, 2, 10, 0.1, 2, 0.5).result[0]
    assert torch.equal(only2, (label_map == 2).float())
    # overlay: background untouched, objects tinted
    bg = label_map == 0
    assert torch.equal(ov[bg], images[bg])
    assert not torch.equal(ov[~bg], images[~bg])
    # the same objects given as a label map, and one object as binary
    ids = masks[0] + 2 * masks[1]
    lm = VDT_PropagateLabels.execute(feats, images, ids[None], "label map", 3, 2, 10, 0.1, 0, 0.5).result[1]
    assert torch.equal(lm, label_map)
    one = VDT_PropagateLabels.execute(feats, images, masks[:1], "binary", 3, 2, 10, 0.1, 0, 0.5).result[0]
    assert float((one[2, 17:23, 17:23]).mean()) == 1.0


def test_propagate_labels_bad_inputs():
    feats, images = _shift_clip()
    hh, ww = images.shape[1:3]
    m = torch.zeros(1, hh, ww)
    with pytest.raises(ValueError, match="mask"):
        VDT_PropagateLabels.execute(feats, images, m, "binary", 3, 2, 10, 0.1)          # empty mask
    m[0, 4:12, 4:12] = 1
    with pytest.raises(ValueError, match="images"):
        VDT_PropagateLabels.execute(feats, images[:3], m, "binary", 3, 2, 10, 0.1)      # frame count
    with pytest.raises(ValueError, match="images"):
        VDT_PropagateLabels.execute(feats, images[:, :20], m[:, :20], "binary", 3, 2, 10, 0.1)   # frame size
    with pytest.raises(ValueError, match="mask"):
        VDT_PropagateLabels.execute(feats, images, m[:, :20], "binary", 3, 2, 10, 0.1)  # mask size
    with pytest.raises(ValueError, match="mask"):
        VDT_PropagateLabels.execute(feats, images, m * 0.5, "label map", 3, 2, 10, 0.1)
    with pytest.raises(ValueError, match="output_object"):
        VDT_PropagateLabels.execute(feats, images, m, "binary", 3, 2, 10, 0.1, 2)
    with pytest.raises(ValueError, match="features"):
        VDT_PropagateLabels.execute({"stride": 4}, images, m, "binary", 3, 2, 10, 0.1)
    with pytest.raises(ValueError, match="mask"):
        first_label_map(torch.ones(2, hh, ww), "object per batch entry", (hh, ww))     # object 1 fully covered


def test_propagate_keypoints_node():
    feats, images = _shift_clip(t_all=4, cells=(12, 12))
    text = json.dumps([{"x": 17, "y": 21}, {"x": 29, "y": 13}])
    tracks = VDT_PropagateKeypoints.execute(feats, text, 20, 3, 10, 0.1, 0.5).result[0]
    path, vis = tracks["track_path"], tracks["track_visibility"]
    assert path.shape == (4, 2, 2) and vis.shape == (4, 2) and bool(vis.all())
    assert tracks["frame_size"] == (48, 48) and tracks["query_points"].shape == (2, 3)
    assert torch.equal(path[0], torch.tensor([[17.0, 21.0], [29.0, 13.0]]))
    step = path[2] - path[1]                       # one cell (4 px) down-right per frame
    torch.testing.assert_close(step, torch.full((2, 2), 4.0), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="points"):
        VDT_PropagateKeypoints.execute(feats, "17,21,1", 20, 3, 10, 0.1, 0.5)
    with pytest.raises(ValueError, match="points"):
        VDT_PropagateKeypoints.execute(feats, "170,21", 20, 3, 10, 0.1, 0.5)


def test_draw_rebalance_track_nodes():
    t_all, h, w = 8, 48, 64
    base = torch.full((t_all, h, w, 3), 0.4)
    base[..., 0] = 0.7                                   # a reddish tint everywhere, removed by rebalancing
    clean = VDT_RebalanceColors.execute(base, 0.8, 20.0).result[0]
    assert clean.shape == base.shape and float(clean[0, 0, 0, 0]) < 0.7
    one = VDT_DrawMarkers.execute(clean, "10,20", "#ff0000", 2.0, "query frame").result[0]
    assert torch.equal(one[1:], clean[1:]) and torch.equal(one[0, 20, 10], torch.tensor([1.0, 0.0, 0.0]))
    allf = VDT_DrawMarkers.execute(clean, "10,20", "255,0,0", 2.0, "all frames").result[0]
    assert all(torch.equal(allf[t, 20, 10], torch.tensor([1.0, 0.0, 0.0])) for t in range(t_all))
    # a dot moving 2 px right per frame, queried at frame 1 as KJNodes JSON with "t"
    pts = torch.tensor([[t, 10.0 + 2 * t, 20.0] for t in range(t_all)])
    video = draw_markers(clean, pts, radius=2.0)
    tracks = VDT_TrackRedMarkers.execute(video, json.dumps([{"x": 12, "y": 20, "t": 1}]), 20.0, 1.5, 6.0,
                                         10.0, 170.0, 120.0, 70.0).result[0]
    path, vis = tracks["track_path"], tracks["track_visibility"]
    assert vis[:, 0].tolist() == [False] + [True] * (t_all - 1)
    torch.testing.assert_close(path[1:, 0], pts[1:, 1:], atol=0.3, rtol=0)
    assert tracks["frame_size"] == (h, w) and torch.equal(tracks["query_points"], torch.tensor([[1.0, 12.0, 20.0]]))
    with pytest.raises(ValueError, match="points"):
        VDT_TrackRedMarkers.execute(video, "100,20", 20.0, 1.5, 6.0, 10.0, 170.0, 120.0, 70.0)
    with pytest.raises(ValueError, match="color"):
        VDT_DrawMarkers.execute(clean, "10,20", "red-ish", 2.0, "query frame")
    with pytest.raises(ValueError, match="frames"):
        VDT_DrawMarkers.execute(clean, "10,20", "#ff0000", 2.0, "some frames")
    assert parse_color("#00FF80") == (0.0, 1.0, 128 / 255)


def test_per_head_features_are_normalised_per_head():
    feats, images = _shift_clip()
    f = feats["features"]
    heads = torch.stack([f, 5.0 * torch.roll(f, 1, dims=1)], 1)          # [T,2,C,h,w], second head scaled
    hh, ww = images.shape[1:3]
    m = torch.zeros(1, hh, ww)
    m[0, 8:20, 8:20] = 1
    per_head = dict(feats, features=heads)
    a = VDT_PropagateLabels.execute(per_head, images, m, "binary", 3, 2, 10, 0.1).result[1]
    flat = torch.nn.functional.normalize(heads, dim=2).flatten(1, 2)
    b = VDT_PropagateLabels.execute(dict(feats, features=flat), images, m, "binary", 3, 2, 10, 0.1).result[1]
    assert torch.equal(a, b)


def _pixel_feats(frames, size):
    from vdtrack.nodes.features import VDT_PixelFeatures
    video = torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(0))
    return video, VDT_PixelFeatures.execute(video, 1, 0, 0, False, 0.0).result[0]


def test_propagate_keypoints_refuses_too_many_points_up_front():
    """Issue 11: 20,000 points on 16 frames of 128x128 (stride-1 features) asked for 84 GB; each keypoint is a label
    channel over the whole clip, so it is refused before anything is built, naming `points` with the estimate."""
    _, feats = _pixel_feats(16, 128)
    g = torch.Generator().manual_seed(1)
    pts = "\n".join(f"{x:.1f},{y:.1f}" for x, y in (torch.rand(20000, 2, generator=g) * 127).tolist())
    with pytest.raises(ValueError, match=r"^points: .*GiB.*fewer points") as err:
        VDT_PropagateKeypoints.execute(feats, pts, 20, 15, 10, 0.1)
    assert len(str(err.value)) < 400


def test_propagate_labels_refuses_too_many_objects_and_checks_interrupts_per_tile():
    """Issue 11: at the maximum settings (n_context 256, radius 512, top_k 1024) the label propagation grew to GBs
    and an interrupt did not stop it: the tile size now shrinks to fit the memory bound, work beyond it is refused
    with the estimate, and the interrupt check runs inside a frame (per tile), not only between frames."""
    from vdtrack.kernels.propagation import MAX_WORK_BYTES, fit_tile, propagate_label_map, propagation_bytes
    video, feats = _pixel_feats(16, 64)
    ids = torch.zeros(1, 64, 64)
    ids[0, 10:20, 10:20] = 20000                     # a 'label map' with object id 20,000: 20,001 label channels
    with pytest.raises(ValueError, match=r"^mask: .*GiB.*fewer mask") as err:
        VDT_PropagateLabels.execute(feats, video, ids, "label map", 256, 512, 1024, 0.1, 0, 0.5)
    assert len(str(err.value)) < 400
    shape = (16, 384, 128, 128)                      # a diffusion feature map at the maximum settings
    assert propagation_bytes(shape, 2, 256, 512, 1024, 513) > MAX_WORK_BYTES
    tile, need = fit_tile(shape, 2, 256, 512, 1024)
    assert tile < 513 and need <= MAX_WORK_BYTES
    calls, frames = [], []

    class Interrupted(Exception):
        pass

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted

    lab = torch.zeros(64, 64, dtype=torch.long)
    lab[10:20, 10:20] = 1
    with pytest.raises(Interrupted):
        propagate_label_map(feats["features"], lab, 256, 512, 1024, 0.1, tile=8,
                            progress=lambda: frames.append(1), check=check)
    assert frames == []                              # stopped inside the first frame
