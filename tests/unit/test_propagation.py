"""Label propagation (DINO/DIFT protocol) and its JHMDB keypoint variant."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vdtrack.kernels.keypoint_propagation import keypoint_heatmaps, keypoints_from_soft, propagate_keypoints
from vdtrack.kernels.propagation import (context_frames, labels_from_map, norm_mask, propagate_label_map,
                                         propagate_soft_labels, soft_labels_to_map)
from vdtrack.references.propagation import neighbourhood_mask, propagate_soft_labels_ref


# ----------------------------------------------------------------------------------------------- fast == reference
@pytest.mark.parametrize("cfg", [
    dict(t=7, c=8, h=9, w=11, n=3, r=2, k=5, tile=4),       # several tiles, windows cut by the borders
    dict(t=5, c=16, h=12, w=10, n=28, r=15, k=10, tile=16),  # window larger than the frame
    dict(t=6, c=4, h=7, w=13, n=0, r=1, k=3, tile=3),        # first frame only as context
    dict(t=4, c=6, h=6, w=6, n=2, r=0, k=20, tile=5),        # top-k larger than the window: all kept
])
def test_fast_matches_reference(cfg):
    g = torch.Generator().manual_seed(sum(cfg.values()))
    feats = torch.randn(cfg["t"], cfg["c"], cfg["h"], cfg["w"], generator=g)
    lab = torch.randint(0, 4, (cfg["h"], cfg["w"]), generator=g)
    lab[0, 0] = 1
    first = labels_from_map(lab, (cfg["h"], cfg["w"]))
    for temp in (0.1, 0.2):
        fast = propagate_soft_labels(feats, first, cfg["n"], cfg["r"], cfg["k"], temp, tile=cfg["tile"])
        ref = propagate_soft_labels_ref(feats, first, cfg["n"], cfg["r"], cfg["k"], temp)
        assert fast.shape == (cfg["t"], 4, cfg["h"], cfg["w"])
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)


def test_result_does_not_depend_on_tile():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(5, 8, 14, 17, generator=g)
    first = labels_from_map(torch.randint(0, 3, (14, 17), generator=g), (14, 17))
    a = propagate_soft_labels(feats, first, 4, 3, 6, 0.1, tile=1)
    b = propagate_soft_labels(feats, first, 4, 3, 6, 0.1, tile=64)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_context_is_first_frame_plus_queue():
    assert context_frames(1, 28) == [0]
    assert context_frames(5, 28) == [0, 1, 2, 3, 4]
    assert context_frames(40, 3) == [0, 37, 38, 39]
    assert context_frames(9, 0) == [0]


def test_neighbourhood_mask_is_square_window():
    m = neighbourhood_mask(5, 6, 1).reshape(5, 6, 5, 6)
    assert m[2, 3].sum() == 9 and m[0, 0].sum() == 4
    assert m[2, 3, 1, 2] == 1 and m[2, 3, 0, 3] == 0


def test_single_context_hand_computed():
    # 1x2 grid, C=2: target cell 0 = (1,0), cell 1 = (0,1); first frame: cell 0 label 1, cell 1 label 0.
    f0 = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])         # [C=2,h=1,w=2]
    f1 = torch.tensor([[[1.0, 0.6]], [[0.0, 0.8]]])
    feats = torch.stack([f0, f1])
    first = labels_from_map(torch.tensor([[1, 0]]), (1, 2))
    soft = propagate_soft_labels(feats, first, n_context=5, radius=1, top_k=2, temperature=0.5)
    # target cell 1 = (0.6, 0.8): logits 0.6/0.5 and 0.8/0.5 towards source cells 0 (label 1) and 1 (label 0)
    w1 = torch.softmax(torch.tensor([1.2, 1.6]), 0)
    assert torch.allclose(soft[1, 1, 0, 1], w1[0], atol=1e-6)
    w0 = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    assert torch.allclose(soft[1, 1, 0, 0], w0[0], atol=1e-6)


# ----------------------------------------------------------------------------------------------- known shift
def _shifted_crops(canvas: torch.Tensor, frames: int, h: int, w: int, dy: int, dx: int, y0=8, x0=8):
    return torch.stack([canvas[..., y0 + t * dy:y0 + t * dy + h, x0 + t * dx:x0 + t * dx + w]
                        for t in range(frames)])


def test_integer_shift_propagates_exactly():
    g = torch.Generator().manual_seed(0)
    t_all, h, w, dy, dx = 6, 16, 20, 1, -1
    canvas = torch.randn(32, 40, 48, generator=g)
    lab_canvas = torch.zeros(40, 48, dtype=torch.long)
    lab_canvas[14:20, 16:22] = 1
    lab_canvas[18:23, 24:28] = 2
    feats = _shifted_crops(canvas, t_all, h, w, dy, dx)
    labs = _shifted_crops(lab_canvas, t_all, h, w, dy, dx)
    soft = propagate_soft_labels(feats, labels_from_map(labs[0], (h, w)), n_context=3, radius=2, top_k=10,
                                 temperature=0.1)
    for t in range(1, t_all):
        # cells whose content was already in frame 0 have an exact (cosine 1) source there
        seen = torch.zeros(h, w, dtype=torch.bool)
        ys = slice(max(0, -t * dy), h - max(0, t * dy))
        xs = slice(max(0, -t * dx), w - max(0, t * dx))
        seen[ys, xs] = True
        pred = soft[t].argmax(0)
        assert torch.equal(pred[seen], labs[t][seen])
        best = soft[t].max(0).values[seen]
        assert float(best.min()) > 0.95


# ----------------------------------------------------------------------------------------------- synthetic clip
def _smooth_noise(g, h, w, k=5):
    n = torch.rand(1, 3, h, w, generator=g)
    return F.avg_pool2d(n, k, stride=1, padding=k // 2, count_include_pad=False)[0]


def _moving_square(frames=12, h=96, w=128, side=40, vel=(1.5, 1.0), seed=0):
    """A rigidly translating textured square over a static textured background (integer-rounded motion)."""
    g = torch.Generator().manual_seed(seed)
    bg = _smooth_noise(g, h, w) * 0.6
    tex = _smooth_noise(g, side, side) * 0.6 + torch.tensor([0.4, 0.2, 0.0])[:, None, None]
    video = bg[None].repeat(frames, 1, 1, 1)
    labels = torch.zeros(frames, h, w, dtype=torch.long)
    for t in range(frames):
        x0, y0 = int(20 + round(vel[0] * t)), int(16 + round(vel[1] * t))
        video[t, :, y0:y0 + side, x0:x0 + side] = tex
        labels[t, y0:y0 + side, x0:x0 + side] = 1
    return video, labels


def _colour_patch_features(video: torch.Tensor, stride: int) -> torch.Tensor:
    """Cell-averaged colour (mean removed) with its 3x3 cell neighbourhood: [T,27,H/s,W/s]."""
    cell = F.avg_pool2d(video, stride)
    cell = cell - cell.mean(dim=(0, 2, 3), keepdim=True)
    return F.unfold(cell, 3, padding=1).reshape(video.shape[0], 27, cell.shape[2], cell.shape[3])


def test_moving_textured_object_keeps_high_iou():
    video, gt = _moving_square(seed=1)
    feats = _colour_patch_features(video, 2)
    steps = []
    soft, lab = propagate_label_map(feats, gt[0], n_context=28, radius=6, top_k=10, temperature=0.1,
                                    progress=lambda: steps.append(1))
    assert len(steps) == video.shape[0] - 1
    assert lab.shape == gt.shape and torch.equal(lab[0], gt[0])
    js = []
    for t in range(1, gt.shape[0] - 1):      # DAVIS protocol: first and last frame excluded
        a, b = lab[t] == 1, gt[t] == 1
        js.append(float((a & b).sum()) / float((a | b).sum()))
    assert sum(js) / len(js) >= 0.9, js


# ----------------------------------------------------------------------------------------------- helpers
def test_labels_from_map_nearest_and_one_hot():
    lab = torch.zeros(8, 8, dtype=torch.long)
    lab[4:8, 0:4] = 2
    lab[0:2, 6:8] = 1
    one = labels_from_map(lab, (4, 4))
    assert one.shape == (3, 4, 4)
    assert torch.equal(one.sum(0), torch.ones(4, 4))
    expect = torch.zeros(4, 4, dtype=torch.long)
    expect[2:4, 0:2] = 2
    expect[0, 3] = 1
    assert torch.equal(one.argmax(0), expect)


def test_norm_mask_and_upsampled_argmax():
    soft = torch.tensor([[[0.2, 0.2], [0.2, 0.2]],      # constant channel -> 0 (no division by zero)
                         [[0.0, 0.5], [0.25, 0.1]]])
    n = norm_mask(soft)
    assert torch.equal(n[0], torch.zeros(2, 2))
    assert torch.allclose(n[1], torch.tensor([[0.0, 1.0], [0.5, 0.2]]))
    assert torch.equal(norm_mask(torch.zeros(2, 3, 3)), torch.zeros(2, 3, 3))
    out = soft_labels_to_map(soft[None], (4, 4))
    assert out.shape == (1, 4, 4) and out.dtype == torch.long
    assert out[0, 0, 3] == 1 and out[0, 0, 0] == 0


# ----------------------------------------------------------------------------------------------- keypoints
def test_keypoint_heatmaps():
    hm = keypoint_heatmaps(torch.tensor([[10.0, 6.0], [2.0, 2.0]]), (8, 8), (4.0, 4.0), sigma=0.5)
    assert hm.shape == (3, 8, 8)
    # pixel (10,6) -> cell ((10+0.5)/4-0.5, (6+0.5)/4-0.5) = (2.125, 1.125): peak at cell (row 1, col 2)
    assert divmod(int(hm[1].argmax()), 8) == (1, 2)
    d2 = 0.125 ** 2 + 0.125 ** 2
    assert torch.isclose(hm[1, 1, 2], torch.exp(torch.tensor(-d2 / 0.5)))
    assert float(hm[1, 4:, :].abs().sum()) == 0.0           # truncated at 3 sigma
    assert torch.all(hm[0] >= 0) and torch.all(hm[0] <= 1)


def test_keypoints_from_soft_top3_weighted_mean():
    soft = torch.zeros(1, 3, 4, 5)
    soft[0, 1, 1, 1], soft[0, 1, 1, 2], soft[0, 1, 2, 2], soft[0, 1, 3, 4] = 0.5, 0.3, 0.2, 0.1
    pts, found = keypoints_from_soft(soft, (2.0, 2.0), top=3)
    cx = (1 * 0.5 + 2 * 0.3 + 2 * 0.2) / 1.0
    cy = (1 * 0.5 + 1 * 0.3 + 2 * 0.2) / 1.0
    assert torch.allclose(pts[0, 0], torch.tensor([(cx + 0.5) * 2 - 0.5, (cy + 0.5) * 2 - 0.5]))
    assert bool(found[0, 0]) and not bool(found[0, 1])
    assert torch.equal(pts[0, 1], torch.tensor([-1.0, -1.0]))


def test_keypoints_follow_integer_shift():
    g = torch.Generator().manual_seed(1)
    t_all, h, w, dy, dx, stride = 5, 16, 16, 1, 1, 4
    canvas = torch.randn(32, 40, 40, generator=g)
    feats = _shifted_crops(canvas, t_all, h, w, dy, dx, y0=12, x0=12)
    kps = torch.tensor([[30.0, 25.0], [41.0, 37.0]])   # sub-cell positions without tied neighbours
    size = (h * stride, w * stride)
    pts, found = propagate_keypoints(feats, kps, size, n_context=20, radius=3, top_k=10)
    decoded0, _ = keypoints_from_soft(keypoint_heatmaps(kps, (h, w), (stride, stride))[None], (stride, stride))
    assert torch.equal(pts[0], kps) and bool(found.all())
    for t in range(1, t_all):
        # features move by (-dx, -dy) cells per frame (the crop window moves by +1)
        expect = decoded0[0] - torch.tensor([dx, dy]) * stride * t
        torch.testing.assert_close(pts[t], expect, atol=0.05, rtol=0)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise():
    feats = torch.randn(3, 4, 5, 6)
    lab = torch.zeros(10, 12, dtype=torch.long)
    with pytest.raises(ValueError, match="label_map"):
        propagate_label_map(feats, lab)                               # empty first-frame mask
    lab[2:6, 2:6] = 1
    with pytest.raises(ValueError, match="features"):
        propagate_label_map(feats[0], lab)                            # wrong rank
    with pytest.raises(ValueError, match="label_map"):
        propagate_label_map(feats, lab[None])                         # wrong rank
    with pytest.raises(ValueError, match="label_map"):
        propagate_label_map(feats, lab - 2)                           # negative ids
    bad = feats.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="features"):
        propagate_label_map(bad, lab)
    first = labels_from_map(lab, (5, 6))
    with pytest.raises(ValueError, match="first_labels"):
        propagate_soft_labels(feats, first[:, :4])                     # grid mismatch
    with pytest.raises(ValueError, match="first_labels"):
        propagate_soft_labels(feats, torch.zeros_like(first))
    for kw, name in ((dict(top_k=0), "top_k"), (dict(radius=-1), "radius"), (dict(temperature=0.0), "temperature"),
                     (dict(n_context=-2), "n_context")):
        with pytest.raises(ValueError, match=name):
            propagate_soft_labels(feats, first, **kw)
    with pytest.raises(ValueError, match="points"):
        propagate_keypoints(feats, torch.tensor([[100.0, 3.0]]), (10, 12))
    with pytest.raises(ValueError, match="points"):
        propagate_keypoints(feats, torch.tensor([[1.0, float("inf")]]), (10, 12))
