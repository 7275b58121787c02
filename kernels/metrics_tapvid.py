"""TAP-Vid point-tracking metrics with the semantics of tapnet's `compute_tapvid_metrics`
(TAP-Vid, arXiv 2211.03726; re-implemented as docs/methods.md §9.1 describes), query sampling,
and the glue that scores one video given in the pack's TRACKS layout.

Conventions
- Metric inputs follow tapnet: query points [B,N,3] as (t,y,x), occlusion flags [B,N,T] (True =
  occluded), tracks [B,N,T,2] as (x,y) pixels of the 256x256 evaluation frame.
- Pack TRACKS are [T,N,2] (x,y) pixels of the frames they were computed on, visibility [T,N]
  (True = visible); `to_eval_frame` maps them to the 256 frame with tapnet's x256 rule.
- NaN policy: a ratio whose denominator is 0 is NaN (tapnet's 0/0), never silently 0 or 1.
  `nanmean_metrics` averages videos ignoring NaN and counts how many were NaN.
"""
from __future__ import annotations

import math

import numpy as np

THRESHOLDS = (1, 2, 4, 8, 16)
EVAL_SIZE = 256
METRIC_KEYS = (
    "average_jaccard",
    "average_pts_within_thresh",
    "occlusion_accuracy",
    *(f"jaccard_{d}" for d in THRESHOLDS),
    *(f"pts_within_{d}" for d in THRESHOLDS),
)


