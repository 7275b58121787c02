"""The two diffusion nodes via execute(), on tiny models loaded with ComfyUI's own loaders."""
from __future__ import annotations

import pytest
import torch

from vdtrack.nodes.diffusion import VDT_CounterfactualRegenerate, VDT_ExtractDiffusionFeatures
from vdtrack.nodes.features import VDT_SelectHeadsFrequencies

from .conftest import synthetic_clip


def test_extract_features_node(wan_t2v, wan_vae):
    clip = synthetic_clip(9, 32, 48)
    out = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=2, kind="k", heads="1",
                                               noise_level=0.1, seed=3).result[0]
    assert out["features"].shape == (9, 1, 128, 2, 3)
    assert out["stride"] == (16.0, 16.0) and out["frame_size"] == (32, 48)
    m = out["meta"]
    assert (m["layer"], m["kind"], m["rope"], m["heads"], m["rope_groups"]) == (2, "k", "after", [1], (44, 42, 42))
    again = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=2, kind="k", heads="1",
                                                 noise_level=0.1, seed=3).result[0]
    assert torch.equal(out["features"], again["features"])
    # heads are the model's head ids end to end: extract head 1, then select head 1 (not position 0)
    sel = VDT_SelectHeadsFrequencies.execute(out, "1", "44,42,42", 0.15, 1.0, "contiguous", 1.0).result[0]
    # int(0.15 * 44) = int(0.15 * 42) = 6 bands dropped from each RoPE group
    assert sel["meta"]["heads"] == [1] and sel["features"].shape[:2] == (9, (44 - 6) + 2 * (42 - 6))
    with pytest.raises(ValueError, match=r"heads: \[0\] not among the heads these features hold \[1\]"):
        VDT_SelectHeadsFrequencies.execute(out, "0", "44,42,42", 0.15, 1.0, "contiguous", 1.0)
    block = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=0, kind="block").result[0]
    assert block["features"].shape == (9, 256, 2, 3)


def test_timestep_takes_precedence_over_noise_level(wan_t2v, wan_vae):
    clip = synthetic_clip(5, 32, 32)
    a = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=1, noise_level=0.9, timestep=500).result[0]
    assert a["meta"]["timestep"] == pytest.approx(500.0)
    assert a["meta"]["noise_level"] == pytest.approx(0.5 / (8 - 7 * 0.5))
    b = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=1,
                                             noise_level=a["meta"]["noise_level"]).result[0]
    assert torch.allclose(a["features"], b["features"], atol=1e-5)



def test_both_extraction_nodes_keep_old_off_values(wan_t2v, wan_vae):
    """One convention for 'no timestep': 0 (Extract Diffusion Features' old value) and -1 (Extract Backbone
    Features' old value) both mean 'use noise_level' in both nodes, and the two nodes give the same features for
    the same settings on the same model (the backbone node over the ComfyUI-native adapter)."""
    from vdtrack.backbones.comfy_native import backbone_from_model
    from vdtrack.nodes.backbone import VDT_ExtractBackboneFeatures

    clip = synthetic_clip(5, 32, 32)
    kw = dict(layer=1, kind="block", noise_level=0.3, window=0, overlap=0, seed=4)
    ref = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, timestep=0, **kw).result[0]
    assert ref["meta"]["noise_level"] == pytest.approx(0.3)
    backbone = backbone_from_model(wan_t2v, wan_vae)
    for old in (0, -1):
        d = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, timestep=old, **kw).result[0]
        b = VDT_ExtractBackboneFeatures.execute(backbone, clip, timestep=old, **kw).result[0]
        for f in (d, b):
            assert f["meta"]["noise_level"] == pytest.approx(0.3)
            assert torch.equal(f["features"], ref["features"]), old
    # a timestep takes precedence in both, converted by the same rule
    d = VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, timestep=500, **kw).result[0]
    b = VDT_ExtractBackboneFeatures.execute(backbone, clip, timestep=500, **kw).result[0]
    assert d["meta"]["noise_level"] == b["meta"]["noise_level"] == pytest.approx(0.5 / (8 - 7 * 0.5))
    assert torch.equal(d["features"], b["features"])

def test_extract_validation(wan_t2v, wan_vae):
    clip = synthetic_clip(5, 32, 32)
    with pytest.raises(ValueError, match="model"):
        VDT_ExtractDiffusionFeatures.execute(object(), wan_vae, clip, layer=1)
    with pytest.raises(ValueError, match="layer"):
        VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=18)
    with pytest.raises(ValueError, match="heads"):
        VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=1, heads="a")
    with pytest.raises(ValueError, match="heads"):
        VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, clip, layer=1, heads="5")
    bad = clip.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images"):
        VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, bad, layer=1)
    with pytest.raises(ValueError, match="overlap"):
        VDT_ExtractDiffusionFeatures.execute(wan_t2v, wan_vae, synthetic_clip(12, 32, 32), layer=1, window=5,
                                             overlap=5)
    # the heads text is read by the same parser as Select Heads/Frequencies' (empty = all heads, as before)
    assert VDT_ExtractDiffusionFeatures.validate_inputs(heads="") is True
    assert VDT_ExtractDiffusionFeatures.validate_inputs(heads="1, 6") is True
    assert VDT_ExtractDiffusionFeatures.validate_inputs(heads="1,-6").startswith("heads:")


def test_counterfactual_regenerate_node(wan_i2v, wan_vae):
    clip = synthetic_clip(9, 32, 32)
    edited = clip[:1].clone()
    edited[0, 14:18, 14:18] = torch.tensor([1.0, 0.0, 0.0])
    out = VDT_CounterfactualRegenerate.execute(wan_i2v, wan_vae, clip, edited, clip[:1], noise_level=0.5,
                                               steps=4, guidance=8.0, seed=1).result[0]
    assert out.shape == clip.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    again = VDT_CounterfactualRegenerate.execute(wan_i2v, wan_vae, clip, edited, clip[:1], noise_level=0.5,
                                                 steps=4, guidance=8.0, seed=1).result[0]
    assert torch.equal(out, again)
    mask = torch.zeros(9, 32, 32)
    mask[:, 8:24, 8:24] = 1
    masked = VDT_CounterfactualRegenerate.execute(wan_i2v, wan_vae, clip, edited, clip[:1], noise_level=0.5,
                                                  steps=4, guidance=8.0, seed=1, mask=mask).result[0]
    assert masked.shape == clip.shape


def test_regenerate_validation(wan_i2v, wan_t2v, wan_vae):
    clip = synthetic_clip(5, 32, 32)
    with pytest.raises(ValueError, match="mask"):
        VDT_CounterfactualRegenerate.execute(wan_i2v, wan_vae, clip, clip[:1], clip[:1], steps=2,
                                             mask=torch.zeros(5, 32, 32))
    with pytest.raises(ValueError, match="mask"):
        VDT_CounterfactualRegenerate.execute(wan_i2v, wan_vae, clip, clip[:1], clip[:1], steps=2,
                                             mask=torch.ones(3, 32, 32))
    with pytest.raises(ValueError, match="edited_first_frame"):
        VDT_CounterfactualRegenerate.execute(wan_i2v, wan_vae, clip, synthetic_clip(1, 16, 16), clip[:1], steps=2)
    with pytest.raises(ValueError, match="model"):
        VDT_CounterfactualRegenerate.execute(wan_t2v, wan_vae, clip, clip[:1], clip[:1], steps=2)
