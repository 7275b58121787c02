"""Optical-flow tracker: exact sub-pixel translation, frame exits, and TAP-Vid numbers on a synthetic clip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vdtrack.kernels.flow_tracker import sample_flow, track_with_flow
from vdtrack.kernels.metrics_tapvid import evaluate_tracks
from vdtrack.kernels.synthetic import make_clip

VEL = np.array([0.7, -0.45])   # px per frame


def translating_video(frames=12, size=96, seed=0):
    """A smooth random texture shifted by VEL*t with an exact Fourier phase shift (periodic, sub-pixel)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    spec = np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-0.5 * (fx ** 2 + fy ** 2) * 16.0)
    out = []
    for t in range(frames):
        d = VEL * t
        out.append(np.real(np.fft.ifft2(spec * np.exp(-2j * np.pi * (fx * d[0] + fy * d[1])))))
    v = np.stack(out)
    v = (v - v.mean()) / v.std() * 0.18 + 0.5
    return torch.from_numpy(np.repeat(v[..., None], 3, -1)).float()


def test_sample_flow_bilinear_and_border():
    flow = np.zeros((4, 5, 2), np.float32)
    flow[..., 0] = np.arange(5)[None]          # dx = x
    flow[..., 1] = np.arange(4)[:, None] * 2   # dy = 2y
    s = sample_flow(flow, np.array([[1.25, 2.5], [4.0, 3.0], [-3.0, 10.0]]))
    np.testing.assert_allclose(s, [[1.25, 5.0], [4.0, 6.0], [0.0, 6.0]], atol=1e-6)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_subpixel_translation_and_frame_exit(method):
    frames = 12
    video = translating_video(frames)
    # queries on frame 0 and one on frame 6 (tracked backwards too); the x=90.25 point leaves at frame 8 (x=95.85)
    q = torch.tensor([[0, 20.0, 30.0], [0, 50.3, 50.7], [0, 70.0, 60.0], [0, 90.25, 40.0], [6, 40.2, 30.9]])
    path, vis = track_with_flow(video, q, method=method)
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    gt = q[None, :, 1:] + torch.from_numpy(VEL).float()[None, None] * (t - q[None, :, :1])
    inside = (gt[..., 0] <= 95.5) & (gt[..., 0] >= -0.5) & (gt[..., 1] >= -0.5) & (gt[..., 1] <= 95.5)
    err = (path - gt).norm(dim=-1)
    assert float(err[inside].max()) < 0.5
    assert torch.equal(vis, inside)                               # visible inside, occluded after leaving
    assert torch.equal(path[6, 4], q[4, 1:]) and torch.equal(path[0, 0], q[0, 1:])


def test_tapvid_numbers_on_synthetic_clip():
    clip = make_clip(frames=24, height=256, width=256, seed=1, background_points=16)
    steps = []
    path, vis = track_with_flow(clip.video, clip.query_points, method="dis", progress=lambda: steps.append(1))
    assert len(steps) == 23 and path.shape == clip.track_path.shape and vis.dtype == torch.bool
    m = evaluate_tracks(path, vis, clip.track_path, clip.track_visibility, (256, 256),
                        query_points=clip.query_points)
    # measured: AJ 0.787, <delta>avg 0.881, OA 0.976, pts_within_1 0.670, pts_within_4 0.939
    assert m["pts_within_4"] > 0.85 and m["average_pts_within_thresh"] > 0.8
    assert m["average_jaccard"] > 0.65 and m["occlusion_accuracy"] > 0.9
    static = clip.query_points[None, :, 1:].expand_as(clip.track_path)
    m0 = evaluate_tracks(static, torch.ones_like(vis), clip.track_path, clip.track_visibility, (256, 256),
                         query_points=clip.query_points)
    assert m["average_jaccard"] > m0["average_jaccard"] + 0.4    # far better than not moving


def test_input_errors():
    video = translating_video(3, 32)
    with pytest.raises(ValueError, match="query_points"):
        track_with_flow(video, torch.tensor([[0, 40.0, 3.0]]))
    with pytest.raises(ValueError, match="query_points"):
        track_with_flow(video, torch.tensor([[3, 4.0, 3.0]]))
    with pytest.raises(ValueError, match="method"):
        track_with_flow(video, torch.tensor([[0, 4.0, 3.0]]), method="lk")
    with pytest.raises(ValueError, match="fb_threshold"):
        track_with_flow(video, torch.tensor([[0, 4.0, 3.0]]), fb_threshold=0)
    p, v = track_with_flow(video[:1], torch.tensor([[0, 4.0, 3.0]]))       # one frame: just the query
    assert p.tolist() == [[[4.0, 3.0]]] and v.tolist() == [[True]]
