"""Label propagation through a clip with the DINO/DIFT protocol (docs/methods.md §7), windowed fast version.

Context for target frame t = the first frame (its one-hot labels) + a FIFO queue of the `n_context`
most recent predictions (frames max(1, t-n)..t-1, soft labels, never argmaxed). Affinity
exp(<f_t, f_c> / temperature) between L2-normalised features, restricted to a (2r+1)^2 square window
of feature cells in every context frame, top-k over all contexts jointly per target cell, normalised,
then the soft label is the weighted sum of the context labels.

The fast version never builds the (h*w) x (m*h*w) affinity: the target frame is cut into tiles of
`tile` x `tile` cells; each tile is matched (one batched matmul) against the context region it can see
(the tile grown by r on each side), the cells outside each target's own window are masked, top-k runs
per context and then jointly over the m per-context winners (the same set as one joint top-k). Memory
is bounded by contexts x tile^2 x (tile + 2r)^2, independent of the frame size and the clip length.
Equal to `references/propagation.py` up to float rounding and the order of exact ties (the reference keeps
every value tied with the k-th, this keeps exactly k).

Temperatures: DINO and DIFT-ADM use 0.1 (the default here); TED uses 0.2 on DAVIS and 0.1 on
YouTube-Similar; DIFT-SD uses 0.2 with top-k 15.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .checks import MAX_WORK_BYTES, check_finite, check_memory
from .datatypes import check_feature_tensor

Progress = Callable[[], None] | None
Check = Callable[[], None] | None


# ----------------------------------------------------------------------------------------------- inputs
def check_label_map(name: str, label_map, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Integer label map [H,W] (0 = background, objects 1..K); at least one object pixel."""
    if not isinstance(label_map, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor [H,W] of label ids, got {type(label_map).__name__}")
    if label_map.ndim != 2:
        raise ValueError(f"{name}: expected a label map [H,W], got shape {tuple(label_map.shape)}")
    check_finite(name, label_map)
    if label_map.is_floating_point() and not bool((label_map == label_map.round()).all()):
        raise ValueError(f"{name}: label ids must be whole numbers")
    lab = label_map.round().long() if label_map.is_floating_point() else label_map.long()
    if bool((lab < 0).any()):
        raise ValueError(f"{name}: label ids must be >= 0 (0 = background)")
    if size is not None and tuple(lab.shape) != tuple(size):
        raise ValueError(f"{name}: is {lab.shape[0]}x{lab.shape[1]} but the frames are {size[0]}x{size[1]}")
    if not bool((lab > 0).any()):
        raise ValueError(f"{name}: the first-frame mask is empty (no object pixel)")
    return lab


def labels_from_map(label_map: torch.Tensor, feat_hw: tuple[int, int],
                    num_labels: int | None = None) -> torch.Tensor:
    """Full-resolution label map [H,W] -> one-hot [L,h,w] on the feature grid (channel 0 = background).

    NEAREST downsample as PIL does it (source pixel floor((i + 0.5) * H / h)), then one-hot with
    L = max label + 1 channels (or `num_labels`)."""
    lab = check_label_map("label_map", label_map)
    h, w = int(feat_hw[0]), int(feat_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"feat_hw: feature grid {feat_hw} is empty")
    n = int(lab.max()) + 1 if num_labels is None else int(num_labels)
    if n <= int(lab.max()):
        raise ValueError(f"num_labels: {n} is too small for label id {int(lab.max())}")
    small = F.interpolate(lab[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].long()
    if not bool((small > 0).any()):
        raise ValueError("label_map: the object vanishes on the feature grid (too small for the stride)")
    return F.one_hot(small, n).permute(2, 0, 1).float()


def _check_args(features, first_labels, n_context, radius, top_k, temperature):
    features = check_feature_tensor("features", features, cast_float=True)
    if not isinstance(first_labels, torch.Tensor) or first_labels.ndim != 3:
        raise ValueError("first_labels: expected soft labels [L,h,w] on the feature grid")
    if tuple(first_labels.shape[1:]) != tuple(features.shape[2:]):
        raise ValueError(f"first_labels: grid {tuple(first_labels.shape[1:])} does not match the features "
                         f"{tuple(features.shape[2:])}")
    check_finite("first_labels", first_labels)
    objects = first_labels[1:] if first_labels.shape[0] > 1 else first_labels   # channel 0 = background
    if objects.numel() == 0 or not bool((objects > 0).any()):
        raise ValueError("first_labels: the first-frame labels are empty (no object)")
    if int(n_context) < 0:
        raise ValueError(f"n_context: must be >= 0, got {n_context}")
    if int(radius) < 0:
        raise ValueError(f"radius: must be >= 0, got {radius}")
    if int(top_k) < 1:
        raise ValueError(f"top_k: must be >= 1, got {top_k}")
    if not float(temperature) > 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    return features, first_labels.to(features.device, features.dtype)


def context_frames(t: int, n_context: int) -> list[int]:
    """Frame 0 + the queue of the n most recent predicted frames (oldest first)."""
    return [0] + list(range(max(1, t - n_context), t))


def run_propagation(features: torch.Tensor, first_labels: torch.Tensor, n_context: int, step,
                    progress: Progress = None) -> torch.Tensor:
    """The frame loop shared by the fast and reference versions. `step(t, ctx, feats, soft)` returns
    the soft labels [L,h,w] of frame t from the context frame indices `ctx`."""
    feats = F.normalize(features, dim=1, p=2)
    t_all = feats.shape[0]
    soft = feats.new_zeros((t_all,) + tuple(first_labels.shape))
    soft[0] = first_labels
    for t in range(1, t_all):
        soft[t] = step(t, context_frames(t, int(n_context)), feats, soft)
        if progress is not None:
            progress()
    return soft


# ----------------------------------------------------------------------------------------------- fast
def window_step(f_t: torch.Tensor, feats: torch.Tensor, soft: torch.Tensor, ctx: list[int], radius: int,
               top_k: int, temperature: float, tile: int, check: Check = None) -> torch.Tensor:
    """Soft labels [L,h,w] for target features f_t [C,h,w] (normalised) from the context frames `ctx` of
    feats [T,C,h,w] (normalised) / soft [T,L,h,w], tile by tile; `check()` (an interrupt check that raises)
    runs before every tile."""
    c, h, w = f_t.shape
    n_lab = soft.shape[1]
    r = radius
    m = len(ctx)
    ctx_idx = torch.tensor(ctx, device=f_t.device)
    out = f_t.new_empty(n_lab, h, w)
    ys = torch.arange(h, device=f_t.device)
    xs = torch.arange(w, device=f_t.device)
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        sy0, sy1 = max(0, y0 - r), min(h, y1 + r)
        for x0 in range(0, w, tile):
            if check is not None:
                check()
            x1 = min(w, x0 + tile)
            sx0, sx1 = max(0, x0 - r), min(w, x1 + r)
            ty, tx, ry, rx = y1 - y0, x1 - x0, sy1 - sy0, sx1 - sx0
            nq, ns = ty * tx, ry * rx
            q = f_t[:, y0:y1, x0:x1].reshape(c, nq).T / temperature                      # [Q,C]
            src = feats[ctx_idx, :, sy0:sy1, sx0:sx1].reshape(m, c, ns)
            logits = torch.matmul(q, src)                                                   # [m,Q,S]
            # each target keeps only the sources in its own (2r+1)^2 window
            near_y = (ys[y0:y1, None] - ys[None, sy0:sy1]).abs() <= r                       # [ty,ry]
            near_x = (xs[x0:x1, None] - xs[None, sx0:sx1]).abs() <= r                       # [tx,rx]
            near = (near_y[:, None, :, None] & near_x[None, :, None, :]).reshape(nq, ns)
            logits.masked_fill_(~near, float("-inf"))
            # joint top-k over contexts = top-k of the per-context top-k's (same set up to exact ties)
            k1 = min(top_k, ns)
            v1, i1 = logits.topk(k1, dim=2)                                                 # [m,Q,k1]
            v1 = v1.permute(1, 0, 2).reshape(nq, m * k1)
            vals, j = v1.topk(min(top_k, m * k1), dim=1)                                     # [Q,k]
            src_idx = (j // k1) * ns + i1.permute(1, 0, 2).reshape(nq, m * k1).gather(1, j)
            wts = torch.softmax(vals, dim=1)                       # = exp / sum over the kept top-k
            lab = soft[ctx_idx, :, sy0:sy1, sx0:sx1].reshape(m, n_lab, ns)
            lab = lab.permute(0, 2, 1).reshape(m * ns, n_lab)
            res = torch.einsum("qk,qkl->ql", wts, lab[src_idx])
            out[:, y0:y1, x0:x1] = res.T.reshape(n_lab, ty, tx)
    return out


def propagation_bytes(shape: tuple[int, int, int, int], labels: int, n_context: int, radius: int, top_k: int,
                      tile: int) -> int:
    """Estimated peak bytes (float32) of `propagate_soft_labels` on features of `shape` (T,C,h,w) with `labels`
    label channels: the normalised features and the soft labels [T,L,h,w] held for the whole clip, plus one
    tile's working set in `window_step` (the gathered context features and labels, the logits
    [m,Q,S] with its mask and per-context top-k, the kept sources' labels [Q,k,L]); m = contexts, Q = target
    cells of a tile, S = the cells it can see (tile + 2r per side, cut at the frame)."""
    t_all, c, h, w = (int(v) for v in shape)
    r, n_lab = int(radius), int(labels)
    m = min(int(n_context), max(t_all - 2, 0)) + 1
    q = min(tile, h) * min(tile, w)
    s = min(h, tile + 2 * r) * min(w, tile + 2 * r)
    k = min(int(top_k), m * min(int(top_k), s))
    clip = t_all * (c + n_lab) * h * w
    per_tile = q * c + m * c * s + m * q * s + q * s // 4 + 6 * m * q * min(top_k, s) + 2 * m * n_lab * s \
        + 3 * q * k + q * k * n_lab + 2 * q * n_lab + n_lab * h * w
    return 4 * (clip + per_tile)


def fit_tile(shape: tuple[int, int, int, int], labels: int, n_context: int, radius: int, top_k: int,
             limit: float = MAX_WORK_BYTES) -> tuple[int, int]:
    """(tile, estimated bytes): the default tile (radius + 1, at least 4), halved while the estimate exceeds
    `limit` (the result does not depend on the tile; smaller tiles only run slower), down to 1."""
    tile = max(4, int(radius) + 1)
    need = propagation_bytes(shape, labels, n_context, radius, top_k, tile)
    while need > limit and tile > 1:
        tile = max(1, tile // 2)
        need = propagation_bytes(shape, labels, n_context, radius, top_k, tile)
    return tile, need


def propagation_fits(shape: tuple[int, int, int, int], labels: int, n_context: int, radius: int, top_k: int,
                     labels_input: str, extra_bytes: int = 0) -> int:
    """The tile `propagate_soft_labels` uses (`fit_tile` within MAX_WORK_BYTES - `extra_bytes`), or ValueError
    with the estimate naming `labels_input` (when the label channels dominate) or n_context, and the inputs to
    lower, when even 1-cell tiles exceed the bound."""
    tile, need = fit_tile(shape, labels, n_context, radius, top_k, MAX_WORK_BYTES - extra_bytes)
    t_all, c, h, w = shape
    few = propagation_bytes(shape, 2, n_context, radius, top_k, tile)
    check_memory(labels_input if few < need / 2 else "n_context", need + extra_bytes,
                 f"propagating {labels - 1} label channel(s) through {t_all} frames of {h}x{w} cells ({c} channels) "
                 f"with n_context {n_context}, radius {radius}, top_k {top_k}",
                 f"lower n_context, radius or top_k, use fewer {labels_input}, or coarser or fewer frames")
    return tile


def propagate_soft_labels(features: torch.Tensor, first_labels: torch.Tensor, n_context: int = 28,
                          radius: int = 15, top_k: int = 10, temperature: float = 0.1, tile: int | None = None,
                          progress: Progress = None, check: Check = None, labels_input: str = "first_labels",
                          extra_bytes: int = 0) -> torch.Tensor:
    """features [T,C,h,w] (normalised inside), first_labels [L,h,w] -> soft labels [T,L,h,w]
    (frame 0 = first_labels). `tile` (target cells per tile side) only trades speed for memory, the
    result does not depend on it; default radius + 1, where the matched region (tile + 2r)^2 is about
    2.25x the window (2r + 1)^2 while the matmuls stay large, made smaller while the estimated memory
    (`propagation_bytes` + the caller's `extra_bytes`) exceeds MAX_WORK_BYTES. Raises ValueError naming
    the input to lower (`labels_input` when the label channels dominate) when even 1-cell tiles would exceed it. `check()` runs before every tile (interrupts), `progress()` after every frame."""
    features, first_labels = _check_args(features, first_labels, n_context, radius, top_k, temperature)
    if tile is None:
        tile = propagation_fits(tuple(features.shape), first_labels.shape[0], n_context, radius, top_k,
                                labels_input, extra_bytes)
    if int(tile) < 1:
        raise ValueError(f"tile: must be >= 1, got {tile}")

    def step(t, ctx, feats, soft):
        return window_step(feats[t], feats, soft, ctx, int(radius), int(top_k), float(temperature), int(tile),
                           check)

    return run_propagation(features, first_labels, n_context, step, progress)


# ----------------------------------------------------------------------------------------------- output
def norm_mask(soft: torch.Tensor) -> torch.Tensor:
    """Per-channel min-max normalisation of [L,H,W] as DINO's norm_mask: channels whose max is > 0 get
    (x - min) / max(x - min); a constant channel (which would divide by zero there) becomes 0."""
    flat = soft.reshape(soft.shape[0], -1)
    mx = flat.max(dim=1).values
    shifted = flat - flat.min(dim=1, keepdim=True).values
    rng = shifted.max(dim=1, keepdim=True).values
    normed = torch.where(rng > 0, shifted / rng.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return torch.where((mx > 0)[:, None], normed, flat).reshape(soft.shape)


def soft_labels_to_map(soft: torch.Tensor, size: tuple[int, int], check: Check = None) -> torch.Tensor:
    """Soft labels [T,L,h,w] -> label map [T,H,W] (long): bilinear upsample (align_corners False)
    straight to `size`, per-channel norm_mask, argmax. Frame by frame to bound memory; `check()` per frame."""
    if soft.ndim != 4:
        raise ValueError(f"soft: expected soft labels [frames,L,h,w], got shape {tuple(soft.shape)}")
    out = torch.empty((soft.shape[0],) + tuple(size), dtype=torch.long, device=soft.device)
    for t in range(soft.shape[0]):
        if check is not None:
            check()
        up = F.interpolate(soft[t:t + 1].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
        out[t] = norm_mask(up).argmax(dim=0)
    return out


def propagate_label_map(features: torch.Tensor, label_map: torch.Tensor, n_context: int = 28,
                        radius: int = 15, top_k: int = 10, temperature: float = 0.1,
                        num_labels: int | None = None, tile: int | None = None,
                        progress: Progress = None, check: Check = None) -> tuple[torch.Tensor, torch.Tensor]:
    """First-frame label map [H,W] (ids, 0 = background) -> (soft [T,L,h,w], labels [T,H,W]).
    Frame 0 of `labels` is the given map itself (the ground truth, as in the DAVIS protocol). The memory bound
    and `check` as in `propagate_soft_labels`; the full-size output adds the labels [T,H,W] and one frame's
    upsampled soft labels [L,H,W] (three copies) to the estimate."""
    features = check_feature_tensor("features", features, cast_float=True)
    lab = check_label_map("label_map", label_map).to(features.device)
    n_lab = int(lab.max()) + 1 if num_labels is None else int(num_labels)
    big_h, big_w = lab.shape
    out_bytes = 8 * features.shape[0] * big_h * big_w + 4 * 3 * n_lab * big_h * big_w
    if tile is None:            # the one-hot first labels are built before propagate_soft_labels checks
        propagation_fits(tuple(features.shape), n_lab, n_context, radius, top_k, "mask", out_bytes)
    first = labels_from_map(lab, tuple(features.shape[2:]), num_labels).to(features.dtype)
    soft = propagate_soft_labels(features, first, n_context, radius, top_k, temperature, tile, progress, check,
                                 "mask", out_bytes)
    labels = soft_labels_to_map(soft, tuple(lab.shape), check)
    labels[0] = lab
    return soft, labels
