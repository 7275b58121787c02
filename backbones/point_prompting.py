"""Point Prompting end to end over the backbone protocol (no ComfyUI import): many points, any query frame, clips
of any length, coarse pass and refinement.

Method: Shrivastava, Mehta, Geng, Owens, "Point Prompting: Counterfactual Tracking with Video Diffusion Models"
(arXiv 2510.11715, Sec. 3.2-3.3, Eq. 4-5; docs/point_prompting.md has the details and every choice). The clip's
reds are desaturated (kernels.color_rebalance), a red dot is pasted at the query point on the first frame, an
image-to-video model SDEdit-regenerates the clip conditioned on the marked first frame with the unmarked one as
negative image prompt (per step v = v_pos + lambda (v_pos - v_neg), the backbone's `regenerate`), and the dot is
followed by colour (kernels.red_tracker). Refinement: a disk mask around the coarse track, pooled to the latent grid
by the backbone, a masked (RePaint) regeneration at the refinement noise level, and the tracker again.

What this module adds to the published per-point loop (our choices, documented in docs/point_prompting.md):
- Many points per sampler call. mode "batched": the single-marker generations of up to `points_per_generation`
  points run as one batch (the backbone's `regenerate_batch`: the native DiT adapters read the model once per step
  for all of them, the others run one regeneration per item). Every generation uses the same seed, so a point's track does not depend on how points are grouped.
  mode "multi-marker": up to `points_per_generation` markers in ONE generation when every pair is at least
  `min_separation` generation pixels apart; each marker keeps its own track by nearest previous position with a
  collision check (kernels.red_tracker exclusive=True). Points that fit no group run as batched single-marker
  generations, and the log says which.
- Query frames other than 0: the clip from the query frame to the end is regenerated forward, and the clip from
  the query frame back to frame 0 is regenerated time-reversed (the marked query frame is the first frame of both);
  frames before the query frame take the reversed track.
- Long clips: windows of the model's length (4k+1 for Wan) overlapping by `overlap` frames. Each later window
  starts on the first shared frame, with the marker pasted at the position tracked there; the track switches to
  the new window at that frame. A point occluded at that frame gets the marker at its carried (last seen) position
  but stays occluded until the tracker finds the marker again.

Coordinates: pixels of the given frames, x right, y down, pixel centres on integers. Lengths called "generation
pixels" (marker radius, search radius, mask radius, min separation) are pixels of the size the model generates at
(the frames rounded to the model's token stride); they are converted here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from ..kernels.checks import check_video
from ..kernels.color_rebalance import rebalance_colors
from ..kernels.datatypes import check_points
from ..kernels.markers import draw_markers, marker_coverage
from ..kernels.red_tracker import red_pixel_mask, track_red_markers
from . import windows
from .protocol import ImageCond, check_noise_level, require_members

MODES = ("batched", "multi-marker")
# The colour tracker's red (OpenCV scales): hue <= 10 or >= 170 of 180, saturation >= 120, value >= 70 of 255.
RED = dict(h_low=10.0, h_high=170.0, s_min=120.0, v_min=70.0)


@dataclass
class PointPromptingSettings:
    """Every knob of the method. Defaults: the paper's (noise_level 0.5, steps 50, marker radius 2 px at 480x832,
    pure red marker) or, where the paper is silent, ours (each marked "ours")."""

    noise_level: float = 0.5             # SDEdit strength (fraction of the schedule re-run)
    steps: int = 50                      # steps of the full schedule
    guidance: float = 8.0                # counterfactual guidance lambda (paper silent; unofficial code: 8)
    marker_color: tuple = (1.0, 0.0, 0.0)
    marker_radius: float = 2.0           # generation pixels
    rebalance_strength: float = 0.8      # ours: fraction of saturation removed from red hues
    rebalance_hue_width: float = 20.0    # ours: degrees of hue around red
    refine: bool = True
    refine_noise_level: float = 0.3      # unofficial code's value
    refine_mask_radius: float = 16.0     # ours, generation pixels
    points_per_generation: int = 4       # ours
    mode: str = "batched"
    min_separation: float = 64.0         # ours, generation pixels (multi-marker)
    window: int = 0                      # 0 = the model's own length
    overlap: int = 4                     # ours, frames
    seed: int = 0
    search_radius: float = 20.0          # ours, generation pixels (tracker r0)
    search_growth: float = 1.5           # ours (tracker radius growth per miss)
    centroid_radius: float = 0.0         # generation pixels; 0 = 3 x marker_radius

    def check(self) -> "PointPromptingSettings":
        """Validate every field; ValueError naming the field (= the node input)."""
        check_noise_level(self.noise_level)
        _finite("refine_noise_level", self.refine_noise_level, 0.0, 1.0)
        _finite("noise_level", self.noise_level, 0.0, 1.0)
        if self.noise_level <= 0:
            raise ValueError("noise_level: must be > 0 (0 regenerates nothing, the marker cannot move)")
        if self.refine and self.refine_noise_level <= 0:
            raise ValueError("refine_noise_level: must be > 0 when refine is on")
        if int(self.steps) < 1:
            raise ValueError(f"steps: {self.steps} must be >= 1")
        _finite("guidance", self.guidance, 0.0, None)
        for name in ("marker_radius", "refine_mask_radius", "min_separation", "search_radius"):
            _finite(name, getattr(self, name), 0.0, None, open_low=True)
        _finite("centroid_radius", self.centroid_radius, 0.0, None)
        _finite("search_growth", self.search_growth, 1.0, None)
        _finite("rebalance_strength", self.rebalance_strength, 0.0, 1.0)
        _finite("rebalance_hue_width", self.rebalance_hue_width, 0.0, 90.0, open_low=True)
        if int(self.points_per_generation) < 1:
            raise ValueError(f"points_per_generation: {self.points_per_generation} must be >= 1")
        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} must be one of {MODES}")
        if int(self.window) < 0 or int(self.overlap) < 0:
            raise ValueError("window/overlap: must be >= 0")
        check_marker_color(self.marker_color)
        return self


def _finite(name: str, value, low: float, high: Optional[float], open_low: bool = False) -> None:
    v = float(value)
    if not math.isfinite(v) or v < low or (open_low and v == low) or (high is not None and v > high):
        span = f"{'(' if open_low else '['}{low:g}, {high:g}]" if high is not None else \
            (f"> {low:g}" if open_low else f">= {low:g}")
        raise ValueError(f"{name}: {value} must be a finite number {span}")


def check_marker_color(color: Sequence[float]) -> None:
    """The marker must be what the colour tracker follows: saturated red (the hues the clip's rebalancing
    desaturates, so that only the pasted marker stays tracker-red). Raises ValueError naming `marker_color`."""
    c = torch.as_tensor(color, dtype=torch.float32).reshape(-1)
    if c.numel() != 3 or not bool(torch.isfinite(c).all()) or bool(((c < 0) | (c > 1)).any()):
        raise ValueError(f"marker_color: expected an RGB triple in 0..1, got {tuple(color)}")
    if not bool(red_pixel_mask(c.reshape(1, 1, 1, 3), **RED).all()):
        raise ValueError(f"marker_color: {tuple(round(float(v) * 255) for v in c)} is not found by the colour "
                         "tracker, which follows saturated red (hue within 20 degrees of red, saturation >= "
                         "120/255, value >= 70/255: the hues rebalancing removes from the clip); use a strong red "
                         "such as #ff0000")


@dataclass
class PointPromptingResult:
    """track_path [T,N,2] (x,y pixels of the given frames), track_visibility bool [T,N], confidence [T,N] in 0..1
    (marker strength: red pixels around the track point / marker area, 0 where not visible), point_confidence [N]
    (mean confidence over the frames the point is visible, query frame excluded), clips: the regenerated clips
    (final pass of each generation and window, [t,H,W,3] each, in run order) as far as kept, log lines."""

    track_path: torch.Tensor
    track_visibility: torch.Tensor
    confidence: torch.Tensor
    point_confidence: torch.Tensor
    clips: list = field(default_factory=list)
    log: list = field(default_factory=list)
    generations: int = 0
    sampler_calls: int = 0


# ---------------------------------------------------------------- grouping
@dataclass
class _Task:
    query_frame: int
    direction: int           # +1 forward from the query frame, -1 time-reversed back to frame 0
    points: list             # point indices


@dataclass
class _Call:
    generations: list        # list of lists of point indices (one list per generation = per batch item)


def plan_groups(xy: torch.Tensor, ids: Sequence[int], mode: str, per_call: int, min_sep_px: float
                ) -> tuple[list[_Call], list[int]]:
    """Sampler calls for points `ids` (positions xy [N,2]): batched = up to per_call single-marker generations per
    call; multi-marker = greedy groups (in the given order) of up to per_call markers at least min_sep_px apart,
    one generation per call, points left alone batched. Returns (calls, ids that fell back to batched)."""
    ids = list(ids)
    if mode == "batched" or per_call == 1:
        return [_Call([[i] for i in ids[k:k + per_call]]) for k in range(0, len(ids), per_call)], []
    groups: list[list[int]] = []
    for i in ids:
        for g in groups:
            if len(g) < per_call and all(float((xy[i] - xy[j]).norm()) >= min_sep_px for j in g):
                g.append(i)
                break
        else:
            groups.append([i])
    multi = [g for g in groups if len(g) > 1]
    alone = [g[0] for g in groups if len(g) == 1]
    calls = [_Call([g]) for g in multi]
    calls += [_Call([[i] for i in alone[k:k + per_call]]) for k in range(0, len(alone), per_call)]
    return calls, (alone if len(ids) > 1 else [])


def _window_plan(length: int, window: int, overlap: int, quantum: int) -> list[tuple[int, int, int]]:
    """(start, stop, keep_stop) per window over `length` frames: each window keeps its frames up to the next
    window's start (the handover frame), the last one to the end."""
    plan = windows.plan_windows(length, window, overlap, quantum=quantum)
    out = []
    for i, w in enumerate(plan):
        stop = min(w.stop, length)
        keep_stop = plan[i + 1].start if i + 1 < len(plan) else length
        out.append((w.start, stop, keep_stop))
    return out


