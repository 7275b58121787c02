"""DiffTrack needs q and k of one layer: kind 'q+k' gives both from one forward pass (tiny Wan, native)."""
from __future__ import annotations

import torch

from vdtrack.nodes.diffusion import VDT_ExtractDiffusionFeatures

from .conftest import synthetic_clip


def test_q_and_k_from_one_pass(wan_t2v, wan_vae, monkeypatch):
    import vdtrack.backbones.comfy_native as native

    clip = synthetic_clip(5, 32, 48)
    bb_cls = type(native.backbone_from_model(wan_t2v, wan_vae))
    calls = []
    orig = bb_cls.features

    def counting(self, frames, noise_level, spec, *a, **k):
        calls.append(spec.kinds)
        return orig(self, frames, noise_level, spec, *a, **k)
    monkeypatch.setattr(bb_cls, "features", counting)
    q, k = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=1, kind="q+k", noise_level=0.1,
                                                seed=3).result
    assert calls == [("q", "k")]
    q1 = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=1, kind="q", noise_level=0.1,
                                              seed=3).result[0]
    k1, again = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=1, kind="k", noise_level=0.1,
                                                     seed=3).result
    assert torch.allclose(q["features"], q1["features"], atol=1e-5)
    assert torch.allclose(k["features"], k1["features"], atol=1e-5)
    assert again is k1 and not torch.allclose(q["features"], k["features"])
