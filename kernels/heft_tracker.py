"""HeFT tracker: windowed soft-argmax with query EMA and forward-backward visibility.

Source: HeFT, "Denoise to Track" (arXiv 2512.04619), as its official code runs it (`Tracker.head_track`);
docs/methods.md (HeFT) says which defaults come from where. The parts live in:
  heft_cost.py      cosine cost on windows, at pixel resolution (per-pixel cosine of bilinearly upsampled features,
                    as published) or on the feature grid (our cheaper choice), and descriptor sampling;
  heft_search.py    one localisation step (search disk, argmax disk, soft-argmax) and the descriptor EMA;
  heft_feedback.py  the forward pass with forward-backward visibility, in three modes (`fb_mode`).
The plain reference, written from the published rule without sharing this code, is references/heft.py.

Queries may start at any frame: frames after t_q are tracked forwards, frames before t_q with the same machinery
running backwards in time (the forward-backward check then runs forwards to t_q).
Returns (track_path [T,N,2] float32 pixels (x, y), track_visibility [T,N] bool, fb_error [T,N] RMS px, 0 at the
query frame).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .cost_volume import check_query_points
from .datatypes import check_feature_tensor
from .datatypes import stride_pair as _stride_pair
from .heft_cost import HeftCost
from .heft_feedback import run_speculative, run_stepwise, to_absolute
from .heft_search import HeftSearch, ema_offsets

__all__ = ["FB_MODES", "FB_MODE_ALIASES", "check_heft_args", "ema_offsets", "track_heft"]

FB_MODES = ("speculative", "sequential", "no_feedback")
FB_MODE_ALIASES = {"batched": "no_feedback"}    # the old name, still accepted (saved workflows)


def check_heft_args(search_radius, argmax_radius, vis_threshold, alpha, temperature, ema_range, fb_mode,
                    stride, upsample) -> None:
    sy, sx = _stride_pair(stride)
    spacing = 1.0 if upsample else max(sy, sx)
    if not (search_radius >= spacing * 0.75):
        raise ValueError(f"search_radius: must be at least {spacing * 0.75:g} px (grid spacing {spacing:g} px) "
                         f"so the search disk contains a grid point, got {search_radius}")
    if math.isinf(search_radius):
        raise ValueError("search_radius: must be finite (the search is unbounded only after an occlusion)")
    if not argmax_radius >= 0 or math.isinf(argmax_radius):
        raise ValueError(f"argmax_radius: must be a finite non-negative number of pixels, got {argmax_radius}")
    if not vis_threshold >= 0:
        raise ValueError(f"vis_threshold: must be non-negative, got {vis_threshold}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: the EMA weight must lie in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"temperature: must be positive, got {temperature}")
    if ema_range < 0 or int(ema_range) != ema_range:
        raise ValueError(f"ema_range: must be a non-negative integer number of pixels, got {ema_range}")
    if FB_MODE_ALIASES.get(fb_mode, fb_mode) not in FB_MODES:
        raise ValueError(f"fb_mode: expected one of {FB_MODES}, got {fb_mode!r}")


def track_heft(features: torch.Tensor, stride, queries: torch.Tensor, frame_size: tuple[int, int],
               argmax_radius: float = 17.0, search_radius: float = 42.0, vis_threshold: float = 18.0,
               alpha: float = 0.05, temperature: float = 1.0, ema_range: int = 1, upsample: bool = True,
               fb_mode: str = "speculative", max_elements: int = 2 ** 25,
               progress: Callable[[], None] | None = None):
    """Track queries [N,3] (t, x, y) pixels through features [T,C,h,w] with stride (sy, sx) pixels per cell in
    frames of frame_size (H, W) pixels.

    Radii and the visibility threshold are pixels; alpha is the EMA weight; upsample True = pixel resolution
    (published), False = feature grid; fb_mode one of FB_MODES (heft_feedback.py). Memory is bounded by
    `max_elements` per chunk of tracks and by the search window, never by the frame size times the points.
    Returns (track_path [T,N,2] float32, track_visibility [T,N] bool, fb_error [T,N] float32 px).
    Raises ValueError naming the input on bad arguments."""
    check_heft_args(search_radius, argmax_radius, vis_threshold, alpha, temperature, ema_range, fb_mode, stride,
                    upsample)
    feats = check_feature_tensor("features", features)
    t_total = feats.shape[0]
    q = check_query_points("query_points", queries, t_total, frame_size).to(feats.device)
    cost = HeftCost(feats, _stride_pair(stride), frame_size, upsample, max_elements)
    trk = HeftSearch(cost, temperature, argmax_radius, ema_range, alpha, max_elements)
    dev, dt = feats.device, feats.dtype
    n = q.shape[0]
    # 2N directional tracks: forward in time from t_q, and backward in time from t_q
    tq = q[:, 0].long().repeat(2)
    direction = torch.cat([torch.ones(n, dtype=torch.long), -torch.ones(n, dtype=torch.long)]).to(dev)
    length = torch.where(direction > 0, t_total - 1 - tq, tq)
    m = 2 * n
    pos = torch.zeros(t_total, m, 2, dtype=dt, device=dev)          # relative step k -> frame tq + dir*k
    vis = torch.zeros(t_total, m, dtype=torch.bool, device=dev)
    err = torch.zeros(t_total, m, dtype=dt, device=dev)
    pos[0] = q[:, 1:].to(dt).repeat(2, 1)
    vis[0] = True
    if fb_mode == "speculative":
        # chunk over tracks: per track T descriptors of the forward states + T backward descriptors
        per_track = max(1, t_total * (2 * trk.c + 16))
        chunk = max(1, int(max_elements) // per_track)
        for s in range(0, m, chunk):
            sl = slice(s, s + chunk)
            p_c, v_c, e_c = pos[:, sl].clone(), vis[:, sl].clone(), err[:, sl].clone()
            run_speculative(trk, tq[sl], direction[sl], length[sl], p_c, v_c, e_c, search_radius, vis_threshold,
                            progress)
            pos[:, sl], vis[:, sl], err[:, sl] = p_c, v_c, e_c
    else:
        run_stepwise(trk, tq, direction, length, pos, vis, err, search_radius, vis_threshold,
                     fb_mode == "sequential", progress)
    return to_absolute(pos, vis, err, q, tq, direction, length, t_total)
