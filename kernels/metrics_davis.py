"""DAVIS-2017 semi-supervised J&F (region Jaccard and boundary F-measure), re-implemented from
the davis2017-evaluation semantics (arXiv 1704.00675; docs/methods.md §9.2).

- J = |S n G| / |S u G| per frame, 1 when the union is empty.
- F: 1-px boundaries (a pixel differs from its E, S or SE neighbour; neighbours outside the image
  are ignored), each dilated by a disk of radius ceil(bound_th * image diagonal) (bound_th >= 1 is
  a radius in pixels), precision/recall of matched boundary pixels, F = 2PR/(P+R) (0 if P+R = 0).
- Ground-truth void (255) is background, as the official semi-supervised evaluation scores it.
- Per object: mean (nan-mean over frames), recall = fraction of frames > 0.5, decay = mean of the
  first minus the last of 4 time bins. Global J-Mean/F-Mean = mean over objects; J&F = their mean.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

BOUND_TH = 0.008
VOID_LABEL = 255      # DAVIS palette index of void pixels; the semi-supervised evaluation scores them background


def _bool(name: str, x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a mask [H,W] or [T,H,W], got shape {a.shape}")
    return a > 0.5 if a.dtype.kind == "f" else a > 0


def _same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"predicted mask: shape {pred.shape} differs from the ground truth {gt.shape}")


def db_eval_iou(pred, gt) -> np.ndarray | float:
    """Region similarity J per frame ([H,W] -> float, [T,H,W] -> [T]); empty union -> 1."""
    p, g = _bool("predicted mask", pred), _bool("ground-truth mask", gt)
    _same_shape(p, g)
    inter = np.sum(p & g, axis=(-2, -1)).astype(np.float64)
    union = np.sum(p | g, axis=(-2, -1)).astype(np.float64)
    j = np.ones_like(union)
    np.divide(inter, union, out=j, where=union > 0)
    return float(j) if j.ndim == 0 else j


def seg2bmap(seg) -> np.ndarray:
    """1-px boundary map of a 2-D mask: True where the pixel differs from its E, S or SE neighbour
    (neighbours outside the image are ignored, so the bottom-right pixel is never a boundary)."""
    s = _bool("mask", seg)
    if s.ndim != 2:
        raise ValueError(f"mask: seg2bmap takes one frame [H,W], got shape {s.shape}")
    b = np.zeros_like(s)
    b[:, :-1] |= s[:, :-1] != s[:, 1:]          # east
    b[:-1, :] |= s[:-1, :] != s[1:, :]          # south
    b[:-1, :-1] |= s[:-1, :-1] != s[1:, 1:]     # south-east
    return b


def disk(radius: int) -> np.ndarray:
    """uint8 disk structuring element: offsets with dy^2 + dx^2 <= r^2 (skimage's `disk`)."""
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ((yy * yy + xx * xx) <= r * r).astype(np.uint8)


def bound_pixels(frame_size, bound_th: float = BOUND_TH) -> int:
    """Dilation radius: bound_th in pixels when >= 1, else ceil(bound_th * ||(H,W)||)."""
    if bound_th >= 1:
        return int(bound_th)
    h, w = frame_size
    return int(math.ceil(bound_th * math.hypot(h, w)))


def _dilate(b: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.dilate(b.astype(np.uint8), kernel) > 0


def boundary_precision_recall(pred, gt, bound_th: float = BOUND_TH) -> tuple[float, float]:
    """Boundary precision and recall of one frame with the DAVIS degenerate cases:
    no predicted boundary, GT boundary -> (1, 0); predicted, no GT -> (0, 1); neither -> (1, 1)."""
    p, g = _bool("predicted mask", pred), _bool("ground-truth mask", gt)
    _same_shape(p, g)
    if p.ndim != 2:
        raise ValueError(f"predicted mask: expected one frame [H,W], got shape {p.shape}")
    kernel = disk(bound_pixels(p.shape, bound_th))
    bp, bg = seg2bmap(p), seg2bmap(g)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0, 1.0
    if n_p == 0:
        return 1.0, 0.0
    if n_g == 0:
        return 0.0, 1.0
    precision = float((bp & _dilate(bg, kernel)).sum()) / n_p
    recall = float((bg & _dilate(bp, kernel)).sum()) / n_g
    return precision, recall


def f_measure(pred, gt, bound_th: float = BOUND_TH) -> np.ndarray | float:
    """Boundary F per frame ([H,W] -> float, [T,H,W] -> [T])."""
    p, g = _bool("predicted mask", pred), _bool("ground-truth mask", gt)
    _same_shape(p, g)
    frames = p[None] if p.ndim == 2 else p
    gts = g[None] if g.ndim == 2 else g
    out = np.empty(len(frames))
    for i, (pf, gf) in enumerate(zip(frames, gts)):
        prec, rec = boundary_precision_recall(pf, gf, bound_th)
        out[i] = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return float(out[0]) if p.ndim == 2 else out


def db_statistics(per_frame) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values. Mean ignores NaN frames; recall is the
    fraction of frames > 0.5; decay = mean(first bin) - mean(last bin) of 4 bins whose edges are
    round(linspace(1, n, 5)) - 1, each bin including its right edge (davis2017-evaluation)."""
    v = np.asarray(per_frame, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"per_frame: expected a non-empty 1-D array, got shape {v.shape}")
    mean = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    recall = float(np.mean(v > 0.5))
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]

    def bin_mean(x):
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    return mean, recall, bin_mean(bins[0]) - bin_mean(bins[3])


def _labels(name: str, x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 3:
        raise ValueError(f"{name}: expected label maps [T,H,W], got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"{name}: label maps must hold integer object ids")
        a = np.round(a)
    if a.size and a.min() < 0:
        raise ValueError(f"{name}: label maps must not be negative")
    return a.astype(np.int64)


def evaluate_davis(pred_labels, gt_labels, drop_first_last: bool = True, bound_th: float = BOUND_TH,
                   progress=None, pred_name: str = "predicted labels",
                   gt_name: str = "ground-truth labels") -> dict:
    """Semi-supervised DAVIS J&F of one sequence. Label maps [T,H,W], 0 = background, objects 1..K
    where K = the largest id in the first ground-truth frame. Ground-truth VOID_LABEL (255) pixels are
    background, as davis2017-evaluation's semi-supervised task treats them (void set to 0, no void mask
    passed to J or F). A predicted id above K is an error;
    objects missing from the prediction count as empty masks. `drop_first_last` removes the first
    (given) and last annotated frames as the official script does. `progress` is called once per
    object. Values are fractions (0..1). Errors name the inputs `pred_name` / `gt_name`."""
    pred = _labels(pred_name, pred_labels)
    gt = _labels(gt_name, gt_labels)
    gt = np.where(gt == VOID_LABEL, 0, gt)
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"{pred_name}: {pred.shape[0]} frames but the ground truth has {gt.shape[0]}")
    if pred.shape[1:] != gt.shape[1:]:
        raise ValueError(f"{pred_name}: frames are {pred.shape[1]}x{pred.shape[2]} "
                         f"but the ground truth is {gt.shape[1]}x{gt.shape[2]}")
    k = int(gt[0].max()) if gt.size else 0
    if k == 0:
        raise ValueError(f"{gt_name}: the first frame has no object (all background)")
    if int(pred.max()) > k:
        raise ValueError(f"{pred_name}: object id {int(pred.max())} but the ground truth has {k} object(s)")
    if drop_first_last:
        if pred.shape[0] < 3:
            raise ValueError(f"{gt_name}: {pred.shape[0]} frames; dropping the first and last "
                             "frames needs at least 3")
        pred, gt = pred[1:-1], gt[1:-1]

    objects = []
    j_all, f_all = np.empty((k, len(gt))), np.empty((k, len(gt)))
    for obj in range(1, k + 1):
        j_all[obj - 1] = db_eval_iou(pred == obj, gt == obj)
        f_all[obj - 1] = f_measure(pred == obj, gt == obj, bound_th)
        jm, jr, jd = db_statistics(j_all[obj - 1])
        fm, fr, fd = db_statistics(f_all[obj - 1])
        objects.append({"id": obj, "J_mean": jm, "J_recall": jr, "J_decay": jd,
                        "F_mean": fm, "F_recall": fr, "F_decay": fd})
        if progress is not None:
            progress()

    def over_objects(key):
        return float(np.mean([o[key] for o in objects]))

    j_mean, f_mean = over_objects("J_mean"), over_objects("F_mean")
    return {
        "J&F-Mean": (j_mean + f_mean) / 2,
        "J-Mean": j_mean, "J-Recall": over_objects("J_recall"), "J-Decay": over_objects("J_decay"),
        "F-Mean": f_mean, "F-Recall": over_objects("F_recall"), "F-Decay": over_objects("F_decay"),
        "objects": objects, "J_per_frame": j_all, "F_per_frame": f_all,
        "num_objects": k, "num_frames": int(len(gt)),
        "bound_pixels": bound_pixels(gt.shape[1:], bound_th),
    }
