"""Plain reference of the nearest-neighbour tracker (Track4Gen zero-shot rule, docs/methods.md §6), written from
the rule and sharing no code with kernels/nn_tracker.py: one point, one frame, one cell at a time."""
from __future__ import annotations

import math

import torch

from .cost_volume import sample_descriptors_ref


def _pair(stride) -> tuple[float, float]:
    return (float(stride), float(stride)) if isinstance(stride, (int, float)) else (float(stride[0]),
                                                                                     float(stride[1]))


def track_nearest_neighbour_ref(features: torch.Tensor, stride, queries: torch.Tensor, frame_size,
                                threshold: float = 0.6, refine_radius: int = 0, refine_temperature: float = 0.05):
    """features [T,C,h,w], queries [N,3] (t, x, y) pixels -> (track_path [T,N,2] float32 pixels, visibility
    [T,N] bool, best cosine [T,N] float32, 1 at the query frame). Occluded when the best cosine is below
    `threshold`. refine_radius r > 0: soft-argmax of exp((cos - max) / refine_temperature) over the (2r+1)^2
    cells around the argmax that lie on the grid."""
    sy, sx = _pair(stride)
    t_total, _, h, w = features.shape
    q = torch.as_tensor(queries, dtype=torch.float64).tolist()
    path = torch.zeros(t_total, len(q), 2, dtype=torch.float32)
    vis = torch.zeros(t_total, len(q), dtype=torch.bool)
    best = torch.zeros(t_total, len(q), dtype=torch.float32)
    for i, (tq, x, y) in enumerate(q):
        d = sample_descriptors_ref(features, [[tq, x, y]], (sy, sx))[0].tolist()
        dn = math.sqrt(sum(v * v for v in d)) or 1e-8
        for t in range(t_total):
            if t == int(tq):
                path[t, i] = torch.tensor([x, y])
                vis[t, i], best[t, i] = True, 1.0
                continue
            f = features[t]
            cos = [[0.0] * w for _ in range(h)]
            for r in range(h):
                for col in range(w):
                    v = f[:, r, col].tolist()
                    vn = math.sqrt(sum(a * a for a in v)) or 1e-8
                    cos[r][col] = sum(a * b for a, b in zip(d, v)) / max(dn, 1e-8) / max(vn, 1e-8)
            m = max(max(row) for row in cos)
            by, bx = next((r, col) for r in range(h) for col in range(w) if cos[r][col] == m)
            cx, cy = float(bx), float(by)
            if refine_radius > 0:
                num_x = num_y = den = 0.0
                for r in range(by - refine_radius, by + refine_radius + 1):
                    for col in range(bx - refine_radius, bx + refine_radius + 1):
                        if 0 <= r < h and 0 <= col < w:
                            e = math.exp((cos[r][col] - m) / refine_temperature)
                            num_x, num_y, den = num_x + e * col, num_y + e * r, den + e
                cx, cy = num_x / den, num_y / den
            path[t, i] = torch.tensor([(cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5])
            best[t, i] = m
            vis[t, i] = not m < threshold
    return path, vis, best
