"""Point trackers (nearest neighbour, HeFT, DiffTrack): fast == reference on random inputs, and exact answers on
hand-built feature maps."""
import pytest
import torch

from vdtrack.kernels.difftrack import track_difftrack
from vdtrack.references.difftrack import mapping_field_ref, track_difftrack_ref
from vdtrack.kernels.heft_tracker import ema_offsets, track_heft
from vdtrack.references.heft import track_heft_ref
from vdtrack.kernels.nn_tracker import track_nearest_neighbour
from vdtrack.references.nn import track_nearest_neighbour_ref

PATH = [(3, 3), (4, 3), (5, 4), (5, 5), (6, 5), (7, 6)]      # cells (x, y) per frame


def moving_descriptor_clip(stride, occluded=(), c=24, h=10, w=12, seed=0):
    """Static random background with channel 0 zeroed, plus a unique one-hot descriptor (channel 0) moving along
    PATH; cosine(descriptor, background) is exactly 0."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.randn(1, c, h, w, generator=g, dtype=torch.float64)
    bg[:, 0] = 0
    feats = bg.repeat(len(PATH), 1, 1, 1)
    for t, (x, y) in enumerate(PATH):
        if t not in occluded:
            feats[t, :, y, x] = 0
            feats[t, 0, y, x] = 3.0
    px = torch.tensor([[(x + 0.5) * stride - 0.5, (y + 0.5) * stride - 0.5] for x, y in PATH], dtype=torch.float32)
    return feats, px, (h * stride, w * stride)


def random_clip(t=6, c=8, h=6, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(t, c, h, w, generator=g, dtype=torch.float64)
    return f + 0.7 * torch.randn(1, c, h, w, generator=g, dtype=torch.float64)   # shared structure over time


QUERIES = torch.tensor([[0, 5.0, 7.0], [2, 20.3, 11.0], [5, 30.0, 22.0], [1, 0.0, 0.0], [3, 31.4, 23.4]])


# ------------------------------------------------------------------------------------------ nearest neighbour

@pytest.mark.parametrize("refine", [0, 2])
def test_nn_fast_equals_reference(refine):
    f = random_clip()
    kw = dict(threshold=0.75, refine_radius=refine, refine_temperature=0.1)
    fast = track_nearest_neighbour(f, (4, 4), QUERIES, (24, 32), max_elements=100, **kw)
    ref = track_nearest_neighbour_ref(f, (4, 4), QUERIES, (24, 32), **kw)
    assert torch.allclose(fast[0], ref[0], atol=1e-5)
    assert torch.equal(fast[1], ref[1])
    assert torch.allclose(fast[2], ref[2], atol=1e-6)
    assert 0 < fast[1].float().mean() < 1


def test_nn_exact_track_and_occlusion():
    feats, px, size = moving_descriptor_clip(4, occluded=(3,))
    q = torch.tensor([[0, float(px[0, 0]), float(px[0, 1])]])
    path, vis, conf = track_nearest_neighbour(feats, (4, 4), q, size)
    ok = [0, 1, 2, 4, 5]
    assert torch.equal(path[ok, 0], px[ok])
    assert vis[:, 0].tolist() == [True, True, True, False, True, True]
    assert conf[3, 0] == 0 and torch.allclose(conf[ok, 0], torch.ones(5))
    # query in a later frame: the query frame keeps the query point
    q2 = torch.tensor([[4, float(px[4, 0]), float(px[4, 1])]])
    path2, vis2, _ = track_nearest_neighbour(feats, (4, 4), q2, size)
    assert torch.equal(path2[ok, 0], px[ok]) and not vis2[3, 0]


# ------------------------------------------------------------------------------------------ HeFT

@pytest.mark.parametrize("upsample", [True, False])
@pytest.mark.parametrize("fb_mode", ["speculative", "sequential", "batched"])
def test_heft_fast_equals_reference(upsample, fb_mode):
    f = random_clip()
    kw = dict(argmax_radius=5.0, search_radius=9.0, vis_threshold=3.0, alpha=0.1, temperature=0.1,
              upsample=upsample, fb_mode=fb_mode)
    fast = track_heft(f, (4, 4), QUERIES, (24, 32), max_elements=5000, **kw)
    ref = track_heft_ref(f, (4, 4), QUERIES, (24, 32), **kw)
    assert torch.allclose(fast[0], ref[0], atol=1e-4)
    assert torch.equal(fast[1], ref[1])
    assert torch.allclose(fast[2], ref[2], atol=1e-4)
    assert 0 < fast[1].float().mean() < 1        # both visible and occluded steps (unbounded search) were hit
    for n, (t, x, y) in enumerate(QUERIES.tolist()):
        assert fast[0][int(t), n].tolist() == [x, y] and fast[1][int(t), n]


def test_heft_defaults_fast_equals_reference():
    f = random_clip(t=5, c=6, h=6, w=8, seed=3)
    q = QUERIES[:3] * 2
    q[:, 0] = torch.tensor([0.0, 2.0, 4.0])
    fast = track_heft(f, (8, 8), q, (48, 64))
    ref = track_heft_ref(f, (8, 8), q, (48, 64))
    assert torch.allclose(fast[0], ref[0], atol=1e-4) and torch.equal(fast[1], ref[1])


@pytest.mark.parametrize("upsample", [True, False])
def test_heft_exact_track(upsample):
    feats, px, size = moving_descriptor_clip(5)
    for tq in (0, 3):    # the query frame may be in the middle: frames before it are tracked backwards
        q = torch.tensor([[tq, float(px[tq, 0]), float(px[tq, 1])]])
        # at pixel resolution the neighbours of the peak mix in background features: a colder softmax keeps the
        # soft-argmax on the peak (their weight ~exp(-0.07 / 0.002))
        path, vis, err = track_heft(feats, (5, 5), q, size, argmax_radius=4.0, search_radius=20.0,
                                    vis_threshold=2.0, temperature=0.002 if upsample else 0.02, upsample=upsample)
        assert torch.allclose(path[:, 0], px, atol=1e-3)
        assert vis.all() and err.max() < 1e-3


def test_heft_forward_backward_occlusion():
    feats, px, size = moving_descriptor_clip(5, occluded=(3,))
    q = torch.tensor([[0, float(px[0, 0]), float(px[0, 1])]])
    kw = dict(argmax_radius=4.0, search_radius=20.0, vis_threshold=2.0, temperature=0.002)   # see test_heft_exact_track
    path, vis, err = track_heft(feats, (5, 5), q, size, **kw)
    assert vis[:, 0].tolist() == [True, True, True, False, True, True]
    assert err[3, 0] > 2.0
    ok = [0, 1, 2, 4, 5]     # re-found after the occlusion thanks to the unbounded search
    assert torch.allclose(path[ok, 0], px[ok], atol=1e-3)
    ref = track_heft_ref(feats, (5, 5), q, size, **kw)
    assert torch.equal(ref[1], vis) and torch.allclose(ref[0], path, atol=1e-4)


def test_heft_ema_weights():
    off, w = ema_offsets(1, "cpu", torch.float64)
    assert off.shape == (9, 2) and abs(float(w.sum()) - 1) < 1e-12
    e = torch.exp(-torch.tensor([0.0, 3.0, 3 * 2 ** 0.5], dtype=torch.float64))   # exp(-|o| / (1/3))
    expect = e / (e[0] + 4 * e[1] + 4 * e[2])
    assert torch.allclose(w[4], expect[0]) and torch.allclose(w[1], expect[1]) and torch.allclose(w[0], expect[2])


def test_heft_progress_counts():
    f = random_clip(t=5)
    calls = []
    track_heft(f, (4, 4), QUERIES[:2], (24, 32), search_radius=9, fb_mode="batched", progress=lambda: calls.append(1))
    assert len(calls) == 2 * 4          # T-1 forward steps + T-1 batched backward steps (O(T))


def test_heft_no_feedback_keeps_its_old_name():
    f = random_clip(t=5)
    new = track_heft(f, (4, 4), QUERIES[:2], (24, 32), search_radius=9, fb_mode="no_feedback")
    old = track_heft(f, (4, 4), QUERIES[:2], (24, 32), search_radius=9, fb_mode="batched")   # saved workflows
    assert all(torch.equal(a, b) for a, b in zip(new, old))


@pytest.mark.parametrize("upsample", [True, False])
def test_heft_speculative_equals_sequential_and_reference(upsample):
    # longer clip, queries in every part of it (tracks forwards and backwards in time), many visibility flips
    f = random_clip(t=9, seed=7)
    g = torch.Generator().manual_seed(3)
    n = 10
    q = torch.stack([torch.arange(n) % 9, torch.rand(n, generator=g) * 31, torch.rand(n, generator=g) * 23], 1)
    kw = dict(argmax_radius=5.0, search_radius=9.0, vis_threshold=3.0, alpha=0.1, temperature=0.1, upsample=upsample)
    calls = []
    # max_elements this small also splits the points into chunks of 2 tracks
    spec = track_heft(f, (4, 4), q, (24, 32), fb_mode="speculative", max_elements=1100,
                      progress=lambda: calls.append(1), **kw)
    seq = track_heft(f, (4, 4), q, (24, 32), fb_mode="sequential", **kw)
    assert torch.equal(spec[1], seq[1])
    assert torch.allclose(spec[0], seq[0], atol=1e-5) and torch.allclose(spec[2], seq[2], atol=1e-5)
    assert 0.2 < spec[1].float().mean() < 0.8
    # without a surprise it would take one forward + one backward sweep per chunk: here guesses were corrected
    assert len(calls) > 5 * 2 * 8
    ref = track_heft_ref(f, (4, 4), q[:4], (24, 32), fb_mode="sequential", **kw)
    assert torch.equal(spec[1][:, :4], ref[1])
    assert torch.allclose(spec[0][:, :4], ref[0], atol=1e-4) and torch.allclose(spec[2][:, :4], ref[2], atol=1e-4)


def test_heft_speculative_rounds():
    feats, px, size = moving_descriptor_clip(5, occluded=(3,))
    kw = dict(argmax_radius=4.0, search_radius=20.0, vis_threshold=2.0, temperature=0.002)   # see test_heft_exact_track
    for tq in (0, 5):
        q = torch.tensor([[tq, float(px[tq, 0]), float(px[tq, 1])]])
        calls = []
        path, vis, err = track_heft(feats, (5, 5), q, size, progress=lambda: calls.append(1), **kw)
        assert vis[:, 0].tolist() == [True, True, True, False, True, True]
        seq = track_heft(feats, (5, 5), q, size, fb_mode="sequential", **kw)
        assert torch.equal(seq[1], vis) and torch.allclose(seq[0], path, atol=1e-6)
        assert len(calls) > 2 * 5               # the wrong guess (visible at frame 3) forced a restart
    # no occlusion: the all-visible guess is right, so one forward and one backward sweep of 5 steps each
    feats, px, size = moving_descriptor_clip(5)
    calls = []
    q = torch.tensor([[0, float(px[0, 0]), float(px[0, 1])]])
    _, vis, _ = track_heft(feats, (5, 5), q, size, progress=lambda: calls.append(1), **kw)
    assert vis.all() and len(calls) == 2 * 5


# ------------------------------------------------------------------------------------------ DiffTrack

@pytest.mark.parametrize("scale", ["heads", "head_dim", 2.0])
def test_difftrack_fast_equals_reference(scale):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 3, 8, 5, 7, generator=g, dtype=torch.float64)
    k = torch.randn(4, 3, 8, 5, 7, generator=g, dtype=torch.float64)
    pts = torch.tensor([[0, 5.0, 7.0], [2, 20.3, 11.0], [3, 50.0, 30.0], [0, 0.0, 0.0], [0, 55.4, 39.4]])
    fast = track_difftrack(q, k, (8, 8), pts, (40, 56), scale=scale, row_chunk=7)
    ref = track_difftrack_ref(q, k, (8, 8), pts, (40, 56), scale=scale)
    assert torch.allclose(fast[0], ref[0], atol=1e-5)
    assert torch.allclose(fast[2], ref[2], atol=1e-6)
    assert fast[1].all()


def test_difftrack_shifted_map_exact():
    g = torch.Generator().manual_seed(1)
    f0 = torch.randn(2, 32, 8, 10, generator=g, dtype=torch.float64)        # 2 heads, C=32, 8x10 cells
    shifts = [(0, 0), (1, 2), (2, -1)]                                      # (dy, dx) cells per frame
    feats = torch.stack([f0.roll(s, dims=(2, 3)) for s in shifts])          # [3,2,32,8,10]
    stride = 4
    pts = torch.tensor([[0, (4 + 0.5) * stride - 0.5, (3 + 0.5) * stride - 0.5], [0, 17.3, 14.6]])
    path, vis, _ = track_difftrack(feats, None, (stride, stride), pts, (32, 40))
    for t, (dy, dx) in enumerate(shifts):
        expect = pts[:, 1:] + torch.tensor([dx * stride, dy * stride], dtype=torch.float32)
        assert torch.allclose(path[t], expect, atol=1e-5)
    assert vis.all()
    field, _ = mapping_field_ref(feats, None, 0, 1)
    assert field[3, 4].tolist() == [6.0, 4.0]
    # a query in frame 2 (source = its own frame)
    q2 = torch.tensor([[2, 17.3, 14.6]])
    path2, _, _ = track_difftrack(feats, feats, (stride, stride), q2, (32, 40))
    assert torch.allclose(path2[1, 0], q2[0, 1:] + torch.tensor([3 * stride, -1 * stride]), atol=1e-5)


# ------------------------------------------------------------------------------------------ bad inputs

def test_tracker_bad_inputs():
    f = random_clip()
    q = QUERIES[:1]
    with pytest.raises(ValueError, match="threshold"):
        track_nearest_neighbour(f, (4, 4), q, (24, 32), threshold=2.0)
    with pytest.raises(ValueError, match="query_points"):
        track_nearest_neighbour(f, (4, 4), torch.tensor([[0, 40.0, 3.0]]), (24, 32))
    with pytest.raises(ValueError, match="query_points"):
        track_heft(f, (4, 4), torch.tensor([[9, 4.0, 3.0]]), (24, 32))
    with pytest.raises(ValueError, match="search_radius"):
        track_heft(f, (4, 4), q, (24, 32), search_radius=0.1)
    with pytest.raises(ValueError, match="alpha"):
        track_heft(f, (4, 4), q, (24, 32), alpha=1.5)
    with pytest.raises(ValueError, match="fb_mode"):
        track_heft(f, (4, 4), q, (24, 32), fb_mode="both")
    with pytest.raises(ValueError, match="features"):
        track_heft(f[0], (4, 4), q, (24, 32))
    with pytest.raises(ValueError, match="scale"):
        track_difftrack(f, None, (4, 4), q, (24, 32), scale="sqrt")
    with pytest.raises(ValueError, match="key_features"):
        track_difftrack(f, f[:, :4], (4, 4), q, (24, 32))


def test_heft_search_disk_larger_than_frame():
    # the window is clipped to the frame: a huge radius behaves like an unbounded search, at frame-size cost
    f = random_clip(seed=5)
    kw = dict(argmax_radius=5.0, vis_threshold=3.0, alpha=0.1, temperature=0.1)
    big = track_heft(f, (4, 4), QUERIES, (24, 32), search_radius=4000.0, **kw)
    ref = track_heft_ref(f, (4, 4), QUERIES, (24, 32), search_radius=4000.0, **kw)
    assert torch.allclose(big[0], ref[0], atol=1e-4) and torch.equal(big[1], ref[1])
