"""Track overlays: coloured anti-aliased dots with fading trails, and disk masks around visible points.

Shapes are rasterised as small fixed-size pixel patches around each primitive (segments are cut into pieces of
at most 2 px so one patch size fits all), coverage comes from the pixel-centre distance to the primitive
(1 px linear edge = anti-aliasing), and overlaps resolve per pixel by the strongest primitive.
"""
from __future__ import annotations

import math

import torch

from .checks import check_video, check_work
from .color import hsv_to_rgb
from .datatypes import check_tracks

PIECE = 2.0   # max length (px) of one segment piece
MAX_ELEMENTS = 2 ** 22   # primitives x patch pixels drawn at once: bounds the temporaries (~50 bytes each)


def track_colors(n: int, device=None) -> torch.Tensor:
    """n distinct saturated colours [n,3] in 0..1, hues spread evenly around the HSV wheel."""
    h = torch.arange(n, dtype=torch.float32, device=device) / max(n, 1)
    return hsv_to_rgb(torch.stack([h, torch.full_like(h, 0.85), torch.ones_like(h)], -1))


def _patch_offsets(extent: int, device) -> torch.Tensor:
    r = torch.arange(-extent, extent + 1, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)   # [P,2] (dx,dy)


def _segment_coverage(a: torch.Tensor, b: torch.Tensor, half_width: float, size, extent: int):
    """Pieces a->b [M,2] -> (flat pixel index [M,P], coverage [M,P]) for pixels of a patch around each piece."""
    h, w = size
    centre = torch.round((a + b) / 2)
    pix = centre[:, None, :] + _patch_offsets(extent, a.device)[None]            # [M,P,2]
    ab = (b - a)[:, None, :]
    ap = pix - a[:, None, :]
    denom = (ab * ab).sum(-1).clamp_min(1e-12)
    s = ((ap * ab).sum(-1) / denom).clamp(0, 1)
    d = torch.linalg.norm(ap - s[..., None] * ab, dim=-1)
    cov = torch.clamp(half_width + 0.5 - d, 0.0, 1.0)
    inside = (pix[..., 0] >= 0) & (pix[..., 0] <= w - 1) & (pix[..., 1] >= 0) & (pix[..., 1] <= h - 1)
    cov = torch.where(inside, cov, torch.zeros_like(cov))
    idx = (pix[..., 1].clamp(0, h - 1) * w + pix[..., 0].clamp(0, w - 1)).long()
    return idx, cov


def _split(a: torch.Tensor, b: torch.Tensor, *extra: torch.Tensor):
    """Cut segments a->b into pieces no longer than PIECE px; extra per-segment values are repeated."""
    if a.shape[0] == 0:
        return (a, b) + extra
    n = torch.clamp(torch.ceil(torch.linalg.norm(b - a, dim=-1) / PIECE), min=1).long()
    rep = torch.repeat_interleave(torch.arange(a.shape[0], device=a.device), n)
    start = torch.cumsum(n, 0) - n
    k = (torch.arange(rep.shape[0], device=a.device) - start[rep]).float()
    f0, f1 = (k / n[rep])[:, None], ((k + 1) / n[rep])[:, None]
    d = b[rep] - a[rep]
    return (a[rep] + f0 * d, a[rep] + f1 * d) + tuple(e[rep] for e in extra)


