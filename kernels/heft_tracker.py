"""HeFT windowed soft-argmax tracker with query EMA and forward-backward visibility (methods_spec 1.2).

Per target frame and point:
  cost = cosine(query descriptor, feature) -> softmax(cost / temperature) -> zero outside a disk of
  `search_radius` px around the previous position (no limit when the previous frame was predicted occluded)
  -> hard argmax -> keep only the disk of `argmax_radius` px around it -> renormalise -> probability-weighted
  mean position (soft-argmax).
  If the new position is visible, the query descriptor is updated q <- alpha * d + (1 - alpha) * q with d the
  features sampled on the (2s+1)^2 pixel neighbourhood (s = `ema_range` px, clamped to the frame), weighted
  exp(-|offset| / (s / 3)) and normalised.
Visibility at frame i: a backward track starts at the new position with the feature sampled there and runs the
same step back to the query frame (EMA on the frames predicted visible, unbounded search after a frame predicted
occluded, exactly as the official code); visible iff the RMS forward-backward gap over the visible frames in
[query_t, i) is <= `vis_threshold` px.
Queries may start at any frame: frames after t_q are tracked forwards, frames before t_q with the same machinery
running backwards in time (the forward-backward check then runs forwards to t_q).

Resolution (`upsample`): True (default, like HeFT's pixel-resolution matching) computes the cosine at feature
resolution and upsamples the COST map bilinearly to pixels (align_corners=False, via the stride), i.e. HeFT's
`upsample_feature=False` path; the official default upsamples the features before the cosine, which differs only
through the per-pixel normalisation. False works on the feature grid directly (cell centres in pixels, radii still
in pixels): much cheaper, positions still sub-cell through the soft-argmax.

Visibility feedback (`fb_mode`):
  'speculative' (default): the published algorithm, exactly, with batched backward checks. Visibility at frame i
    feeds the search radius and the EMA at i+1, and the backward check from i depends on the forward positions
    and visibilities at frames [query_t, i] (not only on the state at i). So: guess every frame's visibility
    (first all visible), run the forward pass under the guess (O(T) steps), then advance the backward tracks of
    ALL start frames together one frame per step (O(T) steps over (tracks x start frames)). For each track the
    frames before its first frame whose computed visibility differs from the guess are exact (their inputs only
    involve correctly guessed frames), and so is that frame itself (with the corrected visibility); the track
    restarts from there (each track from its own step, vectorised), guessing that the corrected visibility
    persists for a few steps, while finished tracks drop out. Backward tracks finish in start-step order, so the
    ones from later steps of a track are dropped as soon as an earlier one contradicts its guess.
    Cost O(T x (1 + visibility surprises)) vectorised steps; more arithmetic than 'sequential' (each restart
    redoes the backward tracks past the restart step), so it wins where steps are latency-bound (GPU), not on
    one CPU thread. It holds one descriptor per (track, start frame): N*T*C values per point chunk (chunked over
    points by `max_elements`).
  'sequential': the same result the plain way: the backward check from every frame runs before the next forward
    step: O(T^2) steps, each vectorised over all points and both time directions.
  'batched': the forward pass assumes every frame visible (bounded search and EMA always on); afterwards every
    start frame's backward track is advanced together, one frame per step: O(T) vectorised steps; the RMS then
    counts every frame in [query_t, i). Not the published feedback loop (no feedback at all).

Fast version: only a window around each point is evaluated ((2R+1)^2 pixels, R = search_radius); a point whose
previous frame was occluded gets a full-frame argmax computed in point chunks bounded by `max_elements`.
Returns (track_path [T,N,2] float32, track_visibility [T,N] bool, fb_error [T,N] RMS px, 0 at the query frame).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .checks import check_feature_frames
from .cost_volume import EPS, _stride_pair, check_query_points, normalise, pixel_to_cell

FB_MODES = ("speculative", "sequential", "batched")
_GUESS_HORIZON = 3      # steps a corrected visibility is assumed to persist (fastest of 3/8/T on the benchmark)


def check_heft_args(search_radius, argmax_radius, vis_threshold, alpha, temperature, ema_range, fb_mode,
                    stride, upsample) -> None:
    sy, sx = _stride_pair(stride)
    spacing = 1.0 if upsample else max(sy, sx)
    if not (search_radius >= spacing * 0.75):
        raise ValueError(f"search_radius: must be at least {spacing * 0.75:g} px (grid spacing {spacing:g} px) "
                         f"so the search disk contains a grid point, got {search_radius}")
    if math.isinf(search_radius):
        raise ValueError("search_radius: must be finite (the search is unbounded only after an occlusion)")
    if not argmax_radius >= 0 or math.isinf(argmax_radius):
        raise ValueError(f"argmax_radius: must be a finite non-negative number of pixels, got {argmax_radius}")
    if not vis_threshold >= 0:
        raise ValueError(f"vis_threshold: must be non-negative, got {vis_threshold}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: the EMA weight must lie in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"temperature: must be positive, got {temperature}")
    if ema_range < 0 or int(ema_range) != ema_range:
        raise ValueError(f"ema_range: must be a non-negative integer number of pixels, got {ema_range}")
    if fb_mode not in FB_MODES:
        raise ValueError(f"fb_mode: expected one of {FB_MODES}, got {fb_mode!r}")


def ema_offsets(ema_range: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets [K,2] of the (2s+1)^2 neighbourhood and their normalised weights exp(-|o|/(s/3)) [K]."""
    s = int(ema_range)
    r = torch.arange(-s, s + 1, device=device, dtype=dtype)
    oy, ox = torch.meshgrid(r, r, indexing="ij")
    off = torch.stack([ox.reshape(-1), oy.reshape(-1)], -1)
    if s == 0:
        return off, torch.ones(1, device=device, dtype=dtype)
    wts = torch.exp(-off.norm(dim=1) / (s / 3.0))
    return off, wts / wts.sum()


