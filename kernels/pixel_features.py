"""Model-free features: raw colour patches, so the trackers run without a diffusion model (baselines, tests).

frames [T,H,W,3] -> VDT_FEATURES with features [T, 3*p*p (or dim) (+2), H//p, W//p], stride (p, p). Cell (i, j)
is the patch of pixels [i*p, (i+1)*p) x [j*p, (j+1)*p), whose centre is pixel ((j+0.5)p-0.5, (i+0.5)p-0.5), the
pack's cell convention; remainder rows/columns (H % p, W % p) belong to no cell.
Options: `center` subtracts the clip's mean colour first (otherwise cosine mostly measures brightness);
`dim` > 0 applies a fixed random Gaussian projection (seeded, 1/sqrt(dim) scale) to `dim` channels;
`coords` > 0 appends the normalised cell coordinates (x, y in [-1, 1]) times that weight (off by default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_memory, check_video
from .datatypes import make_feature_meta, make_features


def patch_features_bytes(frames: int, size: tuple[int, int], channels: int, patch: int, dim: int = 0,
                         coords: float = 0.0) -> int:
    """Peak bytes of `patch_features` (float32): the centred clip [T,ch,H,W], the unfolded patches
    [T,ch*p*p,h*w] and the features [T,dim or ch*p*p,h*w] (held twice when `coords` appends the grid)."""
    t, (big_h, big_w) = int(frames), size
    cells = (big_h // patch) * (big_w // patch)
    k = channels * patch * patch
    out = (int(dim) if dim > 0 else k) * cells * t
    return 4 * (t * channels * big_h * big_w + t * k * cells + out * (2 if coords > 0 else 1))


def patch_features(frames, patch: int = 8, dim: int = 0, seed: int = 0, center: bool = True,
                   coords: float = 0.0) -> dict:
    video = check_video("images", frames)
    if patch < 1 or int(patch) != patch:
        raise ValueError(f"patch_size: must be a positive integer, got {patch}")
    t, H, W, ch = video.shape
    if H < patch or W < patch:
        raise ValueError(f"patch_size: {patch} px patches do not fit in {W}x{H} frames")
    if dim < 0:
        raise ValueError(f"dim: must be >= 0 (0 = no projection), got {dim}")
    if coords < 0:
        raise ValueError(f"coords: must be >= 0, got {coords}")
    need = patch_features_bytes(t, (H, W), ch, int(patch), int(dim), coords)
    check_memory("projection_dim" if dim > 0 else "patch_size", need,
                 f"{t} frames of {W}x{H} in {patch} px patches" + (f" projected to {dim} channels" if dim > 0 else ""),
                 "use a smaller projection_dim, a larger patch_size, or fewer or smaller frames")
    x = video.float().permute(0, 3, 1, 2)                                       # [T,3,H,W]
    if center:
        x = x - x.mean(dim=(0, 2, 3), keepdim=True)
    h, w = H // patch, W // patch
    x = x[:, :, :h * patch, :w * patch]
    cols = F.unfold(x, kernel_size=patch, stride=patch)                         # [T, ch*p*p, h*w]
    if dim > 0:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        proj = torch.randn(dim, cols.shape[1], generator=g) / dim ** 0.5
        cols = torch.einsum("dk,tkn->tdn", proj.to(cols), cols)
    feats = cols.reshape(t, -1, h, w)
    if coords > 0:
        ys = torch.linspace(-1, 1, h) if h > 1 else torch.zeros(1)
        xs = torch.linspace(-1, 1, w) if w > 1 else torch.zeros(1)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx, gy])[None].expand(t, -1, -1, -1).to(feats) * coords
        feats = torch.cat([feats, grid], 1)
    meta = make_feature_meta("pixels", "patch", patch=int(patch), dim=int(dim), seed=int(seed), center=bool(center),
                             coords=float(coords))
    return make_features(feats.contiguous(), (patch, patch), (H, W), meta)
