"""Anti-aliased filled disks ("markers") pasted at sub-pixel points, batched over points.

Coverage of each pixel is the fraction of its area inside the disk, measured on an s x s grid of
sub-samples (supersampling, default 8 x 8 = 64 levels). Pixel (x,y) covers [x-0.5, x+0.5] x
[y-0.5, y+0.5] (pixel centres on integers). Where several markers overlap on one frame the larger
coverage wins (one colour per call), then the frame is blended: out = frame*(1-cov) + colour*cov.
"""
from __future__ import annotations

import math

import torch

from .checks import check_video, check_work
from .datatypes import check_points

MAX_ELEMENTS = 2 ** 24   # sub-samples tested at once (bool + float temporaries): bounds memory per pass


def marker_coverage(points: torch.Tensor, frames: int, size: tuple[int, int], radius: float = 2.0,
                    supersample: int = 8, check=None) -> torch.Tensor:
    """Points [N,3] (t,x,y) -> coverage [T,H,W] in 0..1 of disks of `radius` pixels. More than
    checks.MAX_PIXEL_TESTS sub-samples (N x ((2 (ceil(radius) + 1) + 1) x supersample)^2) are refused up front
    (ValueError naming radius); `check()` (an interrupt check) runs before each chunk of points."""
    if not float(radius) > 0 or not math.isfinite(float(radius)):
        raise ValueError(f"radius: must be a positive number of pixels, got {radius}")
    if int(supersample) < 1:
        raise ValueError(f"supersample: must be >= 1, got {supersample}")
    h, w = size
    p = check_points("points", points, size, frames)
    dev = p.device
    half = int(math.ceil(float(radius))) + 1
    s = int(supersample)
    check_work("radius", p.shape[0] * ((2 * half + 1) * s) ** 2,
               f"{p.shape[0]:,} markers of radius {float(radius):g} px ({s}x{s} sub-samples per pixel)")
    out = torch.zeros(frames * h * w, device=dev)
    chunk = max(1, MAX_ELEMENTS // ((2 * half + 1) * s) ** 2)   # points per pass: bounded temporaries
    for i in range(0, p.shape[0], chunk):
        if check is not None:
            check()
        _paste_coverage(out, p[i:i + chunk], (h, w), float(radius), half, s)
    return out.reshape(frames, h, w)


def _paste_coverage(out: torch.Tensor, p: torch.Tensor, size: tuple[int, int], radius: float, half: int,
                    s: int) -> None:
    """Max the supersampled disk coverage of points p [n,3] into the flat [T*H*W] buffer `out`."""
    h, w = size
    dev = p.device
    offs = torch.arange(-half, half + 1, device=dev)
    sub = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s - 0.5          # sub-sample offsets
    cx, cy = p[:, 1], p[:, 2]
    px = cx.round()[:, None] + offs[None, :]                                              # [N,P] pixel columns
    py = cy.round()[:, None] + offs[None, :]
    dx = (px[:, :, None] + sub[None, None, :]) - cx[:, None, None]                        # [N,P,s]
    dy = (py[:, :, None] + sub[None, None, :]) - cy[:, None, None]
    inside = (dy[:, :, None, :, None] ** 2 + dx[:, None, :, None, :] ** 2) <= float(radius) ** 2   # [N,Py,Px,s,s]
    cov = inside.float().mean(dim=(3, 4))                                                 # [N,P,P]
    ok = (py[:, :, None] >= 0) & (py[:, :, None] < h) & (px[:, None, :] >= 0) & (px[:, None, :] < w)
    t = p[:, 0].long()[:, None, None].expand_as(cov)
    flat = (t * h + py.long()[:, :, None].clamp(0, h - 1)) * w + px.long()[:, None, :].clamp(0, w - 1)
    out.scatter_reduce_(0, flat[ok], cov[ok], reduce="amax")


def draw_markers(frames: torch.Tensor, points: torch.Tensor, color=(1.0, 0.0, 0.0), radius: float = 2.0,
                 supersample: int = 8, check=None) -> torch.Tensor:
    """Paste disks of RGB `color` (0..1) and `radius` pixels at points [N,3] (t,x,y) on IMAGE [T,H,W,C]
    (marker_coverage: work refused up front beyond its bound, `check()` between chunks)."""
    v = check_video("frames", frames)
    col = torch.as_tensor(color, dtype=v.dtype, device=v.device).reshape(-1)
    if col.numel() != 3 or not bool(torch.isfinite(col).all()) or bool(((col < 0) | (col > 1)).any()):
        raise ValueError(f"color: expected an RGB triple in 0..1, got {color}")
    t, h, w, c = v.shape
    cov = marker_coverage(torch.as_tensor(points, dtype=torch.float32, device=v.device), t, (h, w),
                          radius, supersample, check).to(v.dtype)[..., None]
    out = v.clone()
    out[..., :3] = v[..., :3] * (1 - cov) + col * cov
    return out
