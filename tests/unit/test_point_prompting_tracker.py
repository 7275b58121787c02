"""Point Prompting orchestration, independent of any model: a test backbone implements the protocol and
"regenerates" by pasting every marker it finds on the positive first frame along known ground-truth paths (with
occlusions). Tracks must equal the ground truth within 0.5 px, with the right visibility, in every mode, for query
frames at the start, middle and end, across window boundaries."""
from __future__ import annotations

import math

import pytest
import torch

from vdtrack.backbones import schedules
from vdtrack.backbones.point_prompting import (BACKBONE_MEMBERS, PointPrompting, PointPromptingSettings,
                                               check_marker_color, plan_groups, track_points)
from vdtrack.backbones.protocol import BackboneBase
from vdtrack.kernels.markers import draw_markers
from vdtrack.kernels.red_tracker import red_pixel_mask

T, H, W = 21, 64, 96
RED = (1.0, 0.0, 0.0)


def gt_paths() -> tuple[torch.Tensor, torch.Tensor]:
    """4 points moving at most 2 px per frame, kept >= 24 px apart; point 1 hidden on frames 5..8 (across the
    handover frame 7 of the 9-frame windows with overlap 2), point 2 hidden on frames 15..16."""
    t = torch.arange(T, dtype=torch.float32)
    paths = torch.stack([
        torch.stack([12.3 + 1.5 * t, 12.6 + 0.0 * t], -1),
        torch.stack([80.4 - 1.2 * t, 20.2 + 6 * torch.sin(t / 4)], -1),
        torch.stack([20.7 + 8 * torch.sin(t / 5), 50.1 - 0.4 * t], -1),
        torch.stack([70.2 + 0.0 * t, 52.8 - 1.1 * t.clamp(max=10)], -1),
    ], 1)
    vis = torch.ones(T, 4, dtype=torch.bool)
    vis[5:9, 1] = False
    vis[15:17, 2] = False
    return paths, vis


def synthetic_clip() -> torch.Tensor:
    """Greenish-blue texture with a natural red patch (rebalancing must suppress it); pixel (0,0) encodes the
    frame index in its blue channel so the test backbone knows which frames it was given, in which order."""
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(T, H, W, 3, generator=g) * 0.3
    clip[..., 1] += 0.4
    clip[..., 2] += 0.3
    clip[:, 40:48, 44:52] = torch.tensor([0.85, 0.1, 0.1])      # a natural red, 10+ px from every path
    clip[:, 0, 0] = torch.stack([torch.zeros(T), torch.full((T,), 0.5), torch.arange(T) / 255.0], -1)
    return clip


