"""Keypoint propagation, the JHMDB variant of label propagation (CRW protocol; docs/methods.md §7).

Frame-0 keypoints become Gaussian heatmaps (sigma = 0.5 feature cells) on the feature grid, one label
channel each, plus a background channel (channel 0 = clamp(1 - sum of heatmaps, 0)); they are
propagated with the ordinary label-propagation kernel; per frame, each keypoint is the weighted mean
of the top-3 cells of its channel (weights renormalised), -1 where the channel is all zero.

Where CRW rounds the keypoint to an integer cell and stamps a (6 sigma + 1)-wide kernel, this
evaluates the Gaussian at every cell centre from the sub-cell keypoint position, truncated at 3 sigma.
Pixel <-> cell conversion follows the pack convention (datatypes.py), in both directions.
"""
from __future__ import annotations

import torch

from .checks import check_finite
from .datatypes import cell_to_pixel, check_feature_tensor, inside_frame, pixel_to_cell
from .propagation import Check, Progress, propagate_soft_labels, propagation_fits


def _check_keypoints(points, size: tuple[int, int]) -> torch.Tensor:
    p = torch.as_tensor(points, dtype=torch.float32)
    if p.ndim != 2 or p.shape[-1] != 2 or p.shape[0] == 0:
        raise ValueError(f"points: expected keypoints [N,2] as (x,y) pixels, got shape {tuple(p.shape)}")
    check_finite("points", p)
    h, w = size
    bad = ~inside_frame(p, size)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"points: keypoint {i} at x={p[i, 0]:.1f}, y={p[i, 1]:.1f} is outside the {w}x{h} frame")
    return p


def keypoint_heatmaps(points: torch.Tensor, feat_hw: tuple[int, int], stride: tuple[float, float],
                      sigma: float = 0.5) -> torch.Tensor:
    """Keypoints [N,2] (x,y pixels) -> labels [N+1,h,w]: background, then one Gaussian per keypoint."""
    if not float(sigma) > 0:
        raise ValueError(f"sigma: must be > 0, got {sigma}")
    h, w = int(feat_hw[0]), int(feat_hw[1])
    p = torch.as_tensor(points, dtype=torch.float32)
    cx, cy = pixel_to_cell(p, stride).unbind(-1)
    ys = torch.arange(h, dtype=torch.float32, device=p.device)
    xs = torch.arange(w, dtype=torch.float32, device=p.device)
    d2 = (ys[None, :, None] - cy[:, None, None]) ** 2 + (xs[None, None, :] - cx[:, None, None]) ** 2
    g = torch.exp(-d2 / (2 * sigma ** 2)) * (d2 <= (3 * sigma) ** 2)
    bg = (1 - g.sum(0)).clamp_min(0)
    return torch.cat([bg[None], g], dim=0)


def keypoints_from_soft(soft: torch.Tensor, stride: tuple[float, float], top: int = 3
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft labels [T,N+1,h,w] (channel 0 background) -> (points [T,N,2] pixels, found [T,N] bool).
    Weighted mean of the `top` best cells per channel; (-1,-1) and found=False if a channel is all zero."""
    t_all, n1, h, w = soft.shape
    heat = soft[:, 1:].reshape(t_all, n1 - 1, h * w)
    vals, idx = heat.topk(min(int(top), h * w), dim=2)
    total = vals.sum(2, keepdim=True)
    found = heat.amax(2) > 0
    wts = vals / total.clamp_min(torch.finfo(vals.dtype).tiny)
    cy = ((idx // w).to(vals.dtype) * wts).sum(2)
    cx = ((idx % w).to(vals.dtype) * wts).sum(2)
    pts = cell_to_pixel(torch.stack([cx, cy], dim=-1), stride)
    pts = torch.where(found[..., None], pts, torch.full_like(pts, -1.0))
    return pts, found


def propagate_keypoints(features: torch.Tensor, points: torch.Tensor, frame_size: tuple[int, int],
                        n_context: int = 20, radius: int = 15, top_k: int = 10, temperature: float = 0.1,
                        sigma: float = 0.5, top_cells: int = 3, tile: int | None = None,
                        progress: Progress = None, check: Check = None) -> tuple[torch.Tensor, torch.Tensor]:
    """features [T,C,h,w] of frames of `frame_size` (H,W); keypoints [N,2] (x,y) at frame 0 ->
    (points [T,N,2] pixels with -1 where lost, found [T,N]). Frame 0 returns the keypoints themselves.
    Default context 20 frames as CRW's JHMDB setting. Each keypoint is a label channel over the whole clip
    (soft labels [T,N+1,h,w]): the memory bound of `propagate_soft_labels` (with the heatmaps [N,h,w], four
    copies, added) refuses too many points on too fine a grid up front (ValueError naming `points`); `check()`
    runs before every tile."""
    features = check_feature_tensor("features", features, cast_float=True)
    h, w = features.shape[2:]
    size = (int(frame_size[0]), int(frame_size[1]))
    p = _check_keypoints(points, size).to(features.device)
    stride = (size[0] / h, size[1] / w)
    heat_bytes = 4 * 4 * p.shape[0] * h * w
    if tile is None:            # the heatmaps are built before propagate_soft_labels checks: refuse them first
        propagation_fits(tuple(features.shape), p.shape[0] + 1, n_context, radius, top_k, "points", heat_bytes)
    first = keypoint_heatmaps(p, (h, w), stride, sigma).to(features.dtype)
    soft = propagate_soft_labels(features, first, n_context, radius, top_k, temperature, tile, progress, check,
                                 "points", heat_bytes)
    pts, found = keypoints_from_soft(soft, stride, top_cells)
    pts[0] = p
    found[0] = True
    return pts, found
