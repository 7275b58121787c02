"""ComfyUI-native Wan adapter on tiny models loaded through ComfyUI's own loaders."""
from __future__ import annotations

import pytest
import torch

from comfy.ldm.flux.math import apply_rope1

from vdt_dev.backbone_checks import (assert_capture_read_only, assert_flow_noise, assert_repeatable, assert_stops_early,
                             assert_unchanged, centre_latent_mask, counting_blocks, denoised, denoised_at, euler,
                             first_frame_conds, guided, model_state, red_square, sdedit_sigmas)
from vdtrack.backbones.capture import DitCapture, inverse_rope
from vdtrack.backbones.comfy_wan import ComfyWanBackbone
from vdtrack.backbones.protocol import FeatureSpec, ImageCond, VideoBackbone

from .conftest import synthetic_clip


def test_protocol_attributes(wan_t2v, wan_vae):
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    assert isinstance(bb, VideoBackbone)
    assert (bb.family, bb.num_layers, bb.num_heads, bb.head_dim) == ("wan", 4, 2, 128)
    assert bb.spatial_stride == 16 and bb.temporal_compression == 4 and bb.default_window == 81
    assert bb.rope_groups == (44, 42, 42)


def test_capture_is_read_only_and_leaves_model_unchanged(wan_t2v, wan_vae):
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    before = model_state(wan_t2v)
    x0 = bb.encode(synthetic_clip(9, 32, 48))
    conds = bb._conds(None, {})
    spec = FeatureSpec([1, 3], kinds=("block", "q", "k"))
    cap = DitCapture(spec, bb.num_heads, stop_early=False)
    assert_capture_read_only(wan_t2v, x0, 0.6, conds, cap)
    assert set(cap.store) == {"block1", "q1", "k1", "block3", "q3", "k3"}
    assert_repeatable(bb, synthetic_clip(9, 32, 48), 0.3, spec, 5)
    assert_unchanged(before, model_state(wan_t2v))


def test_noised_latent_seen_by_model_is_noise_to(wan_t2v, wan_vae):
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    x0 = bb.encode(synthetic_clip(5, 32, 32))
    noise_level = 0.4
    seen = denoised(wan_t2v, x0, bb.sigma_at(noise_level), bb._conds(None, {}), seed=7)["x"]
    # KSAMPLER hands the sampler the noised latent in model space
    assert torch.allclose(seen, bb.noise_to(x0, noise_level, seed=7), atol=1e-5)


def test_qk_after_and_before_rope_match_the_module(wan_t2v, wan_vae):
    """Reference: a temporary forward hook on block 2's norm_k (removed in finally) gives k before RoPE."""
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    clip = synthetic_clip(5, 32, 48)
    dm = wan_t2v.model.diffusion_model
    ref = {}
    h = dm.blocks[2].self_attn.norm_k.register_forward_hook(lambda m, a, o: ref.setdefault("k", o.detach()))
    try:
        after = bb.features(clip, 0.2, FeatureSpec([2], kinds=("k",), rope="after"), seed=1)["k2"]
    finally:
        h.remove()
    before = bb.features(clip, 0.2, FeatureSpec([2], kinds=("k",), rope="before"), seed=1)["k2"]
    x0 = bb.encode(clip)
    t, hh, ww = x0.shape[2], x0.shape[3] // 2, x0.shape[4] // 2
    k_ref = ref["k"].reshape(1, t * hh * ww, 2, 128)
    freqs = dm.rope_encode(t, hh * 2, ww * 2, device=k_ref.device, dtype=k_ref.dtype)
    k_ref_after = apply_rope1(k_ref, freqs)
    # features are per video frame; video frame 0 is latent frame 0 exactly
    grid = lambda k: k[0].reshape(t, hh, ww, 2, 128).permute(0, 3, 4, 1, 2)[0]
    assert torch.allclose(before["features"][0], grid(k_ref), atol=1e-4)
    assert torch.allclose(after["features"][0], grid(k_ref_after), atol=1e-4)
    assert not torch.allclose(before["features"][0], after["features"][0], atol=1e-3)
    # inverse_rope undoes apply_rope1
    assert torch.allclose(inverse_rope(k_ref_after, freqs), k_ref, atol=1e-5)


def test_stop_early_runs_fewer_blocks(wan_t2v, wan_vae):
    calls = []
    bb = ComfyWanBackbone(counting_blocks(wan_t2v, 4, calls), wan_vae)
    assert_stops_early(bb, synthetic_clip(5, 32, 32), calls, [
        (FeatureSpec([0], kinds=("block",)), [0]),
        (FeatureSpec([2], kinds=("k",)), [0, 1, 2]),
        (FeatureSpec([3, 1], kinds=("block", "k")), [0, 1, 2, 3]),
    ])


def test_level_timestep_round_trip_and_noise_statistics(wan_t2v, wan_vae):
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    ms = wan_t2v.get_model_object("model_sampling")
    for noise_level in (0.0, 0.1, 0.5, 0.93, 1.0):
        t = bb.timestep_from_noise_level(noise_level)
        assert bb.noise_level_from_timestep(t) == pytest.approx(noise_level, abs=1e-9)
        assert bb.sigma_at(noise_level) == pytest.approx(ms.percent_to_sigma(1.0 - noise_level), abs=1e-6)
    assert bb.timestep_from_noise_level(0.5) == pytest.approx(1000 * 8 * 0.5 / (1 + 7 * 0.5))
    assert_flow_noise(bb, bb.sigma_at)
    z = torch.zeros(1, 16, 8, 32, 32)
    assert torch.equal(bb.noise_to(z, 0.0, seed=1), z)


