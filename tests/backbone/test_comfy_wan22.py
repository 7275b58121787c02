"""ComfyUI-native Wan adapter on a tiny Wan 2.2 TI2V 5B-layout model (48-channel latent, 16x VAE): features per
video frame at 32 px, read-only capture, early stop, and TI2V counterfactual regeneration where each CFG branch
sees its own first frame (Wan22ImageToVideoLatent's latent + noise-mask conditioning)."""
from __future__ import annotations

import pytest
import torch

import comfy.samplers

from vdt_dev.backbone_checks import (assert_capture_read_only, assert_repeatable, assert_stops_early, assert_unchanged,
                             centre_latent_mask, counting_blocks, denoised_at, euler, first_frame_conds, guided,
                             model_state, one_call, red_square, sdedit_sigmas)
from vdtrack.backbones import schedules
from vdtrack.backbones.capture import DitCapture
from vdtrack.backbones.comfy_native import backbone_from_model
from vdtrack.backbones.comfy_wan import FIRST_LATENT_KEY, ComfyWanBackbone
from vdtrack.backbones.protocol import FeatureSpec, ImageCond, VideoBackbone
from vdtrack.nodes.diffusion import VDT_CounterfactualRegenerate, VDT_ExtractDiffusionFeatures

from .conftest import synthetic_clip


@pytest.fixture(scope="module")
def bb(wan22, wan22_vae):
    return ComfyWanBackbone(wan22, wan22_vae)


def _marked(img: torch.Tensor) -> torch.Tensor:
    return red_square(img, 20, 44)


def test_detected_as_wan22_ti2v_with_32px_tokens(bb, wan22, wan22_vae):
    assert type(wan22.model).__name__ == "WAN22" and wan22.model.latent_format.latent_channels == 48
    assert wan22_vae.latent_channels == 48 and tuple(wan22_vae.downscale_index_formula) == (4, 16, 16)
    assert isinstance(bb, VideoBackbone) and isinstance(backbone_from_model(wan22, wan22_vae), ComfyWanBackbone)
    assert (bb.family, bb.num_layers, bb.num_heads, bb.head_dim) == ("wan", 3, 2, 128)
    assert bb.ti2v and not bb.image_input and bb.latent_channels == 48
    assert bb.vae_stride == 16 and bb.spatial_stride == 32 and bb.temporal_compression == 4
    x0 = bb.encode(synthetic_clip(9, 64, 96))
    assert x0.shape == (1, 48, 3, 4, 6)
    with pytest.raises(ValueError, match="vae"):
        ComfyWanBackbone(wan22, object())


def test_features_per_video_frame_at_32px(bb):
    clip = synthetic_clip(9, 64, 96)
    f = bb.features(clip, 0.2, FeatureSpec([1], kinds=("k", "block"), heads=[1]), seed=0)
    assert f["k1"]["features"].shape == (9, 1, 128, 2, 3)
    assert f["block1"]["features"].shape == (9, 256, 2, 3)
    assert f["k1"]["stride"] == (32.0, 32.0) and f["k1"]["frame_size"] == (64, 96)
    assert torch.isfinite(f["k1"]["features"]).all()
    # a size off the 32 px grid is resized to the nearest multiples; stride reported in input pixels
    g = bb.features(synthetic_clip(5, 60, 100), 0.2, FeatureSpec([0], kinds=("k",)), seed=0)["k0"]
    assert g["features"].shape == (5, 2, 128, 2, 3) and g["meta"]["model_size"] == (64, 96)
    assert g["stride"] == pytest.approx((30.0, 100 / 3))
    # latent frame centres in video time are 0, 2.5, 6.5 (causal VAE): frame 0 is latent 0, frame 1 is 0.6/0.4
    # of latents 0/1, frame 8 (past the last centre) is latent 2
    raw = bb.capture_latent(bb.encode(clip), 0.2, FeatureSpec([1], kinds=("block",)), 0, bb._conds(None, {}))
    lat = bb._tokens_to_grid("block1", raw["block1"], (3, 2, 3))
    feats = f["block1"]["features"]
    assert torch.allclose(feats[0], lat[0], atol=1e-5)
    assert torch.allclose(feats[1], 0.6 * lat[0] + 0.4 * lat[1], atol=1e-5)
    assert torch.allclose(feats[8], lat[2], atol=1e-5)


def test_capture_is_read_only_and_leaves_model_unchanged(bb, wan22):
    before = model_state(wan22)
    clip = synthetic_clip(9, 64, 64, seed=1)
    x0 = bb.encode(clip)
    conds = bb._conds(None, {})
    spec = FeatureSpec([0, 2], kinds=("block", "q", "k"))
    cap = DitCapture(spec, bb.num_heads, stop_early=False)
    assert_capture_read_only(wan22, x0, 0.6, conds, cap)
    assert set(cap.store) == {"block0", "q0", "k0", "block2", "q2", "k2"}
    assert_repeatable(bb, clip, 0.3, spec, 5, cond=ImageCond(_marked(clip[:1])))
    assert_unchanged(before, model_state(wan22))


