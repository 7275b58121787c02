"""HeFT matching cost on windows of the frame, and HeFT's descriptor sampling.

Two resolutions:
  pixels (HeFT, arXiv 2512.04619; the official tracker's default `--upsample-feature`): the feature maps are
    upsampled bilinearly to pixel resolution (align_corners=False, pixel p <-> cell (p + 0.5) / s - 0.5, clamped
    to the grid), and the cost at pixel p is the cosine between the descriptor q and the UPSAMPLED feature f(p),
    normalised per pixel. Computed here without materialising pixel-resolution features:
      q . f(p) is the bilinear interpolation of the cell dots q . F_c (the dot is linear in f);
      |f(p)|^2 is a quadratic form in the 4 corner features, i.e. a combination of the corner Gram terms
      F_c . F_c' (squared norms and the dots of horizontal, vertical and both diagonal neighbours), which are
      computed once per frame at cell level.
    So one window costs O(cells x C + pixels), memory bounded by the window.
    Descriptors are sampled as the official tracker samples the upsampled map: bilinear between the 4 integer
    pixels around the position (align_corners=True on pixels, border padding), each of them a bilinear sample of
    the cells.
  feature grid (our choice, much cheaper): the cosine on feature cells; positions are cell centres in pixels;
    descriptors are bilinear samples at the cell coordinate of the position.

Shapes: features [T,C,h,w]; descriptors [B,C]; windows are grid indices iy [B,Ky], ix [B,Kx] of frames [B];
costs [B,Ky,Kx]. Grid indices are pixels (pixels) or cells (feature grid).
"""
from __future__ import annotations

import math

import torch

from .cost_volume import EPS, sample_cells, pixel_to_cell

_GRAM = 5          # cell-level Gram terms per cell: |F|^2, down, right, down-right, (right . down)


def _axis_cells(pix: torch.Tensor, stride: float, n_cells: int, dtype):
    """Pixel indices [B,K] -> cell coordinate of each pixel on one axis, as (first cell [B,1], lower cell
    relative to it [B,K], upper cell relative to it [B,K], upper weight [B,K]); the coordinate is
    (p + 0.5) / s - 0.5 clamped to [0, n_cells - 1] (bilinear upsampling, align_corners=False)."""
    u = ((pix.to(dtype) + 0.5) / stride - 0.5).clamp(0, n_cells - 1)
    u0 = u.floor().long().clamp(max=n_cells - 1)
    u1 = (u0 + 1).clamp(max=n_cells - 1)
    first = u0[:, :1]
    return first, u0 - first, u1 - first, u - u0.to(u.dtype)


