"""Classical point tracker: chain OpenCV optical flow (DIS or Farneback) between consecutive frames.

Each frame pair's forward flow F_t (t -> t+1) and backward flow B_t (t+1 -> t) is computed once for all points.
From each query frame a point moves forwards with x_{t+1} = x_t + F_t(x_t) and backwards with
x_{t-1} = x_t + B_{t-1}(x_t), flows sampled bilinearly at the sub-pixel position (border values outside).

Visibility per step (forward-backward consistency): with f = F_t(x_t) and b = B_t(x_t + f), the step is
consistent when |f + b| <= fb_threshold + 0.05 (|f| + |b|) (absolute px plus 5% of the motion, since flow
error grows with displacement); mirrored for backward steps. A frame is visible when the step that reached it
is consistent and the position is inside the frame. After an occlusion the position keeps following the flow
at its current estimate (usually the occluder's motion), so a point that reappears is reported wherever the
chain has carried it; the query frame is always visible at the query position.
Memory: all flows are kept (float32, 2 x [T-1,H,W,2]).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch

from .checks import check_video
from .cost_volume import sample_cells
from .datatypes import check_points, inside_frame

FB_RELATIVE = 0.05


def _gray_u8(frame: np.ndarray) -> np.ndarray:
    img = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if img.shape[-1] == 1:
        return np.ascontiguousarray(img[..., 0])
    return cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)


DIS_MIN_SIDE = 16   # OpenCV's DIS (preset MEDIUM) raises or crashes the process on frames with a side below this


def check_flow_size(name: str, size: tuple[int, int], method: str) -> None:
    """DIS needs frames of at least DIS_MIN_SIDE px on each side (measured with OpenCV 4.13: 15x40 frames crash
    the process, 13x500 raise); Farneback works on small frames. Raises ValueError naming `name`."""
    h, w = size
    if method == "dis" and min(h, w) < DIS_MIN_SIDE:
        raise ValueError(f"{name}: frames of {h}x{w} px are too small for DIS optical flow (at least "
                         f"{DIS_MIN_SIDE} px on each side); use method 'farneback'")


def _flow_fn(method: str):
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda a, b: dis.calc(a, b, None)
    if method == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15,
                                                         iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    raise ValueError(f"method: expected 'dis' or 'farneback', got {method!r}")


def compute_flows(video, method: str = "dis", progress: Callable[[], None] | None = None):
    """Forward and backward flows between consecutive frames: two float32 arrays [T-1,H,W,2] (dx,dy px)."""
    flow = _flow_fn(method)
    check_flow_size("video", tuple(video.shape[1:3]), method)
    frames = video.detach().cpu().float().numpy()
    grays = [_gray_u8(f) for f in frames]
    t_n, h, w = frames.shape[:3]
    fwd = np.zeros((max(t_n - 1, 0), h, w, 2), dtype=np.float32)
    bwd = np.zeros_like(fwd)
    for t in range(t_n - 1):
        fwd[t] = flow(grays[t], grays[t + 1])
        bwd[t] = flow(grays[t + 1], grays[t])
        if progress is not None:
            progress()
    return fwd, bwd


def sample_flow(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear sample of a flow field [H,W,2] at points [N,2] (x,y), clamped to the border -> [N,2] float64.
    Pixels are the cells of a stride-1 grid, so this is the pack's one bilinear sampler (`sample_cells`)."""
    grid = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float64)).permute(2, 0, 1)[None]   # [1,2,H,W]
    xy = torch.from_numpy(np.asarray(pts, dtype=np.float64))
    return sample_cells(grid, torch.zeros(xy.shape[0], dtype=torch.long), xy).numpy()


def _step(pos: np.ndarray, there: np.ndarray, back: np.ndarray, thr: float, h: int, w: int):
    """One chained step: new positions and visibility (FB-consistent and inside the frame)."""
    f = sample_flow(there, pos)
    new = pos + f
    b = sample_flow(back, new)
    err = np.linalg.norm(f + b, axis=-1)
    ok = err <= thr + FB_RELATIVE * (np.linalg.norm(f, axis=-1) + np.linalg.norm(b, axis=-1))
    return new, ok & inside_frame(new, (h, w))


def track_with_flow(video, query_points, method: str = "dis", fb_threshold: float = 1.5,
                    progress: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Track query points [N,3] (t,x,y) through video [T,H,W,3] -> (path float32 [T,N,2], vis bool [T,N])."""
    video = check_video("video", video)
    t_n, h, w = video.shape[:3]
    q = check_points("query_points", query_points, (h, w), t_n).cpu().numpy().astype(np.float64)
    if not fb_threshold > 0:
        raise ValueError(f"fb_threshold: must be > 0, got {fb_threshold}")
    fwd, bwd = compute_flows(video, method, progress)
    n = q.shape[0]
    qt = q[:, 0].round().astype(np.int64)
    path = np.zeros((t_n, n, 2), dtype=np.float64)
    vis = np.zeros((t_n, n), dtype=bool)
    path[qt, np.arange(n)] = q[:, 1:]
    vis[qt, np.arange(n)] = True
    for t in range(t_n - 1):                       # forwards from each query frame
        act = np.flatnonzero(qt <= t)
        if act.size:
            path[t + 1, act], vis[t + 1, act] = _step(path[t, act], fwd[t], bwd[t], fb_threshold, h, w)
    for t in range(t_n - 1, 0, -1):                # backwards from each query frame
        act = np.flatnonzero(qt >= t)
        if act.size:
            path[t - 1, act], vis[t - 1, act] = _step(path[t, act], bwd[t - 1], fwd[t - 1], fb_threshold, h, w)
    dev = video.device
    return torch.from_numpy(path.astype(np.float32)).to(dev), torch.from_numpy(vis).to(dev)
