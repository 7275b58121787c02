"""The data vdtrack nodes pass to each other, and the one coordinate convention they share.

Imports torch and numpy only (never ComfyUI): kernels, backbones and nodes all build and check their data here.
Every `check_*` raises ValueError("<name>: <what is wrong>") naming the input it was given.

Coordinates (the pack's convention, everywhere outside the TAP-Vid metrics and files)
-------------------------------------------------------------------------------------
- Pixels: x to the right, y down, pixel centres on integers. A frame of H x W pixels spans
  [-0.5, W - 0.5] x [-0.5, H - 0.5]; a position is *inside the frame* when it lies in that closed box
  (`inside_frame`).
- A point is (x, y); a query point is (t, x, y) with t a whole frame index; a frame size is (H, W); a stride is
  (sy, sx) pixels per feature cell.
- Feature cell (i, j) of a grid with stride (sy, sx) is centred on pixel ((j + 0.5) sx - 0.5, (i + 0.5) sy - 0.5)
  (align_corners=False), so a pixel coordinate p maps to the cell coordinate c = (p + 0.5) / s - 0.5 and back by
  p = (c + 0.5) s - 0.5 (`pixel_to_cell`, `cell_to_pixel`).
- TAP-Vid files and metrics use (t, y, x) and a 256 x 256 frame; only `tracks_io` and `metrics_tapvid` convert.

TRACKS (ComfyUI core's type; `make_tracks`, `check_tracks`)
-----------------------------------------------------------
    {"track_path":       float32 [T,N,2]  (x, y) pixels of the frames the tracks were computed on,
     "track_visibility": bool    [T,N],
     optional:
     "query_points":     float32 [N,3]    (t, x, y) the query of each track,
     "frame_size":       (H, W)           the frames `track_path` refers to,
     "confidence":       float32 [T,N]    a tracker's matching score,
     "fb_error":         float32 [T,N]    HeFT's forward-backward gap, pixels,
     "seconds":          float            wall-clock seconds of the chain that produced them (nodes/timing.py)}
Core's own producers are accepted as they come: a leading batch axis of 1 on the path or the visibility, and a
visibility [T,1] (one flag per frame, `WanMoveTracksFromCoords` with a track mask) broadcast to [T,N].

VDT_FEATURES (`make_features`, `check_features`, `make_feature_meta`)
--------------------------------------------------------------------
    {"features":   float [T,C,h,w], or [T,heads,C,h,w] for per-head attention q/k (time = VIDEO frames),
     "stride":     (sy, sx) floats, pixels per feature cell,
     "frame_size": (H, W) ints, the frames the grid spans,
     "meta":       one schema, FEATURE_META_KEYS always present (None where it does not apply) + extra keys}
meta keys:
    backbone     model or feature source name ("wan2.1-t2v-1.3b", "pixels", "fused", ...)
    family       model family ("wan", "cosmos", "svd", "i2vgen", "cogvideox") or None
    layer        block index the features come from, or None
    kind         "block", "q", "k", "patch" (pixel features) or "fused"
    heads        ORIGINAL head ids along the heads axis, in order (per-head features), the ids the heads of a
                 [T,C,h,w] map were selected from (after head selection), or None (no heads)
    noise_level  fraction of the model's sampling schedule the features were taken at (ComfyUI's denoise
                 sense, 0 = clean), or None
    timestep     the model's timestep t of 1000 at that level, or None
    rope         q/k "before" or "after" rotary embedding, or None
    rope_layout  channel layout of the RoPE pairs ("interleaved", "half_split", "contiguous"), or None
Adapters add their own keys (window, overlap, windows, seed, model_size, sigma, ...); nodes add "seconds".

Points
------
Nodes take points as text (KJNodes JSON or lines, `tracks_io.parse_points`); kernels take query points
float32 [N,3] (t, x, y) pixels (`make_points`, `check_points`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

FEATURE_META_KEYS = ("backbone", "family", "layer", "kind", "heads", "noise_level", "timestep", "rope",
                     "rope_layout")
HEADS_POLICIES = ("any", "forbid", "require", "flatten")


def _shape(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else ()


def _check_finite(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


# ------------------------------------------------------------------------------------------ coordinates

def inside_frame(xy, size: Sequence[int]):
    """Boolean mask [...] of positions xy [..., 2] (x, y) pixels inside an (H, W) frame, border included.
    Works on torch tensors and numpy arrays alike."""
    h, w = size
    x, y = xy[..., 0], xy[..., 1]
    return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def stride_pair(stride) -> tuple[float, float]:
    """A stride as (sy, sx) positive floats; a single number means the same stride on both axes."""
    if isinstance(stride, (int, float)):
        stride = (stride, stride)
    try:
        sy, sx = (float(s) for s in stride)
    except (TypeError, ValueError):
        raise ValueError(f"stride: expected (sy, sx) pixels per cell, got {stride!r}") from None
    if not (sy > 0 and sx > 0) or not (np.isfinite(sy) and np.isfinite(sx)):
        raise ValueError(f"stride: must be positive and finite, got {stride!r}")
    return sy, sx


def pixel_to_cell(xy: torch.Tensor, stride) -> torch.Tensor:
    """Pixel coordinates [..., 2] (x, y) -> feature-cell coordinates [..., 2] (x, y): c = (p + 0.5) / s - 0.5."""
    sy, sx = stride_pair(stride)
    return (xy + 0.5) / xy.new_tensor([sx, sy]) - 0.5


def cell_to_pixel(xy: torch.Tensor, stride) -> torch.Tensor:
    """Feature-cell coordinates [..., 2] (x, y) -> pixel coordinates [..., 2] (x, y): p = (c + 0.5) s - 0.5."""
    sy, sx = stride_pair(stride)
    return (xy + 0.5) * xy.new_tensor([sx, sy]) - 0.5


def check_frame_size(name: str, size) -> tuple[int, int]:
    """(H, W) as two positive ints (a tensor or list is accepted)."""
    try:
        vals = size.tolist() if hasattr(size, "tolist") else list(size)
        h, w = (int(v) for v in vals)
        if any(float(v) != int(v) for v in vals):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{name}: frame_size must be (H, W) whole numbers, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name}: frame_size must be positive, got {(h, w)}")
    return h, w


# ------------------------------------------------------------------------------------------ points

def make_points(xy, t=0) -> torch.Tensor:
    """Points xy [N,2] (x, y) pixels and query frames t (one number or [N]) -> float32 [N,3] (t, x, y)."""
    p = torch.as_tensor(xy, dtype=torch.float32)
    if p.ndim != 2 or p.shape[-1] != 2:
        raise ValueError(f"points: expected [N,2] as (x,y), got {_shape(p)}")
    tt = torch.as_tensor(t, dtype=torch.float32).to(p.device).expand(p.shape[0])
    return torch.cat([tt[:, None], p], 1)


NOT_KNOWN_YET = 2 ** 31       # a frame count / side length that stands for "not known before the run" (syntax checks)


def check_points(name: str, points, size: Sequence[int], frames: int | None = None) -> torch.Tensor:
    """Query points [N,3] as (t, x, y): finite, inside the (H, W) frame and, when `frames` is given, a whole
    frame index in 0..frames-1. Sizes of NOT_KNOWN_YET check only what can be checked before the run (x, y >= 0;
    t a whole number >= 0) and say so. Returns them as float32."""
    p = torch.as_tensor(points, dtype=torch.float32)
    if p.ndim != 2 or p.shape[-1] != 3:
        raise ValueError(f"{name}: expected query points [N,3] as (t,x,y), got {_shape(p)}")
    if p.shape[0] == 0:
        raise ValueError(f"{name}: no points given")
    _check_finite(name, p)
    h, w = size
    bad = ~inside_frame(p[:, 1:], (h, w))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        where = "negative: x and y are pixels from the frame's top-left corner" if max(h, w) >= NOT_KNOWN_YET \
            else f"outside the {w}x{h} frame"
        raise ValueError(f"{name}: point {i} at x={p[i, 1]:.1f}, y={p[i, 2]:.1f} is {where}")
    if frames is not None:
        badt = (p[:, 0] < 0) | (p[:, 0] > frames - 1) | (p[:, 0] != p[:, 0].round())
        if bool(badt.any()):
            i = int(badt.nonzero()[0])
            allowed = "a whole frame index >= 0" if frames >= NOT_KNOWN_YET else f"a whole frame index in 0..{frames - 1}"
            raise ValueError(f"{name}: point {i} has query frame {p[i, 0]:g}; expected {allowed}")
    return p


# ------------------------------------------------------------------------------------------ TRACKS

def check_tracks(name: str, tracks, frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """TRACKS dict -> (track_path float32 [T,N,2], track_visibility bool [T,N]), validated.

    Accepts a leading batch axis of 1, a visibility [T,N,1], and core's per-frame visibility [T,1] (broadcast to
    every track); a missing visibility means all visible. Raises ValueError naming `name`."""
    if not isinstance(tracks, dict) or "track_path" not in tracks:
        raise ValueError(f"{name}: expected TRACKS (a dict with 'track_path' and 'track_visibility')")
    path = torch.as_tensor(tracks["track_path"]).float()
    if path.ndim == 4 and path.shape[0] == 1:   # a leading batch axis from other packs
        path = path[0]
    if path.ndim != 3 or path.shape[-1] != 2:
        raise ValueError(f"{name}: track_path must be [frames,points,2], got {_shape(path)}")
    vis = tracks.get("track_visibility")
    vis = torch.ones(path.shape[:2], dtype=torch.bool) if vis is None else torch.as_tensor(vis)
    if vis.ndim == 3 and vis.shape[0] == 1:
        vis = vis[0]
    if vis.ndim == 3 and vis.shape[-1] == 1:
        vis = vis[..., 0]
    if vis.ndim == 2 and vis.shape[0] == path.shape[0] and vis.shape[1] == 1:
        vis = vis.expand(path.shape[0], path.shape[1])      # core: one flag per frame for every track
    if tuple(vis.shape) != tuple(path.shape[:2]):
        raise ValueError(f"{name}: track_visibility {_shape(vis)} does not match track_path {_shape(path)}")
    _check_finite(name, path)
    if frames is not None and path.shape[0] != frames:
        raise ValueError(f"{name}: tracks have {path.shape[0]} frames but the video has {frames}")
    return path, vis.bool()


def make_tracks(path, visibility, *, query_points=None, frame_size=None, **extra) -> dict:
    """A TRACKS dict from track_path [T,N,2] (x, y) px and visibility [T,N] (or [T,1]); optional query_points
    [N,3] (t, x, y), frame_size (H, W) and per-track extras such as confidence / fb_error [T,N] (None values
    are left out). Every tensor is moved to the CPU; path and extras as float32, visibility as bool."""
    p, v = check_tracks("tracks", {"track_path": torch.as_tensor(path).cpu(),
                                   "track_visibility": torch.as_tensor(visibility).cpu()})
    out = {"track_path": p, "track_visibility": v}
    if query_points is not None:
        q = torch.as_tensor(query_points, dtype=torch.float32).cpu()
        if q.ndim != 2 or q.shape != (p.shape[1], 3):
            raise ValueError(f"query_points: expected [{p.shape[1]},3] as (t,x,y), got {_shape(q)}")
        out["query_points"] = q
    if frame_size is not None:
        out["frame_size"] = check_frame_size("frame_size", frame_size)
    for key, value in extra.items():
        if value is not None:
            out[key] = torch.as_tensor(value).cpu().float()
    return out


# ------------------------------------------------------------------------------------------ VDT_FEATURES

def make_feature_meta(backbone: str, kind: str, *, family: str | None = None, layer: int | None = None,
                      heads: Sequence[int] | None = None, noise_level: float | None = None,
                      timestep: float | None = None, rope: str | None = None, rope_layout: str | None = None,
                      **extra) -> dict:
    """The one metadata schema of VDT_FEATURES (see the module docstring); `extra` adds adapter keys."""
    meta = {"backbone": str(backbone), "family": family, "layer": None if layer is None else int(layer),
            "kind": str(kind), "heads": None if heads is None else [int(h) for h in heads],
            "noise_level": None if noise_level is None else float(noise_level),
            "timestep": None if timestep is None else float(timestep), "rope": rope, "rope_layout": rope_layout}
    meta.update(extra)
    return meta


def _normalise_meta(meta) -> dict:
    out = {k: None for k in FEATURE_META_KEYS}
    out.update(dict(meta or {}))
    return out


def check_feature_tensor(name: str, x, heads: str = "forbid", cast_float: bool = False) -> torch.Tensor:
    """A feature tensor: non-empty, finite, floating point (integer features raise, or become float32 with
    cast_float=True). heads: "forbid" = [T,C,h,w]; "require" = [T,heads,C,h,w]; "any" = either, returned as is;
    "flatten" = either, per-head features L2-normalised per head and concatenated to [T,heads*C,h,w] (so a
    cosine over them is the mean of the per-head cosines)."""
    if heads not in HEADS_POLICIES:
        raise ValueError(f"heads: policy {heads!r} not in {HEADS_POLICIES}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a feature tensor [T,C,h,w], got {type(x).__name__}")
    if heads == "require" and x.ndim != 5:
        raise ValueError(f"{name}: expected per-head features [T,heads,C,h,w] (q/k of an attention layer), got "
                         f"{_shape(x)}")
    if heads == "forbid" and x.ndim == 5:
        raise ValueError(f"{name}: has a heads axis {_shape(x)}; select heads first with "
                         "'VDT Select Heads/Frequencies'")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name}: expected features [T,C,h,w] or [T,heads,C,h,w], got shape {_shape(x)}")
    if min(x.shape) < 1:
        raise ValueError(f"{name}: empty feature tensor of shape {_shape(x)}")
    if not x.is_floating_point():
        if not cast_float:
            raise ValueError(f"{name}: features must be floating point, got {x.dtype}")
        x = x.float()
    _check_finite(name, x)
    if heads == "flatten" and x.ndim == 5:
        x = torch.nn.functional.normalize(x, dim=2).flatten(1, 2)
    return x


def make_features(features: torch.Tensor, stride, frame_size, meta: dict) -> dict:
    """A VDT_FEATURES dict: features [T,C,h,w] or [T,heads,C,h,w], stride (sy, sx) px per cell, frame_size
    (H, W), meta (`make_feature_meta`; missing schema keys are filled with None)."""
    if not isinstance(features, torch.Tensor) or features.ndim not in (4, 5):
        raise ValueError(f"features: expected a tensor [T,C,h,w] or [T,heads,C,h,w], got {_shape(features)}")
    meta = _normalise_meta(meta)
    if meta["heads"] is not None and features.ndim == 5 and len(meta["heads"]) != features.shape[1]:
        raise ValueError(f"meta: {len(meta['heads'])} head ids for {features.shape[1]} heads")
    return {"features": features, "stride": stride_pair(stride),
            "frame_size": check_frame_size("frame_size", frame_size), "meta": meta}


def check_features(name: str, features, heads: str = "any", cast_float: bool = False) -> dict:
    """Validate a VDT_FEATURES dict -> a new dict with the tensor checked by `check_feature_tensor` (`heads`
    policy), stride as (sy, sx) floats, frame_size as (H, W) ints and meta in the one schema. For per-head
    features meta["heads"] holds the original head ids (all heads 0..n-1 when the producer did not say)."""
    if not isinstance(features, dict) or "features" not in features:
        raise ValueError(f"{name}: expected VDT_FEATURES (a dict with 'features', 'stride', 'frame_size')")
    raw = features["features"]
    x = check_feature_tensor(name, raw, heads, cast_float)
    if "stride" not in features or "frame_size" not in features:
        raise ValueError(f"{name}: needs 'stride' (sy,sx) and 'frame_size' (H,W)")
    try:
        stride = stride_pair(features["stride"])
    except ValueError:
        raise ValueError(f"{name}: invalid stride {features['stride']!r}; expected (sy,sx) > 0") from None
    size = check_frame_size(name, features["frame_size"])
    meta = _normalise_meta(features.get("meta"))
    if raw.ndim == 5:
        ids = meta["heads"] if meta["heads"] is not None else list(range(raw.shape[1]))
        if len(ids) != raw.shape[1]:
            raise ValueError(f"{name}: meta lists {len(ids)} head ids for {raw.shape[1]} heads")
        meta["heads"] = [int(h) for h in ids]
    return {"features": x, "stride": stride, "frame_size": size, "meta": meta}


__all__ = ["FEATURE_META_KEYS", "HEADS_POLICIES", "inside_frame", "stride_pair", "pixel_to_cell", "cell_to_pixel",
           "check_frame_size", "make_points", "check_points", "check_tracks", "make_tracks", "make_feature_meta",
           "make_features", "check_feature_tensor", "check_features"]
