"""Point Prompting helpers: marker drawing, colour rebalancing, red-marker tracking."""
from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vdtrack.kernels.color_rebalance import hsv_to_rgb, rebalance_colors, red_weight, rgb_to_hsv
from vdtrack.kernels.markers import draw_markers, marker_coverage
from vdtrack.kernels.metrics_tapvid import compute_tapvid_metrics
from vdtrack.kernels.red_tracker import red_pixel_mask, track_red_markers


# ----------------------------------------------------------------------------------------------- HSV
def test_hsv_matches_colorsys_and_opencv():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(500, 3, generator=g)
    rgb[:5] = torch.tensor([[0.3, 0.3, 0.3], [0, 0, 0], [1, 1, 1], [1, 0, 0], [0.2, 0.9, 0.2]])
    hsv = rgb_to_hsv(rgb)
    ref = torch.tensor([colorsys.rgb_to_hsv(*p) for p in rgb.tolist()])
    dh = (hsv[:, 0] - ref[:, 0]).abs()
    assert float(torch.minimum(dh, 1 - dh).max()) < 1e-5
    torch.testing.assert_close(hsv[:, 1:], ref[:, 1:], atol=1e-6, rtol=0)
    cv = cv2.cvtColor(rgb.numpy()[None].astype(np.float32), cv2.COLOR_RGB2HSV)[0]   # H in degrees for float
    dcv = (hsv[:, 0] * 360 - torch.from_numpy(cv[:, 0])).abs()
    assert float(torch.minimum(dcv, 360 - dcv).max()) < 1e-2
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------- markers
def test_marker_area_centre_and_colour():
    frames = torch.full((3, 40, 50, 3), 0.5)
    pts = torch.tensor([[1, 20.3, 17.6], [1, 5.0, 30.0], [2, 0.0, 0.0]])
    cov = marker_coverage(pts, 3, (40, 50), radius=2.0, supersample=16)
    assert float(cov[0].sum()) == 0.0
    # the first two markers are whole: total area 2 * pi r^2; supersampling error well under 2 %
    assert abs(float(cov[1].sum()) - 2 * math.pi * 4) < 0.02 * 2 * math.pi * 4
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    part = cov[1] * (xs > 12)
    cx, cy = float((part * xs).sum() / part.sum()), float((part * ys).sum() / part.sum())
    assert abs(cx - 20.3) < 0.02 and abs(cy - 17.6) < 0.02
    # the corner marker keeps only its part inside the frame [-0.5, 49.5] x [-0.5, 39.5]: fine-grid integral
    fine = (torch.arange(4000, dtype=torch.float64) + 0.5) / 1000 - 0.5
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2 <= 4.0).double().mean() * 16
    assert abs(float(cov[2].sum()) - float(inside)) < 0.02 * float(inside)
    out = draw_markers(frames, pts, color=(1.0, 0.0, 0.0), radius=2.0)
    assert torch.equal(out[1, 30, 5], torch.tensor([1.0, 0.0, 0.0]))       # fully covered centre pixel
    assert torch.equal(out[0], frames[0]) and torch.equal(out[1, 0, 40], frames[1, 0, 40])
    c = float(marker_coverage(pts, 3, (40, 50), radius=2.0, supersample=8)[1, 17, 22])   # draw_markers' default
    assert 0 < c < 1
    torch.testing.assert_close(out[1, 17, 22], torch.tensor([0.5 + 0.5 * c, 0.5 * (1 - c), 0.5 * (1 - c)]))


def test_marker_bad_inputs():
    frames = torch.zeros(2, 10, 10, 3)
    with pytest.raises(ValueError, match="points"):
        draw_markers(frames, torch.tensor([[0, 12.0, 3.0]]))
    with pytest.raises(ValueError, match="points"):
        draw_markers(frames, torch.tensor([[5, 1.0, 3.0]]))
    with pytest.raises(ValueError, match="radius"):
        draw_markers(frames, torch.tensor([[0, 1.0, 3.0]]), radius=0)
    with pytest.raises(ValueError, match="color"):
        draw_markers(frames, torch.tensor([[0, 1.0, 3.0]]), color=(2.0, 0, 0))
    with pytest.raises(ValueError, match="frames"):
        draw_markers(frames[0], torch.tensor([[0, 1.0, 3.0]]))


