"""Red-marker colour tracker of Point Prompting (arXiv 2510.11715; docs/methods.md §2 step 4), batched over
points.

Red pixels: HSV on OpenCV's scales (H 0..180, S and V 0..255) with H <= h_low or H >= h_high,
S >= s_min, V >= v_min. Per point, from its query (t_q, x, y): at each later frame, among the red
pixels within `radius` of the previous estimate take the nearest one, then the track point is the
centroid of the red pixels within `centroid_radius` of that nearest pixel (the blob, not clipped to
the search window). No red pixel in the window: occluded, the last position is carried and the
radius grows (x growth per miss, capped at the image diagonal); it resets to r0 once found.
Frames before t_q are not tracked (backwards tracking is not part of the method): they carry the
query position with visibility False. The query frame itself is the query, visible.

exclusive=True (several markers in one generation, our choice): one blob belongs to one point per frame. When
the found positions of several points lie within `centroid_radius` of each other, the point whose previous
position is nearest keeps the blob and the others count as not found that frame (occluded, radius grows).
"""
from __future__ import annotations

import math

import torch

from .checks import check_video
from .datatypes import check_points
from .color import rgb_to_hsv


def red_pixel_mask(frames: torch.Tensor, h_low: float = 10.0, h_high: float = 170.0, s_min: float = 120.0,
                   v_min: float = 70.0) -> torch.Tensor:
    """IMAGE [T,H,W,C] 0..1 -> bool [T,H,W] of marker-red pixels (thresholds on OpenCV scales)."""
    hsv = rgb_to_hsv(frames[..., :3].clamp(0, 1))
    h, s, v = hsv[..., 0] * 180.0, hsv[..., 1] * 255.0, hsv[..., 2] * 255.0
    return ((h <= h_low) | (h >= h_high)) & (s >= s_min) & (v >= v_min)


def track_red_markers(frames: torch.Tensor, points: torch.Tensor, radius: float = 20.0, growth: float = 1.5,
                      centroid_radius: float = 6.0, h_low: float = 10.0, h_high: float = 170.0,
                      s_min: float = 120.0, v_min: float = 70.0, progress=None, exclusive: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [T,H,W,C] + query points [N,3] (t,x,y) -> (track_path [T,N,2], track_visibility [T,N]).
    Default centroid radius 6 = 3 x the default marker radius 2."""
    v = check_video("frames", frames)
    t_all, h, w = v.shape[:3]
    q = check_points("points", points, (h, w), t_all).to(v.device)
    for name, val, lo in (("radius", radius, 0.0), ("centroid_radius", centroid_radius, 0.0)):
        if not (math.isfinite(float(val)) and float(val) > lo):
            raise ValueError(f"{name}: must be a positive number of pixels, got {val}")
    if not (math.isfinite(float(growth)) and float(growth) >= 1.0):
        raise ValueError(f"growth: must be >= 1, got {growth}")
    for name, val, top in (("h_low", h_low, 180), ("h_high", h_high, 180), ("s_min", s_min, 255),
                           ("v_min", v_min, 255)):
        if not 0 <= float(val) <= top:
            raise ValueError(f"{name}: must be in 0..{top}, got {val}")
    n = q.shape[0]
    diag = math.hypot(h, w)
    t_q = q[:, 0].long()
    pos = q[:, 1:].clone()
    r = torch.full((n,), float(radius), device=v.device)
    path = pos[None].repeat(t_all, 1, 1)
    vis = torch.zeros(t_all, n, dtype=torch.bool, device=v.device)
    vis[t_q, torch.arange(n, device=v.device)] = True
    rc2 = float(centroid_radius) ** 2
    start = int(t_q.min())
    for t in range(start + 1, t_all):
        active = t_q < t
        red = red_pixel_mask(v[t], h_low, h_high, s_min, v_min).nonzero().to(pos.dtype)   # [K,2] (y,x)
        found = torch.zeros(n, dtype=torch.bool, device=v.device)
        new = pos.clone()
        if red.shape[0] > 0 and bool(active.any()):
            rxy = red.flip(-1)                                                           # (x,y)
            # chunk over points so the [points, red pixels] distances stay below ~16M entries
            step = max(1, (1 << 24) // rxy.shape[0])
            for i0 in range(0, n, step):
                sl = slice(i0, min(n, i0 + step))
                d2 = ((pos[sl, None, :] - rxy[None]) ** 2).sum(-1)                       # [n',K]
                d2 = torch.where(d2 <= r[sl, None] ** 2, d2, torch.full_like(d2, float("inf")))
                best, idx = d2.min(dim=1)
                hit = torch.isfinite(best) & active[sl]
                near = rxy[idx]                                                          # [n',2]
                blob = ((rxy[None] - near[:, None]) ** 2).sum(-1) <= rc2                 # [n',K]
                cnt = blob.sum(1, keepdim=True).clamp_min(1).to(pos.dtype)
                cen = (blob.to(pos.dtype) @ rxy) / cnt
                found[sl] = hit
                new[sl] = torch.where(hit[:, None], cen, pos[sl])
        if exclusive:
            found = _resolve_collisions(pos, new, found & active, rc2)
            new = torch.where(found[:, None], new, pos)
        pos = torch.where(active[:, None], new, pos)
        r = torch.where(active & found, torch.full_like(r, float(radius)),
                        torch.where(active, (r * float(growth)).clamp(max=diag), r))
        path[t] = pos
        vis[t] = torch.where(active, found, vis[t])
        if progress is not None:
            progress()
    return path, vis


def _resolve_collisions(prev: torch.Tensor, new: torch.Tensor, found: torch.Tensor, rc2: float) -> torch.Tensor:
    """found [n] with points whose new positions share a blob (closer than sqrt(rc2)) reduced to the one whose
    previous position is nearest its new position (ties: lower index)."""
    idx = found.nonzero()[:, 0]
    if idx.numel() < 2:
        return found
    keep = found.clone()
    order = idx[((new[idx] - prev[idx]) ** 2).sum(-1).argsort(stable=True)]
    taken: list[torch.Tensor] = []
    for i in order.tolist():
        if any(float(((new[i] - c) ** 2).sum()) < rc2 for c in taken):
            keep[i] = False
        else:
            taken.append(new[i])
    return keep
