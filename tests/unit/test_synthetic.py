"""Synthetic clips: determinism, shapes, and ground truth that agrees with the rendered pixels."""
from __future__ import annotations


import pytest
import torch

from vdtrack.kernels.synthetic import make_clip


def bilinear(frame: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Plain bilinear sample of frame [H,W,C] at points [N,2] (x,y), clamped -> [N,C]."""
    h, w = frame.shape[:2]
    x = xy[:, 0].clamp(0, w - 1)
    y = xy[:, 1].clamp(0, h - 1)
    x0 = x.floor().long().clamp(max=w - 2)
    y0 = y.floor().long().clamp(max=h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (frame[y0, x0] * (1 - fx) * (1 - fy) + frame[y0, x0 + 1] * fx * (1 - fy)
            + frame[y0 + 1, x0] * (1 - fx) * fy + frame[y0 + 1, x0 + 1] * fx * fy)


def test_shapes_dtypes_and_determinism():
    a = make_clip(frames=5, height=40, width=72, num_objects=2, points_per_object=4, seed=3, background_points=6)
    b = make_clip(frames=5, height=40, width=72, num_objects=2, points_per_object=4, seed=3, background_points=6)
    c = make_clip(frames=5, height=40, width=72, num_objects=2, points_per_object=4, seed=4, background_points=6)
    assert a.video.shape == (5, 40, 72, 3) and a.video.dtype == torch.float32
    assert a.track_path.shape == (5, 14, 2) and a.track_path.dtype == torch.float32
    assert a.track_visibility.shape == (5, 14) and a.track_visibility.dtype == torch.bool
    assert a.query_points.shape == (14, 3) and a.object_ids.tolist() == [0] * 4 + [1] * 4 + [-1] * 6
    assert a.masks.shape == (5, 2, 40, 72) and a.labels.shape == (5, 40, 72) and a.labels.dtype == torch.int64
    assert 0 <= float(a.video.min()) and float(a.video.max()) <= 1
    for f in ("video", "track_path", "track_visibility", "masks", "labels"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.video, c.video)
    assert a.frame_size == (40, 72)
    tr = a.tracks()
    assert tr["track_path"] is a.track_path and tr["frame_size"] == (40, 72)


def test_query_points_are_first_visible_frames():
    clip = make_clip(frames=16, seed=1, background_points=10)
    vis = clip.track_visibility
    for n in range(vis.shape[1]):
        t = int(clip.query_points[n, 0])
        if vis[:, n].any():
            assert vis[t, n] and not vis[:t, n].any()
            assert torch.equal(clip.query_points[n, 1:], clip.track_path[t, n])
    assert (clip.query_points[:, 0] == 0).float().mean() > 0.8   # selection prefers points visible in frame 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gt_tracks_follow_the_rendered_texture(seed):
    clip = make_clip(frames=16, seed=seed, background_points=12)
    path, vis = clip.track_path, clip.track_visibility
    n = path.shape[1]
    q = clip.query_points[:, 0].long()
    ref = torch.stack([bilinear(clip.video[q[i]], clip.track_path[q[i], i:i + 1])[0] for i in range(n)])

    def colour_error(p):
        errs = []
        for t in range(path.shape[0]):
            errs.append((bilinear(clip.video[t], p[t]) - ref).abs().max(-1).values[vis[t]])
        return torch.cat(errs)

    good = colour_error(path)
    assert float(good.median()) < 0.012
    assert float((good < 0.05).float().mean()) > 0.95   # rest: bilinear error of this test on sharp texture
    shifted = colour_error(path + torch.tensor([2.5, -1.5]))   # a track 3 px off reads other colours
    assert float(shifted.median()) > 5 * float(good.median()) + 0.01


def test_visibility_agrees_with_labels_and_frame():
    clip = make_clip(frames=20, seed=5, background_points=20, num_objects=4)
    path, vis = clip.track_path, clip.track_visibility
    t_n, h, w = clip.labels.shape
    inside = (path[..., 0] >= -0.5) & (path[..., 0] <= w - 0.5) & (path[..., 1] >= -0.5) & (path[..., 1] <= h - 0.5)
    assert not (vis & ~inside).any()
    xi = path[..., 0].round().long().clamp(0, w - 1)
    yi = path[..., 1].round().long().clamp(0, h - 1)
    tt = torch.arange(t_n)[:, None].expand_as(xi)
    lab = clip.labels[tt, yi, xi]
    expect = (clip.object_ids + 1)[None].expand_as(lab)
    agree = (lab == expect)[vis & inside].float().mean()
    assert agree > 0.97                                   # disagreements only within a pixel of an edge
    occluded_inside = ~vis & inside
    if occluded_inside.any():
        assert (lab != expect)[occluded_inside].float().mean() > 0.9


def test_masks_and_labels_consistent():
    clip = make_clip(frames=6, seed=2, num_objects=3)
    total = clip.masks.sum(1)
    assert float(total.max()) <= 1 + 1e-5
    for k in range(clip.masks.shape[1]):
        hard = clip.masks[:, k] > 0.5
        agree = (hard == (clip.labels == k + 1)).float().mean()
        assert agree > 0.99


def test_identical_objects_cross_and_look_alike():
    clip = make_clip(frames=24, seed=0, identical=True, num_objects=3)
    k = clip.masks.shape[1]
    a, b = k - 2, k - 1                                    # the pair is the two nearest objects
    xa = clip.track_path[:, clip.object_ids == a, 0].mean(1)
    xb = clip.track_path[:, clip.object_ids == b, 0].mean(1)
    assert xa[0] < xb[0] - 30 and xa[-1] > xb[-1] + 30    # they swap sides
    core_a = clip.masks[0, a] > 0.999
    core_b = clip.masks[0, b] > 0.999
    assert abs(int(core_a.sum()) - int(core_b.sum())) < 0.03 * int(core_a.sum())
    mean_a, mean_b = clip.video[0][core_a].mean(0), clip.video[0][core_b].mean(0)
    assert (mean_a - mean_b).abs().max() < 0.03
    other = clip.video[0][clip.masks[0, 0] > 0.999].mean(0)
    assert (other - mean_a).abs().max() > 0.05


def test_errors_and_size():
    """Bad sizes are refused; a larger clip has the asked shape. (Speed is for benchmarks, not tests: a test must
    not depend on how busy the machine is.)"""
    with pytest.raises(ValueError, match="frames"):
        make_clip(frames=0)
    with pytest.raises(ValueError, match="size"):
        make_clip(height=8)
    big = make_clip(frames=48, height=256, width=256)
    assert big.video.shape == (48, 256, 256, 3)
