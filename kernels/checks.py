"""Input validation of core types (IMAGE, MASK) shared by kernels and nodes: every failure is a ValueError that
names the input. The pack's own types (TRACKS, VDT_FEATURES, points) are checked in datatypes.py."""
from __future__ import annotations

import numpy as np
import torch


def _shape(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else ()


def check_finite(name: str, x) -> None:
    t = torch.as_tensor(x)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def check_video(name: str, x, min_frames: int = 1) -> torch.Tensor:
    """IMAGE batch as a video: [T,H,W,C] float, C in (1,3,4), finite. Returns it as a tensor."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name}: expected an IMAGE tensor [frames,H,W,3], got {type(x).__name__}")
    t = torch.as_tensor(x)
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an IMAGE [frames,H,W,3], got shape {_shape(t)}")
    if t.shape[0] < min_frames:
        raise ValueError(f"{name}: needs at least {min_frames} frame(s), got {t.shape[0]}")
    if t.shape[1] < 2 or t.shape[2] < 2:
        raise ValueError(f"{name}: frames of {t.shape[1]}x{t.shape[2]} pixels are too small")
    check_finite(name, t)
    return t


def check_mask(name: str, x, frames: int | None = None, size: tuple | None = None,
               allow_empty: bool = True) -> torch.Tensor:
    """MASK [T,H,W] (a 2-D mask becomes one frame). Checks frame count / size when given."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name}: expected a MASK tensor [frames,H,W], got {type(x).__name__}")
    t = torch.as_tensor(x)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"{name}: expected a MASK [frames,H,W], got shape {_shape(t)}")
    if frames is not None and t.shape[0] not in (1, frames):
        raise ValueError(f"{name}: has {t.shape[0]} frames but the video has {frames}")
    if size is not None and tuple(t.shape[1:]) != tuple(size):
        raise ValueError(f"{name}: is {t.shape[1]}x{t.shape[2]} but the frames are {size[0]}x{size[1]}")
    check_finite(name, t)
    if not allow_empty and not bool((t > 0.5).any()):
        raise ValueError(f"{name}: the mask is empty (no pixel above 0.5)")
    return t


# Pixel tests (one patch pixel of one drawn primitive, or one marker sub-sample) a drawing call may make: about
# 2e9, minutes on a CPU (the track overlay ran at ~5 M/s on a busy 2-core machine, disks and markers 10-35 M/s),
# seconds on a GPU; absurd inputs (36,864 tracks x trail 1000 x radius 64: ~1e14) are refused up front (our bound).
MAX_PIXEL_TESTS = 2 ** 31


def check_work(name: str, pixel_tests: float, what: str, limit: float = MAX_PIXEL_TESTS) -> None:
    """Refuse a drawing whose estimated `pixel_tests` exceed `limit`, before any of it runs: ValueError naming
    `name`, the input that scales the work, with the estimate. `what` says what was asked (counts, sizes)."""
    if pixel_tests > limit:
        raise ValueError(f"{name}: {what} means about {pixel_tests:.2g} pixel tests, more than the {limit:.2g} "
                         f"one drawing may take (minutes on a CPU); lower {name}")


# Working memory one node call may take for the tensors it builds: 4 GiB (our choice, the bound the synthetic clip
# and Point Prompting's kept clips already use): a float32 clip of 16 frames of 4K is ~1.6 GiB, so real inputs fit,
# while absurd settings (20,000 keypoints on a stride-1 grid, 4096-channel projections of every pixel) are refused
# up front instead of exhausting a shared server's memory.
MAX_WORK_BYTES = 4 * 2 ** 30


def check_memory(name: str, need_bytes: float, what: str, fix: str, limit: float = MAX_WORK_BYTES) -> None:
    """Refuse work whose estimated peak `need_bytes` exceeds `limit`, before any of it runs: ValueError naming
    `name` (the input that scales it most) with the estimate in GiB; `what` says what was asked, `fix` which
    input(s) to change."""
    if need_bytes > limit:
        raise ValueError(f"{name}: {what} needs about {need_bytes / 2 ** 30:,.1f} GiB of memory, more than the "
                         f"{limit / 2 ** 30:g} GiB one node call may use; {fix}")
