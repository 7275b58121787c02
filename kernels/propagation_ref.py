"""Plain reference for label propagation: the full (contexts*h*w) x (h*w) affinity with the
neighbourhood mask, exactly as DINO's eval_video_segmentation.py builds it. Only for small sizes
(tests, benchmarks); `propagation.propagate_soft_labels` is the one to use."""
from __future__ import annotations

import torch

from .propagation import Progress, _check_args, run_propagation


def neighbourhood_mask(h: int, w: int, radius: int, device=None) -> torch.Tensor:
    """[h*w (sources), h*w (targets)]: 1 where |row_i - row_j| <= r and |col_i - col_j| <= r."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    near = ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)
    return near.float()


def affinity_bytes(h: int, w: int, contexts: int, element_size: int = 4) -> int:
    """Bytes of one full affinity matrix of the reference (its measured peak is about twice this)."""
    return contexts * (h * w) ** 2 * element_size


def full_affinity_step(t: int, ctx: list[int], feats: torch.Tensor, soft: torch.Tensor, mask: torch.Tensor,
                       top_k: int, temperature: float) -> torch.Tensor:
    """Soft labels [L,h,w] of frame t from the context frames `ctx` (features already L2-normalised)."""
    _, c, h, w = feats.shape
    n_lab = soft.shape[1]
    m = len(ctx)
    q = feats[t].reshape(c, h * w)
    src = feats[ctx].reshape(m, c, h * w)
    # exp((cos - 1)/T): the constant shift cancels in the normalisation and avoids overflow at small T
    aff = torch.exp((torch.matmul(src.transpose(1, 2), q) - 1.0) / float(temperature))   # [m, S, Q]
    aff = (aff * mask).reshape(m * h * w, h * w)
    kth = aff.topk(min(int(top_k), m * h * w), dim=0).values.min(dim=0).values
    aff[aff < kth] = 0
    aff = aff / aff.sum(dim=0, keepdim=True)
    lab = soft[ctx].reshape(m, n_lab, h * w).permute(1, 0, 2).reshape(n_lab, m * h * w)
    return (lab @ aff).reshape(n_lab, h, w)


def propagate_soft_labels_ref(features: torch.Tensor, first_labels: torch.Tensor, n_context: int = 28,
                              radius: int = 15, top_k: int = 10, temperature: float = 0.1,
                              progress: Progress = None) -> torch.Tensor:
    features, first_labels = _check_args(features, first_labels, n_context, radius, top_k, temperature)
    _, _, h, w = features.shape
    mask = neighbourhood_mask(h, w, int(radius), features.device)

    def step(t, ctx, feats, soft):
        return full_affinity_step(t, ctx, feats, soft, mask, int(top_k), float(temperature))

    return run_propagation(features, first_labels, n_context, step, progress)