# ----------------------------------------------------------------------------------------------- rebalancing
def test_rebalance_keeps_non_red_and_kills_red():
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(4, 32, 32, 3, generator=g)
    out = rebalance_colors(rgb, strength=0.8, hue_width=20.0)
    hue = rgb_to_hsv(rgb)[..., 0]
    dist = torch.minimum(hue, 1 - hue) * 360
    far = dist >= 40.0
    assert bool(far.any()) and bool((~far).any())
    assert float((out - rgb)[far].abs().max()) <= 1.0 / 255          # in fact bit-exact
    assert torch.equal(out[far], rgb[far])
    hsv_out = rgb_to_hsv(out)
    torch.testing.assert_close(hsv_out[..., 2], rgb_to_hsv(rgb)[..., 2], atol=1e-6, rtol=0)   # value kept
    near = dist <= 20.0
    assert float(hsv_out[..., 1][near].max()) <= 0.2 + 1e-6
    assert not bool(red_pixel_mask(out).any())
    # saturation factor rises monotonically between width and 2 * width
    w = red_weight(torch.linspace(0, 0.15, 200), 0.8, 20.0)
    assert torch.all(w[1:] >= w[:-1] - 1e-7) and abs(float(w[0]) - 0.2) < 1e-6 and float(w[-1]) == 1.0
    assert torch.equal(rebalance_colors(rgb, strength=0.0), rgb)
    with pytest.raises(ValueError, match="strength"):
        rebalance_colors(rgb, strength=1.5)
    with pytest.raises(ValueError, match="hue_width"):
        rebalance_colors(rgb, hue_width=0)


# ----------------------------------------------------------------------------------------------- tracker
def _textured_background(g, t, h, w):
    n = torch.rand(1, 3, h, w, generator=g)
    tex = F.avg_pool2d(n, 7, stride=1, padding=3, count_include_pad=False)[0].permute(1, 2, 0)
    return (0.25 + 0.5 * tex)[None].repeat(t, 1, 1, 1)


def _add_natural_reds(video, g, count=12):
    """Saturated red/crimson blobs of natural-looking hues (the distractors)."""
    t, h, w, _ = video.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    for _ in range(count):
        cx, cy = float(torch.rand(1, generator=g)) * w, float(torch.rand(1, generator=g)) * h
        hue = float(torch.rand(1, generator=g)) * 0.05 - 0.025
        col = torch.tensor(colorsys.hsv_to_rgb(hue % 1.0, 0.9, 0.85))
        blob = ((xs - cx) ** 2 + (ys - cy) ** 2 <= 16.0)
        video[:, blob] = col
    return video


def _dot_path(t_all):
    t = torch.arange(t_all, dtype=torch.float32)
    return torch.stack([30.0 + 3.1 * t, 40.0 + 1.7 * t + 4 * torch.sin(t / 3)], -1)


def test_tracker_follows_dot_through_occlusion():
    g = torch.Generator().manual_seed(0)
    t_all, h, w = 24, 96, 128
    video = _add_natural_reds(_textured_background(g, t_all, h, w), g)
    assert int(red_pixel_mask(video).sum()) > 100                       # the distractors are really red
    clean = rebalance_colors(video)
    assert not bool(red_pixel_mask(clean).any())
    path = _dot_path(t_all)
    hidden = torch.zeros(t_all, dtype=torch.bool)
    hidden[9:15] = True                                                  # 6 frames: the dot moves ~19 px
    shown = (~hidden).nonzero()[:, 0]
    pts = torch.cat([shown[:, None].float(), path[shown]], 1)
    marked = draw_markers(clean, pts, color=(1.0, 0.0, 0.0), radius=2.0)
    query = torch.tensor([[0.0, float(path[0, 0]), float(path[0, 1])]])
    steps = []
    pred, vis = track_red_markers(marked, query, radius=20.0, growth=1.5, centroid_radius=6.0,
                                  progress=lambda: steps.append(1))
    assert len(steps) == t_all - 1
    assert torch.equal(vis[:, 0], ~hidden)
    assert torch.equal(pred[9:15, 0], pred[8:9, 0].expand(6, 2))       # last position carried while hidden
    m = compute_tapvid_metrics(query[None, :, [0, 2, 1]], hidden[None, None].numpy(), path[None, None].numpy(),
                               (~vis.T)[None].numpy(), pred.permute(1, 0, 2)[None].numpy(), "first")
    assert float(m["average_pts_within_thresh"][0]) >= 0.95
    assert float(m["occlusion_accuracy"][0]) == 1.0
    # without rebalancing the natural reds capture the search window during the gap
    _, vis_raw = track_red_markers(draw_markers(video, pts, radius=2.0), query)
    assert not torch.equal(vis_raw[:, 0], ~hidden)