def _strongest(hw: int, pieces, n_owners: int, half_width: float, size, extent: int, check=None):
    """Per pixel, the primitive (from `pieces`: an iterable of (a [M,2], b [M,2], weight [M], owner id [M]) chunks,
    piece a->b, coverage x weight) with the largest coverage (ties -> larger owner id): (alpha [hw], owner [hw]).
    Primitives go in chunks of MAX_ELEMENTS patch pixels, so memory is bounded whatever M (the per-pixel maximum
    does not depend on the chunking); `check()` (an interrupt check) runs before each chunk."""
    best = None
    chunk = max(1, MAX_ELEMENTS // (2 * extent + 1) ** 2)
    for a_all, b_all, w_all, o_all in pieces:
        if best is None:
            best = torch.zeros(hw, dtype=torch.long, device=a_all.device)
        for s in range(0, a_all.shape[0], chunk):
            if check is not None:
                check()
            idx, cov = _segment_coverage(a_all[s:s + chunk], b_all[s:s + chunk], half_width, size, extent)
            q = torch.round(cov * w_all[s:s + chunk, None] * 4095).long()   # 12-bit alpha, owner in the low digits
            key = q * (n_owners + 1) + o_all[s:s + chunk, None]
            best.scatter_reduce_(0, idx.reshape(-1), key.reshape(-1), reduce="amax")
    return (best // (n_owners + 1)).float() / 4095, best % (n_owners + 1)


def _pieces_per_segment(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many pieces _split cuts each segment a->b [M,2] into (ceil(length / PIECE), at least 1), as float64
    (a segment between far-off points may need more pieces than an int32 holds)."""
    return torch.clamp(torch.ceil(torch.linalg.norm((b - a).double(), dim=-1) / PIECE), min=1)


def _split_chunks(a: torch.Tensor, b: torch.Tensor, fade: torch.Tensor, owner: torch.Tensor, max_pieces: int):
    """_split over runs of segments holding at most `max_pieces` pieces each (a single longer segment alone):
    the pieces of one frame's trails never all exist at once."""
    n = _pieces_per_segment(a, b)
    ends = torch.cumsum(n, 0)
    start = 0
    while start < a.shape[0]:
        before = float(ends[start - 1]) if start else 0.0
        stop = max(start + 1, int(torch.searchsorted(ends, torch.tensor(before + max_pieces, dtype=ends.dtype,
                                                                          device=ends.device), right=True)))
        yield _split(a[start:stop], b[start:stop], fade[start:stop], owner[start:stop])
        start = stop


def _extents(radius: float, trail_width: float | None) -> tuple[float, int, int]:
    """(trail half width, segment patch extent, dot patch extent) in px, as draw_tracks draws them."""
    hw_ = float(trail_width) / 2 if trail_width is not None else max(1.0, radius / 2) / 2
    return hw_, int(math.ceil(PIECE / 2 + hw_ + 1.5)), int(math.ceil(radius + 1.5))   # + AA edge + centre rounding


def draw_tracks_work(path: torch.Tensor, v: torch.Tensor, radius: float, trail: int,
                     trail_width: float | None = None) -> tuple[float, float]:
    """The pixel tests draw_tracks makes, exactly, without drawing: (trails, dots). Trails: every frame t draws
    the segments (s-1 -> s) of its last `trail` frames whose ends are both visible, each cut into pieces of at
    most PIECE px, each piece a (2 e + 1)^2 patch; dots: each visible point a (2 e' + 1)^2 patch."""
    _, seg_extent, dot_extent = _extents(radius, trail_width)
    t_n = path.shape[0]
    dots = float(v.sum()) * (2 * dot_extent + 1) ** 2 if radius > 0 else 0.0
    if trail <= 0 or t_n < 2:
        return 0.0, dots
    ok = v[1:] & v[:-1]                                                              # segment s-1 -> s, s >= 1
    pieces = torch.where(ok, _pieces_per_segment(path[:-1], path[1:]), torch.zeros((), dtype=torch.float64,
                                                                                 device=path.device)).sum(-1)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64, device=path.device), torch.cumsum(pieces, 0)])  # [T]
    t = torch.arange(1, t_n, device=path.device)
    first = torch.clamp(t - trail + 1, min=1)                                          # window of segment ends
    per_frame = cum[t] - cum[first - 1]
    return float(per_frame.sum()) * (2 * seg_extent + 1) ** 2, dots


