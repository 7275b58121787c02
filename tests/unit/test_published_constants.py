"""Published constants and rules, each pinned by a value computed independently in the test (by hand or from the
formula in docs/methods.md), not by comparing two implementations that could share a mistake."""
import math

import numpy as np
import torch

from vdtrack.kernels.color_rebalance import rebalance_colors, rgb_to_hsv
from vdtrack.kernels.difftrack import track_difftrack
from vdtrack.kernels.flow_tracker import _step
from vdtrack.kernels.keypoint_propagation import keypoint_heatmaps
from vdtrack.kernels.metrics_davis import db_statistics
from vdtrack.kernels.nn_tracker import track_nearest_neighbour
from vdtrack.kernels.red_tracker import track_red_markers


def test_difftrack_softmax_scale_is_sqrt_of_the_head_count():
    # DiffTrack (docs/methods.md §4): logits q.k / sqrt(heads), the published code's quirk, not sqrt(head_dim).
    # Two frames of one row of 3 cells, 2 heads of 4 channels, stride 1: the query sits on source cell 0 of
    # frame 0, so the confidence at frame 1 is the softmax over target cells of corr[cell 0, :] at its argmax.
    g = torch.Generator().manual_seed(0)
    heads, c, w = 2, 4, 3
    x = torch.randn(2, heads, c, 1, w, generator=g, dtype=torch.float64) * 3
    scale = math.sqrt(heads)

    def softmax(v):
        e = [math.exp(a - max(v)) for a in v]
        return [a / sum(e) for a in e]

    corr = [0.0] * w            # corr[j] for source cell i = 0 and target cell j
    for hd in range(heads):
        q0 = [[float(x[0, hd, ch, 0, i]) for ch in range(c)] for i in range(w)]     # frame 0 = source
        q1 = [[float(x[1, hd, ch, 0, j]) for ch in range(c)] for j in range(w)]     # frame 1 = target
        dot = lambda a, b: sum(u * v for u, v in zip(a, b))                          # noqa: E731
        a_st = softmax([dot(q0[0], q1[j]) / scale for j in range(w)])               # source 0 -> targets
        for j in range(w):
            a_ts = softmax([dot(q1[j], q0[i]) / scale for i in range(w)])           # target j -> sources
            corr[j] += 0.5 * (a_st[j] + a_ts[0]) / heads
    expected = max(softmax(corr))
    _, _, conf = track_difftrack(x, None, (1, 1), torch.tensor([[0.0, 0.0, 0.0]]), (1, w))
    assert abs(float(conf[1, 0]) - expected) < 1e-6                # the kernel reports float32
    _, _, conf_dim = track_difftrack(x, None, (1, 1), torch.tensor([[0.0, 0.0, 0.0]]), (1, w), scale="head_dim")
    assert abs(float(conf_dim[1, 0]) - expected) > 1e-4          # sqrt(4) != sqrt(2): the scale matters here


