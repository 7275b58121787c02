"""ComfyUI-native Cosmos-Predict2 adapter on a tiny Video2World DiT loaded with comfy.sd.load_diffusion_model."""
from __future__ import annotations

import pytest
import torch

from comfy.ldm.cosmos.predict2 import apply_rotary_pos_emb

from vdt_dev.backbone_checks import (assert_capture_read_only, assert_flow_noise, assert_repeatable, assert_unchanged,
                             centre_latent_mask, denoised, denoised_at, euler, first_frame_conds, guided,
                             model_state, red_square, sdedit_sigmas)
from vdtrack.backbones import schedules
from vdtrack.backbones.comfy_cosmos import (ComfyCosmosBackbone, CosmosCapture, cosmos_rope_groups,
                                            inverse_rope_half)
from vdtrack.backbones.comfy_native import backbone_from_model
from vdtrack.backbones.protocol import FeatureSpec, VideoBackbone
from vdtrack.nodes.diffusion import VDT_CounterfactualRegenerate, VDT_ExtractDiffusionFeatures

from .conftest import synthetic_clip


@pytest.fixture(scope="module")
def bb(cosmos, wan_vae):
    return ComfyCosmosBackbone(cosmos, wan_vae)


def _call(bb, x0, sigma, conds, seed=0, capture=None, dit_input=None):
    """One cfg-1 ComfyUI model call at sigma on x0 noised by the sampler, each branch's first frame written by the
    adapter's wrapper; returns the denoised prediction."""
    return denoised(bb.model, x0, sigma, conds, seed=seed, capture=capture, model_input=dit_input,
                    first_frames=True)["den"]


def test_protocol_attributes_and_dispatch(cosmos, wan_vae, bb):
    assert isinstance(bb, VideoBackbone)
    assert isinstance(backbone_from_model(cosmos, wan_vae), ComfyCosmosBackbone)
    assert (bb.family, bb.num_layers, bb.num_heads, bb.head_dim) == ("cosmos", 10, 16, 12)
    assert bb.spatial_stride == 16 and bb.temporal_compression == 4 and bb.default_window == 25
    assert bb.image_input and bb.text_dim == 1024
    assert bb.rope_groups == (4, 4, 4) and cosmos_rope_groups(128) == (44, 42, 42)     # 2B: HeFT's rope_dim
    with pytest.raises(ValueError, match="vae"):
        ComfyCosmosBackbone(cosmos, object())


def test_schedule_matches_comfy_model_sampling(bb, cosmos):
    ms = cosmos.get_model_object("model_sampling")
    for noise_level in (0.05, 0.3, 0.5, 0.9, 0.999):          # (percent_to_sigma(0) is ComfyUI's "infinite" sigma)
        s = bb.sigma_at(noise_level)
        assert s == pytest.approx(ms.percent_to_sigma(1.0 - noise_level), rel=1e-5)
        t = bb.timestep_from_noise_level(noise_level)
        assert t == pytest.approx(1000 * float(ms.timestep(torch.tensor(s))), rel=1e-5)
        assert bb.noise_level_from_timestep(t) == pytest.approx(noise_level, abs=1e-6)
    assert bb.sigma_at(1.0) == pytest.approx(80.0) and bb.timestep_from_noise_level(0.0) == 0.0
    assert_flow_noise(bb, bb.flow_t)


def test_dit_sees_noise_to(bb):
    """Through ComfyUI's real model_sampling: the DiT input is noise_to(x0) (x0 + sigma eps over 1 + sigma)."""
    x0 = bb.encode(synthetic_clip(5, 32, 32))
    seen = []
    _call(bb, x0, bb.sigma_at(0.4), bb._conds(None, {}), seed=7, dit_input=seen)
    assert seen[0].shape[1] == 17                          # latent + Video2World condition-mask channel
    assert torch.allclose(seen[0][:, :16], bb.noise_to(x0, 0.4, seed=7), atol=1e-5)
    assert torch.equal(seen[0][:, 16:], torch.zeros_like(seen[0][:, 16:]))     # HeFT: no image conditioning


def test_empty_prompt_length_does_not_matter(bb):
    x0 = bb.encode(synthetic_clip(5, 32, 32))
    short = _call(bb, x0, 1.5, [[torch.zeros(1, 8, 1024), {}]])
    full = _call(bb, x0, 1.5, [[torch.zeros(1, 512, 1024), {}]])
    assert torch.allclose(short, full, atol=1e-5)