def draw_tracks(video, track_path, vis, radius: float = 3, trail: int = 8, colors=None,
                trail_width: float | None = None, progress=None, check=None) -> torch.Tensor:
    """Overlay tracks on a video [T,H,W,3] -> [T,H,W,3].

    A dot of `radius` px at every visible point, and a trail over the previous `trail` frames that fades with
    age (a segment is drawn only when both its end frames are visible). `colors` [N,3] in 0..1 (default: HSV
    wheel). `trail_width` defaults to max(1, radius/2). Work beyond checks.MAX_PIXEL_TESTS (draw_tracks_work) is
    refused up front: ValueError naming trail or radius, whichever costs more. `progress()` runs after each
    frame, `check()` (an interrupt check) before each chunk of primitives within a frame."""
    video = check_video("video", video)
    path, v = check_tracks("tracks", {"track_path": track_path, "track_visibility": vis}, frames=video.shape[0])
    dev = video.device
    path, v = path.to(dev), v.to(dev)
    t_n, h, w, c = video.shape
    n = path.shape[1]
    if radius < 0 or trail < 0:
        raise ValueError("radius and trail must be >= 0")
    cols = track_colors(n, dev) if colors is None else torch.as_tensor(colors, dtype=torch.float32, device=dev)
    if cols.shape != (n, 3):
        raise ValueError(f"colors: expected [{n},3], got {tuple(cols.shape)}")
    if c != 3:
        cols = cols.mean(-1, keepdim=True).expand(n, c) if c == 1 else torch.cat([cols, torch.ones(n, c - 3, device=dev)], -1)
    hw_, seg_extent, dot_extent = _extents(radius, trail_width)
    trails, dots = draw_tracks_work(path, v, radius, trail, trail_width)
    check_work("trail" if trails >= dots else "radius", trails + dots,
               f"drawing {n:,} tracks over {t_n:,} frames with radius {radius:g} and trail {trail}")
    max_pieces = max(1, MAX_ELEMENTS // (2 * seg_extent + 1) ** 2)
    cols_ext = torch.cat([torch.zeros(1, c, device=dev), cols.to(video.dtype)], 0)   # owner 0 = nothing
    out = video.clone()
    for t in range(t_n):
        frame = out[t].reshape(h * w, c)
        if trail > 0 and t > 0:
            ends = torch.arange(max(1, t - trail + 1), t + 1, device=dev)           # segment (s-1 -> s)
            ok = v[ends] & v[ends - 1]                                            # [S,N]
            s_idx, n_idx = ok.nonzero(as_tuple=True)
            if s_idx.numel():
                s_frame = ends[s_idx]
                a, b = path[s_frame - 1, n_idx], path[s_frame, n_idx]
                fade = 0.85 * (1.0 - (t - s_frame).float() / trail)
                alpha, who = _strongest(h * w, _split_chunks(a, b, fade, n_idx + 1, max_pieces), n, hw_, (h, w),
                                        seg_extent, check)
                frame = frame * (1 - alpha[:, None]) + cols_ext[who] * alpha[:, None]
        if radius > 0:
            n_vis = v[t].nonzero(as_tuple=True)[0]
            if n_vis.numel():
                p = path[t, n_vis]
                alpha, who = _strongest(h * w, [(p, p, torch.ones_like(p[:, 0]), n_vis + 1)], n, float(radius),
                                        (h, w), dot_extent, check)
                frame = frame * (1 - alpha[:, None]) + cols_ext[who] * alpha[:, None]
        out[t] = frame.reshape(h, w, c)
        if progress is not None:
            progress()
    return out.clamp(0, 1)


def tracks_to_mask(track_path, vis, size: tuple[int, int], radius: float, check=None) -> torch.Tensor:
    """MASK [T,H,W]: anti-aliased disks of `radius` px around every visible point (union = max). More than
    checks.MAX_PIXEL_TESTS pixel tests (visible points x (2 ceil(radius + 1.5) + 1)^2) are refused up front
    (ValueError naming radius); `check()` (an interrupt check) runs before each chunk of points."""
    path, v = check_tracks("tracks", {"track_path": track_path, "track_visibility": vis})
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size: invalid frame size {size}")
    if radius <= 0:
        raise ValueError(f"radius: must be > 0, got {radius}")
    t_n = path.shape[0]
    dev = path.device
    mask = torch.zeros(t_n * h * w, dtype=torch.float32, device=dev)
    t_idx, n_idx = v.nonzero(as_tuple=True)
    extent = int(math.ceil(radius + 1.5))
    check_work("radius", t_idx.numel() * (2 * extent + 1) ** 2,
               f"disks of radius {radius:g} around {t_idx.numel():,} visible points")
    chunk = max(1, MAX_ELEMENTS // (2 * extent + 1) ** 2)     # bounded temporaries whatever the point count
    for s in range(0, t_idx.numel(), chunk):
        if check is not None:
            check()
        t_c = t_idx[s:s + chunk]
        p = path[t_c, n_idx[s:s + chunk]].float()
        idx, cov = _segment_coverage(p, p, float(radius), (h, w), extent)
        idx = idx + (t_c * h * w)[:, None]
        mask.scatter_reduce_(0, idx.reshape(-1), cov.reshape(-1), reduce="amax")
    return mask.reshape(t_n, h, w)