class PastingBackbone(BackboneBase):
    """Protocol stand-in (BackboneBase gives model_size and the step counts): a perfect 'model' that moves each marker of the positive first frame along its point's
    ground-truth path, pastes it only where that point is visible, and keeps the input outside a RePaint mask.
    A marker belongs to the point whose position on the first frame (or, if hidden there, whose last visible
    position before it in the clip's time direction) lies within 1.5 px of a red pixel. coarse_offset shifts the
    pasted markers of full-strength passes (noise_level == coarse_level) to check that refinement replaces them."""

    family = "test"
    num_layers, num_heads, head_dim = 1, 1, 1
    temporal_compression = window_quantum = 4
    spatial_stride = pixel_multiple = 8
    default_window = 9

    def __init__(self, paths, vis, radius=2.0, coarse_offset=0.0, coarse_level=0.5):
        self.paths, self.vis, self.radius = paths, vis, radius
        self.coarse_offset, self.coarse_level = coarse_offset, coarse_level
        self.batch_sizes: list[int] = []
        self.masked_calls = 0

    def regenerate_batch(self, frames, noise_level, positives, negatives, guidance, steps, masks=None, seed=0,
                         progress=None):
        self.batch_sizes.append(frames.shape[0])
        for _ in range(schedules.run_steps(noise_level, steps)):
            if progress is not None:
                progress()
        return torch.stack([self._one(frames[b], noise_level, positives[b], None if masks is None else masks[b])
                            for b in range(frames.shape[0])])

    def regen_batch_steps(self, noise_level, steps, batch):
        return self.regen_steps(noise_level, steps)        # one sampler run for the batch, as regenerate_batch

    def regenerate(self, frames, noise_level, positive, negative, guidance, steps, mask=None, seed=0, progress=None):
        return self.regenerate_batch(frames[None], noise_level, [positive], [negative], guidance, steps,
                                     None if mask is None else mask[None], seed, progress)[0]

    def _one(self, frames, noise_level, positive, mask):
        idx = (frames[:, 0, 0, 2] * 255).round().long()
        t0 = int(idx[0])
        d = 1 if len(idx) < 2 else int(idx[1] - idx[0])
        red = red_pixel_mask(positive.image[:1])[0].nonzero().flip(-1).float()      # (x,y)
        owners = []
        for p in range(self.paths.shape[1]):
            t = t0
            while not bool(self.vis[t, p]):
                t -= d
            at = self.paths[t, p]
            if red.shape[0] and float(((red - at) ** 2).sum(-1).min()) <= 1.5 ** 2:
                owners.append(p)
        out = frames.clone()
        out[0] = positive.image[0]
        off = self.coarse_offset if noise_level == self.coarse_level else 0.0
        for j in range(1, frames.shape[0]):
            t = int(idx[j])
            pts = [torch.tensor([0.0, float(self.paths[t, p, 0]) + off, float(self.paths[t, p, 1])])
                   for p in owners if bool(self.vis[t, p])]
            if pts:
                out[j:j + 1] = draw_markers(out[j:j + 1], torch.stack(pts), RED, self.radius)
        if mask is not None:
            self.masked_calls += 1
            out = torch.where(mask[..., None] > 0, out, frames)
        return out


class SequentialBackbone(PastingBackbone):
    """The same with BackboneBase's batch regeneration (one regenerate per generation) and its step count."""

    regenerate_batch = BackboneBase.regenerate_batch
    regen_batch_steps = BackboneBase.regen_batch_steps

    def regenerate(self, frames, noise_level, positive, negative, guidance, steps, mask=None, seed=0, progress=None):
        return PastingBackbone.regenerate_batch(self, frames[None], noise_level, [positive], [negative], guidance,
                                                steps, None if mask is None else mask[None], seed, progress)[0]


def settings(**kw) -> PointPromptingSettings:
    base = dict(steps=4, window=9, overlap=2, min_separation=16.0, refine=True)
    base.update(kw)
    return PointPromptingSettings(**base)


def queries(paths, tq) -> torch.Tensor:
    tq = torch.as_tensor(tq).expand(paths.shape[1])
    return torch.cat([tq[:, None].float(), paths[tq, torch.arange(paths.shape[1])]], 1)


def assert_matches_gt(res, paths, vis, q):
    n = paths.shape[1]
    expect_vis = vis.clone()
    assert torch.equal(res.track_visibility, expect_vis), (res.track_visibility ^ expect_vis).nonzero()
    err = (res.track_path - paths).norm(dim=-1)
    assert float(err[vis].max()) <= 0.5, float(err[vis].max())
    for i in range(n):
        assert torch.equal(res.track_path[int(q[i, 0]), i], q[i, 1:])


@pytest.mark.parametrize("mode,per", [("batched", 1), ("batched", 3), ("multi-marker", 4)])
@pytest.mark.parametrize("tq", [0, 10, 20])
def test_tracks_equal_ground_truth(mode, per, tq):
    paths, vis = gt_paths()
    q = queries(paths, tq)
    bb = PastingBackbone(paths, vis)
    res = track_points(bb, synthetic_clip(), q, settings(mode=mode, points_per_generation=per))
    assert_matches_gt(res, paths, vis, q)
    if mode == "multi-marker":
        assert max(bb.batch_sizes) == 1 and res.generations < 4 * (2 if tq == 10 else 1)
    else:
        assert max(bb.batch_sizes) == per