def test_capture_is_read_only_and_repeatable(bb, cosmos):
    before = model_state(cosmos)
    x0 = bb.encode(synthetic_clip(9, 32, 48))
    conds = bb._conds(None, {})
    spec = FeatureSpec([1, 3], kinds=("block", "q", "k"))
    cap = CosmosCapture(spec, bb.num_heads, stop_early=False)
    assert_capture_read_only(cosmos, x0, 0.6, conds, cap, first_frames=True)
    assert set(cap.store) == {"block1", "q1", "k1", "block3", "q3", "k3"} and cap.blocks_run == list(range(10))
    assert_repeatable(bb, synthetic_clip(9, 32, 48), 0.3, spec, 5)
    assert_unchanged(before, model_state(cosmos))


def test_qk_and_block_match_the_module(bb, cosmos):
    """References from temporary forward hooks (removed in finally): k_norm output = k before RoPE, the
    block's output; RoPE applied with predict2's own function."""
    dm = cosmos.model.diffusion_model
    clip = synthetic_clip(5, 32, 48)
    ref = {}
    hs = [dm.blocks[4].self_attn.k_norm.register_forward_hook(lambda m, a, o: ref.setdefault("k", o.detach())),
          dm.blocks[4].register_forward_hook(lambda m, a, o: ref.setdefault("block", o.detach()))]
    try:
        after = bb.features(clip, 0.2, FeatureSpec([4], kinds=("k", "block"), rope="after"), seed=1)
    finally:
        for h in hs:
            h.remove()
    before = bb.features(clip, 0.2, FeatureSpec([4], kinds=("k",), rope="before"), seed=1)["k4"]
    t, hh, ww = 2, 2, 3
    k_ref = ref["k"]                                                  # [1, L, heads, d]
    freqs = dm.pos_embedder.generate_embeddings(torch.Size((1, t, hh, ww, 192)), device=k_ref.device)
    k_after = apply_rotary_pos_emb(k_ref, freqs.unsqueeze(1).unsqueeze(0))
    grid = lambda k: k[0].reshape(t, hh, ww, 16, 12).permute(0, 3, 4, 1, 2)[0]
    assert torch.allclose(before["features"][0], grid(k_ref), atol=1e-4)
    assert torch.allclose(after["k4"]["features"][0], grid(k_after), atol=1e-4)
    assert not torch.allclose(before["features"][0], after["k4"]["features"][0], atol=1e-3)
    assert torch.allclose(after["block4"]["features"][0], ref["block"][0, 0].permute(2, 0, 1), atol=1e-5)
    assert torch.allclose(inverse_rope_half(k_after, freqs.unsqueeze(1)), k_ref, atol=1e-5)


def test_stop_early_runs_fewer_blocks(bb, cosmos):
    dm = cosmos.model.diffusion_model
    calls = []
    hs = [blk.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, blk in enumerate(dm.blocks)]
    try:
        clip = synthetic_clip(5, 32, 32)
        bb.features(clip, 0.5, FeatureSpec([0], kinds=("block",)), seed=0)
        assert calls == [0]
        calls.clear()
        bb.features(clip, 0.5, FeatureSpec([2], kinds=("k",)), seed=0)
        assert calls == [0, 1, 2] and bb.last_blocks_run == [0, 1, 2]
        calls.clear()
        bb.features(clip, 0.5, FeatureSpec([6, 1], kinds=("block", "q")), seed=0)
        assert calls == list(range(7))
    finally:
        for h in hs:
            h.remove()


def test_windows_agree_with_single_window_runs(bb):
    clip = synthetic_clip(13, 32, 32, seed=3)
    spec = FeatureSpec([3], kinds=("k", "block"), window=9, overlap=4)
    long = bb.features(clip, 0.3, spec, seed=2)
    assert long["k3"]["meta"]["windows"] == 2 and long["k3"]["features"].shape == (13, 16, 12, 2, 2)
    # windows: frames 0-8 keep 0-6, frames 4-12 keep 7-12
    first = bb.features(clip[:9], 0.3, FeatureSpec([3], kinds=("k", "block")), seed=2)
    second = bb.features(clip[4:], 0.3, FeatureSpec([3], kinds=("k", "block")), seed=2)
    for key in ("k3", "block3"):
        assert torch.allclose(long[key]["features"][:7], first[key]["features"][:7], atol=1e-5)
        assert torch.allclose(long[key]["features"][7:], second[key]["features"][3:], atol=1e-5)


