"""Colour rebalancing for Point Prompting (arXiv 2510.11715; docs/methods.md §2 step 1): lower the saturation
of red hues so natural reds are not taken for the red marker, leave every other colour untouched.

S' = S * (1 - strength * (1 - smoothstep((d - width) / width))), where d is the hue distance from red
in degrees: hues within `width` degrees of red lose `strength` of their saturation, the loss fades
smoothly to nothing at 2 * width, and pixels at 2 * width or further are returned bit-exactly.
Hue and value are kept. Defaults (width 20 deg = OpenCV H <= 10, strength 0.8) push every red below
the tracker's S >= 120/255 threshold.
"""
from __future__ import annotations

import torch

from .checks import check_video
from .color import hsv_to_rgb, rgb_to_hsv


def red_weight(hue: torch.Tensor, strength: float, width: float) -> torch.Tensor:
    """Saturation multiplier from hue in [0,1): 1 - strength near red, rising smoothly to 1 at 2*width deg."""
    d = torch.minimum(hue, 1 - hue) * 360.0
    x = ((d - width) / width).clamp(0, 1)
    smooth = x * x * (3 - 2 * x)
    return 1 - strength * (1 - smooth)


def rebalance_colors(frames: torch.Tensor, strength: float = 0.8, hue_width: float = 20.0) -> torch.Tensor:
    """IMAGE [T,H,W,C] -> same with reds desaturated (see module doc). Extra channels (alpha) kept."""
    v = check_video("frames", frames)
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength: must be in 0..1, got {strength}")
    if not 0.0 < float(hue_width) <= 90.0:
        raise ValueError(f"hue_width: must be in (0, 90] degrees, got {hue_width}")
    if v.shape[-1] < 3:
        raise ValueError(f"frames: need RGB frames, got {v.shape[-1]} channel(s)")
    out = v.clone()
    for t0 in range(0, v.shape[0], 8):              # a few frames at a time bounds the HSV temporaries
        rgb = v[t0:t0 + 8, ..., :3]
        hsv = rgb_to_hsv(rgb.clamp(0, 1))
        wgt = red_weight(hsv[..., 0], float(strength), float(hue_width))
        new = hsv_to_rgb(torch.stack([hsv[..., 0], hsv[..., 1] * wgt, hsv[..., 2]], -1))
        out[t0:t0 + 8, ..., :3] = torch.where((wgt < 1)[..., None], new, rgb)
    return out