def test_mixed_query_frames_and_sequential_backbone():
    """Points with different query frames in one run; a backbone with BackboneBase's regenerate_batch runs item
    by item, and the progress total counts every item's sampler run."""
    paths, vis = gt_paths()
    q = torch.cat([queries(paths, 0)[:1], queries(paths, 10)[1:2], queries(paths, 20)[2:3], queries(paths, 3)[3:]])
    bb = SequentialBackbone(paths, vis)
    ticks = []
    pp = PointPrompting(bb, settings(points_per_generation=2), progress=lambda: ticks.append(1))
    res = pp.run(synthetic_clip(), q)
    assert_matches_gt(res, paths, vis, q)
    assert set(bb.batch_sizes) == {1}
    # every generation: a coarse pass (2 of 4 steps at 0.5) and a refinement (1 step at 0.3), one regenerate each
    assert len(ticks) == pp.sampler_steps(T, (H, W), q) == len(bb.batch_sizes) // 2 * (2 + 1) > 0


def test_backbone_lacking_a_member_is_refused():
    """An object without a protocol member Point Prompting uses is refused up front, every missing one named
    (no other code path is taken for it)."""
    paths, vis = gt_paths()

    class Partial:                     # a bare regenerate() and the attributes, no BackboneBase
        default_window, window_quantum = 9, 4
        regenerate = SequentialBackbone.regenerate

    with pytest.raises(TypeError, match="Partial lacks regenerate_batch, regen_batch_steps, model_size"):
        PointPrompting(Partial(), settings())
    assert all(hasattr(PastingBackbone(paths, vis), n) for n in BACKBONE_MEMBERS)


def test_refinement_replaces_the_coarse_track():
    """The coarse pass pastes markers 1.2 px off; the masked refinement pass pastes them on the ground truth."""
    paths, vis = gt_paths()
    q = queries(paths, 0)
    bb = PastingBackbone(paths, vis, coarse_offset=1.2)
    res = track_points(bb, synthetic_clip(), q, settings())
    assert_matches_gt(res, paths, vis, q)
    assert bb.masked_calls > 0
    coarse = track_points(PastingBackbone(paths, vis, coarse_offset=1.2), synthetic_clip(), q,
                          settings(refine=False))
    err = (coarse.track_path - paths).norm(dim=-1)[vis & (torch.arange(T)[:, None] > 0)]
    assert float(err.min()) > 0.7


def test_progress_total_and_interrupt():
    """One bar: the number of progress calls equals sampler_steps; raising in progress stops the run at once."""
    paths, vis = gt_paths()
    q = queries(paths, 10)
    calls = []
    s = settings(points_per_generation=3)
    pp = PointPrompting(PastingBackbone(paths, vis), s, progress=lambda: calls.append(1))
    total = pp.sampler_steps(T, (H, W), q)
    pp.run(synthetic_clip(), q)
    assert len(calls) == total > 0
    # 2 directions (11 frames each) x 2 calls (3+1 points) x 2 windows (0..8, 2..10) x (2 + 1 steps: 0.5, 0.3 of 4)
    assert total == 2 * 2 * 2 * (2 + 1)

    class Stop(Exception):
        pass

    seen = []

    def interrupt():
        seen.append(1)
        if len(seen) == 3:
            raise Stop()
    bb = PastingBackbone(paths, vis)
    with pytest.raises(Stop):
        PointPrompting(bb, s, progress=interrupt).run(synthetic_clip(), q)
    assert len(seen) == 3


