"""DiffTrack with its published anchor chunking, plainly (cvlab-kaist/DiffTrack evaluate_tapvid.py, arXiv
2506.17220): every pass held frame 0 plus some frames; for each frame k >= 1 and every pass holding it,
attn(0->k) = softmax_j(Q_0 K_k^T / scale) and attn(k->0) = softmax_j(Q_k K_0^T / scale), each averaged over heads,
correlation = (attn(0->k)^T + attn(k->0)) / 2 on [frame-k cell, frame-0 cell]; the maps of all passes holding k are
averaged; per frame-0 cell softmax over frame-k cells and hard argmax give a mapping field (frame-k cell x, y),
sampled at the query with grid_sample(align_corners=True) in cell units; pixels = (cell + 0.5) * stride - 0.5.
Written apart from kernels/difftrack.py; queries must be at frame 0."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _corr(q0, k0, qk, kk, scale):
    """[hw_k, hw_0] head-averaged symmetric correlation of one pass; inputs [heads,C,h,w]."""
    heads = q0.shape[0]
    out = 0
    for hd in range(heads):
        a_0k = torch.softmax(q0[hd].flatten(1).T @ kk[hd].flatten(1) / scale, dim=1)    # [i in 0, j in k]
        a_k0 = torch.softmax(qk[hd].flatten(1).T @ k0[hd].flatten(1) / scale, dim=1)    # [j in k, i in 0]
        out = out + (a_0k.T + a_k0) / 2 / heads
    return out


def track_difftrack_anchor_ref(passes, num_frames: int, stride, queries, scale: float):
    """passes [(frames, queries [n+1,heads,C,h,w], keys [n+1,...])], index 0 = the anchor; queries [N,3] (0, x, y)
    pixels; stride (sy, sx). Returns track_path [T,N,2] (the query itself at frame 0)."""
    sy, sx = stride
    _, heads, c, h, w = passes[0][1].shape
    n = queries.shape[0]
    path = torch.zeros(num_frames, n, 2, dtype=torch.float64)
    path[0] = queries[:, 1:].double()
    for t in range(1, num_frames):
        maps = [_corr(pq[0], pk[0], pq[1 + i], pk[1 + i], scale)
                for frames, pq, pk in passes for i, f in enumerate(list(frames)) if int(f) == t]
        corr = sum(maps) / len(maps)
        arg = torch.softmax(corr, dim=0).argmax(dim=0)                                      # per frame-0 cell
        field = torch.stack([(arg % w).double(), (arg // w).double()]).reshape(2, h, w)
        for p in range(n):
            cx = (float(queries[p, 1]) + 0.5) / sx - 0.5
            cy = (float(queries[p, 2]) + 0.5) / sy - 0.5
            g = torch.tensor([[[[2 * cx / max(w - 1, 1) - 1, 2 * cy / max(h - 1, 1) - 1]]]], dtype=torch.float64)
            v = F.grid_sample(field[None], g, mode="bilinear", padding_mode="border", align_corners=True).reshape(2)
            path[t, p] = torch.stack([(v[0] + 0.5) * sx - 0.5, (v[1] + 0.5) * sy - 0.5])
    return path


def heads_scale(heads: int) -> float:
    """The published softmax scale: sqrt of the dimension the code calls head_dim, which holds the heads."""
    return math.sqrt(heads)
