"""TED feature fusion (arXiv 2512.02339 Eq. 4; docs/methods.md §5):
R_f = concat(alpha * a/|a|, (1 - alpha) * b/|b|), per-pixel L2
norms over channels. When the grids differ, b is resized bilinearly (align_corners=False) to a's grid first, so
the result has a's grid and stride. Since |R_f|^2 = alpha^2 + (1-alpha)^2 everywhere, the cosine between two
fused vectors is (alpha^2 cos_a + (1-alpha)^2 cos_b) / (alpha^2 + (1-alpha)^2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .datatypes import check_feature_tensor, check_features, make_feature_meta, make_features

EPS = 1e-8


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a weight in [0, 1], got {alpha}")


def fuse_features(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """a [T,Ca,ha,wa], b [T,Cb,hb,wb] -> [T,Ca+Cb,ha,wa]."""
    _check_alpha(alpha)
    a, b = check_feature_tensor("features_a", a), check_feature_tensor("features_b", b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"features_b: has {b.shape[0]} frames but features_a has {a.shape[0]}")
    b = b.to(device=a.device, dtype=a.dtype)
    if b.shape[-2:] != a.shape[-2:]:
        b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
    an = a / a.norm(dim=1, keepdim=True).clamp_min(EPS)
    bn = b / b.norm(dim=1, keepdim=True).clamp_min(EPS)
    return torch.cat([alpha * an, (1 - alpha) * bn], 1)


def fuse_feature_dicts(fa: dict, fb: dict, alpha: float) -> dict:
    """VDT_FEATURES a + b -> VDT_FEATURES on a's grid (stride and frame size of a)."""
    fa, fb = check_features("features_a", fa, heads="forbid"), check_features("features_b", fb, heads="forbid")
    if fa["frame_size"] != fb["frame_size"]:
        raise ValueError(f"features_b: computed on {fb['frame_size']} frames but features_a on "
                         f"{fa['frame_size']}; both must describe the same video frames")
    fused = fuse_features(fa["features"], fb["features"], alpha)
    meta = make_feature_meta("fused", "fused", alpha=float(alpha), a=fa["meta"], b=fb["meta"])
    return make_features(fused, fa["stride"], fa["frame_size"], meta)
