"""Cost volumes between point descriptors and feature frames, and bilinear sampling on the feature grid.

Coordinates follow the pack convention (datatypes.py: pixel p <-> cell c = (p + 0.5) / s - 0.5); bilinear
sampling at cell coordinates clamps to the border.

Fast versions work on [N,C] descriptors against [T,C,h,w] frames in frame chunks, so memory is bounded by
`max_elements` (one chunk of the [T,N,h,w] volume) and never by the clip length; `*_ref` versions loop.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .datatypes import cell_to_pixel, check_feature_tensor, check_points, pixel_to_cell

EPS = 1e-8
COST_KINDS = ("cosine", "dot")


# ------------------------------------------------------------------------------------------ coordinates

# ------------------------------------------------------------------------------------------ validation

def check_descriptors(name: str, desc, channels: int) -> torch.Tensor:
    if not isinstance(desc, torch.Tensor) or desc.ndim != 2:
        raise ValueError(f"{name}: expected descriptors [N,C], got {getattr(desc, 'shape', type(desc).__name__)}")
    if desc.shape[1] != channels:
        raise ValueError(f"{name}: descriptors have {desc.shape[1]} channels but the features have {channels}")
    if desc.shape[0] == 0:
        raise ValueError(f"{name}: no descriptors")
    return desc


def check_query_points(name: str, points, frames: int, frame_size: tuple[int, int]) -> torch.Tensor:
    """[N,3] (t, x, y) pixel queries inside the frame and with an integer frame index in range."""
    return check_points(name, points, tuple(frame_size), frames)


# ------------------------------------------------------------------------------------------ sampling

def bilinear_corners(cxy: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner cells (flat indices [N,4]) and weights [N,4] of bilinear sampling at cell coords cxy [N,2]
    (cell centres on integers), clamped to the grid (border padding)."""
    cx = cxy[:, 0].clamp(0, w - 1)
    cy = cxy[:, 1].clamp(0, h - 1)
    x0 = cx.floor().long().clamp(max=w - 1)
    y0 = cy.floor().long().clamp(max=h - 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    fx = cx - x0.to(cx.dtype)
    fy = cy - y0.to(cy.dtype)
    idx = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], 1)
    wts = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return idx, wts


def sample_cells(feats: torch.Tensor, t: torch.Tensor, cxy: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of feats [T,C,h,w] at frame t [N] (long) and cell coords cxy [N,2] -> [N,C].
    Coordinates are clamped to the grid (border padding)."""
    _, _, h, w = feats.shape
    idx, wts = bilinear_corners(cxy, h, w)
    corners = feats.flatten(2)[t.long()[:, None], :, idx]          # [N,4,C]
    return (corners * wts.to(feats.dtype)[..., None]).sum(1)


def sample_descriptors(feats: torch.Tensor, points: torch.Tensor, stride) -> torch.Tensor:
    """Descriptors [N,C] of feats [T,C,h,w] at query points [N,3] (t, x, y) given in PIXELS."""
    feats = check_feature_tensor("features", feats)
    p = torch.as_tensor(points, dtype=torch.float32, device=feats.device)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points: expected [N,3] as (t,x,y), got {tuple(p.shape)}")
    t = p[:, 0].round().long()
    if bool(((t < 0) | (t >= feats.shape[0])).any()):
        raise ValueError(f"points: query frame outside 0..{feats.shape[0] - 1}")
    return sample_cells(feats, t, pixel_to_cell(p[:, 1:].to(feats.dtype), stride))


# ------------------------------------------------------------------------------------------ cost volumes

def _check_kind(kind: str) -> None:
    if kind not in COST_KINDS:
        raise ValueError(f"kind: expected one of {COST_KINDS}, got {kind!r}")


def normalise(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(EPS)


def frame_chunk_size(n: int, hw: int, max_elements: int) -> int:
    """How many frames of an [.., N, h*w] cost fit in max_elements (at least one)."""
    return max(1, int(max_elements) // max(1, n * hw))


def iter_cost_volume(desc: torch.Tensor, feats: torch.Tensor, kind: str = "cosine", scale: float = 1.0,
                     max_elements: int = 2 ** 25,
                     progress: Callable[[], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields (t0, cost [tc,N,h,w]) frame chunk by frame chunk.
    kind 'cosine': cos(desc, feature); kind 'dot': (desc . feature) / scale (q.k with scale sqrt(d))."""
    _check_kind(kind)
    feats = check_feature_tensor("features", feats)
    t_total, c, h, w = feats.shape
    desc = check_descriptors("descriptors", desc, c).to(feats.dtype)
    if kind == "cosine":
        desc = normalise(desc, 1)
    elif not scale > 0:
        raise ValueError(f"scale: must be positive, got {scale}")
    step = frame_chunk_size(desc.shape[0], h * w, max_elements)
    for t0 in range(0, t_total, step):
        chunk = feats[t0:t0 + step]
        if kind == "cosine":
            chunk = normalise(chunk, 1)
        cost = torch.einsum("nc,tchw->tnhw", desc, chunk)
        if kind == "dot":
            cost = cost / scale
        yield t0, cost
        if progress is not None:
            for _ in range(chunk.shape[0]):
                progress()