def _reference_guided_euler(bb, x0, noise_level, steps, pos, neg, w, seed):
    """Plain Euler on den = den_pos + w (den_pos - den_neg), each branch a separate cfg-1 ComfyUI call."""
    sig = sdedit_sigmas(bb, "simple", steps, noise_level)
    den_at = lambda x, s: guided(denoised_at(bb.model, x, s, pos), lambda: denoised_at(bb.model, x, s, neg), w)
    return euler(bb.noise_to(x0, noise_level, seed), sig, den_at)


@pytest.fixture()
def i2v_setup(wan_i2v, wan_vae):
    bb = ComfyWanBackbone(wan_i2v, wan_vae)
    clip = synthetic_clip(9, 32, 32, seed=2)
    x0, pos, neg = first_frame_conds(bb, clip, red_square(clip[:1], 12, 16))
    return bb, clip, x0, pos, neg


def test_guidance_zero_is_plain_conditional_sampling(i2v_setup):
    bb, clip, x0, pos, neg = i2v_setup
    out = bb.regenerate_latent(x0, 0.5, pos, neg, 0.0, 8, seed=4)
    ref = _reference_guided_euler(bb, x0, 0.5, 8, pos, neg, 0.0, seed=4)
    assert torch.allclose(out, ref, atol=1e-4)
    out_neg = bb.regenerate_latent(x0, 0.5, pos, pos, 0.0, 8, seed=4)
    assert torch.equal(out, out_neg)          # w = 0 never looks at the negative


def test_guidance_formula_pos_plus_w_pos_minus_neg(i2v_setup):
    bb, clip, x0, pos, neg = i2v_setup
    out = bb.regenerate_latent(x0, 0.5, pos, neg, 3.0, 6, seed=1)
    ref = _reference_guided_euler(bb, x0, 0.5, 6, pos, neg, 3.0, seed=1)
    assert torch.allclose(out, ref, atol=1e-4)
    plain = bb.regenerate_latent(x0, 0.5, pos, neg, 0.0, 6, seed=1)
    assert (out - plain).abs().max() > 1e-3


def test_mask_keeps_original_latent_outside(i2v_setup):
    bb, clip, x0, pos, neg = i2v_setup
    mask = centre_latent_mask(x0)
    out = bb.regenerate_latent(x0, 0.6, pos, neg, 2.0, 6, latent_mask=mask, seed=0)
    assert ((out - x0) * (1 - mask)).abs().max() < 1e-5
    assert ((out - x0) * mask).abs().max() > 1e-3


def test_regenerate_frames_shape_progress_and_validation(i2v_setup, wan_t2v, wan_vae):
    bb, clip, x0, pos, neg = i2v_setup
    ticks = []
    video = bb.regenerate(clip[:7], 0.5, ImageCond(clip[:1]), ImageCond(clip[:1]), 1.0, 8,
                          mask=torch.ones(7, 32, 32), seed=0, progress=lambda: ticks.append(1))
    assert video.shape == (7, 32, 32, 3) and len(ticks) == bb.regen_steps(0.5, 8) == 4
    assert torch.isfinite(video).all()
    t2v = ComfyWanBackbone(wan_t2v, wan_vae)
    with pytest.raises(ValueError, match="model"):
        t2v.regenerate(clip, 0.5, ImageCond(clip[:1]), ImageCond(clip[:1]), 1.0, 4)


def test_i2v_with_clip_needs_clip_vision(wan_i2v_clip, wan_vae):
    bb = ComfyWanBackbone(wan_i2v_clip, wan_vae)
    assert bb.uses_clip and bb.image_input
    clip = synthetic_clip(5, 32, 32)
    with pytest.raises(ValueError, match="clip_vision"):
        bb.regenerate(clip, 0.5, ImageCond(clip[:1]), ImageCond(clip[:1]), 1.0, 4)

    class CVO:
        penultimate_hidden_states = torch.randn(1, 257, 1280) * 0.1
    out = bb.regenerate(clip, 0.5, ImageCond(clip[:1], CVO()), ImageCond(clip[:1], CVO()), 1.0, 4)
    assert out.shape == clip.shape


def test_resizes_to_model_grid_and_reports_stride(wan_t2v, wan_vae):
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    f = bb.features(synthetic_clip(5, 30, 50), 0.1, FeatureSpec([0], kinds=("k",), heads=[0]), seed=0)["k0"]
    assert f["features"].shape == (5, 1, 128, 2, 3)          # 32x48 model size -> 2x3 tokens
    assert f["frame_size"] == (30, 50) and f["stride"] == pytest.approx((15.0, 50 / 3))
    with pytest.raises(ValueError, match="layer"):
        bb.features(synthetic_clip(5, 32, 32), 0.1, FeatureSpec([4]), seed=0)
    with pytest.raises(ValueError, match="vae"):
        ComfyWanBackbone(wan_t2v, object())