def cell_gram(feats_cl: torch.Tensor, max_elements: int) -> torch.Tensor:
    """Gram terms [T,h,w,5] of channels-last features [T,h,w,C] at cell (y, x), neighbours clamped to the grid:
    F(y,x).F(y,x), F(y,x).F(y+1,x), F(y,x).F(y,x+1), F(y,x).F(y+1,x+1), F(y,x+1).F(y+1,x)."""
    t_total, h, w, c = feats_cl.shape
    xr = torch.arange(w, device=feats_cl.device).add(1).clamp(max=w - 1)
    yd = torch.arange(h, device=feats_cl.device).add(1).clamp(max=h - 1)
    out = feats_cl.new_empty(t_total, h, w, _GRAM)
    step = max(1, int(max_elements) // max(1, 3 * h * w * c))
    for t0 in range(0, t_total, step):
        f = feats_cl[t0:t0 + step]
        right = f[:, :, xr]
        down = f[:, yd]
        out[t0:t0 + step, ..., 0] = (f * f).sum(-1)
        out[t0:t0 + step, ..., 1] = (f * down).sum(-1)
        out[t0:t0 + step, ..., 2] = (f * right).sum(-1)
        out[t0:t0 + step, ..., 3] = (f * down[:, :, xr]).sum(-1)
        out[t0:t0 + step, ..., 4] = (right * down).sum(-1)
    return out


class HeftCost:
    """Cost of descriptors on windows of one clip's frames, at pixel or feature-grid resolution.

    feats [T,C,h,w] (any float dtype, kept as given); stride (sy, sx) pixels per cell; frame_size (H, W) pixels.
    Grid geometry: `gh x gw` grid points at pixel positions (index * step + offset), per axis."""

    def __init__(self, feats: torch.Tensor, stride: tuple[float, float], frame_size: tuple[int, int],
                 upsample: bool, max_elements: int):
        self.feats = feats
        self.dtype = feats.dtype
        self.t_total, self.c, self.h, self.w = feats.shape
        self.sy, self.sx = stride
        self.H, self.W = (int(v) for v in frame_size)
        self.up = bool(upsample)
        # channels-last so a window gather is one contiguous advanced index
        self.cl = feats.permute(0, 2, 3, 1).contiguous()                                 # [T,h,w,C]
        if self.up:
            self.step_x = self.step_y = 1.0
            self.off_x = self.off_y = 0.0
            self.gw, self.gh = self.W, self.H
            self.gram = cell_gram(self.cl, max_elements)                                   # [T,h,w,5]
        else:
            self.step_x, self.step_y = self.sx, self.sy
            self.off_x, self.off_y = (self.sx - 1) / 2, (self.sy - 1) / 2
            self.gw, self.gh = self.w, self.h
            self.norm = self.cl.norm(dim=-1).clamp_min(EPS)                                # [T,h,w]

    # ------------------------------------------------------------------ geometry
    def grid_x(self, ix: torch.Tensor) -> torch.Tensor:
        return ix.to(self.dtype) * self.step_x + self.off_x

    def grid_y(self, iy: torch.Tensor) -> torch.Tensor:
        return iy.to(self.dtype) * self.step_y + self.off_y

    def cells_per_window(self, ky: int, kx: int) -> int:
        """Cells gathered for a window of ky x kx grid points (for memory budgets)."""
        if not self.up:
            return ky * kx
        return (int(math.floor((ky - 1) / self.sy)) + 3) * (int(math.floor((kx - 1) / self.sx)) + 3)

    # ------------------------------------------------------------------ cost
    def cost(self, frame: torch.Tensor, desc: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        """Cosine [B,Ky,Kx] of raw descriptors desc [B,C] at grid indices iy [B,Ky] x ix [B,Kx] (clamped into
        the grid) of frames [B] (long)."""
        iy = iy.clamp(0, self.gh - 1)
        ix = ix.clamp(0, self.gw - 1)
        qn = desc.norm(dim=1).clamp_min(EPS)
        if not self.up:
            idx = (frame[:, None, None], iy[:, :, None], ix[:, None, :])
            dots = torch.einsum("byxc,bc->byx", self.cl[idx], desc)
            return dots / (qn[:, None, None] * self.norm[idx]).clamp_min(EPS)
        return self._pixel_cost(frame, desc, qn, iy, ix)

    def _pixel_cost(self, frame, desc, qn, iy, ix):
        b, ky = iy.shape
        kx = ix.shape[1]
        fy, ry0, ry1, wy = _axis_cells(iy, self.sy, self.h, self.dtype)
        fx, rx0, rx1, wx = _axis_cells(ix, self.sx, self.w, self.dtype)
        kcy = int(math.floor((ky - 1) / self.sy)) + 3
        kcx = int(math.floor((kx - 1) / self.sx)) + 3
        cy = (fy + torch.arange(kcy, device=iy.device)).clamp(max=self.h - 1)             # [B,Kcy]
        cx = (fx + torch.arange(kcx, device=ix.device)).clamp(max=self.w - 1)             # [B,Kcx]
        idx = (frame[:, None, None], cy[:, :, None], cx[:, None, :])
        dots = torch.einsum("byxc,bc->byx", self.cl[idx], desc)                           # [B,Kcy,Kcx]
        # channels: q.F, |F|^2, F.F(down), F.F(right), F.F(down-right), F(right).F(down)
        cell = torch.cat([dots[..., None], self.gram[idx]], -1).permute(0, 3, 1, 2)       # [B,6,Kcy,Kcx]
        # along x: per cell row y and pixel column, r = a F(y,x0) + b F(y,x1) (x1 = x0 + 1, or x0 with b = 0)
        at0 = cell.gather(3, rx0[:, None, None, :].expand(b, 6, kcy, kx))
        at1 = cell.gather(3, rx1[:, None, None, :].expand(b, 3, kcy, kx))                  # first 3 channels
        b_ = wx[:, None, :]
        a_ = 1 - b_
        rows = torch.stack([
            a_ * at0[:, 0] + b_ * at1[:, 0],                                               # q . r
            a_ * a_ * at0[:, 1] + b_ * b_ * at1[:, 1] + 2 * a_ * b_ * at0[:, 3],           # |r|^2
            a_ * a_ * at0[:, 2] + b_ * b_ * at1[:, 2] + a_ * b_ * (at0[:, 4] + at0[:, 5]),  # r(y) . r(y+1)
        ], 1)                                                                              # [B,3,Kcy,Kx]
        # along y: f = a r(y0) + b r(y1)
        r0 = rows.gather(2, ry0[:, None, :, None].expand(b, 3, ky, kx))
        r1 = rows.gather(2, ry1[:, None, :, None].expand(b, 3, ky, kx))
        b_ = wy[:, :, None]
        a_ = 1 - b_
        dot = a_ * r0[:, 0] + b_ * r1[:, 0]
        sq = a_ * a_ * r0[:, 1] + b_ * b_ * r1[:, 1] + 2 * a_ * b_ * r0[:, 2]
        return dot / (qn[:, None, None] * sq.clamp_min(0).sqrt()).clamp_min(EPS)

    # ------------------------------------------------------------------ descriptors
    def sample(self, frame: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Raw features [B,C] of frames [B] at pixel positions xy [B,2] (x, y), sampled as described above."""
        stride = (self.sy, self.sx)
        if not self.up:
            return sample_cells(self.feats, frame, pixel_to_cell(xy, stride))
        px = xy[:, 0].clamp(0, self.W - 1)
        py = xy[:, 1].clamp(0, self.H - 1)
        x0, y0 = px.floor(), py.floor()
        x1, y1 = (x0 + 1).clamp(max=self.W - 1), (y0 + 1).clamp(max=self.H - 1)
        fx, fy = (px - x0)[:, None], (py - y0)[:, None]
        out = 0
        for xs, ys, wt in ((x0, y0, (1 - fx) * (1 - fy)), (x1, y0, fx * (1 - fy)),
                           (x0, y1, (1 - fx) * fy), (x1, y1, fx * fy)):
            out = out + wt * sample_cells(self.feats, frame, pixel_to_cell(torch.stack([xs, ys], 1), stride))
        return out