# ============================================================================================ fast version

class _Tracker:
    """Shared state of the fast tracker: features, grid geometry, and the windowed step."""

    def __init__(self, feats, stride, frame_size, upsample, temperature, argmax_radius, ema_range, alpha,
                 max_elements):
        # channels-last so a window gather is one contiguous advanced index (indexing [t, :, y, x] would copy
        # the whole tensor per call); raw values are recovered as unit vector * norm
        norm = feats.norm(dim=1).clamp_min(EPS)                                        # [T,h,w]
        self.norm = norm
        self.feats_nl = (feats / norm[:, None]).permute(0, 2, 3, 1).contiguous()       # [T,h,w,C]
        self.dtype = feats.dtype
        self.t_total, self.c, self.h, self.w = feats.shape
        self.sy, self.sx = _stride_pair(stride)
        self.H, self.W = (int(v) for v in frame_size)
        self.up = bool(upsample)
        if self.up:
            self.step_x = self.step_y = 1.0
            self.off_x = self.off_y = 0.0
            self.gw, self.gh = self.W, self.H
        else:
            self.step_x, self.step_y = self.sx, self.sy
            self.off_x, self.off_y = (self.sx - 1) / 2, (self.sy - 1) / 2
            self.gw, self.gh = self.w, self.h
        self.temperature = float(temperature)
        self.ra = float(argmax_radius)
        self.alpha = float(alpha)
        self.ema_off, self.ema_w = ema_offsets(ema_range, feats.device, feats.dtype)
        self.max_elements = int(max_elements)

    # ------------------------------------------------------------------ cost on a window of grid indices
    def _cell_cost(self, frame, desc_n, cy, cx):
        """Cosine at cells (cy [B,Ky] x cx [B,Kx], clamped) of frames [B] -> [B,Ky,Kx]."""
        f = self.feats_nl[frame[:, None, None], cy[:, :, None], cx[:, None, :]]         # [B,Ky,Kx,C]
        return torch.einsum("byxc,bc->byx", f, desc_n)

    def _axis_interp(self, pix, stride, n_cells):
        """Pixel indices [B,K] -> (first cell [B,1], rel. lower/upper cell [B,K], upper weight [B,K], n_cells)."""
        u = ((pix.to(self.dtype) + 0.5) / stride - 0.5).clamp(0, n_cells - 1)
        u0 = u.floor().long().clamp(max=n_cells - 1)
        u1 = (u0 + 1).clamp(max=n_cells - 1)
        first = u0[:, :1]
        return first, u0 - first, u1 - first, u - u0.to(u.dtype)

    def cost(self, frame, desc_n, iy, ix):
        """Cost at grid indices iy [B,Ky] x ix [B,Kx] (clamped into the grid) -> [B,Ky,Kx]."""
        iy = iy.clamp(0, self.gh - 1)
        ix = ix.clamp(0, self.gw - 1)
        if not self.up:
            return self._cell_cost(frame, desc_n, iy, ix)
        b, ky = iy.shape
        kx = ix.shape[1]
        fy, ry0, ry1, wy = self._axis_interp(iy, self.sy, self.h)
        fx, rx0, rx1, wx = self._axis_interp(ix, self.sx, self.w)
        kcy = int(math.floor((ky - 1) / self.sy)) + 3
        kcx = int(math.floor((kx - 1) / self.sx)) + 3
        ar_y = torch.arange(kcy, device=iy.device)
        ar_x = torch.arange(kcx, device=ix.device)
        cc = self._cell_cost(frame, desc_n, (fy + ar_y).clamp(max=self.h - 1), (fx + ar_x).clamp(max=self.w - 1))
        a = cc.gather(2, rx0[:, None, :].expand(b, kcy, kx))
        bb = cc.gather(2, rx1[:, None, :].expand(b, kcy, kx))
        rows = a + (bb - a) * wx[:, None, :]                                           # [B,Kcy,Kx]
        a = rows.gather(1, ry0[:, :, None].expand(b, ky, kx))
        bb = rows.gather(1, ry1[:, :, None].expand(b, ky, kx))
        return a + (bb - a) * wy[:, :, None]

    # ------------------------------------------------------------------ one localisation step
    def _window_size(self, radius):
        return (min(int(math.floor(2 * radius / self.step_y)) + 2, self.gh),
                min(int(math.floor(2 * radius / self.step_x)) + 2, self.gw))

    def _window(self, centre, radius):
        """Grid indices of a box covering disk(centre, radius), shifted inside the grid (this keeps every in-grid
        point of the disk and the row-major order, so argmax ties resolve as on the full frame)."""
        ky, kx = self._window_size(radius)
        x0 = torch.floor((centre[:, 0] - radius - self.off_x) / self.step_x).long().clamp(0, self.gw - kx)
        y0 = torch.floor((centre[:, 1] - radius - self.off_y) / self.step_y).long().clamp(0, self.gh - ky)
        ix = x0[:, None] + torch.arange(kx, device=centre.device)
        iy = y0[:, None] + torch.arange(ky, device=centre.device)
        return iy, ix

    def _bounded(self, frame, desc_n, centre, radius):
        """Soft-argmax inside disk(centre, radius) of the grid; returns positions [B,2] in pixels."""
        iy, ix = self._window(centre, radius)
        cost = self.cost(frame, desc_n, iy, ix)
        gx = ix.to(cost.dtype) * self.step_x + self.off_x                               # [B,Kx]
        gy = iy.to(cost.dtype) * self.step_y + self.off_y
        inside = ((ix >= 0) & (ix < self.gw))[:, None, :] & ((iy >= 0) & (iy < self.gh))[:, :, None]
        dx = gx - centre[:, :1]
        dy = gy - centre[:, 1:]
        valid = inside & (dy[:, :, None] ** 2 + dx[:, None, :] ** 2 <= radius ** 2)
        neg = torch.tensor(float("-inf"), dtype=cost.dtype, device=cost.device)
        logits = torch.where(valid, cost / self.temperature, neg)
        b, ky, kx = logits.shape
        k = logits.reshape(b, -1).argmax(1)
        ay, ax = k // kx, k % kx
        px = gx.gather(1, ax[:, None])
        py = gy.gather(1, ay[:, None])
        near = (gy - py)[:, :, None] ** 2 + (gx - px)[:, None, :] ** 2 <= self.ra ** 2
        wts = torch.softmax(torch.where(valid & near, logits, neg).reshape(b, -1), 1).reshape(b, ky, kx)
        return torch.stack([(wts.sum(1) * gx).sum(1), (wts.sum(2) * gy).sum(1)], -1)

    def _global_argmax(self, frame, desc_n):
        """Grid position [B,2] (pixels) of the maximum cost over the whole frame."""
        b = frame.shape[0]
        iy = torch.arange(self.gh, device=frame.device).expand(b, -1)
        ix = torch.arange(self.gw, device=frame.device).expand(b, -1)
        cost = self.cost(frame, desc_n, iy, ix).reshape(b, -1)
        k = cost.argmax(1)
        return torch.stack([(k % self.gw).to(cost.dtype) * self.step_x + self.off_x,
                            (k // self.gw).to(cost.dtype) * self.step_y + self.off_y], -1)

    def step(self, frame, desc, centre, unbounded, radius):
        """New positions [B,2] of B tracks: frames [B], raw descriptors [B,C], previous positions [B,2]."""
        out = torch.empty_like(centre)
        if frame.numel() == 0:
            return out
        desc_n = normalise(desc, 1)
        ky, kx = self._window_size(radius)
        grid_pts = ky * kx
        cells = (ky / self.sy + 3) * (kx / self.sx + 3) if self.up else grid_pts
        chunk = max(1, int(self.max_elements // (8 * grid_pts + cells * self.c)))   # ~8 window-sized temporaries
        bounded = (~unbounded).nonzero().flatten()
        for s in range(0, bounded.numel(), chunk):
            idx = bounded[s:s + chunk]
            out[idx] = self._bounded(frame[idx], desc_n[idx], centre[idx], radius)
        free = unbounded.nonzero().flatten()
        if free.numel():
            full = self.gh * self.gw + (self.h * self.w * self.c if self.up else self.gh * self.gw * self.c)
            chunk_f = max(1, self.max_elements // full)
            for s in range(0, free.numel(), chunk_f):
                idx = free[s:s + chunk_f]
                peak = self._global_argmax(frame[idx], desc_n[idx])
                # region = disk(argmax, argmax_radius): the same bounded step centred on the argmax
                out[idx] = self._bounded(frame[idx], desc_n[idx], peak, max(self.ra, 0.75 * self.step_x,
                                                                              0.75 * self.step_y))
        return out

    # ------------------------------------------------------------------ descriptors
    def sample(self, frame, xy):
        """Raw features [B,C] bilinearly sampled at pixel positions xy [B,2] of frames [B]."""
        c = pixel_to_cell(xy, (self.sy, self.sx))
        cx = c[:, 0].clamp(0, self.w - 1)
        cy = c[:, 1].clamp(0, self.h - 1)
        x0 = cx.floor().long().clamp(max=self.w - 1)
        y0 = cy.floor().long().clamp(max=self.h - 1)
        x1 = (x0 + 1).clamp(max=self.w - 1)
        y1 = (y0 + 1).clamp(max=self.h - 1)
        fx = (cx - x0.to(cx.dtype))[:, None]
        fy = (cy - y0.to(cy.dtype))[:, None]

        def at(y, x):
            return self.feats_nl[frame, y, x] * self.norm[frame, y, x][:, None]
        top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
        bot = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
        return top * (1 - fy) + bot * fy

    def ema(self, desc, frame, xy, mask):
        """q <- alpha * neighbourhood sample + (1 - alpha) * q where mask."""
        if not bool(mask.any()):
            return desc
        idx = mask.nonzero().flatten()
        k = self.ema_off.shape[0]
        pts = xy[idx][:, None, :] + self.ema_off[None]                                  # [B,K,2]
        pts = torch.stack([pts[..., 0].clamp(0, self.W - 1), pts[..., 1].clamp(0, self.H - 1)], -1)
        fr = frame[idx][:, None].expand(-1, k).reshape(-1)
        s = self.sample(fr, pts.reshape(-1, 2)).reshape(idx.numel(), k, -1)
        d = (s * self.ema_w[None, :, None]).sum(1)
        desc = desc.clone()
        desc[idx] = self.alpha * d + (1 - self.alpha) * desc[idx]
        return desc


def track_heft(features: torch.Tensor, stride, queries: torch.Tensor, frame_size: tuple[int, int],
               argmax_radius: float = 17.0, search_radius: float = 42.0, vis_threshold: float = 18.0,
               alpha: float = 0.05, temperature: float = 1.0, ema_range: int = 1, upsample: bool = True,
               fb_mode: str = "speculative", max_elements: int = 2 ** 25,
               progress: Callable[[], None] | None = None):
    """Fast HeFT tracker (see module doc). features [T,C,h,w], queries [N,3] (t,x,y) pixels."""
    check_heft_args(search_radius, argmax_radius, vis_threshold, alpha, temperature, ema_range, fb_mode, stride,
                    upsample)
    feats = check_feature_frames("features", features)
    t_total = feats.shape[0]
    q = check_query_points("query_points", queries, t_total, frame_size).to(feats.device)
    trk = _Tracker(feats, stride, frame_size, upsample, temperature, argmax_radius, ema_range, alpha, max_elements)
    dev, dt = feats.device, feats.dtype
    n = q.shape[0]
    # 2N directional tracks: forward in time from t_q, and backward in time from t_q
    tq = q[:, 0].long().repeat(2)
    direction = torch.cat([torch.ones(n, dtype=torch.long), -torch.ones(n, dtype=torch.long)]).to(dev)
    length = torch.where(direction > 0, t_total - 1 - tq, tq)
    m = 2 * n
    pos = torch.zeros(t_total, m, 2, dtype=dt, device=dev)          # relative step k -> frame tq + dir*k
    vis = torch.zeros(t_total, m, dtype=torch.bool, device=dev)
    err = torch.zeros(t_total, m, dtype=dt, device=dev)
    pos[0] = q[:, 1:].to(dt).repeat(2, 1)
    vis[0] = True
    if fb_mode == "speculative":
        # chunk over tracks: per track T descriptors of the forward states + T backward descriptors
        per_track = max(1, t_total * (2 * trk.c + 16))
        chunk = max(1, int(max_elements) // per_track)
        for s in range(0, m, chunk):
            sl = slice(s, s + chunk)
            p_c, v_c, e_c = pos[:, sl].clone(), vis[:, sl].clone(), err[:, sl].clone()
            _track_speculative(trk, tq[sl], direction[sl], length[sl], p_c, v_c, e_c, search_radius,
                               vis_threshold, progress)
            pos[:, sl], vis[:, sl], err[:, sl] = p_c, v_c, e_c
        return _to_absolute(pos, vis, err, q, tq, direction, length, t_total)
    desc = trk.sample(tq, pos[0])
    steps = int(length.max()) if m else 0
    seq = fb_mode == "sequential"
    for k in range(1, steps + 1):
        act = (length >= k).nonzero().flatten()
        frame = tq[act] + direction[act] * k
        unb = ~vis[k - 1, act] if seq else torch.zeros(act.numel(), dtype=torch.bool, device=dev)
        pos[k, act] = trk.step(frame, desc[act], pos[k - 1, act], unb, search_radius)
        if seq:
            vis[k, act], err[k, act] = _fb_check_sequential(trk, tq[act], direction[act], k, pos[:, act],
                                                           vis[:, act], search_radius, vis_threshold)
            upd = vis[k, act]
        else:
            upd = torch.ones(act.numel(), dtype=torch.bool, device=dev)
        desc[act] = trk.ema(desc[act], frame, pos[k, act], upd)
        if progress is not None:
            progress()
    if not seq:
        vis[1:], err[1:] = _fb_check_batched(trk, tq, direction, length, pos, search_radius, vis_threshold,
                                             progress)
    return _to_absolute(pos, vis, err, q, tq, direction, length, t_total)


def _track_speculative(trk, tq, direction, length, pos, vis, err, radius, thr, progress) -> int:
    """Exact HeFT forward pass + visibility feedback for M tracks by speculation (fb_mode 'speculative').
    pos [T,M,2] (step 0 set), vis/err [T,M] are filled in place. Returns the number of rounds (1 = no surprise).
    Invariant: for track p, steps <= start[p] are final (position, visibility, error and the descriptor after
    that step's EMA); vis holds guesses beyond start[p]."""
    t_total, m, _ = pos.shape
    dev = pos.device
    descs = pos.new_zeros(t_total, m, trk.c)           # descriptor after the EMA of step k (used by step k+1)
    descs[0] = trk.sample(tq, pos[0])
    vis[:] = True                                        # first guess: visible everywhere (vis[0] is True)
    start = torch.zeros(m, dtype=torch.long, device=dev)
    pending = length > 0
    kk = torch.arange(t_total, device=dev)[:, None]
    rounds = 0
    while bool(pending.any()):
        rounds += 1
        # forward pass under the guess, each track from its own first unsure step
        for k in range(int(start[pending].min()) + 1, int(length[pending].max()) + 1):
            act = (pending & (start < k) & (length >= k)).nonzero().flatten()
            if act.numel():
                frame = tq[act] + direction[act] * k
                pos[k, act] = trk.step(frame, descs[k - 1, act], pos[k - 1, act], ~vis[k - 1, act], radius)
                descs[k, act] = trk.ema(descs[k - 1, act], frame, pos[k, act], vis[k, act])
            if progress is not None:
                progress()
        # backward checks of every unsure (start step, track) pair at once
        live = pending[None] & (kk > start[None]) & (kk <= length[None])
        ks, ts = live.nonzero(as_tuple=True)
        rms, done = _fb_check_speculative(trk, tq, direction, ks, ts, pos, vis, radius, thr, progress)
        ks, ts, rms = ks[done], ts[done], rms[done]
        new = rms <= thr
        surprise = new != vis[ks, ts]
        vis[ks, ts] = new                                # the correction at the first surprise, guesses after it
        err[ks, ts] = rms
        first = torch.full((m,), t_total, dtype=torch.long, device=dev)
        first.scatter_reduce_(0, ts[surprise], ks[surprise], "amin")
        pending = first < t_total
        idx = pending.nonzero().flatten()
        if idx.numel():
            # the step at the first surprise is now final: redo its EMA with the corrected visibility
            kf = first[idx]
            start[idx] = kf
            # new guess (speed only, never the result): the corrected visibility persists for a few steps
            # (occlusions come in runs), visible after that
            gap = kk - kf[None]
            later = (gap > 0) & (kk <= length[idx][None])
            vis[:, idx] = torch.where(later, (gap > _GUESS_HORIZON) | vis[kf, idx][None], vis[:, idx])
            frame = tq[idx] + direction[idx] * kf
            descs[kf, idx] = trk.ema(descs[kf - 1, idx], frame, pos[kf, idx], vis[kf, idx])
    return rounds


def _fb_check_speculative(trk, tq, direction, ks, ts, pos, vis, radius, thr, progress):
    """RMS gaps [P] of the backward tracks from steps ks [P] of tracks ts [P], all advanced together, and which
    of them finished. Exactly _fb_check_sequential's recurrence: the search is unbounded after a step with vis
    False (the start step counts as visible), EMA and the RMS use the steps with vis True.
    The track from step k finishes after k steps, so visibilities come out in step order: once a track's step k
    contradicts its guess, its tracks from later steps are void (they assumed the guess) and are dropped."""
    order = torch.argsort(ks, descending=True, stable=True)   # the pairs still running are always a prefix
    ks_s, ts_s = ks[order], ts[order]
    dev = pos.device
    cur = pos[ks_s, ts_s].clone()
    b = trk.sample(tq[ts_s] + direction[ts_s] * ks_s, cur)
    sq = torch.zeros(order.shape[0], dtype=pos.dtype, device=dev)
    cnt = torch.zeros_like(sq)
    rms = torch.zeros_like(sq)
    done = torch.zeros(order.shape[0], dtype=torch.bool, device=dev)
    j = 0
    while order.numel():
        j += 1
        rel = ks_s - j
        frame = tq[ts_s] + direction[ts_s] * rel
        prev_vis = vis[rel + 1, ts_s] | (rel + 1 == ks_s)
        cur = trk.step(frame, b, cur, ~prev_vis, radius)
        v = vis[rel, ts_s]
        b = trk.ema(b, frame, cur, v)
        d2 = ((cur - pos[rel, ts_s]) ** 2).sum(1)
        sq = sq + torch.where(v, d2, torch.zeros_like(d2))
        cnt = cnt + v.to(cnt.dtype)
        n = int((ks_s > j).sum())                              # pairs from step j finish now: the tail
        fin = order[n:]
        r = torch.sqrt(sq[n:] / cnt[n:])
        rms[fin] = r
        done[fin] = True
        surprise = (r <= thr) != vis[j, ts_s[n:]]
        order, ks_s, ts_s, cur, b, sq, cnt = (x[:n] for x in (order, ks_s, ts_s, cur, b, sq, cnt))
        if bool(surprise.any()):
            void = torch.zeros(vis.shape[1], dtype=torch.bool, device=dev)
            void[ts[fin[surprise]]] = True
            keep = ~void[ts_s]
            order, ks_s, ts_s, cur, b, sq, cnt = (x[keep] for x in (order, ks_s, ts_s, cur, b, sq, cnt))
        if progress is not None:
            progress()
    return rms, done


def _fb_check_sequential(trk, tq, direction, k, pos, vis, radius, thr):
    """Backward tracks of B tracks from relative step k to 0 (HeFT's get_visibility)."""
    frame_k = tq + direction * k
    b = trk.sample(frame_k, pos[k])
    cur = pos[k].clone()
    v = vis.clone()
    v[k] = True
    sq = torch.zeros(tq.shape[0], dtype=pos.dtype, device=pos.device)
    cnt = torch.zeros_like(sq)
    for j in range(k - 1, -1, -1):
        frame = tq + direction * j
        cur = trk.step(frame, b, cur, ~v[j + 1], radius)
        b = trk.ema(b, frame, cur, v[j])
        d2 = ((cur - pos[j]) ** 2).sum(1)
        sq = sq + torch.where(v[j], d2, torch.zeros_like(d2))
        cnt = cnt + v[j].to(cnt.dtype)
    rms = torch.sqrt(sq / cnt)
    return rms <= thr, rms


def _fb_check_batched(trk, tq, direction, length, pos, radius, thr, progress):
    """All start steps k >= 1 of all tracks as one batch of backward tracks, advanced one frame per step."""
    t_total, m, _ = pos.shape
    dev = pos.device
    kk = torch.arange(1, t_total, device=dev)[:, None].expand(-1, m)              # [T-1,M]
    tr = torch.arange(m, device=dev)[None].expand(t_total - 1, -1)
    live = kk <= length[None]
    ks, ts = kk[live], tr[live]                                                     # one backward track each
    cur = pos[ks, ts].clone()
    b = trk.sample(tq[ts] + direction[ts] * ks, cur)
    sq = torch.zeros(ks.shape[0], dtype=pos.dtype, device=dev)
    no = torch.zeros(ks.shape[0], dtype=torch.bool, device=dev)
    for j in range(1, int(ks.max()) + 1 if ks.numel() else 1):
        a = (ks >= j).nonzero().flatten()
        rel = ks[a] - j
        frame = tq[ts[a]] + direction[ts[a]] * rel
        cur[a] = trk.step(frame, b[a], cur[a], no[a], radius)
        b[a] = trk.ema(b[a], frame, cur[a], ~no[a])
        sq[a] = sq[a] + ((cur[a] - pos[rel, ts[a]]) ** 2).sum(1)
        if progress is not None:
            progress()
    rms_flat = torch.sqrt(sq / ks.to(sq.dtype))
    rms = torch.zeros(t_total - 1, m, dtype=pos.dtype, device=dev)
    rms[live] = rms_flat
    return (rms <= thr) & live, rms


def _to_absolute(pos, vis, err, q, tq, direction, length, t_total):
    n = q.shape[0]
    dev = pos.device
    path = torch.zeros(t_total, n, 2, dtype=torch.float32, device=dev)
    vis_out = torch.zeros(t_total, n, dtype=torch.bool, device=dev)
    err_out = torch.zeros(t_total, n, dtype=torch.float32, device=dev)
    k = torch.arange(t_total, device=dev)[:, None]
    for half in (0, 1):
        sl = slice(half * n, (half + 1) * n)
        frame = tq[sl][None] + direction[sl][None] * k                                   # [T,N]
        ok = k <= length[sl][None]
        cols = torch.arange(n, device=dev)[None].expand(t_total, -1)
        path[frame[ok], cols[ok]] = pos[:, sl][ok].float()
        vis_out[frame[ok], cols[ok]] = vis[:, sl][ok]
        err_out[frame[ok], cols[ok]] = err[:, sl][ok].float()
    return path, vis_out, err_out


# ============================================================================================ reference

def _ref_grid(feats, stride, frame_size, upsample):
    """Grid coordinates [Gh,Gw,2] (pixels) and a function cell-cos [h,w] -> cost on the grid [Gh,Gw]."""
    _, _, h, w = feats.shape
    sy, sx = _stride_pair(stride)
    H, W = frame_size
    if not upsample:
        ys, xs = torch.meshgrid(torch.arange(h, dtype=feats.dtype), torch.arange(w, dtype=feats.dtype),
                                indexing="ij")
        grid = torch.stack([(xs + 0.5) * sx - 0.5, (ys + 0.5) * sy - 0.5], -1)
        return grid, lambda cos: cos
    ys, xs = torch.meshgrid(torch.arange(H, dtype=feats.dtype), torch.arange(W, dtype=feats.dtype), indexing="ij")
    grid = torch.stack([xs, ys], -1)
    cells = pixel_to_cell(grid, stride)
    norm = torch.stack([2 * cells[..., 0] / max(w - 1, 1) - 1, 2 * cells[..., 1] / max(h - 1, 1) - 1], -1)

    def up(cos):
        return F.grid_sample(cos[None, None], norm[None], mode="bilinear", padding_mode="border",
                             align_corners=True)[0, 0]
    return grid, up


def _ref_sample(feats, t, x, y, stride):
    from .cost_volume import sample_descriptors_ref
    return sample_descriptors_ref(feats, torch.tensor([[float(t), float(x), float(y)]]), stride)[0]


def _ref_step(feats, t, desc, prev, radius, ra, temperature, grid, up):
    """HeFT head_track step for one point: softmax over the frame, disk masks, argmax, soft-argmax."""
    f = feats[t]
    cos = torch.einsum("c,chw->hw", desc / desc.norm().clamp_min(1e-8), f / f.norm(dim=0).clamp_min(1e-8))
    prob = torch.softmax((up(cos) / temperature).reshape(-1), 0).reshape(grid.shape[:2])
    if radius is not None:
        prob = torch.where(((grid - prev) ** 2).sum(-1) <= radius ** 2, prob, torch.zeros_like(prob))
    k = int(prob.reshape(-1).argmax())
    peak = grid.reshape(-1, 2)[k]
    prob = torch.where(((grid - peak) ** 2).sum(-1) <= ra ** 2, prob, torch.zeros_like(prob))
    prob = prob / prob.sum()
    return (grid * prob[..., None]).sum((0, 1))


def _ref_ema(feats, t, desc, xy, alpha, ema_range, stride, frame_size):
    H, W = frame_size
    off, wts = ema_offsets(ema_range, "cpu", feats.dtype)
    d = torch.zeros_like(desc)
    for o, wt in zip(off, wts):
        x = float((xy[0] + o[0]).clamp(0, W - 1))
        y = float((xy[1] + o[1]).clamp(0, H - 1))
        d = d + wt * _ref_sample(feats, t, x, y, stride)
    return alpha * d + (1 - alpha) * desc


def _ref_one_direction(feats, stride, frame_size, tq, x, y, p):
    """Track one query forward in time from tq (HeFT head_track + get_visibility for one point)."""
    grid, up = _ref_grid(feats, stride, frame_size, p["upsample"])
    t_total = feats.shape[0]
    seq = p["fb_mode"] != "batched"      # 'speculative' computes exactly the 'sequential' result
    pos = {tq: torch.tensor([x, y], dtype=feats.dtype)}
    vis = {tq: True}
    err = {tq: 0.0}
    desc = _ref_sample(feats, tq, x, y, stride)
    for i in range(tq + 1, t_total):
        radius = p["search_radius"] if (vis[i - 1] or not seq) else None
        pos[i] = _ref_step(feats, i, desc, pos[i - 1], radius, p["argmax_radius"], p["temperature"], grid, up)
        if seq:
            vis_b = dict(vis)
            vis_b[i] = True
            b = _ref_sample(feats, i, float(pos[i][0]), float(pos[i][1]), stride)
            cur = pos[i]
            sq, cnt = 0.0, 0
            for t in range(i - 1, tq - 1, -1):
                radius_b = p["search_radius"] if vis_b[t + 1] else None
                cur = _ref_step(feats, t, b, cur, radius_b, p["argmax_radius"], p["temperature"], grid, up)
                if vis_b[t]:
                    b = _ref_ema(feats, t, b, cur, p["alpha"], p["ema_range"], stride, frame_size)
                    sq += float(((cur - pos[t]) ** 2).sum())
                    cnt += 1
            err[i] = math.sqrt(sq / cnt)
            vis[i] = err[i] <= p["vis_threshold"]
        else:
            vis[i] = True
        if vis[i]:
            desc = _ref_ema(feats, i, desc, pos[i], p["alpha"], p["ema_range"], stride, frame_size)
    if not seq:   # every start frame's backward track after the whole forward pass, all frames visible
        for i in range(tq + 1, t_total):
            b = _ref_sample(feats, i, float(pos[i][0]), float(pos[i][1]), stride)
            cur = pos[i]
            sq = 0.0
            for t in range(i - 1, tq - 1, -1):
                cur = _ref_step(feats, t, b, cur, p["search_radius"], p["argmax_radius"], p["temperature"], grid, up)
                b = _ref_ema(feats, t, b, cur, p["alpha"], p["ema_range"], stride, frame_size)
                sq += float(((cur - pos[t]) ** 2).sum())
            err[i] = math.sqrt(sq / (i - tq))
            vis[i] = err[i] <= p["vis_threshold"]
    return pos, vis, err


def track_heft_ref(features: torch.Tensor, stride, queries: torch.Tensor, frame_size: tuple[int, int],
                   argmax_radius: float = 17.0, search_radius: float = 42.0, vis_threshold: float = 18.0,
                   alpha: float = 0.05, temperature: float = 1.0, ema_range: int = 1, upsample: bool = True,
                   fb_mode: str = "sequential"):
    """Reference: one point at a time, full-frame maps, frames before the query by flipping time."""
    check_heft_args(search_radius, argmax_radius, vis_threshold, alpha, temperature, ema_range, fb_mode, stride,
                    upsample)
    feats = features.cpu()
    t_total = feats.shape[0]
    q = check_query_points("query_points", queries, t_total, frame_size)
    p = dict(argmax_radius=argmax_radius, search_radius=search_radius, vis_threshold=vis_threshold, alpha=alpha,
             temperature=temperature, ema_range=ema_range, upsample=upsample, fb_mode=fb_mode)
    n = q.shape[0]
    path = torch.zeros(t_total, n, 2)
    vis = torch.zeros(t_total, n, dtype=torch.bool)
    err = torch.zeros(t_total, n)
    flipped = feats.flip(0)
    for i, (t, x, y) in enumerate(q.tolist()):
        t = int(t)
        fwd = _ref_one_direction(feats, stride, frame_size, t, x, y, p)
        bwd = _ref_one_direction(flipped, stride, frame_size, t_total - 1 - t, x, y, p)
        for pos_d, vis_d, err_d, to_abs in ((fwd[0], fwd[1], fwd[2], lambda f: f),
                                            (bwd[0], bwd[1], bwd[2], lambda f: t_total - 1 - f)):
            for f in pos_d:
                path[to_abs(f), i] = pos_d[f].float()
                vis[to_abs(f), i] = bool(vis_d[f])
                err[to_abs(f), i] = float(err_d[f])
    return path, vis, err
