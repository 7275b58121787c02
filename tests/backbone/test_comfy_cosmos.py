"""ComfyUI-native Cosmos-Predict2 adapter on a tiny Video2World DiT loaded with comfy.sd.load_diffusion_model."""
from __future__ import annotations

import pytest
import torch

import comfy.patcher_extension
import comfy.samplers
from comfy.ldm.cosmos.predict2 import apply_rotary_pos_emb

from vdtrack.backbones import schedules
from vdtrack.backbones.comfy_cosmos import (ComfyCosmosBackbone, CosmosCapture, cosmos_rope_groups,
                                            inverse_rope_half)
from vdtrack.backbones.comfy_native import backbone_from_model
from vdtrack.backbones.protocol import FeatureSpec, ImageCond, VideoBackbone
from vdtrack.nodes.diffusion import VDT_CounterfactualRegenerate, VDT_ExtractDiffusionFeatures

from .conftest import synthetic_clip


@pytest.fixture(scope="module")
def cosmos(tiny_models):
    import comfy.sd

    return comfy.sd.load_diffusion_model(tiny_models["cosmos_v2w"])


@pytest.fixture(scope="module")
def bb(cosmos, wan_vae):
    return ComfyCosmosBackbone(cosmos, wan_vae)


def _call(bb, x0, sigma, conds, seed=0, capture=None, dit_input=None):
    """One cfg-1 ComfyUI model call at sigma on x0 noised by the sampler; returns the denoised prediction."""
    m = bb.model.clone()
    bb._install_first_frames(m, conds, conds)
    if capture is not None:
        capture.install(m)
    if dit_input is not None:
        def grab(executor, x, *args, **kwargs):
            dit_input.append(x.clone())
            return executor(x, *args, **kwargs)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test", grab)
    res = {}

    def one(model, x, sigmas, extra_args=None, callback=None, disable=None):
        res["den"] = model(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
        return x

    g = comfy.samplers.CFGGuider(m)
    g.set_conds(conds, conds)
    g.set_cfg(1.0)
    noise = schedules.seeded_noise(x0.shape, seed)
    g.sample(noise, bb.model.model.process_latent_out(x0), comfy.samplers.KSAMPLER(one),
             torch.tensor([sigma, 0.0]), disable_pbar=True, seed=seed)
    return res["den"]


def _state(patcher):
    dm = patcher.model.diffusion_model
    sd = {k: v.clone() for k, v in dm.state_dict().items()}
    hooks = sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in dm.modules())
    to = patcher.model_options.get("transformer_options", {})
    wrappers = {k: len(v) for k, v in patcher.wrappers.items() if v}
    return sd, hooks, repr(sorted(to.keys())), repr(wrappers)


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
    for level in (0.05, 0.3, 0.5, 0.9, 0.999):          # (percent_to_sigma(0) is ComfyUI's "infinite" sigma)
        s = bb.sigma_at(level)
        assert s == pytest.approx(ms.percent_to_sigma(1.0 - level), rel=1e-5)
        assert bb.timestep_from_level(level) == pytest.approx(1000 * float(ms.timestep(torch.tensor(s))), rel=1e-5)
        assert bb.level_from_timestep(bb.timestep_from_level(level)) == pytest.approx(level, abs=1e-6)
    assert bb.sigma_at(1.0) == pytest.approx(80.0) and bb.timestep_from_level(0.0) == 0.0
    z = torch.zeros(1, 16, 8, 32, 32)
    for level in (0.2, 0.7):
        t = bb.flow_t(level)
        assert bb.noise_to(z, level, seed=3).std().item() == pytest.approx(t, rel=0.02)
        c = torch.full_like(z, 2.0)
        assert bb.noise_to(c, level, seed=3).mean().item() == pytest.approx(2.0 * (1 - t), abs=0.01 * t + 1e-3)


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
    before = _state(cosmos)
    x0 = bb.encode(synthetic_clip(9, 32, 48))
    conds = bb._conds(None, {})
    plain = _call(bb, x0, 0.6, conds)
    spec = FeatureSpec([1, 3], kinds=("block", "q", "k"))
    cap = CosmosCapture(spec, bb.num_heads, stop_early=False)
    hooked = _call(bb, x0, 0.6, conds, capture=cap)
    assert torch.equal(plain, hooked)
    assert set(cap.store) == {"block1", "q1", "k1", "block3", "q3", "k3"} and cap.blocks_run == list(range(10))
    f1 = bb.features(synthetic_clip(9, 32, 48), 0.3, spec, seed=5)
    f2 = bb.features(synthetic_clip(9, 32, 48), 0.3, spec, seed=5)
    for k in f1:
        assert torch.equal(f1[k]["features"], f2[k]["features"])
    after = _state(cosmos)
    assert before[1:] == after[1:] and before[1] == 0
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])


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
    with torch.inference_mode():
        clip = synthetic_clip(9, 32, 32, seed=2)
        edited = clip[:1].clone()
        edited[0, 12:20, 12:20] = torch.tensor([1.0, 0.0, 0.0])
        x0 = bb.encode(clip)
        pos = bb._conds(None, bb._image_extra(ImageCond(edited), 9, (32, 32), need_image=True))
        neg = bb._conds(None, bb._image_extra(ImageCond(clip[:1]), 9, (32, 32), need_image=True))
    return clip, edited, x0, pos, neg


