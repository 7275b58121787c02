"""DiffTrack's published anchor chunking: the chunk plan, pass-local anchors, and averaged overlaps."""
import math

import pytest
import torch

from vdtrack.backbones.windows import plan_anchor_chunks
from vdtrack.kernels.difftrack import track_difftrack
from vdtrack.references.difftrack_chunks import track_difftrack_anchor_ref


def test_plan_matches_the_published_loop_by_hand():
    # T = 50, chunks of 13 (anchor + 12): interval 50 // 12 = 4, chunk j = 1+j, 5+j, ..., stride 1, until all of
    # 1..49 were visited: four chunks cover 1..48, a fifth (5..49) adds 49 and revisits 5..45
    c = plan_anchor_chunks(50)
    assert c[0] == list(range(1, 46, 4)) and c[3] == list(range(4, 49, 4))
    assert c[4] == list(range(5, 50, 4)) and len(c) == 5
    assert plan_anchor_chunks(30, strided=False) == [list(range(1, 13)), list(range(13, 25)), list(range(25, 30))]
    assert plan_anchor_chunks(5) == [[1, 2, 3, 4]] and plan_anchor_chunks(1) == []
    with pytest.raises(ValueError, match="chunk_len"):
        plan_anchor_chunks(10, chunk_len=1)


def passes_from(q, k, chunks, anchor_q=None, anchor_k=None):
    """Passes holding frame 0 (or the given per-pass anchors) plus each chunk's frames."""
    out = []
    for j, idx in enumerate(chunks):
        aq = q[0] if anchor_q is None else anchor_q[j]
        ak = k[0] if anchor_k is None else anchor_k[j]
        out.append((torch.tensor(idx), torch.cat([aq[None], q[idx]]), torch.cat([ak[None], k[idx]])))
    return out


def test_same_anchor_single_visits_equals_plain_matching():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 2, 8, 4, 5, generator=g, dtype=torch.float64)
    k = torch.randn(7, 2, 8, 4, 5, generator=g, dtype=torch.float64)
    pts = torch.tensor([[0, 10.0, 7.0], [0, 30.5, 20.0]])
    chunks = plan_anchor_chunks(7, chunk_len=4, strided=False)
    assert sorted(sum(chunks, [])) == list(range(1, 7))
    plain = track_difftrack(q, k, (8, 8), pts, (32, 40))
    anchored = track_difftrack(q, k, (8, 8), pts, (32, 40), anchor_passes=passes_from(q, k, chunks))
    assert torch.allclose(plain[0], anchored[0]) and torch.allclose(plain[2], anchored[2])


def test_each_pass_matches_against_its_own_anchor():
    # frame 0's features differ per pass: in pass j the anchor carries a unique descriptor at cell (1, 1) and the
    # pass's frames carry it at cell (1 + t % 3, 2); the stand-alone frame 0 has it nowhere. Published chunking
    # follows the pass-local anchor.
    t_total, heads, c, h, w = 5, 1, 6, 4, 5
    g = torch.Generator().manual_seed(1)
    bg = torch.randn(1, heads, c, h, w, generator=g, dtype=torch.float64)
    bg[:, :, 0] = 0
    q = bg.repeat(t_total, 1, 1, 1, 1)
    for t in range(1, t_total):
        q[t, :, :, 2, 1 + t % 3] = 0
        q[t, :, 0, 2, 1 + t % 3] = 12.0
    chunks = [[1, 2], [3, 4]]
    anchors = []
    for _ in chunks:
        a = bg[0].clone()
        a[:, :, 1, 1] = 0
        a[:, 0, 1, 1] = 12.0
        anchors.append(a)
    pts = torch.tensor([[0, 1 * 8 + 3.5, 1 * 8 + 3.5]])                # cell (1, 1) centre, stride 8
    path, vis, _ = track_difftrack(q, None, (8, 8), pts, (32, 40), anchor_passes=passes_from(q, q, chunks, anchors,
                                                                                            anchors))
    for t in range(1, t_total):
        assert path[t, 0].tolist() == [(1 + t % 3) * 8 + 3.5, 2 * 8 + 3.5]
    assert bool(vis.all())


def test_averaged_overlaps_equal_the_reference():
    g = torch.Generator().manual_seed(2)
    t_total, heads = 14, 3
    q = torch.randn(t_total, heads, 8, 4, 5, generator=g, dtype=torch.float64)
    k = torch.randn(t_total, heads, 8, 4, 5, generator=g, dtype=torch.float64)
    chunks = plan_anchor_chunks(t_total, chunk_len=5)                  # interval 3: frames 4, 7, 10 in two passes
    assert sum(c.count(7) for c in chunks) == 2
    # per-pass anchors: frame 0 as each pass saw it
    aq = [q[0] + 0.5 * torch.randn_like(q[0]) for _ in chunks]
    ak = [k[0] + 0.5 * torch.randn_like(k[0]) for _ in chunks]
    passes = passes_from(q, k, chunks, aq, ak)
    pts = torch.tensor([[0, 4.0, 5.0], [0, 20.3, 9.9], [0, 35.0, 27.0]])
    fast = track_difftrack(q, k, (8, 8), pts, (32, 40), anchor_passes=passes)
    ref = track_difftrack_anchor_ref(passes, t_total, (8.0, 8.0), pts, math.sqrt(heads))
    assert torch.allclose(fast[0].double(), ref, atol=1e-4)
    single = track_difftrack(q, k, (8, 8), pts, (32, 40), anchor_passes=[(p[0][:1], p[1][:2], p[2][:2])
                                                                        for p in passes] + passes[1:])
    assert not torch.allclose(single[0], fast[0])       # the averaging changes the answer on these inputs


def test_anchor_passes_validation():
    q = torch.randn(4, 1, 4, 3, 3, dtype=torch.float64)
    pts = torch.tensor([[0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="anchor_passes"):
        track_difftrack(q, None, (4, 4), pts, (12, 12), anchor_passes=[(torch.tensor([1, 2]), q[:3], q[:3])])
    with pytest.raises(ValueError, match="anchor_passes"):
        track_difftrack(q, None, (4, 4), pts, (12, 12), anchor_passes=[(torch.tensor([1, 2, 3]), q[:3], q[:3])])
