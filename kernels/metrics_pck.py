"""JHMDB-style PCK@alpha for propagated keypoints (docs/methods.md §9.3).

Per frame the normaliser is 0.6 * ||(box_w, box_h)|| of the tight box around the visible GT joints.
A (joint, frame) instance counts when its GT joint is visible and the frame is not frame 0 (the
given frame). It is correct when the prediction is present (both coordinates >= 0; the propagation
writes -1 for a lost joint) and ||pred - gt|| <= alpha * normaliser (compared without dividing, so
a zero-size box only accepts an exact hit). PCK is computed per joint, then averaged over the joints
that have at least one instance.
"""
from __future__ import annotations

import numpy as np


def _arr(name: str, x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x).astype(dtype)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def pck(pred, gt, gt_visible, alphas=(0.1, 0.2), skip_first: bool = True) -> dict:
    """pred, gt [T,J,2] (x,y) pixels; gt_visible [T,J] bool. Returns {"pck@a": fraction} for each
    alpha, "per_joint": {a: [J] fractions (NaN for a joint never counted)}, "num_instances",
    "normaliser" [T] and "distance" [T,J] (pixels)."""
    p = _arr("predicted joints", pred, np.float64)
    g = _arr("ground-truth joints", gt, np.float64)
    vis = _arr("ground-truth visibility", gt_visible, bool)
    if g.ndim != 3 or g.shape[-1] != 2:
        raise ValueError(f"ground-truth joints: expected [T,J,2], got shape {g.shape}")
    if p.shape != g.shape:
        raise ValueError(f"predicted joints: shape {p.shape} differs from the ground truth {g.shape}")
    if vis.shape != g.shape[:2]:
        raise ValueError(f"ground-truth visibility: expected {g.shape[:2]}, got {vis.shape}")

    big = np.where(vis[..., None], g, np.inf)
    small = np.where(vis[..., None], g, -np.inf)
    lo, hi = big.min(axis=1), small.max(axis=1)                   # [T,2]
    has_joint = vis.any(axis=1)
    size = np.where(has_joint[:, None], hi - lo, 0.0)
    normaliser = 0.6 * np.hypot(size[:, 0], size[:, 1])           # [T]

    counted = vis.copy()
    if skip_first:
        counted[:1] = False
    present = (p >= 0).all(axis=-1)
    dist = np.linalg.norm(p - g, axis=-1)
    n_per_joint = counted.sum(axis=0)
    out: dict = {"per_joint": {}, "num_instances": int(counted.sum()),
                 "normaliser": normaliser, "distance": dist}
    for a in alphas:
        correct = counted & present & (dist <= float(a) * normaliser[:, None])
        per_joint = np.full(g.shape[1], np.nan)
        np.divide(correct.sum(axis=0), n_per_joint, out=per_joint, where=n_per_joint > 0)
        out["per_joint"][a] = per_joint
        out[f"pck@{a:g}"] = float(np.nanmean(per_joint)) if (n_per_joint > 0).any() else float("nan")
    return out
