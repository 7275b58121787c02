"""Input validation shared by kernels and nodes: every failure is a ValueError that names the input."""
from __future__ import annotations

import numpy as np
import torch


def _shape(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else ()


def check_finite(name: str, x) -> None:
    t = torch.as_tensor(x)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def check_video(name: str, x, min_frames: int = 1) -> torch.Tensor:
    """IMAGE batch as a video: [T,H,W,C] float, C in (1,3,4), finite. Returns it as a tensor."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name}: expected an IMAGE tensor [frames,H,W,3], got {type(x).__name__}")
    t = torch.as_tensor(x)
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an IMAGE [frames,H,W,3], got shape {_shape(t)}")
    if t.shape[0] < min_frames:
        raise ValueError(f"{name}: needs at least {min_frames} frame(s), got {t.shape[0]}")
    if t.shape[1] < 2 or t.shape[2] < 2:
        raise ValueError(f"{name}: frames of {t.shape[1]}x{t.shape[2]} pixels are too small")
    check_finite(name, t)
    return t


def check_mask(name: str, x, frames: int | None = None, size: tuple | None = None,
               allow_empty: bool = True) -> torch.Tensor:
    """MASK [T,H,W] (a 2-D mask becomes one frame). Checks frame count / size when given."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name}: expected a MASK tensor [frames,H,W], got {type(x).__name__}")
    t = torch.as_tensor(x)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"{name}: expected a MASK [frames,H,W], got shape {_shape(t)}")
    if frames is not None and t.shape[0] not in (1, frames):
        raise ValueError(f"{name}: has {t.shape[0]} frames but the video has {frames}")
    if size is not None and tuple(t.shape[1:]) != tuple(size):
        raise ValueError(f"{name}: is {t.shape[1]}x{t.shape[2]} but the frames are {size[0]}x{size[1]}")
    check_finite(name, t)
    if not allow_empty and not bool((t > 0.5).any()):
        raise ValueError(f"{name}: the mask is empty (no pixel above 0.5)")
    return t


def check_tracks(name: str, tracks, frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """TRACKS dict -> (track_path float32 [T,N,2], track_visibility bool [T,N]), validated."""
    if not isinstance(tracks, dict) or "track_path" not in tracks:
        raise ValueError(f"{name}: expected TRACKS (a dict with 'track_path' and 'track_visibility')")
    path = torch.as_tensor(tracks["track_path"]).float()
    if path.ndim == 4 and path.shape[0] == 1:   # tolerate a leading batch axis from other packs
        path = path[0]
    if path.ndim != 3 or path.shape[-1] != 2:
        raise ValueError(f"{name}: track_path must be [frames,points,2], got {_shape(path)}")
    vis = tracks.get("track_visibility")
    vis = torch.ones(path.shape[:2], dtype=torch.bool) if vis is None else torch.as_tensor(vis)
    if vis.ndim == 3 and vis.shape[0] == 1:
        vis = vis[0]
    if vis.ndim == 3 and vis.shape[-1] == 1:
        vis = vis[..., 0]
    if vis.ndim == 2 and vis.shape[1] == 1 and path.shape[1] != 1 and vis.shape[0] == path.shape[0]:
        vis = vis.expand(path.shape[:2])        # one visibility per frame for every track (core TRACKS payloads)
    if tuple(vis.shape) != tuple(path.shape[:2]):
        raise ValueError(f"{name}: track_visibility {_shape(vis)} does not match track_path {_shape(path)}")
    check_finite(name, path)
    if frames is not None and path.shape[0] != frames:
        raise ValueError(f"{name}: tracks have {path.shape[0]} frames but the video has {frames}")
    return path, vis.bool()


def check_points(name: str, points, size: tuple, frames: int | None = None) -> torch.Tensor:
    """Query points [N,3] as (t,x,y): inside the frame (pixel centres on integers) and a valid frame index."""
    p = torch.as_tensor(points, dtype=torch.float32)
    if p.ndim != 2 or p.shape[-1] != 3:
        raise ValueError(f"{name}: expected query points [N,3] as (t,x,y), got {_shape(p)}")
    if p.shape[0] == 0:
        raise ValueError(f"{name}: no points given")
    check_finite(name, p)
    h, w = size
    bad = (p[:, 1] < -0.5) | (p[:, 1] > w - 0.5) | (p[:, 2] < -0.5) | (p[:, 2] > h - 0.5)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name}: point {i} at x={p[i, 1]:.1f}, y={p[i, 2]:.1f} is outside the {w}x{h} frame")
    if frames is not None:
        badt = (p[:, 0] < 0) | (p[:, 0] > frames - 1) | (p[:, 0] != p[:, 0].round())
        if bool(badt.any()):
            i = int(badt.nonzero()[0])
            raise ValueError(f"{name}: point {i} has query frame {p[i, 0]:g}, outside 0..{frames - 1}")
    return p


def check_feature_frames(name: str, feats, cast_float: bool = False) -> torch.Tensor:
    """Per-frame feature maps [T,C,h,w]: a non-empty, finite float tensor. Integer features raise, or are cast
    to float32 with cast_float=True."""
    if not isinstance(feats, torch.Tensor):
        raise ValueError(f"{name}: expected a feature tensor [T,C,h,w], got {type(feats).__name__}")
    if feats.ndim != 4:
        raise ValueError(f"{name}: expected features [T,C,h,w], got shape {tuple(feats.shape)}")
    if min(feats.shape) < 1:
        raise ValueError(f"{name}: empty feature tensor of shape {tuple(feats.shape)}")
    if not feats.is_floating_point():
        if not cast_float:
            raise ValueError(f"{name}: features must be floating point, got {feats.dtype}")
        feats = feats.float()
    if not bool(torch.isfinite(feats).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return feats
