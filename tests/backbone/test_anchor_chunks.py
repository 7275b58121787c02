"""DiffTrack's published chunking on the tiny CogVideoX: each pass is frame 0 plus the strided frames of a chunk,
the same as running the model on exactly those frames; features carry every pass for the DiffTrack kernel."""
from __future__ import annotations

import pytest
import torch

from vdtrack.backbones.protocol import FeatureSpec
from vdtrack.backbones.windows import plan_anchor_chunks
from vdtrack.kernels.difftrack import track_difftrack

from .conftest import synthetic_clip
from .test_diffusers_backbones import backbones, tiny  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("offline")      # tests/backbone/conftest.py: no network


def test_anchor_passes_are_frame0_plus_each_chunk(backbones):  # noqa: F811
    b = backbones["cogvideox"]
    frames = synthetic_clip(6, 64, 64)
    chunks = plan_anchor_chunks(6, 4)
    assert chunks == [[1, 3, 5], [2, 4]]                 # interval 6 // 3 = 2; the second pass adds 2 and 4
    spec = FeatureSpec(layers=[1], kinds=("q", "k"), window=4, chunking="anchor")
    out = b.features(frames, 0.1, spec, seed=5)
    for key in ("q1", "k1"):
        f = out[key]
        passes = f["anchor_passes"]
        assert [p[0].tolist() for p in passes] == chunks and f["meta"]["chunking"] == "anchor"
        for frames_p, x in passes:
            idx = [0] + frames_p.tolist()
            alone = b.features(frames[idx], 0.1, FeatureSpec(layers=[1], kinds=("q", "k"), window=len(idx)),
                               seed=5)[key]["features"]
            assert torch.allclose(x, alone, atol=1e-5)       # a pass is the model run on exactly these frames
        per = f["features"]
        assert torch.equal(per[0], passes[0][1][0]) and torch.equal(per[3], passes[0][1][2])
        assert torch.equal(per[4], passes[1][1][2])
        assert not torch.allclose(passes[0][1][0], passes[1][1][0])   # frame 0 differs with its company
    pts = torch.tensor([[0, 20.0, 30.0]])
    anchor = [(fr, q, k) for (fr, q), (_, k) in zip(out["q1"]["anchor_passes"], out["k1"]["anchor_passes"])]
    path, vis, _ = track_difftrack(out["q1"]["features"], out["k1"]["features"], out["q1"]["stride"], pts, (64, 64),
                                   anchor_passes=anchor)
    assert path.shape == (6, 1, 2) and bool(vis.all())


def test_anchor_chunking_needs_one_latent_per_frame(tiny):  # noqa: F811
    from vdtrack.backbones.diffusers_common import load_backbone

    b = load_backbone(tiny["tiny_cogvideox"]["folder"], frame_as_latent=False)
    with pytest.raises(ValueError, match="chunking"):
        b.features(synthetic_clip(5, 64, 64), 0.1, FeatureSpec(layers=[1], kinds=("k",), chunking="anchor"), 0)
    with pytest.raises(ValueError, match="chunking"):
        FeatureSpec(layers=[1], chunking="strided")


def test_extract_node_q_and_k_in_one_pass_and_difftrack_node(backbones, monkeypatch):  # noqa: F811
    from vdtrack.nodes.backbone import VDT_ExtractBackboneFeatures
    from vdtrack.nodes.tracking import VDT_TrackDiffTrack

    b = backbones["cogvideox"]
    calls = []
    orig = type(b)._window_features

    def counting(self, frames, *a, **k):
        calls.append(frames.shape[0])
        return orig(self, frames, *a, **k)
    monkeypatch.setattr(type(b), "_window_features", counting)
    frames = synthetic_clip(6, 64, 64)
    q, k = VDT_ExtractBackboneFeatures.execute(b, frames, noise_level=0.1, layer=1, kind="q+k", window=4,
                                               seed=5).result
    assert calls == [4, 3]                       # auto = anchor for CogVideoX q/k: two passes for q AND k together
    assert q["meta"]["kind"] == "q" and k["meta"]["kind"] == "k" and len(q["anchor_passes"]) == 2
    tracks = VDT_TrackDiffTrack.execute(q, "20,30", key_features=k).result[0]
    anchor = [(fr, pq, pk) for (fr, pq), (_, pk) in zip(q["anchor_passes"], k["anchor_passes"])]
    want = track_difftrack(q["features"], k["features"], q["stride"], torch.tensor([[0, 20.0, 30.0]]), (64, 64),
                           anchor_passes=anchor)[0]
    assert torch.allclose(tracks["track_path"], want)
    calls.clear()
    blk, same = VDT_ExtractBackboneFeatures.execute(b, frames, noise_level=0.1, layer=1, kind="block", window=4,
                                                    overlap=0, seed=5).result
    assert blk is same and "anchor_passes" not in blk and calls == [4, 4]      # plain windows for block output
    with pytest.raises(ValueError, match="chunking"):
        VDT_ExtractBackboneFeatures.execute(b, frames, layer=1, kind="q", chunking="strided")
