"""HeFT forward-backward visibility (HeFT, arXiv 2512.04619), in three modes over the HeftSearch step.

Tracks are directional: track m starts at frame tq[m] and runs direction[m] (+1 forwards, -1 backwards in time)
for length[m] steps; pos [T,M,2] (pixels), vis [T,M], err [T,M] are indexed by the relative step k (frame
tq + direction * k), step 0 being the query.

Visibility at step i: a backward track starts at the new position with the feature sampled there and runs the
same step back to the query (EMA on the steps predicted visible, unbounded search after a step predicted
occluded, exactly as the official code); visible iff the RMS forward-backward gap over the visible steps in
[0, i) is <= `vis_threshold` px.

Modes (`fb_mode`):
  'speculative' (default): the published algorithm, exactly, with batched backward checks. Visibility at step i
    feeds the search radius and the EMA at i+1, and the backward check from i depends on the forward positions
    and visibilities at steps [0, i] (not only on the state at i). So: guess every step's visibility (first all
    visible), run the forward pass under the guess (O(T) steps), then advance the backward tracks of ALL start
    steps together one step at a time (O(T) steps over (tracks x start steps)). For each track the steps before
    its first step whose computed visibility differs from the guess are exact (their inputs only involve
    correctly guessed steps), and so is that step itself (with the corrected visibility); the track restarts
    from there (each track from its own step, vectorised), guessing that the corrected visibility persists for a
    few steps, while finished tracks drop out. Backward tracks finish in start-step order, so the ones from later
    steps of a track are dropped as soon as an earlier one contradicts its guess.
    Cost O(T x (1 + visibility surprises)) vectorised steps; more arithmetic than 'sequential' (each restart
    redoes the backward tracks past the restart step), so it wins where steps are latency-bound (GPU), not on
    one CPU thread. It holds one descriptor per (track, start step): M*T*C values per chunk of tracks.
  'sequential': the same result the plain way: the backward check from every step runs before the next forward
    step: O(T^2) steps, each vectorised over all tracks.
  'no_feedback' (formerly 'batched', still accepted): the forward pass assumes every step visible (bounded
    search and EMA always on); afterwards every start step's backward track is advanced together, one step at a time: O(T) vectorised
    steps; the RMS then counts every step in [0, i). Not the published algorithm (visibility feeds nothing).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .heft_search import HeftSearch

_GUESS_HORIZON = 3      # steps a corrected visibility is assumed to persist (fastest of 3/8/T on the benchmark)


def run_stepwise(trk: HeftSearch, tq, direction, length, pos, vis, err, radius: float, thr: float, seq: bool,
                 progress: Callable[[], None] | None) -> None:
    """fb_mode 'sequential' (seq True) or 'no_feedback' (seq False): fills pos/vis/err in place."""
    dev = pos.device
    m = tq.shape[0]
    desc = trk.sample(tq, pos[0])
    steps = int(length.max()) if m else 0
    for k in range(1, steps + 1):
        act = (length >= k).nonzero().flatten()
        frame = tq[act] + direction[act] * k
        unb = ~vis[k - 1, act] if seq else torch.zeros(act.numel(), dtype=torch.bool, device=dev)
        pos[k, act] = trk.step(frame, desc[act], pos[k - 1, act], unb, radius)
        if seq:
            vis[k, act], err[k, act] = _fb_check_sequential(trk, tq[act], direction[act], k, pos[:, act],
                                                           vis[:, act], radius, thr)
            upd = vis[k, act]
        else:
            upd = torch.ones(act.numel(), dtype=torch.bool, device=dev)
        desc[act] = trk.ema(desc[act], frame, pos[k, act], upd)
        if progress is not None:
            progress()
    if not seq:
        vis[1:], err[1:] = _fb_check_batched(trk, tq, direction, length, pos, radius, thr, progress)


def run_speculative(trk, tq, direction, length, pos, vis, err, radius, thr, progress) -> int:
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


def to_absolute(pos, vis, err, q, tq, direction, length, t_total):
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
