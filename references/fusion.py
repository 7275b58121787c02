"""Plain reference of TED feature fusion (arXiv 2512.02339 Eq. 4; docs/methods.md §5), sharing no code with
kernels/fusion.py."""
from __future__ import annotations

import torch

EPS = 1e-8


def fuse_features_ref(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """a [T,Ca,ha,wa], b [T,Cb,hb,wb] -> [T,Ca+Cb,ha,wa]: explicit bilinear resize of b to a's grid
    (align_corners=False, border clamp) and per-pixel loops."""
    t, ca, ha, wa = a.shape
    _, cb, hb, wb = b.shape
    out = torch.zeros(t, ca + cb, ha, wa, dtype=a.dtype)
    for i in range(ha):
        for j in range(wa):
            sy = min(max((i + 0.5) * hb / ha - 0.5, 0.0), hb - 1)
            sx = min(max((j + 0.5) * wb / wa - 0.5, 0.0), wb - 1)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, hb - 1), min(x0 + 1, wb - 1)
            fy, fx = sy - y0, sx - x0
            bv = (b[:, :, y0, x0] * (1 - fx) * (1 - fy) + b[:, :, y0, x1] * fx * (1 - fy)
                  + b[:, :, y1, x0] * (1 - fx) * fy + b[:, :, y1, x1] * fx * fy)
            for k in range(t):
                av = a[k, :, i, j]
                out[k, :ca, i, j] = alpha * av / max(float(av.norm()), EPS)
                out[k, ca:, i, j] = (1 - alpha) * bv[k] / max(float(bv[k].norm()), EPS)
    return out
