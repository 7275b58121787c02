"""Plain reference of label propagation with the DINO/DIFT protocol (docs/methods.md §7), written from the rule
and sharing no code with kernels/propagation.py: the full (contexts*h*w) x (h*w) affinity with the square
neighbourhood mask, exactly as DINO's eval_video_segmentation.py builds it, and its own frame loop. Only for
small sizes (tests, benchmarks)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def affinity_bytes(h: int, w: int, contexts: int, element_size: int = 4) -> int:
    """Bytes of one full affinity matrix of the reference (its measured peak is about twice this)."""
    return contexts * (h * w) ** 2 * element_size


def neighbourhood_mask(h: int, w: int, radius: int, device=None) -> torch.Tensor:
    """[h*w (sources), h*w (targets)]: 1 where |row_i - row_j| <= r and |col_i - col_j| <= r."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    near = ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)
    return near.float()


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
                              radius: int = 15, top_k: int = 10, temperature: float = 0.1) -> torch.Tensor:
    """features [T,C,h,w], first-frame soft labels [L,h,w] -> soft labels [T,L,h,w]. Context of frame t: frame 0
    plus the n_context most recent frames max(1, t - n_context) .. t-1 (their predictions, never argmaxed)."""
    feats = F.normalize(features.float() if not features.is_floating_point() else features, dim=1, p=2)
    t_all, _, h, w = feats.shape
    mask = neighbourhood_mask(h, w, int(radius), feats.device)
    soft = feats.new_zeros((t_all,) + tuple(first_labels.shape))
    soft[0] = first_labels.to(feats)
    for t in range(1, t_all):
        ctx = [0] + list(range(max(1, t - int(n_context)), t))
        soft[t] = full_affinity_step(t, ctx, feats, soft, mask, int(top_k), float(temperature))
    return soft
