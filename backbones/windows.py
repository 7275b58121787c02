"""Temporal windows for long clips and the latent-time -> video-frame mapping (pure math).

Windows overlap by `overlap` frames; each video frame takes its features from exactly one window (the
overlap is split in the middle). A final window that would run past the clip is moved back so it ends at
the last frame, borrowing preceding frames whose features are discarded (Track4Gen, App. A.4).
Causal video VAEs (Wan, Cosmos) need window lengths of q*k+1 frames (q = temporal compression).
`run_windows` is the one window loop of every adapter; `video_mask_to_latent` the one rule that maps a
regeneration MASK onto a latent grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Window:
    start: int        # first video frame fed to the model
    stop: int         # one past the last real frame fed (frames beyond the clip are padded by repetition)
    keep_start: int   # frames [keep_start, keep_stop) take their features from this window
    keep_stop: int
    length: int       # frames the model sees (>= stop - start; the excess is padding)


def quantize_window(window: int, quantum: int) -> int:
    """Largest q*k+1 <= window (at least q+1); quantum 1 leaves the window unchanged."""
    window = int(window)
    if quantum <= 1:
        return max(window, 1)
    return max(quantum * ((window - 1) // quantum) + 1, quantum + 1)


def plan_windows(num_frames: int, window: int, overlap: int, quantum: int = 1) -> list[Window]:
    """Cover frames 0..num_frames-1 with windows of `window` frames (quantised to quantum*k+1)."""
    if num_frames < 1:
        raise ValueError("frames: the clip is empty")
    window = quantize_window(window, quantum)
    if overlap < 0 or overlap >= window:
        raise ValueError(f"overlap: {overlap} must be in [0, window-1] (window = {window} frames)")
    if num_frames <= window:
        length = quantize_up(num_frames, quantum)
        return [Window(0, num_frames, 0, num_frames, length)]
    stride = window - overlap
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)          # final window borrows preceding frames
    out = []
    for i, s in enumerate(starts):
        keep_start = 0 if i == 0 else out[-1].keep_stop
        if i + 1 < len(starts):
            # middle of a regular overlap; before a final borrowed window the same cut, so the frames that
            # window borrows from its predecessor are discarded
            keep_stop = max(s + window - overlap // 2, keep_start + 1)
        else:
            keep_stop = num_frames
        out.append(Window(s, s + window, keep_start, keep_stop, window))
    return out


def quantize_up(n: int, quantum: int) -> int:
    """Smallest q*k+1 >= n."""
    if quantum <= 1:
        return n
    return quantum * ((max(n, 1) - 1 + quantum - 1) // quantum) + 1


def pad_frames(frames: torch.Tensor, length: int) -> torch.Tensor:
    """Repeat the last frame (time axis 0) up to `length` frames."""
    if frames.shape[0] >= length:
        return frames[:length]
    extra = frames[-1:].expand(length - frames.shape[0], *frames.shape[1:])
    return torch.cat([frames, extra], 0)


def latent_frame_centres(latent_frames: int, compression: int, causal_first: bool = True) -> torch.Tensor:
    """Video-time centre of each latent frame: causal VAEs keep frame 0 alone and latent j>=1 covers frames
    q*j-q+1..q*j (centre q*j - (q-1)/2); otherwise latent j covers q*j..q*j+q-1."""
    j = torch.arange(latent_frames, dtype=torch.float64)
    q = float(compression)
    if causal_first:
        c = q * j - (q - 1) / 2
        c[0] = 0.0
        return c
    return q * j + (q - 1) / 2


def latent_to_frame_weights(num_frames: int, latent_frames: int, compression: int,
                            causal_first: bool = True) -> torch.Tensor:
    """[num_frames, latent_frames] linear-interpolation weights in time (rows sum to 1; clamped at the ends)."""
    c = latent_frame_centres(latent_frames, compression, causal_first)
    f = torch.arange(num_frames, dtype=torch.float64)
    w = torch.zeros(num_frames, latent_frames, dtype=torch.float64)
    if latent_frames == 1:
        w[:, 0] = 1.0
        return w.float()
    idx = torch.searchsorted(c, f, right=True) - 1          # last centre <= f
    idx = idx.clamp(0, latent_frames - 2)
    lo, hi = c[idx], c[idx + 1]
    a = ((f - lo) / (hi - lo)).clamp(0.0, 1.0)
    rows = torch.arange(num_frames)
    w[rows, idx] = 1.0 - a
    w[rows, idx + 1] += a
    return w.float()


def latent_time_to_frames(x: torch.Tensor, num_frames: int, compression: int,
                          causal_first: bool = True) -> torch.Tensor:
    """x [t, ...] per latent frame -> [num_frames, ...] per video frame (linear in time)."""
    w = latent_to_frame_weights(num_frames, x.shape[0], compression, causal_first).to(x.device, x.dtype)
    return torch.einsum("ft,t...->f...", w, x)


def mask_to_latent_grid(mask: torch.Tensor, latent_frames: int, compression: int, spatial: int,
                        causal_first: bool = True) -> torch.Tensor:
    """Video MASK [T,H,W] (H,W multiples of `spatial`) -> latent-grid mask [1,1,t,H/spatial,W/spatial] by
    max-pooling (soft values are kept, not thresholded): a latent cell takes the largest mask value of any pixel
    of any frame it covers. Causal VAEs: latent 0 = frame 0 alone, latent j>=1 = frames q*j-q+1..q*j;
    otherwise latent j = frames q*j..q*j+q-1; frames past the clip count as 0."""
    m = mask.float()
    sp = torch.nn.functional.max_pool2d(m[:, None], kernel_size=spatial, stride=spatial)[:, 0]   # [T,h,w]
    out = sp.new_zeros((latent_frames,) + tuple(sp.shape[1:]))
    q = compression
    for j in range(latent_frames):
        if causal_first:
            lo, hi = (0, 1) if j == 0 else (q * j - q + 1, q * j + 1)
        else:
            lo, hi = q * j, q * j + q
        lo, hi = min(lo, sp.shape[0]), min(hi, sp.shape[0])
        if hi > lo:
            out[j] = sp[lo:hi].amax(0)
    return out[None, None]


def plan_anchor_chunks(num_frames: int, chunk_len: int = 13, strided: bool = True,
                       stride: int | None = None) -> list[list[int]]:
    """DiffTrack's published chunking (cvlab-kaist/DiffTrack evaluate_tapvid.py): every pass holds frame 0 (the
    anchor, not listed here) plus up to chunk_len - 1 other frames. strided (--chunk_frame_interval, used by the
    published scripts): interval = T // (chunk_len - 1) (at least 1, our guard for short clips), chunk j holds
    1+j, 1+j+interval, ... clipped at T-1, j = 0, 1, ... until every frame 1..T-1 was in a pass (a frame may be in
    several). Not strided: chunks of chunk_len - 1 consecutive frames advancing by `stride` (default
    chunk_len - 1, as DiffTrack's --chunk_stride 12 with chunks of 13).
    Returns the frame lists of the passes (without the anchor); [] for a one-frame clip."""
    if num_frames < 1:
        raise ValueError("frames: the clip is empty")
    if chunk_len < 2:
        raise ValueError(f"chunk_len: {chunk_len} must be at least 2 (the anchor plus one frame)")
    last = num_frames - 1
    interval = max(1, num_frames // (chunk_len - 1)) if strided else 1
    step = 1 if strided else int(chunk_len - 1 if stride is None else stride)
    if step < 1:
        raise ValueError(f"stride: {stride} must be at least 1")
    chunks, visited = [], set()
    start = 1
    while len(visited) < last and start <= last:
        end = min(start + (chunk_len - 2) * interval, last)
        idx = list(range(start, end + 1, interval))
        chunks.append(idx)
        visited.update(idx)
        start += step
    if len(visited) < last:
        raise ValueError(f"stride: {stride} skips frames; chunks of {chunk_len - 1} frames leave gaps")
    return chunks


def frames_mask(mask: torch.Tensor, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """A MASK ([H,W], [1,H,W] or [T,H,W] with T = `frames`) as [frames, *size] float (bilinear resize; one mask
    is used for every frame). ValueError naming `mask` for any other frame count."""
    m = mask.float()
    m = m[None] if m.ndim == 2 else m
    if m.ndim != 3 or m.shape[0] not in (1, frames):
        raise ValueError(f"mask: expected [H,W], [1,H,W] or [{frames},H,W], got {list(mask.shape)}")
    if m.shape[0] == 1 and frames > 1:
        m = m.expand(frames, -1, -1)
    return F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def video_mask_to_latent(mask: torch.Tensor, num_frames: int, size: tuple[int, int], latent_frames: int,
                         compression: int, spatial: int, causal_first: bool = True) -> torch.Tensor:
    """The one regeneration-mask rule of every adapter: MASK of a `num_frames`-frame clip (see frames_mask) ->
    resized to the model's pixel `size` (multiples of `spatial`, the VAE's pixels per latent cell) -> padded in
    time like the clip (last frame repeated up to the frames the latent covers) -> mask_to_latent_grid.
    Returns [1,1,latent_frames,h,w] (1 = regenerate; soft values kept)."""
    m = frames_mask(mask, num_frames, size)
    covered = (latent_frames - 1) * compression + 1 if causal_first else latent_frames * compression
    m = pad_frames(m, max(covered, num_frames))
    return mask_to_latent_grid(m, latent_frames, compression, spatial, causal_first)


def keep_window(out: dict, key: str, per_frame: torch.Tensor, win: Window, total: int) -> None:
    """Write the frames window `win` keeps of `per_frame` (window-relative frames) into out[key], a
    [total, ...] tensor allocated on first use (on per_frame's device)."""
    if key not in out:
        out[key] = per_frame.new_empty((total,) + tuple(per_frame.shape[1:]))
    out[key][win.keep_start:win.keep_stop] = per_frame[win.keep_start - win.start:win.keep_stop - win.start]


def run_windows(plan: list[Window], num_frames: int, window_fn: Callable[[Window], dict],
                progress: Optional[Callable[[], None]] = None,
                check_interrupt: Optional[Callable[[], None]] = None) -> dict[str, torch.Tensor]:
    """The window loop of every adapter: for each window of `plan`, check_interrupt(), then
    window_fn(win) -> {key: tensor [>= win.stop - win.start, ...] per video frame of the window (window-relative)},
    of which the frames the window keeps are written into {key: [num_frames, ...]}; progress() after each window."""
    out: dict[str, torch.Tensor] = {}
    for win in plan:
        if check_interrupt is not None:
            check_interrupt()
        got = window_fn(win)
        for key, per_frame in got.items():
            keep_window(out, key, per_frame, win, num_frames)
        del got
        if progress is not None:
            progress()
    return out
