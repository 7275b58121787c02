"""DiffTrack query-key matching (arXiv 2506.17220; docs/methods.md §4).

For a source frame s (the query frame) and every target frame k:
  attn(s->k) = softmax_j(Q_s[i] . K_k[j] / scale), attn(k->s) = softmax_i(Q_k[j] . K_s[i] / scale), each averaged
  over heads; corr[i, j] = (attn(s->k)[i, j] + attn(k->s)[j, i]) / 2; for every source cell i the match is the
  hard argmax over target cells j of softmax_j(corr[i, :]) (NC-Net corr_to_matches) -> a mapping field on the
  source grid (target cell coordinates); the track is that field bilinearly sampled at the query
  (align_corners=True in cell units, i.e. cell index = coordinate), converted to pixels.
`scale`: 'heads' = sqrt(number of heads), the published code's quirk (default); 'head_dim' = sqrt(C); or a number.
No occlusion prediction: visibility is all True. confidence = softmax_j(corr) at the match, sampled like the track.

Pixel <-> cell conversion follows the pack convention (cell = (pixel + 0.5) / stride - 0.5); DiffTrack's own
x/16 with the W/1024 margin is not reproduced.

Fast version: per (source, target) pair only the rows of the source cells needed by the queries (their bilinear
neighbours) are formed; the attn(k->s) normaliser is a log-sum-exp over source cells computed in target-row chunks,
so memory stays O(chunk * h*w) instead of the full (h*w)^2 (and never T*h*w squared).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .cost_volume import bilinear_corners, check_query_points
from .datatypes import cell_to_pixel, check_feature_tensor, pixel_to_cell


def _as_heads(name: str, x) -> torch.Tensor:
    """[T,heads,C,h,w], or [T,C,h,w] as one head."""
    x = check_feature_tensor(name, x, heads="any")
    return x[:, None] if x.ndim == 4 else x


def resolve_scale(scale, heads: int, head_dim: int) -> float:
    if scale == "heads":
        return math.sqrt(heads)
    if scale == "head_dim":
        return math.sqrt(head_dim)
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        return float(scale)
    raise ValueError(f"scale: expected 'heads', 'head_dim' or a positive number, got {scale!r}")


def _prepare(query, key, queries, frame_size, scale):
    q = _as_heads("query_features", query)
    k = q if key is None else _as_heads("key_features", key)
    if k.shape != q.shape:
        raise ValueError(f"key_features: shape {tuple(k.shape)} does not match query_features {tuple(q.shape)}")
    t_total, heads, c, h, w = q.shape
    pts = check_query_points("query_points", queries, t_total, frame_size)
    return q, k, pts, resolve_scale(scale, heads, c)


def _finish(match_cells, conf, pts, stride, t_total):
    """match_cells [T,N,2] in cells -> TRACKS arrays; the query frame keeps the query point."""
    path = cell_to_pixel(match_cells, stride).float()
    n = pts.shape[0]
    idx = torch.arange(n, device=path.device)
    tq = pts[:, 0].long().to(path.device)
    path[tq, idx] = pts[:, 1:].to(path)
    conf = conf.float()
    conf[tq, idx] = 1.0
    return path, torch.ones(t_total, n, dtype=torch.bool, device=path.device), conf


def _check_passes(anchor_passes, q: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """anchor_passes: [(frames [n] long, pass queries [n+1,heads,C,h,w], pass keys [n+1,...])], index 0 of a pass
    being the anchor (frame 0) as that pass saw it. Every frame 1..T-1 must be in some pass."""
    t_total = q.shape[0]
    out, seen = [], set()
    for i, item in enumerate(anchor_passes):
        try:
            frames, pq, pk = item
        except (TypeError, ValueError):
            raise ValueError(f"anchor_passes: pass {i} must be (frames, queries, keys)") from None
        frames = torch.as_tensor(frames).long().flatten()
        pq, pk = _as_heads(f"anchor_passes[{i}] queries", pq), _as_heads(f"anchor_passes[{i}] keys", pk)
        if pq.shape != pk.shape or pq.shape[0] != frames.numel() + 1 or pq.shape[1:] != q.shape[1:]:
            raise ValueError(f"anchor_passes: pass {i} holds {tuple(pq.shape)} / {tuple(pk.shape)} for "
                             f"{frames.numel()} frames + the anchor; the features are {tuple(q.shape)}")
        if frames.numel() and (int(frames.min()) < 1 or int(frames.max()) >= t_total):
            raise ValueError(f"anchor_passes: pass {i} has frames outside 1..{t_total - 1}")
        seen.update(frames.tolist())
        out.append((frames, pq.to(q.device, q.dtype), pk.to(q.device, q.dtype)))
    missing = sorted(set(range(1, t_total)) - seen)
    if missing:
        raise ValueError(f"anchor_passes: frames {missing[:8]} are in no pass")
    return out


def _pair_corr(qs, ks, qt, kt, need, sc, row_chunk):
    """Head-averaged DiffTrack correlation [m, hw_t] of the source cells `need` (m of them) with every target cell.
    qs/ks: source queries/keys [heads,C,hw], qt/kt: target [heads,C,hw]."""
    heads, _, hw = qt.shape
    corr = torch.zeros(need.numel(), hw, dtype=qs.dtype, device=qs.device)
    for hd in range(heads):
        a1 = torch.softmax((qs[hd][:, need].T @ kt[hd]) / sc, 1)                       # attn(s->t) [m,hw_t]
        a2 = torch.empty(hw, need.numel(), dtype=qs.dtype, device=qs.device)          # attn(t->s)[j, need]
        for j0 in range(0, hw, row_chunk):
            logits = (qt[hd][:, j0:j0 + row_chunk].T @ ks[hd]) / sc                   # [cj,hw_s]
            lse = torch.logsumexp(logits, 1, keepdim=True)
            a2[j0:j0 + row_chunk] = torch.exp(logits[:, need] - lse)
        corr += 0.5 * (a1 + a2.T)
    return corr / heads


def track_difftrack(query_features: torch.Tensor, key_features: torch.Tensor | None, stride, queries: torch.Tensor,
                    frame_size: tuple[int, int], scale="heads", row_chunk: int = 1024,
                    progress: Callable[[], None] | None = None, anchor_passes=None):
    """Fast DiffTrack. query/key features [T,heads,C,h,w] (key None: use query for both).

    anchor_passes (DiffTrack's published chunking, evaluate_tapvid.py): every forward pass held frame 0 (the anchor)
    plus some frames; [(frames [n], pass queries [n+1,heads,C,h,w], pass keys [n+1,...])], index 0 = the anchor as
    that pass saw it. Queries at frame 0 are then matched pass by pass (the anchor of a pass against that pass's
    frames) and a frame seen by several passes gets the mean of their correlation maps (--average_overlapped_corr)
    before the argmax. Queries at other frames match the per-frame features (the published code has none).
    Returns (track_path [T,N,2] float32 pixels, visibility all True [T,N], confidence [T,N])."""
    q, k, pts, sc = _prepare(query_features, key_features, queries, frame_size, scale)
    t_total, heads, c, h, w = q.shape
    hw = h * w
    dev, dt = q.device, q.dtype
    passes = None if anchor_passes is None else _check_passes(anchor_passes, q)
    pts = pts.to(dev)
    n = pts.shape[0]
    corner_idx, corner_w = bilinear_corners(pixel_to_cell(pts[:, 1:].to(dt), stride), h, w)
    match = torch.zeros(t_total, n, 2, dtype=dt, device=dev)
    conf = torch.zeros(t_total, n, dtype=dt, device=dev)
    qf = q.reshape(t_total, heads, c, hw)
    kf = k.reshape(t_total, heads, c, hw)
    tq_all = pts[:, 0].long()
    for s in tq_all.unique().tolist():
        sel = (tq_all == s).nonzero().flatten()
        need, inv = corner_idx[sel].reshape(-1).unique(return_inverse=True)       # source cells used
        inv = inv.reshape(-1, 4)
        for t in range(t_total):
            if t == s:
                continue
            if passes is not None and s == 0:
                visits = [(pq[0], pk[0], pq[1 + i], pk[1 + i]) for frames, pq, pk in passes
                          for i in (frames == t).nonzero().flatten().tolist()]
                visits = [tuple(v.reshape(heads, c, hw) for v in vis) for vis in visits]
            else:
                visits = [(qf[s], kf[s], qf[t], kf[t])]
            corr = sum(_pair_corr(*v, need, sc, row_chunk) for v in visits) / len(visits)
            prob = torch.softmax(corr, 1)
            pval, arg = prob.max(1)
            cells = torch.stack([(arg % w).to(dt), (arg // w).to(dt)], -1)       # [m,2] (x,y)
            wts = corner_w[sel].to(dt)
            match[t, sel] = (cells[inv] * wts[..., None]).sum(1)
            conf[t, sel] = (pval[inv] * wts).sum(1)
            if progress is not None:
                progress()
    return _finish(match, conf, pts, stride, t_total)
