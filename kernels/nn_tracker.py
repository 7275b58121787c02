"""Nearest-neighbour point tracker (Track4Gen / zero-shot SVD features, arXiv 2412.06016;
docs/methods.md §6).

The query descriptor is the feature bilinearly sampled at the query point in its own frame; in every other
frame the track is the cell of highest cosine similarity (hard argmax), mapped to pixels (cell centres), and
the point is occluded when that best cosine is below `threshold` (0.6, after DINO-Tracker).

Option `refine_radius` > 0 (default 0 = off, the published rule): soft-argmax of softmax(cos / refine_temperature)
over the (2r+1)^2 cells around the argmax (clipped to the map), which gives sub-cell positions.

At the query frame the track is the query point itself and visible. Returns (track_path [T,N,2] float32,
track_visibility [T,N] bool, confidence [T,N] = best cosine, 1 at the query frame).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .datatypes import check_feature_tensor
from .cost_volume import cell_to_pixel, check_query_points, iter_cost_volume, sample_descriptors


def _check_args(threshold: float, refine_radius: int, refine_temperature: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: a cosine threshold must lie in [-1, 1], got {threshold}")
    if refine_radius < 0 or int(refine_radius) != refine_radius:
        raise ValueError(f"refine_radius: must be a non-negative integer number of cells, got {refine_radius}")
    if not refine_temperature > 0:
        raise ValueError(f"refine_temperature: must be positive, got {refine_temperature}")


def _refine(cos: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor, r: int,
            temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax in a (2r+1)^2 window around (iy, ix). cos [B,h,w] -> cell coords (cx, cy) [B]."""
    b, h, w = cos.shape
    off = torch.arange(-r, r + 1, device=cos.device)
    ys = iy[:, None] + off                                   # [B,K]
    xs = ix[:, None] + off
    valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    yc, xc = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
    vals = cos[torch.arange(b, device=cos.device)[:, None, None], yc[:, :, None], xc[:, None, :]]
    logits = torch.where(valid, vals / temperature, torch.full_like(vals, float("-inf")))
    wts = torch.softmax(logits.reshape(b, -1), 1).reshape_as(vals)
    cy = (wts.sum(2) * ys.to(wts.dtype)).sum(1)
    cx = (wts.sum(1) * xs.to(wts.dtype)).sum(1)
    return cx, cy


def _finish(path_cells, best, queries, stride, threshold):
    t_idx = queries[:, 0].long()
    n = torch.arange(queries.shape[0], device=queries.device)
    path = cell_to_pixel(path_cells, stride).float()
    path[t_idx, n] = queries[:, 1:].to(path)
    best = best.float()
    best[t_idx, n] = 1.0
    vis = best >= threshold
    vis[t_idx, n] = True
    return path, vis, best


def track_nearest_neighbour(features: torch.Tensor, stride, queries: torch.Tensor, frame_size: tuple[int, int],
                            threshold: float = 0.6, refine_radius: int = 0, refine_temperature: float = 0.05,
                            max_elements: int = 2 ** 25, progress: Callable[[], None] | None = None):
    """Fast: frames in chunks, all points at once; memory ~ max_elements (+ the [T,N] outputs)."""
    _check_args(threshold, refine_radius, refine_temperature)
    feats = check_feature_tensor("features", features)
    t_total, c, h, w = feats.shape
    q = check_query_points("query_points", queries, t_total, frame_size).to(feats.device)
    desc = sample_descriptors(feats, q, stride)
    n = q.shape[0]
    path_cells = torch.zeros(t_total, n, 2, dtype=feats.dtype, device=feats.device)
    best = torch.zeros(t_total, n, dtype=feats.dtype, device=feats.device)
    for t0, cos in iter_cost_volume(desc, feats, "cosine", max_elements=max_elements, progress=progress):
        tc = cos.shape[0]
        cos = cos.reshape(tc, n, h * w)                                          # [tc,N,hw]
        val, idx = cos.max(2)
        iy, ix = idx // w, idx % w
        best[t0:t0 + tc] = val
        if refine_radius > 0:
            cx, cy = _refine(cos.reshape(tc * n, h, w), iy.reshape(-1), ix.reshape(-1), refine_radius,
                             refine_temperature)
            path_cells[t0:t0 + tc] = torch.stack([cx, cy], -1).reshape(tc, n, 2)
        else:
            path_cells[t0:t0 + tc] = torch.stack([ix, iy], -1).to(feats.dtype)
    return _finish(path_cells, best, q, stride, threshold)