def test_tracker_radius_growth_and_reset():
    # the dot is missing at frames 2, 3 and jumps 50 px: after two misses r = 20*1.5^2 = 45 (its nearest
    # pixel is ~48 px away: still lost at frame 4), then 67.5 at frame 5 (found, r back to 20)
    frames = torch.full((7, 60, 120, 3), 0.5)
    pos = {0: (20.0, 30.0), 1: (22.0, 30.0), 4: (72.0, 30.0), 5: (74.0, 30.0), 6: (76.0, 30.0)}
    pts = torch.tensor([[t, x, y] for t, (x, y) in pos.items()])
    video = draw_markers(frames, pts, radius=2.0)
    q = torch.tensor([[0.0, 20.0, 30.0]])
    path, vis = track_red_markers(video, q, radius=20.0, growth=1.5)
    assert vis[:, 0].tolist() == [True, True, False, False, False, True, True]
    torch.testing.assert_close(path[4, 0], path[1, 0])
    torch.testing.assert_close(path[5:, 0], torch.tensor([[74.0, 30.0], [76.0, 30.0]]), atol=0.3, rtol=0)
    path2, vis2 = track_red_markers(video, q, radius=20.0, growth=1.5 ** 2)   # r = 101 at frame 4
    assert vis2[:, 0].tolist() == [True, True, False, False, True, True, True]
    assert abs(float(path2[4, 0, 0]) - 72.0) < 0.3


def test_tracker_batched_equals_single_and_query_frames():
    g = torch.Generator().manual_seed(5)
    t_all, h, w = 10, 64, 80
    video = _textured_background(g, t_all, h, w)
    a = torch.stack([10 + 2.0 * torch.arange(t_all), 12 + 1.5 * torch.arange(t_all)], -1).float()
    b = torch.stack([70 - 3.0 * torch.arange(t_all), 50 - 1.0 * torch.arange(t_all)], -1).float()
    ts = torch.arange(t_all, dtype=torch.float32)[:, None]
    video = draw_markers(video, torch.cat([torch.cat([ts, a], 1), torch.cat([ts, b], 1)]), radius=2.0)
    queries = torch.tensor([[0.0, *a[0].tolist()], [3.0, *b[3].tolist()]])
    path, vis = track_red_markers(video, queries)
    for i in range(2):
        p1, v1 = track_red_markers(video, queries[i:i + 1])
        assert torch.equal(path[:, i], p1[:, 0]) and torch.equal(vis[:, i], v1[:, 0])
    # frames before the query are not visible and hold the query position
    assert not bool(vis[:3, 1].any()) and bool(vis[3:, 1].all()) and bool(vis[:, 0].all())
    assert torch.equal(path[:3, 1], queries[1, 1:].expand(3, 2))
    torch.testing.assert_close(path[4:, 1], b[4:], atol=0.3, rtol=0)
    torch.testing.assert_close(path[1:, 0], a[1:], atol=0.3, rtol=0)


def test_tracker_bad_inputs():
    video = torch.zeros(3, 20, 20, 3)
    with pytest.raises(ValueError, match="points"):
        track_red_markers(video, torch.tensor([[0.0, 25.0, 3.0]]))
    with pytest.raises(ValueError, match="points"):
        track_red_markers(video, torch.tensor([[3.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="frames"):
        track_red_markers(torch.zeros(3, 20, 20), torch.tensor([[0.0, 2.0, 3.0]]))
    bad = video.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="frames"):
        track_red_markers(bad, torch.tensor([[0.0, 2.0, 3.0]]))
    for kw, name in ((dict(radius=0), "radius"), (dict(growth=0.5), "growth"), (dict(centroid_radius=-1), "centroid"),
                     (dict(s_min=300), "s_min"), (dict(h_low=-1), "h_low")):
        with pytest.raises(ValueError, match=name):
            track_red_markers(video, torch.tensor([[0.0, 2.0, 3.0]]), **kw)