def test_stop_early_runs_fewer_blocks(wan22, wan22_vae):
    calls = []
    bb = ComfyWanBackbone(counting_blocks(wan22, 3, calls), wan22_vae)
    assert_stops_early(bb, synthetic_clip(5, 64, 64), calls, [
        (FeatureSpec([0], kinds=("block",)), [0]),
        (FeatureSpec([1], kinds=("k",)), [0, 1]),
        (FeatureSpec([2, 0], kinds=("block", "k")), [0, 1, 2]),
    ])


def _ti2v_latent(bb, clip, image):
    """Core Wan22ImageToVideoLatent for SDEdit (re-implemented: importing comfy_extras here would resolve
    ComfyUI's `nodes` to this package): raw latent of the clip with latent frame 0 = the raw latent of `image`,
    noise mask 0 on that frame."""
    raw = bb.vae.encode(clip)
    raw[:, :, :1] = bb.vae.encode(image)
    mask = torch.ones((1, 1) + tuple(raw.shape[2:]))
    mask[:, :, :1] = 0.0
    return raw, mask


def test_first_frame_features_match_comfyui_noise_mask_flow(bb, wan22):
    """Conditioning on an image = ComfyUI's own flow: latent frame 0 = the image's latent, noise mask 0 there
    (clean latent fed to the model and timestep 0 on that frame)."""
    clip = synthetic_clip(9, 64, 64, seed=3)
    image = _marked(clip[:1])
    noise_level, seed, spec = 0.4, 2, FeatureSpec([1], kinds=("k", "block"))
    got = bb.features(clip, noise_level, spec, seed, cond=ImageCond(image))
    raw, mask = _ti2v_latent(bb, clip, image)
    cap = DitCapture(spec, bb.num_heads, stop_early=False)
    m = wan22.clone()
    cap.install(m)
    one_call(m, schedules.seeded_noise(raw.shape, seed), raw, bb.sigma_at(noise_level), bb._conds(None, {}), seed=seed,
             denoise_mask=mask)
    ref = bb._tokens_to_grid("k1", cap.store["k1"], (3, 2, 2))
    assert torch.allclose(got["k1"]["features"][0], ref[0], atol=1e-4)
    assert torch.allclose(got["k1"]["features"][8], ref[2], atol=1e-4)
    plain = bb.features(clip, noise_level, spec, seed)
    assert (plain["k1"]["features"][0] - got["k1"]["features"][0]).abs().max() > 1e-3


# ---------------------------------------------------------------- regeneration
@pytest.fixture(scope="module")
def ti2v_setup(bb):
    clip = synthetic_clip(9, 64, 64, seed=2)
    edited = _marked(clip[:1])
    x0, pos, neg = first_frame_conds(bb, clip, edited)
    return clip, edited, x0, pos, neg


def _reference_ti2v_euler(bb, x0, noise_level, steps, pos, neg, w, seed):
    """Plain Euler on den = den_pos + w (den_pos - den_neg); each branch is a separate cfg-1 call (no inpainting;
    the conditioning's `denoise_mask` gives WAN22 its per-frame timesteps) whose input has that branch's own clean
    first latent frame; the kept frame's prediction is the positive first latent."""
    fp, fn = pos[0][1][FIRST_LATENT_KEY], neg[0][1][FIRST_LATENT_KEY]
    sig = sdedit_sigmas(bb, "simple", steps, noise_level)
    start = x0.clone()
    start[:, :, :1] = fp

    def den_at(x, s):
        xp, xn = x.clone(), x.clone()
        xp[:, :, :1], xn[:, :, :1] = fp, fn
        den = guided(denoised_at(bb.model, xp, s, pos), lambda: denoised_at(bb.model, xn, s, neg), w)
        den[:, :, :1] = fp
        return den
    return euler(bb.noise_to(start, noise_level, seed), sig, den_at)


def test_guidance_zero_is_plain_conditional_ti2v_sampling(bb, wan22, ti2v_setup):
    clip, edited, x0, pos, neg = ti2v_setup
    out = bb.regenerate_latent(x0, 0.5, pos, neg, 0.0, 8, seed=4)
    ref = _reference_ti2v_euler(bb, x0, 0.5, 8, pos, neg, 0.0, seed=4)
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.equal(out, bb.regenerate_latent(x0, 0.5, pos, pos, 0.0, 8, seed=4))     # w = 0 ignores neg
    # and it is ComfyUI's own TI2V sampling: Wan22ImageToVideoLatent's latent + noise mask, Euler at cfg 1
    raw, mask = _ti2v_latent(bb, clip, edited)
    g = comfy.samplers.CFGGuider(wan22)
    text = bb._conds(None, {})
    g.set_conds(text, text)
    g.set_cfg(1.0)
    sig = sdedit_sigmas(bb, "simple", 8, 0.5)
    native = g.sample(schedules.seeded_noise(raw.shape, 4), raw, comfy.samplers.sampler_object("euler"), sig,
                      denoise_mask=mask, disable_pbar=True, seed=4)
    assert torch.allclose(out, wan22.model.process_latent_in(native), atol=1e-4)


