"""Plain references of descriptor sampling and cost volumes, sharing no code with kernels/cost_volume.py: one
grid_sample per point, explicit loops over frames and descriptors."""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def sample_descriptors_ref(feats: torch.Tensor, points, stride) -> torch.Tensor:
    """Descriptors [N,C] of feats [T,C,h,w] at points [N,3] (t, x, y) pixels: cell coordinate
    c = (p + 0.5) / s - 0.5, grid_sample with align_corners=True on cell coordinates (cell centres on integers),
    border padding."""
    sy, sx = (float(stride), float(stride)) if isinstance(stride, (int, float)) else map(float, stride)
    _, c, h, w = feats.shape
    out = []
    for t, x, y in torch.as_tensor(points, dtype=torch.float64).tolist():
        cx, cy = (x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5
        gx = 2 * cx / (w - 1) - 1 if w > 1 else 0.0
        gy = 2 * cy / (h - 1) - 1 if h > 1 else 0.0
        grid = torch.tensor([[[[gx, gy]]]], dtype=feats.dtype, device=feats.device)
        v = F.grid_sample(feats[int(round(t))][None], grid, mode="bilinear", padding_mode="border",
                          align_corners=True)
        out.append(v.reshape(c))
    return torch.stack(out)


def cost_volume_ref(desc: torch.Tensor, feats: torch.Tensor, kind: str = "cosine",
                    scale: float = 1.0) -> torch.Tensor:
    """[T,N,h,w] of cos(desc, feature) (kind 'cosine') or desc . feature / scale (kind 'dot'), looping."""
    t_total, c, h, w = feats.shape
    out = torch.zeros(t_total, desc.shape[0], h, w, dtype=feats.dtype, device=feats.device)
    for t in range(t_total):
        f = feats[t].reshape(c, h * w)
        for n in range(desc.shape[0]):
            d = desc[n].to(feats.dtype)
            dots = d @ f
            if kind == "cosine":
                dots = dots / (d.norm().clamp_min(EPS) * f.norm(dim=0).clamp_min(EPS))
            else:
                dots = dots / scale
            out[t, n] = dots.reshape(h, w)
    return out