def test_multi_marker_groups_and_fallback_log():
    xy = torch.tensor([[10.0, 10.0], [12.0, 10.0], [60.0, 10.0], [10.0, 60.0], [11.0, 11.0]])
    calls, alone = plan_groups(xy, range(5), "multi-marker", 4, 16.0)
    gens = [g for c in calls for g in c.generations]
    assert sorted(i for g in gens for i in g) == list(range(5))
    for g in gens:
        for a in g:
            for b in g:
                assert a == b or float((xy[a] - xy[b]).norm()) >= 16
    assert gens[0] == [0, 2, 3] and alone == [1, 4]
    assert calls[-1].generations == [[1], [4]]           # the close ones batched together
    paths, vis = gt_paths()
    q = queries(paths, 0)
    q[1, 1:] = q[0, 1:] + torch.tensor([3.0, 0.0])
    pp = PointPrompting(PastingBackbone(paths, vis), settings(mode="multi-marker"))
    _, log = pp.plan(T, (H, W), q)
    assert any("point(s) [1]" in line and "batched" in line for line in log)


def test_clips_kept_and_confidence():
    paths, vis = gt_paths()
    q = queries(paths, 0)
    res = track_points(PastingBackbone(paths, vis), synthetic_clip(), q, settings(points_per_generation=4))
    assert len(res.clips) == 4 * 3                        # 4 generations x 3 windows
    assert res.clips[0].shape == (9, H, W, 3)
    assert torch.all(res.confidence[~vis] == 0)
    assert float(res.point_confidence.min()) > 0.5
    res2 = track_points(PastingBackbone(paths, vis), synthetic_clip(), q, settings(points_per_generation=4),
                        keep_clips="first")
    assert len(res2.clips) == 3                           # the first generation's 3 windows
    assert res.generations == 4 and res.sampler_calls == 2 * 3
    pp = PointPrompting(PastingBackbone(paths, vis), settings(points_per_generation=4))
    assert pp.clip_frames(T, (H, W), q) == sum(c.shape[0] for c in res.clips) == 4 * 3 * 9


def test_bad_inputs_name_the_input():
    paths, vis = gt_paths()
    bb = PastingBackbone(paths, vis)
    with pytest.raises(ValueError, match="points"):
        track_points(bb, synthetic_clip(), torch.tensor([[0.0, 200.0, 5.0]]), settings())
    with pytest.raises(ValueError, match="images"):
        track_points(bb, synthetic_clip()[:1], torch.tensor([[0.0, 5.0, 5.0]]), settings())
    with pytest.raises(ValueError, match="overlap"):
        track_points(bb, synthetic_clip(), queries(paths, 0), settings(overlap=9))
    for bad in ((0.2, 0.9, 0.2), (0.55, 0.45, 0.45), (1.0, 0.6, 0.6), (0.2, 0.0, 0.0)):
        with pytest.raises(ValueError, match="marker_color"):
            check_marker_color(bad)
    check_marker_color(RED)
    with pytest.raises(ValueError, match="mode"):
        settings(mode="nope").check()
    with pytest.raises(ValueError, match="noise_level"):
        settings(noise_level=math.nan).check()


def test_exclusive_tracker_gives_one_blob_to_one_point():
    """Two markers 10 px apart; the second vanishes on frame 1. Without exclusivity both points take the first
    marker's blob; with it the point that was there keeps it and the other is occluded."""
    clip = torch.full((3, 32, 48, 3), 0.5)
    clip[..., 0] = 0.2
    first = torch.tensor([[0.0, 15.0, 16.0], [0.0, 25.0, 16.0]])
    clip = draw_markers(clip, torch.tensor([[0.0, 15.0, 16.0], [0.0, 25.0, 16.0], [1.0, 16.0, 16.0],
                                            [2.0, 17.0, 16.0]]), RED, 2.0)
    from vdtrack.kernels.red_tracker import track_red_markers
    p, v = track_red_markers(clip, first, 20.0, 1.5, 6.0)
    assert bool(v[1:].all()) and float((p[1, 1] - p[1, 0]).norm()) < 0.5
    p, v = track_red_markers(clip, first, 20.0, 1.5, 6.0, exclusive=True)
    assert v[1:, 0].all() and not v[1:, 1].any()
    assert torch.allclose(p[1:, 0], torch.tensor([[16.0, 16.0], [17.0, 16.0]]), atol=0.05)
    assert torch.equal(p[2, 1], first[1, 1:])
