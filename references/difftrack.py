"""Plain reference of DiffTrack query-key matching (arXiv 2506.17220; docs/methods.md §4), written from the rule
and sharing no code with kernels/difftrack.py: the full (h*w)^2 correlation of every (source, target) frame pair,
one grid_sample per query. The softmax scale is computed here from its definition (sqrt of the head count for
'heads', the published code's quirk)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def softmax_scale_ref(scale, heads: int, head_dim: int) -> float:
    """'heads' -> sqrt(number of heads) (published), 'head_dim' -> sqrt(channels per head), a number -> itself."""
    if scale == "heads":
        return math.sqrt(heads)
    if scale == "head_dim":
        return math.sqrt(head_dim)
    return float(scale)


def _heads(x: torch.Tensor) -> torch.Tensor:
    return x[:, None] if x.ndim == 4 else x


def mapping_field_ref(query_features, key_features, s: int, t: int, scale="heads"):
    """Full correlation of source frame s and target frame t -> mapping field [h,w,2] (matched target cell x, y
    for every source cell) and the matched softmax value [h,w]."""
    q = _heads(query_features)
    k = q if key_features is None else _heads(key_features)
    _, heads, c, h, w = q.shape
    sc = softmax_scale_ref(scale, heads, c)
    a_st = torch.zeros(h * w, h * w, dtype=q.dtype)
    a_ts = torch.zeros(h * w, h * w, dtype=q.dtype)
    for hd in range(heads):
        qs, qt = q[s, hd].reshape(c, -1), q[t, hd].reshape(c, -1)
        ks, kt = k[s, hd].reshape(c, -1), k[t, hd].reshape(c, -1)
        a_st += torch.softmax(qs.T @ kt / sc, dim=1) / heads      # [source i, target j]
        a_ts += torch.softmax(qt.T @ ks / sc, dim=1) / heads      # [target j, source i]
    corr = 0.5 * (a_st.T + a_ts)                                  # [target j, source i] as in DiffTrack
    prob = torch.softmax(corr, dim=0)                             # over target positions, per source cell
    val, arg = prob.max(dim=0)
    field = torch.stack([(arg % w).to(q.dtype), (arg // w).to(q.dtype)], -1).reshape(h, w, 2)
    return field, val.reshape(h, w)


def track_difftrack_ref(query_features, key_features, stride, queries, frame_size, scale="heads"):
    """query/key features [T,heads,C,h,w] (or [T,C,h,w]; key None = the queries serve as keys), queries [N,3]
    (t, x, y) pixels -> (track_path [T,N,2] float32, visibility all True [T,N], confidence [T,N] float32, 1 at
    the query frame). Pixel p <-> cell c: c = (p + 0.5) / s - 0.5."""
    q = _heads(query_features)
    k = q if key_features is None else _heads(key_features)
    t_total, _, _, h, w = q.shape
    sy, sx = (float(stride), float(stride)) if isinstance(stride, (int, float)) else map(float, stride)
    pts = torch.as_tensor(queries, dtype=torch.float64).tolist()
    path = torch.zeros(t_total, len(pts), 2, dtype=torch.float32)
    conf = torch.zeros(t_total, len(pts), dtype=torch.float32)
    for i, (tq, x, y) in enumerate(pts):
        cx, cy = (x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5
        g = torch.tensor([[[[2 * cx / max(w - 1, 1) - 1, 2 * cy / max(h - 1, 1) - 1]]]], dtype=q.dtype)
        for t in range(t_total):
            if t == int(tq):
                path[t, i] = torch.tensor([x, y])
                conf[t, i] = 1.0
                continue
            field, val = mapping_field_ref(q, k, int(tq), t, scale)
            stack = torch.cat([field.permute(2, 0, 1), val[None]])[None]          # [1,3,h,w]
            v = F.grid_sample(stack, g, mode="bilinear", padding_mode="border", align_corners=True).reshape(3)
            path[t, i] = torch.stack([(v[0] + 0.5) * sx - 0.5, (v[1] + 0.5) * sy - 0.5]).float()
            conf[t, i] = v[2]
    return path, torch.ones(t_total, len(pts), dtype=torch.bool), conf
