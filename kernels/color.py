"""The pack's one HSV <-> RGB conversion (torch; H as a fraction of a turn, S and V in 0..1)."""
from __future__ import annotations

import torch


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """[...,3] RGB 0..1 -> [...,3] HSV with H in [0,1) (fraction of a turn), S and V in 0..1."""
    r, g, b = rgb.unbind(-1)
    v, arg = rgb.max(-1)
    mn = rgb.min(-1).values
    delta = v - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = torch.where(arg == 0, ((g - b) / safe) % 6,
                    torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(delta > 0, h, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, v], -1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """[...,3] HSV (H a fraction of a turn, S, V in 0..1) -> [...,3] RGB 0..1; the inverse of rgb_to_hsv."""
    h, s, v = hsv.unbind(-1)
    k = torch.stack([torch.full_like(h, 5.0), torch.full_like(h, 3.0), torch.full_like(h, 1.0)], -1)
    k = (k + h[..., None] * 6) % 6
    f = (torch.minimum(k, 4 - k)).clamp(0, 1)
    return v[..., None] - v[..., None] * s[..., None] * f