def _reference(bb, x0, level, steps, pos, neg, w, seed, latent_mask=None):
    """Hand-written Euler with ComfyUI's Cosmos inpainting (kept cells are fed as latent*(1+sigma), i.e. clean
    to the DiT) and den = den_pos + w (den_pos - den_neg), each branch its own cfg-1 call."""
    full = comfy.samplers.calculate_sigmas(bb.model_sampling, "karras", steps).float()
    sig = schedules.sdedit_tail(full, level, bb.sigma_at(level))
    first = pos[0][1]["vdtrack_first_latent"]
    start = x0.clone()
    start[:, :, :1] = first
    keep = torch.ones_like(x0[:, :1])
    keep[:, :, :1] = 0
    mask = keep if latent_mask is None else keep * latent_mask
    x = start + float(sig[0]) * schedules.seeded_noise(x0.shape, seed)
    zero = torch.zeros_like(x0)
    for i in range(len(sig) - 1):
        s, s_next = float(sig[i]), float(sig[i + 1])
        xin = x * mask + start * (1 + s) * (1 - mask)
        den_at = lambda conds: _call_raw(bb, xin, s, conds)
        dp = den_at(pos)
        den = dp if w == 0 else dp + w * (dp - den_at(neg))
        den = den * mask + start * (1 - mask)
        x = x + (s_next - s) * (x - den) / s             # k-diffusion Euler steps the sampler's own x
    return x


def _call_raw(bb, x, s, conds):
    """Denoised for an already-noised sampler x: with a zero latent ComfyUI's noise_scaling gives s*(x/s) = x."""
    m = bb.model.clone()
    bb._install_first_frames(m, conds, conds)
    res = {}

    def one(model, xx, sigmas, extra_args=None, callback=None, disable=None):
        res["den"] = model(xx, sigmas[0] * xx.new_ones([xx.shape[0]]), **extra_args)
        return xx

    g = comfy.samplers.CFGGuider(m)
    g.set_conds(conds, conds)
    g.set_cfg(1.0)
    g.sample(x / s, torch.zeros_like(x), comfy.samplers.KSAMPLER(one), torch.tensor([s, 0.0]), disable_pbar=True)
    return res["den"]


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
    mask = torch.zeros(1, 1, x0.shape[2], x0.shape[3], x0.shape[4])
    mask[..., 1:3, 1:3] = 1.0
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
    edited = clip[:1].clone()
    edited[0, 14:18, 14:18] = torch.tensor([1.0, 0.0, 0.0])
    out = VDT_CounterfactualRegenerate.execute(cosmos, wan_vae, clip, edited, clip[:1], noise_level=0.5, steps=4,
                                               guidance=2.0, seed=1).result[0]
    assert out.shape == clip.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="layer"):
        VDT_ExtractDiffusionFeatures.execute(cosmos, wan_vae, clip, layer=10)