def _np(name: str, x, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if dtype is not None:
        a = a.astype(dtype)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _ratio(num, den) -> np.ndarray:
    """num/den elementwise; NaN where den == 0 (the explicit form of tapnet's 0/0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def evaluation_mask(query_frames, num_frames: int, query_mode: str) -> np.ndarray:
    """Bool [..., T]: which frames of each query are scored.
    first: frames strictly after the query frame; strided: every frame but the query frame."""
    eye = np.eye(num_frames, dtype=np.int64)
    if query_mode == "first":
        table = np.cumsum(eye, axis=1) - eye          # row q: 1 for j > q
    elif query_mode == "strided":
        table = 1 - eye                                 # row q: 1 for j != q
    else:
        raise ValueError(f"query_mode: expected 'first' or 'strided', got {query_mode!r}")
    q = np.asarray(query_frames)
    return table[q] > 0


def compute_tapvid_metrics(query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks,
                           query_mode: str, get_trackwise_metrics: bool = False) -> dict:
    """tapnet's TAP-Vid metrics. Returns {name: float64 array [B] (or [B,N] trackwise)}.

    query_points [B,N,3] (t,y,x): only t is used, q = round(t). gt/pred_occluded bool [B,N,T].
    gt/pred_tracks [B,N,T,2] (x,y) in the 256x256 frame. A point is within delta when the squared
    distance is strictly below delta^2. Ratios with a zero denominator are NaN.
    """
    qp = _np("query_points", query_points, np.float64)
    gt_occ = _np("gt_occluded", gt_occluded).astype(bool)
    pred_occ = _np("pred_occluded", pred_occluded).astype(bool)
    gt_xy = _np("gt_tracks", gt_tracks, np.float64)
    pred_xy = _np("pred_tracks", pred_tracks, np.float64)
    if gt_occ.ndim != 3:
        raise ValueError(f"gt_occluded: expected [videos,tracks,frames], got shape {gt_occ.shape}")
    b, n, t = gt_occ.shape
    for name, arr, shape in (("query_points", qp, (b, n, 3)), ("pred_occluded", pred_occ, (b, n, t)),
                             ("gt_tracks", gt_xy, (b, n, t, 2)), ("pred_tracks", pred_xy, (b, n, t, 2))):
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    q = np.round(qp[..., 0]).astype(np.int64)
    if q.size and (q.min() < 0 or q.max() > t - 1):
        raise ValueError(f"query_points: query frames must lie in 0..{t - 1}, got {q.min()}..{q.max()}")

    evaluated = evaluation_mask(q, t, query_mode)      # [B,N,T]
    visible = ~gt_occ
    pred_visible = ~pred_occ
    axes = (2,) if get_trackwise_metrics else (1, 2)

    def total(x):
        return np.sum(x, axis=axes)

    out = {"occlusion_accuracy": _ratio(total((pred_occ == gt_occ) & evaluated), total(evaluated))}
    sq_dist = np.sum((pred_xy - gt_xy) ** 2, axis=-1)
    count_visible = total(visible & evaluated)
    jaccards, within_fracs = [], []
    for d in THRESHOLDS:
        within = sq_dist < d * d
        correct = within & visible
        pts = _ratio(total(correct & evaluated), count_visible)
        tp = total(correct & pred_visible & evaluated)
        fp = total(((~visible & pred_visible) | (~within & pred_visible)) & evaluated)
        jac = _ratio(tp, count_visible + fp)
        out[f"pts_within_{d}"] = pts
        out[f"jaccard_{d}"] = jac
        within_fracs.append(pts)
        jaccards.append(jac)
    out["average_jaccard"] = np.mean(np.stack(jaccards), axis=0)       # NaN if any threshold is NaN
    out["average_pts_within_thresh"] = np.mean(np.stack(within_fracs), axis=0)
    return out


def _check_gt(gt_occluded, gt_tracks) -> tuple[np.ndarray, np.ndarray]:
    occ = _np("gt_occluded", gt_occluded).astype(bool)
    xy = _np("gt_tracks", gt_tracks, np.float64)
    if occ.ndim != 2 or xy.shape != (*occ.shape, 2):
        raise ValueError(f"gt_tracks/gt_occluded: expected [N,T,2] and [N,T], got {xy.shape} and {occ.shape}")
    return occ, xy


def sample_queries_first(gt_occluded, gt_tracks) -> dict:
    """One query per track at its first visible frame; never-visible tracks are dropped.
    gt_occluded [N,T] bool, gt_tracks [N,T,2] (x,y). Returns query_points [M,3] (t,y,x),
    target_points [M,T,2], occluded [M,T], track_index [M] (row of the input track)."""
    occ, xy = _check_gt(gt_occluded, gt_tracks)
    keep = np.flatnonzero((~occ).any(axis=1))
    first = np.argmax(~occ[keep], axis=1)                # first True = first visible frame
    pos = xy[keep, first]                                # [M,2] (x,y)
    query = np.stack([first.astype(np.float64), pos[:, 1], pos[:, 0]], axis=-1).reshape(-1, 3)
    return {"query_points": query, "target_points": xy[keep], "occluded": occ[keep], "track_index": keep}


def sample_queries_strided(gt_occluded, gt_tracks, stride: int = 5) -> dict:
    """For t = 0, stride, 2*stride, ...: every track visible at t yields a query (t,y,x).
    Ordered by t, then track. Returns query_points [M,3], target_points [M,T,2], occluded [M,T],
    trackgroup [M] (row of the input track; a track appears once per visible strided frame)."""
    if int(stride) < 1:
        raise ValueError(f"stride: must be >= 1, got {stride}")
    occ, xy = _check_gt(gt_occluded, gt_tracks)
    n, t = occ.shape
    queries, groups = [], []
    for f in range(0, t, int(stride)):
        rows = np.flatnonzero(~occ[:, f])
        queries.append(np.stack([np.full(len(rows), float(f)), xy[rows, f, 1], xy[rows, f, 0]], axis=-1))
        groups.append(rows)
    group = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    query = np.concatenate(queries).reshape(-1, 3) if queries else np.zeros((0, 3))
    return {"query_points": query, "target_points": xy[group], "occluded": occ[group], "trackgroup": group}


def to_eval_frame(track_path_px, frame_size, size: int = EVAL_SIZE) -> np.ndarray:
    """Pixel (x,y) [...,2] of a HxW frame -> the size x size TAP-Vid frame: x*size/W, y*size/H.

    This is tapnet's x256 rule (points normalised by width/height, then times 256, not 255) and
    DiffTrack's conversion. It is a pure scale with no offset, so predictions and ground truth
    converted with the same rule keep their relative error whatever the pixel-centre convention;
    ground truth stored normalised (TAP-Vid pickles, x/W) comes back exactly as normalised*256.
    """
    h, w = (float(v) for v in frame_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"frame_size: expected positive (H,W), got {tuple(frame_size)}")
    xy = _np("track_path", track_path_px, np.float64)
    if xy.shape[-1] != 2:
        raise ValueError(f"track_path: last axis must be (x,y), got shape {xy.shape}")
    return xy * np.array([size / w, size / h])


def _nan_reason(key: str, n_eval: int, n_vis: int, value: float) -> str | None:
    if not math.isnan(value):
        return None
    if n_eval == 0:
        return "no evaluated point (no frame after/besides a query frame)"
    if key.startswith("jaccard") or key == "average_jaccard":
        return "no ground-truth-visible evaluated point and no false positive"
    return "no ground-truth-visible evaluated point"


def evaluate_tracks(pred_path, pred_vis, gt_path, gt_vis, frame_size, query_mode: str = "first",
                    query_points=None, gt_frame_size=None, stride: int = 5, percent: bool = False) -> dict:
    """Score one video in the pack's TRACKS layout with the TAP-Vid metrics.

    pred_path/gt_path [T,N,2] (x,y) pixels, pred_vis/gt_vis [T,N] bool (True = visible). Predictions
    correspond 1:1 to ground-truth tracks. Both are mapped to the 256 frame (`to_eval_frame`) using
    `frame_size` (H,W) for the prediction and `gt_frame_size` (default: the same) for the truth.

    Queries: `query_points` [N,3] (t,x,y) (pack order; only t is used), one per track, or derived
    from the ground truth: 'first' = first visible frame of each track (never-visible tracks are
    dropped); 'strided' = every `stride`-th frame where a track is visible. Limitation: in strided
    mode with derived queries the same prediction of a track is scored for every query of its group,
    i.e. the tracker is assumed query-independent; an exact strided protocol passes one track per
    strided query (duplicated GT tracks plus their `query_points`).

    Returns the per-video metrics (METRIC_KEYS) as floats (x100 when `percent`), NaN where a
    denominator is 0 (reasons in "nan_reasons"), and the counts.
    """
    pred = _np("predicted tracks", pred_path, np.float64)
    gt = _np("ground-truth tracks", gt_path, np.float64)
    pvis = _np("predicted visibility", pred_vis).astype(bool)
    gvis = _np("ground-truth visibility", gt_vis).astype(bool)
    if gt.ndim != 3 or gt.shape[-1] != 2 or gvis.shape != gt.shape[:2]:
        raise ValueError(f"ground-truth tracks: expected [T,N,2] and visibility [T,N], got {gt.shape}, {gvis.shape}")
    if pred.ndim != 3 or pred.shape[-1] != 2 or pvis.shape != pred.shape[:2]:
        raise ValueError(f"predicted tracks: expected [T,N,2] and visibility [T,N], got {pred.shape}, {pvis.shape}")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"predicted tracks: {pred.shape[0]} frames but the ground truth has {gt.shape[0]}")
    if pred.shape[1] != gt.shape[1]:
        raise ValueError(f"predicted tracks: {pred.shape[1]} points but the ground truth has {gt.shape[1]}")
    if query_mode not in ("first", "strided"):
        raise ValueError(f"query_mode: expected 'first' or 'strided', got {query_mode!r}")
    t, n = gt.shape[:2]
    pred256 = to_eval_frame(pred, frame_size).transpose(1, 0, 2)                      # [N,T,2]
    gt256 = to_eval_frame(gt, gt_frame_size if gt_frame_size is not None else frame_size).transpose(1, 0, 2)
    gt_occ, pred_occ = ~gvis.T, ~pvis.T                                               # [N,T]

    if query_points is not None:
        qp = _np("query_points", query_points, np.float64)
        if qp.shape != (n, 3):
            raise ValueError(f"query_points: expected [{n},3] (t,x,y), one per track, got {qp.shape}")
        q = np.stack([qp[:, 0], qp[:, 2], qp[:, 1]], axis=-1)                        # -> (t,y,x)
        rows = np.arange(n)
        source = "given"
    elif query_mode == "first":
        s = sample_queries_first(gt_occ, gt256)
        q, rows, source = s["query_points"], s["track_index"], "first visible ground-truth frame"
    else:
        s = sample_queries_strided(gt_occ, gt256, stride)
        q, rows, source = s["query_points"], s["trackgroup"], f"ground truth visible at every {stride}th frame"

    metrics = compute_tapvid_metrics(q[None], gt_occ[rows][None], gt256[rows][None],
                                     pred_occ[rows][None], pred256[rows][None], query_mode)
    qi = np.round(q[:, 0]).astype(np.int64)
    evaluated = evaluation_mask(qi, t, query_mode) if len(rows) else np.zeros((0, t), bool)
    n_eval = int(evaluated.sum())
    n_vis = int((evaluated & ~gt_occ[rows]).sum())
    scale = 100.0 if percent else 1.0
    result: dict = {k: float(metrics[k][0]) * scale for k in METRIC_KEYS}
    result["nan_reasons"] = {k: r for k in METRIC_KEYS
                             if (r := _nan_reason(k, n_eval, n_vis, result[k])) is not None}
    result.update(num_tracks=int(n), num_queries=int(len(rows)), num_frames=int(t),
                  num_evaluated_points=n_eval, num_visible_evaluated_points=n_vis,
                  query_mode=query_mode, query_source=source, percent=bool(percent),
                  eval_frame=f"{EVAL_SIZE}x{EVAL_SIZE}, x*{EVAL_SIZE}/W, y*{EVAL_SIZE}/H")
    return result


def nanmean_metrics(per_video: list[dict]) -> dict:
    """Benchmark aggregation: mean over videos of each per-video metric, ignoring NaN videos.
    Returns {key: mean (NaN if every video is NaN)}, "num_videos" and "num_nan_videos" {key: count}."""
    if not per_video:
        raise ValueError("per_video: no video results to aggregate")
    out: dict = {}
    nans: dict = {}
    for k in METRIC_KEYS:
        vals = np.array([float(r[k]) for r in per_video], dtype=np.float64)
        ok = ~np.isnan(vals)
        out[k] = float(vals[ok].mean()) if ok.any() else float("nan")
        nans[k] = int((~ok).sum())
    out["num_videos"] = len(per_video)
    out["num_nan_videos"] = nans
    return out