# ---------------------------------------------------------------- the method
BACKBONE_MEMBERS = ("regenerate_batch", "regen_batch_steps", "model_size", "default_window", "window_quantum")


class PointPrompting:
    """Run Point Prompting with backbone `bb` (a VideoBackbone; it uses BACKBONE_MEMBERS, and a backbone lacking
    one is refused with a TypeError). `text` is the family's text conditioning (None =
    empty prompt); `encode_image` maps a first frame [1,H,W,3] to the model's CLIP vision output (Wan 2.1 I2V) or
    is None. `progress()` is called once per sampler step (and may raise to interrupt); `keep_clips` is
    "all", "first" (the first generation's clips only) or "none"."""

    def __init__(self, bb, settings: PointPromptingSettings, text: Any = None,
                 encode_image: Optional[Callable[[torch.Tensor], Any]] = None,
                 progress: Optional[Callable[[], None]] = None, keep_clips: str = "all"):
        require_members(bb, BACKBONE_MEMBERS, "Point Prompting")
        self.bb = bb
        self.s = settings.check()
        self.text = text
        self.encode_image = encode_image
        self.progress = progress
        if keep_clips not in ("all", "first", "none"):
            raise ValueError(f"keep_clips: {keep_clips!r} must be 'all', 'first' or 'none'")
        self.keep_clips = keep_clips

    # ------------------------------------------------------------ planning
    def plan(self, frames: int, size: tuple[int, int], query_points: torch.Tensor
             ) -> tuple[list[tuple[_Task, list[_Call]]], list[str]]:
        """(task, its sampler calls) for every (query frame, direction), and log lines."""
        q = query_points
        px = self._px_per_gen(size)
        log = []
        plan = []
        for tq in sorted({int(t) for t in q[:, 0].tolist()}):
            ids = [i for i in range(q.shape[0]) if int(q[i, 0]) == tq]
            for direction in (1, -1):
                if (direction == 1 and tq == frames - 1) or (direction == -1 and tq == 0):
                    continue
                calls, alone = plan_groups(q[:, 1:], ids, self.s.mode, int(self.s.points_per_generation),
                                           self.s.min_separation * px)
                if alone and not any(t.query_frame == tq for t, _ in plan):
                    log.append(f"multi-marker: point(s) {alone} (query frame {tq}) closer than min_separation "
                               f"{self.s.min_separation:g} px to every group: batched single-marker generations")
                plan.append((_Task(tq, direction, ids), calls))
        return plan, log

    def _runs(self, frames: int, size: tuple[int, int], query_points: torch.Tensor):
        """(calls, windows) per task of the plan: windows as (start, stop, keep_stop) over the task's clip."""
        plan, _ = self.plan(frames, size, query_points)
        for task, calls in plan:
            length = frames - task.query_frame if task.direction == 1 else task.query_frame + 1
            yield calls, _window_plan(length, self._window(), int(self.s.overlap), self._quantum())

    def sampler_steps(self, frames: int, size: tuple[int, int], query_points: torch.Tensor) -> int:
        """Total sampler steps of a run (the progress bar's true total)."""
        passes = [self.s.noise_level] + ([self.s.refine_noise_level] if self.s.refine else [])
        total = 0
        for calls, wins in self._runs(frames, size, query_points):
            total += len(wins) * sum(self.bb.regen_batch_steps(nl, int(self.s.steps), len(c.generations))
                                     for c in calls for nl in passes)
        return total

    def clip_frames(self, frames: int, size: tuple[int, int], query_points: torch.Tensor) -> int:
        """Frames of all regenerated clips of a run (what keep_clips="all" holds)."""
        return sum(sum(len(c.generations) for c in calls) * sum(stop - start for start, stop, _ in wins)
                   for calls, wins in self._runs(frames, size, query_points))

    def _window(self) -> int:
        return int(self.s.window) or int(self.bb.default_window)

    def _quantum(self) -> int:
        return int(self.bb.window_quantum)

    def _px_per_gen(self, size: tuple[int, int]) -> float:
        """Pixels of the given frames per generation pixel."""
        gh, gw = (int(v) for v in self.bb.model_size(*size))
        return 0.5 * (size[0] / gh + size[1] / gw)

    # ------------------------------------------------------------ run
    def run(self, frames: torch.Tensor, query_points: torch.Tensor) -> PointPromptingResult:
        """frames IMAGE [T,H,W,3] 0..1 (T >= 2), query_points [N,3] (t,x,y) -> PointPromptingResult."""
        v = check_video("images", frames, min_frames=2)[..., :3].float()
        T, H, W = v.shape[:3]
        q = check_points("points", query_points, (H, W), T).to(v.device)
        wq = windows.quantize_window(self._window(), self._quantum())
        if int(self.s.overlap) >= wq:
            raise ValueError(f"overlap: {self.s.overlap} must be less than the window ({wq} frames)")
        px = self._px_per_gen((H, W))
        self.r_marker = self.s.marker_radius * px
        self.r_mask = self.s.refine_mask_radius * px
        self.r_search = self.s.search_radius * px
        self.r_centroid = (self.s.centroid_radius or 3.0 * self.s.marker_radius) * px
        clip = rebalance_colors(v, self.s.rebalance_strength, self.s.rebalance_hue_width) \
            if self.s.rebalance_strength > 0 else v
        N = q.shape[0]
        path = q[None, :, 1:].repeat(T, 1, 1).clone()
        vis = torch.zeros(T, N, dtype=torch.bool, device=v.device)
        conf = torch.zeros(T, N, device=v.device)
        idx_n = torch.arange(N, device=v.device)
        vis[q[:, 0].long(), idx_n] = True
        plan, log = self.plan(T, (H, W), q)
        res = PointPromptingResult(path, vis, conf, torch.zeros(N), log=log)
        for task, calls in plan:
            order = torch.arange(task.query_frame, T) if task.direction == 1 else \
                torch.arange(task.query_frame, -1, -1)
            sub = clip[order.to(clip.device)]
            for call in calls:
                p_sub, v_sub, c_sub = self._track_call(sub, q, call, res)
                pts = [i for g in call.generations for i in g]
                frames_abs = order.to(v.device)
                path[frames_abs[1:, None], torch.tensor(pts, device=v.device)[None]] = p_sub[1:]
                vis[frames_abs[1:, None], torch.tensor(pts, device=v.device)[None]] = v_sub[1:]
                conf[frames_abs[1:, None], torch.tensor(pts, device=v.device)[None]] = c_sub[1:]
        for i in range(N):
            others = torch.ones(T, dtype=torch.bool, device=v.device)
            others[int(q[i, 0])] = False
            seen = vis[:, i] & others
            res.point_confidence[i] = conf[seen, i].mean() if bool(seen.any()) else 0.0
        res.log.append(f"{res.generations} generation(s) in {res.sampler_calls} sampler call(s) for {N} point(s)")
        return res

    def _track_call(self, sub: torch.Tensor, q: torch.Tensor, call: _Call, res: PointPromptingResult):
        """Track the points of one sampler call over the (possibly reversed) clip `sub` [L,H,W,3] from its frame 0:
        -> path [L,n,2], vis [L,n], confidence [L,n] for the call's points in generation order."""
        L = sub.shape[0]
        gens = call.generations
        pts = [i for g in gens for i in g]
        n = len(pts)
        path = q[pts, 1:][None].repeat(L, 1, 1).clone()
        vis = torch.zeros(L, n, dtype=torch.bool, device=sub.device)
        vis[0] = True
        conf = torch.zeros(L, n, device=sub.device)
        slots = []
        k = 0
        for g in gens:
            slots.append(list(range(k, k + len(g))))
            k += len(g)
        exclusive = any(len(g) > 1 for g in gens)
        for start, stop, keep_stop in _window_plan(L, self._window(), int(self.s.overlap), self._quantum()):
            win = sub[start:stop]
            x0 = path[start]                                      # [n,2] positions on the window's first frame
            v0 = vis[start]
            marked, pos_c, neg_c = self._prompts(win, x0, slots)
            out = self._regenerate(marked, pos_c, neg_c, self.s.noise_level, None, res)
            p_w, v_w = self._track(out, x0, v0, slots, exclusive)
            if self.s.refine:
                masks = torch.stack([marker_coverage(self._all_frames(p_w[:, sl]), win.shape[0], win.shape[1:3],
                                                     self.r_mask) > 0 for sl in slots]).float()
                out = self._regenerate(marked, pos_c, neg_c, self.s.refine_noise_level, masks, res)
                p_w, v_w = self._track(out, x0, v0, slots, exclusive)
            c_w = self._confidence(out, p_w, v_w, slots)
            # frame `start` is this window's query/handover frame; the next window's handover frame is written here
            a, b = start + 1, min(keep_stop + 1, L)
            path[a:b] = p_w[1:b - start]
            vis[a:b] = v_w[1:b - start]
            conf[a:b] = c_w[1:b - start]
            self._keep(out, res)
        res.generations += len(gens)
        return path, vis, conf

    def _prompts(self, win: torch.Tensor, x0: torch.Tensor, slots: list) -> tuple[torch.Tensor, list, list]:
        """Marked windows [B,t,H,W,3] (marker pasted on frame 0 of each generation) and the positive (marked first
        frame) / negative (unmarked first frame) image prompts."""
        first = win[:1]
        neg = ImageCond(first, self._cvo(first), self.text)
        marked, pos = [], []
        for sl in slots:
            pts = torch.cat([torch.zeros(len(sl), 1, device=win.device), x0[sl]], 1)
            m0 = draw_markers(first, pts, self.s.marker_color, self.r_marker)
            marked.append(torch.cat([m0, win[1:]], 0))
            pos.append(ImageCond(m0, self._cvo(m0), self.text))
        return torch.stack(marked), pos, [neg] * len(slots)

    def _cvo(self, image: torch.Tensor):
        return self.encode_image(image) if self.encode_image is not None else None

    def _regenerate(self, marked, pos, neg, noise_level, masks, res) -> torch.Tensor:
        res.sampler_calls += 1
        return self.bb.regenerate_batch(marked, noise_level, pos, neg, float(self.s.guidance), int(self.s.steps),
                                        masks=masks, seed=int(self.s.seed), progress=self.progress)

    def _track(self, out: torch.Tensor, x0: torch.Tensor, v0: torch.Tensor, slots: list, exclusive: bool):
        """Colour-track every generation of `out` [B,t,H,W,3] from its markers at x0 -> path [t,n,2], vis [t,n];
        frame 0 carries the visibility the window started with."""
        t = out.shape[1]
        path = x0[None].repeat(t, 1, 1).clone()
        vis = torch.zeros(t, x0.shape[0], dtype=torch.bool, device=x0.device)
        for b, sl in enumerate(slots):
            qp = torch.cat([torch.zeros(len(sl), 1, device=x0.device), x0[sl]], 1)
            p, vv = track_red_markers(out[b], qp, self.r_search, self.s.search_growth, self.r_centroid,
                                      exclusive=exclusive and len(sl) > 1, **RED)
            path[:, sl] = p.to(path)
            vis[:, sl] = vv.to(vis.device)
        vis[0] = v0
        return path, vis

    @staticmethod
    def _all_frames(p: torch.Tensor) -> torch.Tensor:
        """Track [t,n,2] -> points [t*n,3] (t,x,y) on every frame (visible or carried)."""
        t, n = p.shape[:2]
        ts = torch.arange(t, device=p.device, dtype=p.dtype).repeat_interleave(n)
        return torch.cat([ts[:, None], p.reshape(-1, 2)], 1)

    def _confidence(self, out: torch.Tensor, path: torch.Tensor, vis: torch.Tensor, slots: list) -> torch.Tensor:
        """Marker strength per frame and point: tracker-red pixels within the centroid radius of the track point,
        over the marker's area, clipped to 1; 0 where the point is not visible (ours)."""
        t, n = vis.shape
        conf = torch.zeros(t, n, device=vis.device)
        area = math.pi * self.r_marker ** 2
        for b, sl in enumerate(slots):
            red = red_pixel_mask(out[b], **RED)
            for j in sl:
                disk = marker_coverage(self._all_frames(path[:, j:j + 1]), t, out.shape[2:4], self.r_centroid) > 0
                conf[:, j] = ((red & disk).flatten(1).sum(1).float() / area).clamp(max=1.0)
        return conf * vis

    def _keep(self, out: torch.Tensor, res: PointPromptingResult) -> None:
        """Keep every generation's clip ("all") or, for "first", every window of the first generation."""
        if self.keep_clips == "all":
            res.clips.extend(list(out))
        elif self.keep_clips == "first" and res.generations == 0:
            res.clips.append(out[0])


def track_points(bb, frames: torch.Tensor, query_points: torch.Tensor, settings: PointPromptingSettings = None,
                 **kwargs) -> PointPromptingResult:
    """PointPrompting(bb, settings, **kwargs).run(frames, query_points)."""
    return PointPrompting(bb, settings or PointPromptingSettings(), **kwargs).run(frames, query_points)


__all__ = ["PointPromptingSettings", "PointPromptingResult", "PointPrompting", "track_points", "plan_groups",
           "check_marker_color", "MODES", "BACKBONE_MEMBERS"]