def test_nearest_neighbour_threshold_is_inclusive():
    # Track4Gen (docs/methods.md §6): occluded when the best cosine is BELOW 0.6, so exactly 0.6 is visible.
    # Query descriptor (1, 0); the best target cell (3, 4) has cosine 3/5, i.e. 0.6 rounded to float32 (the
    # kernel's output type, in which the threshold is compared too).
    f = torch.zeros(2, 2, 1, 2, dtype=torch.float64)
    f[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    f[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    f[1, :, 0, 0] = torch.tensor([3.0, 4.0])
    f[1, :, 0, 1] = torch.tensor([-1.0, 0.0])
    _, vis, best = track_nearest_neighbour(f, (1, 1), torch.tensor([[0.0, 0.0, 0.0]]), (1, 2), threshold=0.6)
    assert float(best[1, 0]) == float(np.float32(0.6)) and bool(vis[1, 0])
    _, vis, _ = track_nearest_neighbour(f, (1, 1), torch.tensor([[0.0, 0.0, 0.0]]), (1, 2),
                                        threshold=float(np.nextafter(np.float32(0.6), np.float32(1))))
    assert not bool(vis[1, 0])


def test_davis_recall_counts_values_strictly_above_one_half():
    # davis2017-evaluation (docs/methods.md §9.2): recall = fraction of frames with a value > 0.5.
    _, recall, _ = db_statistics([0.5, 0.5, 0.75, 0.25])
    assert recall == 0.25


def test_flow_forward_backward_tolerance_has_a_relative_term():
    # docs/methods.md §8: consistent iff |f + b| <= thr + 0.05 (|f| + |b|). Constant flows f = (10, 0) and
    # b = (-9, 0): |f + b| = 1, |f| + |b| = 19, so thr 0.5 passes (1 <= 0.5 + 0.95) and thr 0.04 fails
    # (1 > 0.04 + 0.95).
    h, w = 8, 40
    there = np.zeros((h, w, 2), dtype=np.float32)
    there[..., 0] = 10.0
    back = np.zeros((h, w, 2), dtype=np.float32)
    back[..., 0] = -9.0
    pos = np.array([[5.0, 3.0]])
    new, ok = _step(pos, there, back, 0.5, h, w)
    assert new.tolist() == [[15.0, 3.0]] and ok.tolist() == [True]
    _, ok = _step(pos, there, back, 0.04, h, w)
    assert ok.tolist() == [False]


def test_red_tracker_radius_returns_to_its_start_after_a_hit():
    # Point Prompting (docs/methods.md §2 step 4): the search radius grows while the marker is missing and
    # returns to r0 once it is found. r0 = 10 px, growth 2: frames 1-2 empty (radius 20, then 40), frame 3 hit
    # at the start position (radius back to 10), frame 4 the marker 25 px away: outside r0 = 10 (occluded, the
    # position is held), inside the 40 px that a tracker without the reset would still use.
    t, h, w = 5, 16, 64
    video = torch.zeros(t, h, w, 3)
    video[0, 8, 10] = torch.tensor([1.0, 0.0, 0.0])
    video[3, 8, 10] = torch.tensor([1.0, 0.0, 0.0])
    video[4, 8, 35] = torch.tensor([1.0, 0.0, 0.0])
    path, vis = track_red_markers(video, torch.tensor([[0.0, 10.0, 8.0]]), radius=10.0, growth=2.0,
                                  centroid_radius=1.0)
    assert vis[:, 0].tolist() == [True, False, False, True, False]
    assert path[4, 0].tolist() == [10.0, 8.0]


def test_keypoint_gaussian_is_truncated_at_three_sigma():
    # docs/methods.md §7: Gaussian of sigma cells, evaluated at cell centres, zero beyond 3 sigma. sigma = 1,
    # keypoint on the centre of cell (row 4, col 4) (stride 1): the cell 3 columns away keeps exp(-9/2), the
    # cell at offset (1, 3) (distance sqrt(10) > 3) is zero.
    heat = keypoint_heatmaps(torch.tensor([[4.0, 4.0]]), (9, 9), (1.0, 1.0), sigma=1.0)[1]
    assert abs(float(heat[4, 7]) - math.exp(-4.5)) < 1e-7
    assert abs(float(heat[4, 6]) - math.exp(-2.0)) < 1e-7
    assert float(heat[5, 7]) == 0.0 and float(heat[4, 8]) == 0.0


def test_rebalancing_fades_out_along_a_smoothstep():
    # docs/methods.md §2 step 1: S' = S (1 - strength (1 - smoothstep((d - width) / width))). width 20 deg,
    # strength 0.8, hue 25 deg from red: u = 0.25, smoothstep = 3u^2 - 2u^3 = 0.15625 (a linear ramp gives 0.25),
    # so S' = 0.8 * (1 - 0.8 * 0.84375) = 0.26.
    v, s, hue = 1.0, 0.8, 25.0
    lo = v * (1 - s)
    pixel = torch.tensor([v, lo + (v - lo) * hue / 60.0, lo], dtype=torch.float64).expand(1, 2, 2, 3)   # hue < 60
    assert abs(float(rgb_to_hsv(pixel)[0, 0, 0, 0]) * 360 - hue) < 1e-9
    out = rgb_to_hsv(rebalance_colors(pixel, strength=0.8, hue_width=20.0))[0, 0, 0]
    assert abs(float(out[..., 1]) - 0.8 * (1 - 0.8 * (1 - 0.15625))) < 1e-9
    assert abs(float(out[..., 0]) * 360 - hue) < 1e-9 and abs(float(out[..., 2]) - v) < 1e-12
