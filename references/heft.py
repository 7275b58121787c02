"""HeFT reference (HeFT, "Denoise to Track", arXiv 2512.04619; the official `Tracker.head_track`), one point at a
time, written from the published rule and sharing no code with kernels/heft_*.py but the argument checks.

Pixel resolution (upsample=True, the published default): the feature maps are upsampled bilinearly to pixel
resolution (as F.interpolate, align_corners=False) and every pixel is normalised before the cosine; descriptors are
sampled from the upsampled map with grid_sample(align_corners=True, border). Feature grid (upsample=False): the
cosine on feature cells, grid points at cell centres, descriptors bilinearly sampled at the cell coordinate
(p + 0.5) / s - 0.5 (our cheaper choice).
Each step: softmax(cost / temperature) over the whole frame, zero outside disk(previous, search_radius) (no limit
after a frame predicted occluded), hard argmax, keep disk(argmax, argmax_radius), renormalise, weighted mean.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..kernels.cost_volume import check_query_points
from ..kernels.datatypes import stride_pair as _stride_pair
from ..kernels.heft_tracker import check_heft_args


def _interp_matrix(n_pix: int, n_cells: int, stride: float, dtype) -> torch.Tensor:
    """[n_pix, n_cells] weights of 1-D linear interpolation at cell coordinate (p + 0.5) / s - 0.5, clamped to
    the grid (F.interpolate's align_corners=False rule, written out so border pixels are exact copies)."""
    m = torch.zeros(n_pix, n_cells, dtype=dtype)
    for p in range(n_pix):
        u = min(max((p + 0.5) / stride - 0.5, 0.0), n_cells - 1)
        u0 = min(int(math.floor(u)), n_cells - 1)
        lam = u - u0
        m[p, u0] += 1 - lam
        m[p, min(u0 + 1, n_cells - 1)] += lam
    return m


def upsample_to_pixels(feats: torch.Tensor, stride, frame_size) -> torch.Tensor:
    """[T,C,h,w] -> [T,C,H,W]: bilinear upsampling by the stride (align_corners=False), i.e. the published
    F.interpolate(feats, size=(H, W), mode="bilinear") when H = h * sy and W = w * sx; frames larger than the grid
    repeat the border cells."""
    sy, sx = _stride_pair(stride)
    H, W = frame_size
    ay = _interp_matrix(H, feats.shape[-2], sy, feats.dtype)
    ax = _interp_matrix(W, feats.shape[-1], sx, feats.dtype)
    return torch.einsum("Yy,tcyx,Xx->tcYX", ay, feats, ax)


class _Maps:
    """Per-frame maps the step works on: `grid` [Gh,Gw,2] pixel (x, y) of each grid point, `cos(t, q)` -> [Gh,Gw],
    `sample(t, x, y)` -> [C]."""

    def __init__(self, feats, stride, frame_size, upsample):
        self.frame_size = frame_size
        H, W = frame_size
        if upsample:
            self.maps = upsample_to_pixels(feats, stride, frame_size)
            ys, xs = torch.meshgrid(torch.arange(H, dtype=feats.dtype), torch.arange(W, dtype=feats.dtype),
                                    indexing="ij")
            self.grid = torch.stack([xs, ys], -1)
            self.to_map = lambda x, y: (x, y)
        else:
            self.maps = feats
            sy, sx = _stride_pair(stride)
            h, w = feats.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(h, dtype=feats.dtype), torch.arange(w, dtype=feats.dtype),
                                    indexing="ij")
            self.grid = torch.stack([(xs + 0.5) * sx - 0.5, (ys + 0.5) * sy - 0.5], -1)
            self.to_map = lambda x, y: ((x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5)

    def cos(self, t, q):
        f = self.maps[t]
        dots = torch.einsum("c,chw->hw", q, f)
        return dots / (q.norm() * f.norm(dim=0)).clamp_min(1e-8)

    def sample(self, t, x, y):
        mh, mw = self.maps.shape[-2:]
        mx, my = self.to_map(float(x), float(y))
        gx = 2 * mx / (mw - 1) - 1 if mw > 1 else 0.0
        gy = 2 * my / (mh - 1) - 1 if mh > 1 else 0.0
        g = torch.tensor([[[[gx, gy]]]], dtype=self.maps.dtype)
        return F.grid_sample(self.maps[t][None], g, mode="bilinear", padding_mode="border",
                             align_corners=True).reshape(-1)


def _step(maps, t, desc, prev, radius, ra, temperature):
    grid = maps.grid
    prob = torch.softmax((maps.cos(t, desc) / temperature).reshape(-1), 0).reshape(grid.shape[:2])
    if radius is not None:
        prob = torch.where(((grid - prev) ** 2).sum(-1).sqrt() <= radius, prob, torch.zeros_like(prob))
    peak = grid.reshape(-1, 2)[int(prob.reshape(-1).argmax())]
    prob = torch.where(((grid - peak) ** 2).sum(-1).sqrt() <= ra, prob, torch.zeros_like(prob))
    prob = prob / prob.sum()
    return (grid * prob[..., None]).sum((0, 1))


def _ema(maps, t, desc, xy, alpha, s):
    H, W = maps.frame_size
    pts, wts = [], []
    for oy in range(-s, s + 1):
        for ox in range(-s, s + 1):
            pts.append((min(max(float(xy[0]) + ox, 0.0), W - 1), min(max(float(xy[1]) + oy, 0.0), H - 1)))
            wts.append(1.0 if s == 0 else math.exp(-math.hypot(ox, oy) / (s / 3.0)))
    total = sum(wts)
    d = sum((wt / total) * maps.sample(t, x, y) for (x, y), wt in zip(pts, wts))
    return alpha * d + (1 - alpha) * desc


def _one_direction(maps, tq, x, y, p):
    """Track one query forward in time from tq (head_track + get_visibility for one point)."""
    t_total = maps.maps.shape[0]
    step = lambda t, d, prev, r: _step(maps, t, d, prev, r, p["argmax_radius"], p["temperature"])  # noqa: E731
    ema = lambda t, d, xy: _ema(maps, t, d, xy, p["alpha"], p["ema_range"])                          # noqa: E731
    feedback = p["fb_mode"] not in ("no_feedback", "batched")   # 'speculative' = exactly the 'sequential' result
    pos = {tq: torch.tensor([x, y], dtype=maps.maps.dtype)}
    vis = {tq: True}
    err = {tq: 0.0}
    desc = maps.sample(tq, x, y)

    def backward(i, vis_b):
        b = maps.sample(i, pos[i][0], pos[i][1])
        cur = pos[i]
        sq, cnt = 0.0, 0
        for t in range(i - 1, tq - 1, -1):
            cur = step(t, b, cur, p["search_radius"] if vis_b[t + 1] else None)
            if vis_b[t]:
                b = ema(t, b, cur)
                sq += float(((cur - pos[t]) ** 2).sum())
                cnt += 1
        return math.sqrt(sq / cnt)

    for i in range(tq + 1, t_total):
        radius = p["search_radius"] if (not feedback or vis[i - 1]) else None
        pos[i] = step(i, desc, pos[i - 1], radius)
        if feedback:
            err[i] = backward(i, {**vis, i: True})
            vis[i] = err[i] <= p["vis_threshold"]
        if vis.get(i, True):
            desc = ema(i, desc, pos[i])
    if not feedback:   # every start frame's backward track after the whole forward pass, all frames visible
        for i in range(tq + 1, t_total):
            err[i] = backward(i, {t: True for t in range(tq, i + 1)})
            vis[i] = err[i] <= p["vis_threshold"]
    return pos, vis, err


def track_heft_ref(features: torch.Tensor, stride, queries: torch.Tensor, frame_size: tuple[int, int],
                   argmax_radius: float = 17.0, search_radius: float = 42.0, vis_threshold: float = 18.0,
                   alpha: float = 0.05, temperature: float = 1.0, ema_range: int = 1, upsample: bool = True,
                   fb_mode: str = "sequential"):
    """Reference HeFT: features [T,C,h,w], queries [N,3] (t, x, y) pixels, frame_size (H, W). Frames before a
    query are tracked by flipping time. Returns (track_path [T,N,2], visibility [T,N] bool, fb_error [T,N])."""
    check_heft_args(search_radius, argmax_radius, vis_threshold, alpha, temperature, ema_range, fb_mode, stride,
                    upsample)
    feats = features.detach().cpu()
    t_total = feats.shape[0]
    q = check_query_points("query_points", queries, t_total, frame_size)
    p = dict(argmax_radius=argmax_radius, search_radius=search_radius, vis_threshold=vis_threshold, alpha=alpha,
             temperature=temperature, ema_range=int(ema_range), fb_mode=fb_mode)
    fwd_maps = _Maps(feats, stride, tuple(frame_size), upsample)
    bwd_maps = _Maps(feats.flip(0), stride, tuple(frame_size), upsample)
    n = q.shape[0]
    path = torch.zeros(t_total, n, 2)
    vis = torch.zeros(t_total, n, dtype=torch.bool)
    err = torch.zeros(t_total, n)
    for i, (t, x, y) in enumerate(q.tolist()):
        t = int(t)
        for maps, start, to_abs in ((fwd_maps, t, lambda f: f), (bwd_maps, t_total - 1 - t, lambda f: t_total - 1 - f)):
            pos_d, vis_d, err_d = _one_direction(maps, start, x, y, p)
            for f in pos_d:
                path[to_abs(f), i] = pos_d[f].float()
                vis[to_abs(f), i] = bool(vis_d[f])
                err[to_abs(f), i] = float(err_d[f])
    return path, vis, err
