"""Plain reference of the model-free colour-patch features, sharing no code with kernels/pixel_features.py."""
from __future__ import annotations

import torch


def patch_features_ref(frames, patch: int = 8, dim: int = 0, seed: int = 0, center: bool = True,
                       coords: float = 0.0) -> torch.Tensor:
    """frames [T,H,W,C] -> features [T, C*p*p (or dim) (+2), H//p, W//p] by patch loops (same channel order as
    unfold: channel-major, then row, then column); see kernels/pixel_features.py for the options."""
    video = torch.as_tensor(frames).float()
    t, H, W, ch = video.shape
    if center:
        video = video - video.reshape(-1, ch).mean(0)
    h, w = H // patch, W // patch
    out = torch.zeros(t, ch * patch * patch, h, w)
    for i in range(h):
        for j in range(w):
            block = video[:, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch, :]   # [T,p,p,ch]
            out[:, :, i, j] = block.permute(0, 3, 1, 2).reshape(t, -1)
    if dim > 0:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        proj = torch.randn(dim, out.shape[1], generator=g) / dim ** 0.5
        out = torch.einsum("dk,tkhw->tdhw", proj, out)
    if coords > 0:
        extra = torch.zeros(t, 2, h, w)
        for i in range(h):
            for j in range(w):
                extra[:, 0, i, j] = (2 * j / (w - 1) - 1 if w > 1 else 0.0) * coords
                extra[:, 1, i, j] = (2 * i / (h - 1) - 1 if h > 1 else 0.0) * coords
        out = torch.cat([out, extra], 1)
    return out