# ---------------------------------------------------------------- regeneration (Video2World)
@pytest.fixture(scope="module")
def regen_setup(bb):
    clip = synthetic_clip(9, 32, 32, seed=2)
    edited = red_square(clip[:1], 12, 20)
    x0, pos, neg = first_frame_conds(bb, clip, edited)
    return clip, edited, x0, pos, neg


def _reference(bb, x0, noise_level, steps, pos, neg, w, seed, latent_mask=None):
    """Hand-written Euler with ComfyUI's Cosmos inpainting (kept cells are fed as latent*(1+sigma), i.e. clean
    to the DiT) and den = den_pos + w (den_pos - den_neg), each branch its own cfg-1 call."""
    sig = sdedit_sigmas(bb, "karras", steps, noise_level)
    first = pos[0][1]["vdtrack_first_latent"]
    start = x0.clone()
    start[:, :, :1] = first
    keep = torch.ones_like(x0[:, :1])
    keep[:, :, :1] = 0
    mask = keep if latent_mask is None else keep * latent_mask
    x = start + float(sig[0]) * schedules.seeded_noise(x0.shape, seed)

    def den_at(x, s):
        xin = x * mask + start * (1 + s) * (1 - mask)
        raw = lambda conds: denoised_at(bb.model, xin, s, conds, seed=None, first_frames=True)
        den = guided(raw(pos), lambda: raw(neg), w)
        return den * mask + start * (1 - mask)
    return euler(x, sig, den_at)             # k-diffusion Euler steps the sampler's own x


def test_guidance_zero_is_plain_conditional_sampling(bb, regen_setup):
    clip, edited, x0, pos, neg = regen_setup
    out = bb.regenerate_latent(x0, 0.5, pos, neg, 0.0, 4, seed=4)
    ref = _reference(bb, x0, 0.5, 4, pos, neg, 0.0, seed=4)
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.equal(out, bb.regenerate_latent(x0, 0.5, pos, pos, 0.0, 4, seed=4))   # w=0 ignores negative


def test_guidance_formula_with_two_first_frames(bb, regen_setup):
    clip, edited, x0, pos, neg = regen_setup
    out = bb.regenerate_latent(x0, 0.5, pos, neg, 3.0, 4, seed=1)
    ref = _reference(bb, x0, 0.5, 4, pos, neg, 3.0, seed=1)
    assert torch.allclose(out, ref, atol=1e-4)
    assert (out - bb.regenerate_latent(x0, 0.5, pos, pos, 3.0, 4, seed=1)).abs().max() > 1e-3
    assert torch.allclose(out[:, :, :1], pos[0][1]["vdtrack_first_latent"], atol=1e-5)   # known frame = edited image


def test_mask_keeps_original_latent_outside(bb, regen_setup):
    clip, edited, x0, pos, neg = regen_setup
    mask = centre_latent_mask(x0)
    out = bb.regenerate_latent(x0, 0.6, pos, neg, 2.0, 4, latent_mask=mask, seed=0)
    outside = (1 - mask).expand_as(out).clone()
    outside[:, :, :1] = 0                                               # frame 0 = the positive image
    assert ((out - x0) * outside).abs().max() < 1e-5
    assert ((out - x0) * mask).abs().max() > 1e-3


def test_nodes_run_with_cosmos(cosmos, wan_vae):
    clip = synthetic_clip(9, 32, 48)
    f = VDT_ExtractDiffusionFeatures.execute(cosmos, wan_vae, clip, layer=4, kind="k", heads="6",
                                             noise_level=0.05, seed=3).result[0]
    assert f["features"].shape == (9, 1, 12, 2, 3) and f["stride"] == (16.0, 16.0)
    m = f["meta"]
    assert (m["family"], m["layer"], m["rope"], m["heads"], m["rope_groups"]) == ("cosmos", 4, "after", [6], (4, 4, 4))
    c = VDT_ExtractDiffusionFeatures.execute(cosmos, wan_vae, clip, layer=1, kind="block",
                                             condition_on_first_frame=True).result[0]
    assert c["features"].shape == (9, 192, 2, 3)
    edited = red_square(clip[:1], 14, 18)
    out = VDT_CounterfactualRegenerate.execute(cosmos, wan_vae, clip, edited, clip[:1], noise_level=0.5, steps=4,
                                               guidance=2.0, seed=1).result[0]
    assert out.shape == clip.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="layer"):
        VDT_ExtractDiffusionFeatures.execute(cosmos, wan_vae, clip, layer=10)
