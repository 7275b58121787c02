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
from .cost_volume import (cell_to_pixel, check_query_points, frame_chunk_size, normalise,
                          sample_descriptors)


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
    desc = normalise(sample_descriptors(feats, q, stride), 1)
    n = q.shape[0]
    path_cells = torch.zeros(t_total, n, 2, dtype=feats.dtype, device=feats.device)
    best = torch.zeros(t_total, n, dtype=feats.dtype, device=feats.device)
    step = frame_chunk_size(n, h * w, max_elements)
    for t0 in range(0, t_total, step):
        chunk = normalise(feats[t0:t0 + step], 1)
        tc = chunk.shape[0]
        cos = torch.einsum("nc,tcp->tnp", desc, chunk.reshape(tc, c, h * w))   # [tc,N,hw]
        val, idx = cos.max(2)
        iy, ix = idx // w, idx % w
        best[t0:t0 + tc] = val
        if refine_radius > 0:
            cx, cy = _refine(cos.reshape(tc * n, h, w), iy.reshape(-1), ix.reshape(-1), refine_radius,
                             refine_temperature)
            path_cells[t0:t0 + tc] = torch.stack([cx, cy], -1).reshape(tc, n, 2)
        else:
            path_cells[t0:t0 + tc] = torch.stack([ix, iy], -1).to(feats.dtype)
        if progress is not None:
            for _ in range(tc):
                progress()
    return _finish(path_cells, best, q, stride, threshold)


def track_nearest_neighbour_ref(features: torch.Tensor, stride, queries: torch.Tensor,
                                frame_size: tuple[int, int], threshold: float = 0.6, refine_radius: int = 0,
                                refine_temperature: float = 0.05):
    """Reference: one point, one frame at a time, explicit window loops for the refinement."""
    from .cost_volume import sample_descriptors_ref
    _check_args(threshold, refine_radius, refine_temperature)
    t_total, c, h, w = features.shape
    q = check_query_points("query_points", queries, t_total, frame_size)
    desc = sample_descriptors_ref(features, q, stride)
    path_cells = torch.zeros(t_total, q.shape[0], 2, dtype=features.dtype)
    best = torch.zeros(t_total, q.shape[0], dtype=features.dtype)
    for i in range(q.shape[0]):
        d = desc[i] / desc[i].norm().clamp_min(1e-8)
        for t in range(t_total):
            f = features[t]
            cos = torch.einsum("c,chw->hw", d, f) / f.norm(dim=0).clamp_min(1e-8)
            k = int(cos.argmax())
            iy, ix = divmod(k, w)
            best[t, i] = cos[iy, ix]
            if refine_radius == 0:
                path_cells[t, i] = torch.tensor([ix, iy], dtype=features.dtype)
                continue
            num_x = num_y = den = 0.0
            m = float(cos[iy, ix])
            for y in range(iy - refine_radius, iy + refine_radius + 1):
                for x in range(ix - refine_radius, ix + refine_radius + 1):
                    if 0 <= y < h and 0 <= x < w:
                        e = float(torch.exp((cos[y, x] - m) / refine_temperature))
                        num_x, num_y, den = num_x + e * x, num_y + e * y, den + e
            path_cells[t, i] = torch.tensor([num_x / den, num_y / den], dtype=features.dtype)
    return _finish(path_cells, best, q, stride, threshold)