def test_guidance_each_branch_sees_its_own_first_frame(bb, ti2v_setup):
    clip, edited, x0, pos, neg = ti2v_setup
    out = bb.regenerate_latent(x0, 0.5, pos, neg, 3.0, 6, seed=1)
    ref = _reference_ti2v_euler(bb, x0, 0.5, 6, pos, neg, 3.0, seed=1)
    assert torch.allclose(out, ref, atol=1e-4)
    plain = bb.regenerate_latent(x0, 0.5, pos, neg, 0.0, 6, seed=1)
    assert (out - plain).abs().max() > 1e-3
    # with the same first frame on both sides the guidance term vanishes: a shared first frame would do this
    same = bb.regenerate_latent(x0, 0.5, pos, pos, 3.0, 6, seed=1)
    assert torch.allclose(same, plain, atol=1e-5)
    # the kept first latent frame is the positive (edited) image's latent
    assert torch.allclose(out[:, :, :1], pos[0][1][FIRST_LATENT_KEY], atol=1e-6)


def test_mask_keeps_original_latent_outside(bb, ti2v_setup):
    clip, edited, x0, pos, neg = ti2v_setup
    mask = centre_latent_mask(x0)
    out = bb.regenerate_latent(x0, 0.6, pos, neg, 2.0, 6, latent_mask=mask, seed=0)
    outside = (1 - mask)[:, :, 1:]
    assert ((out[:, :, 1:] - x0[:, :, 1:]) * outside).abs().max() < 1e-5
    assert ((out[:, :, 1:] - x0[:, :, 1:]) * mask[:, :, 1:]).abs().max() > 1e-3
    assert torch.allclose(out[:, :, :1], pos[0][1][FIRST_LATENT_KEY], atol=1e-6)


def test_regenerate_frames_progress_and_validation(bb, ti2v_setup):
    clip, edited, x0, pos, neg = ti2v_setup
    ticks = []
    video = bb.regenerate(clip[:7], 0.5, ImageCond(edited), ImageCond(clip[:1]), 1.0, 8,
                          mask=torch.ones(7, 64, 64), seed=0, progress=lambda: ticks.append(1))
    assert video.shape == (7, 64, 64, 3) and len(ticks) == bb.regen_steps(0.5, 8) == 4
    assert torch.isfinite(video).all()
    with pytest.raises(ValueError, match="image"):
        bb._image_extra(None, 9, (64, 64), need_image=True)
    assert bb._image_extra(None, 9, (64, 64), need_image=False) == {}


# ---------------------------------------------------------------- nodes
def test_nodes_run_with_the_tiny_wan22(wan22, wan22_vae):
    clip = synthetic_clip(9, 64, 96)
    f = VDT_ExtractDiffusionFeatures.execute(wan22, wan22_vae, clip, layer=2, kind="k", heads="0",
                                             noise_level=0.1, seed=3).result[0]
    assert f["features"].shape == (9, 1, 128, 2, 3) and f["stride"] == (32.0, 32.0)
    fc = VDT_ExtractDiffusionFeatures.execute(wan22, wan22_vae, clip, layer=2, kind="k", heads="0", noise_level=0.1,
                                              seed=3, condition_on_first_frame=True).result[0]
    assert fc["features"].shape == f["features"].shape and not torch.equal(fc["features"], f["features"])
    edited = _marked(clip[:1])
    out = VDT_CounterfactualRegenerate.execute(wan22, wan22_vae, clip, edited, clip[:1], noise_level=0.5, steps=4,
                                               guidance=8.0, seed=1).result[0]
    assert out.shape == clip.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    again = VDT_CounterfactualRegenerate.execute(wan22, wan22_vae, clip, edited, clip[:1], noise_level=0.5, steps=4,
                                                 guidance=8.0, seed=1).result[0]
    assert torch.equal(out, again)
    mask = torch.zeros(9, 64, 96)
    mask[:, 16:48, 32:64] = 1
    masked = VDT_CounterfactualRegenerate.execute(wan22, wan22_vae, clip, edited, clip[:1], noise_level=0.5,
                                                  steps=4, guidance=8.0, seed=1, mask=mask).result[0]
    assert masked.shape == clip.shape and torch.isfinite(masked).all()
