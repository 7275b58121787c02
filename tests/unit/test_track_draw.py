"""Track overlay and track masks against brute-force per-pixel references and hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from vdtrack.kernels.track_draw import draw_tracks, track_colors, tracks_to_mask


def ref_disks(path, vis, size, radius):
    """Per pixel, the largest coverage clamp(r + 0.5 - d, 0, 1) over visible points, and which point."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    cov = torch.zeros(path.shape[0], h, w)
    who = torch.full((path.shape[0], h, w), -1, dtype=torch.long)
    for t in range(path.shape[0]):
        for n in range(path.shape[1]):
            if not vis[t, n]:
                continue
            d = torch.sqrt((xs - path[t, n, 0]) ** 2 + (ys - path[t, n, 1]) ** 2)
            c = torch.clamp(radius + 0.5 - d, 0, 1)
            better = c > cov[t]
            cov[t] = torch.where(better, c, cov[t])
            who[t] = torch.where(better, torch.full_like(who[t], n), who[t])
    return cov, who


def test_tracks_to_mask_matches_reference_and_area():
    g = torch.Generator().manual_seed(0)
    path = torch.rand(3, 6, 2, generator=g) * torch.tensor([40.0, 30.0]) - 2   # some disks cut by the border
    vis = torch.rand(3, 6, generator=g) > 0.3
    mask = tracks_to_mask(path, vis, (30, 40), 3.5)
    ref, _ = ref_disks(path, vis, (30, 40), 3.5)
    assert mask.shape == (3, 30, 40)
    assert torch.allclose(mask, ref, atol=1e-6)
    for r in (2.0, 5.0, 10.0):
        one = tracks_to_mask(torch.tensor([[[31.3, 29.6]]]), torch.ones(1, 1, dtype=torch.bool), (64, 64), r)
        assert abs(float(one.sum()) - math.pi * r * r) < 0.03 * math.pi * r * r
    empty = tracks_to_mask(path, torch.zeros_like(vis), (30, 40), 3)
    assert float(empty.abs().sum()) == 0


def test_dot_colour_at_point_and_nothing_when_invisible():
    video = torch.zeros(3, 32, 32, 3)
    path = torch.tensor([[[10.0, 12.0]], [[12.0, 12.0]], [[14.0, 12.0]]])
    vis = torch.tensor([[True], [False], [True]])
    colors = torch.tensor([[1.0, 0.5, 0.0]])
    out = draw_tracks(video, path, vis, radius=2, trail=4, colors=colors)
    assert torch.allclose(out[0, 12, 10], colors[0])
    assert torch.allclose(out[2, 12, 14], colors[0])
    assert float(out[1].abs().sum()) == 0                    # invisible: no dot and no trail
    assert float(out[2, 12, 11].abs().sum()) == 0            # no trail segment through the invisible frame
    assert float(out[0, 12, 16].abs().sum()) == 0


def test_trail_fades_with_age():
    video = torch.zeros(4, 20, 60, 3)
    path = torch.tensor([[[5.0 + 12 * t, 10.0]] for t in range(4)])
    vis = torch.ones(4, 1, dtype=torch.bool)
    green = torch.tensor([[0.0, 1.0, 0.0]])
    out = draw_tracks(video, path, vis, radius=1, trail=3, colors=green)
    g = out[3, 10, :, 1]                                     # midpoints of the segments 2-3, 1-2, 0-1
    # a 1 px trail covers its centre line fully; opacity 0.85 * (1 - age / trail)
    assert [round(float(g[x]), 3) for x in (35, 23, 11)] == [0.85, 0.567, 0.283]
    assert float(g[41]) == 1.0                               # the dot at the current position
    short = draw_tracks(video, path, vis, radius=1, trail=2, colors=green)[3, 10, :, 1]
    assert float(short[11]) == 0.0 and float(short[23]) > 0.4   # only the last 2 frames of motion


def test_dots_match_reference_compositing():
    g = torch.Generator().manual_seed(1)
    video = torch.rand(2, 24, 28, 3, generator=g)
    path = torch.tensor([[[4.3, 5.7], [20.2, 6.1], [12.5, 18.4]], [[5.0, 6.0], [22.9, 20.5], [11.1, 10.2]]])
    vis = torch.tensor([[True, True, True], [True, False, True]])
    out = draw_tracks(video, path, vis, radius=2.5, trail=0)
    cov, who = ref_disks(path, vis, (24, 28), 2.5)
    cols = track_colors(3)
    col = cols[who.clamp(min=0)]
    ref = video * (1 - cov[..., None]) + col * cov[..., None]
    assert torch.allclose(out, ref, atol=2e-3)


def test_colors_distinct_and_input_checks():
    c = track_colors(12)
    d = torch.cdist(c, c) + torch.eye(12) * 10
    assert float(d.min()) > 0.1
    video = torch.zeros(2, 8, 8, 3)
    with pytest.raises(ValueError, match="tracks"):
        draw_tracks(video, torch.zeros(3, 1, 2), torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="colors"):
        draw_tracks(video, torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.bool), colors=torch.zeros(2, 3))
