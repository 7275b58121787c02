"""HeFT localisation step: windowed soft-argmax, and the query-descriptor EMA (HeFT, arXiv 2512.04619).

One step for B tracks (frames [B], descriptors [B,C], previous positions [B,2] pixels):
  cost = cosine(descriptor, feature) (heft_cost.py) -> softmax(cost / temperature) -> zero outside a disk of
  `search_radius` px around the previous position (no limit when the previous frame was predicted occluded)
  -> hard argmax -> keep only the disk of `argmax_radius` px around it -> renormalise -> probability-weighted
  mean position (soft-argmax).
Softmax over the frame, then restricting and renormalising, equals a softmax over the kept grid points only, so
only a window around each point is evaluated ((2R+1)^2 grid points, R = search_radius); a track whose previous
frame was occluded gets a full-frame argmax first, in chunks of points bounded by `max_elements`.
EMA: q <- alpha * d + (1 - alpha) * q with d the features sampled on the (2s+1)^2 pixel neighbourhood of the new
position (s = `ema_range` px, clamped to the frame), weighted exp(-|offset| / (s / 3)) and normalised.
"""
from __future__ import annotations

import math

import torch

from .heft_cost import HeftCost


def ema_offsets(ema_range: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets [K,2] (x, y) of the (2s+1)^2 neighbourhood and their normalised weights exp(-|o|/(s/3)) [K]
    (HeFT's feature update; s = 0 gives the single offset 0 with weight 1)."""
    s = int(ema_range)
    r = torch.arange(-s, s + 1, device=device, dtype=dtype)
    oy, ox = torch.meshgrid(r, r, indexing="ij")
    off = torch.stack([ox.reshape(-1), oy.reshape(-1)], -1)
    if s == 0:
        return off, torch.ones(1, device=device, dtype=dtype)
    wts = torch.exp(-off.norm(dim=1) / (s / 3.0))
    return off, wts / wts.sum()


class HeftSearch:
    """The windowed soft-argmax step and the descriptor EMA over one clip's HeftCost."""

    def __init__(self, cost: HeftCost, temperature: float, argmax_radius: float, ema_range: int, alpha: float,
                 max_elements: int):
        self.cm = cost
        self.c = cost.c
        self.temperature = float(temperature)
        self.ra = float(argmax_radius)
        self.alpha = float(alpha)
        self.ema_off, self.ema_w = ema_offsets(ema_range, cost.feats.device, cost.dtype)
        self.max_elements = int(max_elements)

    def sample(self, frame: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        return self.cm.sample(frame, xy)

    # ------------------------------------------------------------------ windows
    def _window_size(self, radius):
        cm = self.cm
        return (min(int(math.floor(2 * radius / cm.step_y)) + 2, cm.gh),
                min(int(math.floor(2 * radius / cm.step_x)) + 2, cm.gw))

    def _window(self, centre, radius):
        """Grid indices of a box covering disk(centre, radius), shifted inside the grid (this keeps every in-grid
        point of the disk and the row-major order, so argmax ties resolve as on the full frame)."""
        cm = self.cm
        ky, kx = self._window_size(radius)
        x0 = torch.floor((centre[:, 0] - radius - cm.off_x) / cm.step_x).long().clamp(0, cm.gw - kx)
        y0 = torch.floor((centre[:, 1] - radius - cm.off_y) / cm.step_y).long().clamp(0, cm.gh - ky)
        ix = x0[:, None] + torch.arange(kx, device=centre.device)
        iy = y0[:, None] + torch.arange(ky, device=centre.device)
        return iy, ix

    def _bounded(self, frame, desc, centre, radius):
        """Soft-argmax inside disk(centre, radius) of the grid; returns positions [B,2] in pixels."""
        iy, ix = self._window(centre, radius)
        cost = self.cm.cost(frame, desc, iy, ix)
        gx = self.cm.grid_x(ix)                                                          # [B,Kx]
        gy = self.cm.grid_y(iy)
        dx = gx - centre[:, :1]
        dy = gy - centre[:, 1:]
        valid = dy[:, :, None] ** 2 + dx[:, None, :] ** 2 <= radius ** 2
        neg = torch.tensor(float("-inf"), dtype=cost.dtype, device=cost.device)
        logits = torch.where(valid, cost / self.temperature, neg)
        b, ky, kx = logits.shape
        k = logits.reshape(b, -1).argmax(1)
        px = gx.gather(1, (k % kx)[:, None])
        py = gy.gather(1, (k // kx)[:, None])
        near = (gy - py)[:, :, None] ** 2 + (gx - px)[:, None, :] ** 2 <= self.ra ** 2
        wts = torch.softmax(torch.where(valid & near, logits, neg).reshape(b, -1), 1).reshape(b, ky, kx)
        return torch.stack([(wts.sum(1) * gx).sum(1), (wts.sum(2) * gy).sum(1)], -1)

    def _global_argmax(self, frame, desc):
        """Grid position [B,2] (pixels) of the maximum cost over the whole frame."""
        cm = self.cm
        b = frame.shape[0]
        iy = torch.arange(cm.gh, device=frame.device).expand(b, -1)
        ix = torch.arange(cm.gw, device=frame.device).expand(b, -1)
        k = cm.cost(frame, desc, iy, ix).reshape(b, -1).argmax(1)
        return torch.stack([cm.grid_x(k % cm.gw), cm.grid_y(k // cm.gw)], -1)

    # ------------------------------------------------------------------ one step
    def step(self, frame, desc, centre, unbounded, radius):
        """New positions [B,2] of B tracks: frames [B], raw descriptors [B,C], previous positions [B,2],
        unbounded [B] bool (previous frame occluded: search the whole frame)."""
        cm = self.cm
        out = torch.empty_like(centre)
        if frame.numel() == 0:
            return out
        ky, kx = self._window_size(radius)
        per_track = 10 * ky * kx + cm.cells_per_window(ky, kx) * (self.c + 6)   # ~10 window-sized temporaries
        chunk = max(1, self.max_elements // per_track)
        bounded = (~unbounded).nonzero().flatten()
        for s in range(0, bounded.numel(), chunk):
            idx = bounded[s:s + chunk]
            out[idx] = self._bounded(frame[idx], desc[idx], centre[idx], radius)
        free = unbounded.nonzero().flatten()
        if free.numel():
            full = 10 * cm.gh * cm.gw + cm.cells_per_window(cm.gh, cm.gw) * (self.c + 6)
            chunk_f = max(1, self.max_elements // full)
            ra = max(self.ra, 0.75 * cm.step_x, 0.75 * cm.step_y)
            for s in range(0, free.numel(), chunk_f):
                idx = free[s:s + chunk_f]
                peak = self._global_argmax(frame[idx], desc[idx])
                # region = disk(argmax, argmax_radius): the same bounded step centred on the argmax
                out[idx] = self._bounded(frame[idx], desc[idx], peak, ra)
        return out

    # ------------------------------------------------------------------ descriptors
    def ema(self, desc, frame, xy, mask):
        """q <- alpha * neighbourhood sample + (1 - alpha) * q where mask [B] (desc [B,C], xy [B,2] pixels)."""
        if not bool(mask.any()):
            return desc
        cm = self.cm
        idx = mask.nonzero().flatten()
        k = self.ema_off.shape[0]
        pts = xy[idx][:, None, :] + self.ema_off[None]                                  # [B,K,2]
        pts = torch.stack([pts[..., 0].clamp(0, cm.W - 1), pts[..., 1].clamp(0, cm.H - 1)], -1)
        fr = frame[idx][:, None].expand(-1, k).reshape(-1)
        s = self.sample(fr, pts.reshape(-1, 2)).reshape(idx.numel(), k, -1)
        d = (s * self.ema_w[None, :, None]).sum(1)
        desc = desc.clone()
        desc[idx] = self.alpha * d + (1 - self.alpha) * desc[idx]
        return desc
