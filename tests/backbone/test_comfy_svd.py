"""ComfyUI-native SVD adapter on a tiny SVD_img2vid built in memory.

A checkpoint that ComfyUI's detector reads as SVD needs model_channels 320, context 1024 and the SD VAE at
ch 128 (about 72M UNet + 83M VAE parameters, far over 60 MB), so the model object is built directly:
comfy.supported_models.SVD_img2vid with a tiny unet_config -> model_base.SVD_img2vid in a ModelPatcher,
a ComfyUI VAE (comfy.sd.VAE with an AutoencoderKL config) and a real comfy.clip_vision.ClipVisionModel
from a tiny config. Everything else is ComfyUI's own code path.
"""
from __future__ import annotations

import json

import pytest
import torch

import comfy.model_management
import comfy.model_patcher

from vdt_dev.backbone_checks import denoised, denoised_at, euler, guided, red_square, sdedit_sigmas
from vdt_dev.make_tiny_unets import init_unet_, svd_unet_config
from vdtrack.backbones.comfy_native import backbone_from_model
from vdtrack.backbones.comfy_svd import ComfySVDBackbone, UpBlockCapture
from vdtrack.backbones.protocol import FeatureSpec, ImageCond, VideoBackbone
from vdtrack.nodes.diffusion import VDT_CounterfactualRegenerate, VDT_ExtractDiffusionFeatures

from .conftest import _make_tiny_models_module, synthetic_clip

CTX = 64
UNET = svd_unet_config(model_channels=32, channel_mult=[1, 2, 2, 2], context_dim=CTX, transformer_depth_middle=1,
                       transformer_depth_output=[1] * 9 + [0] * 3)   # SVD_img2vid sets the head width (below: 16)


@pytest.fixture(scope="module")
def tiny():
    import comfy.clip_vision
    import comfy.sd
    import comfy.supported_models
    from comfy.ldm.models.autoencoder import AutoencoderKL

    cfg = comfy.supported_models.SVD_img2vid(dict(UNET))
    cfg.unet_config["num_head_channels"] = 16                 # 32 channels: 64-wide heads would leave none
    model = cfg.get_model({})
    init_unet_(model.diffusion_model, 11)
    model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                               offload_device=comfy.model_management.unet_offload_device())
    vcfg = {"params": {"embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256,
                                                    "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2, 2, 2],
                                                    "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}}
    ae = AutoencoderKL(**vcfg["params"])
    init_unet_(ae, 12)
    vae = comfy.sd.VAE(sd=ae.state_dict(), config=vcfg)
    return patcher, vae


@pytest.fixture(scope="module")
def clip_vision(tmp_path_factory):
    import comfy.clip_vision

    cfg = {"hidden_act": "gelu", "hidden_size": 32, "image_size": 28, "intermediate_size": 64,
           "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3,
           "num_hidden_layers": 2, "patch_size": 14, "projection_dim": CTX}
    path = tmp_path_factory.mktemp("clipv") / "tiny_clip_vision.json"
    path.write_text(json.dumps(cfg))
    cv = comfy.clip_vision.ClipVisionModel(str(path))
    _make_tiny_models_module()._init_(cv.model, 13)
    return cv


@pytest.fixture(scope="module")
def bb(tiny):
    return ComfySVDBackbone(*tiny)


def _call(bb, x0, sigma, conds, seed=0, capture=None, unet_input=None):
    return denoised(bb.model, x0, sigma, conds, seed=seed, capture=capture, model_input=unet_input)["den"]


def test_attributes_mapping_and_dispatch(tiny, bb):
    assert isinstance(bb, VideoBackbone) and isinstance(backbone_from_model(*tiny), ComfySVDBackbone)
    dm = tiny[0].model.diffusion_model
    assert (bb.family, bb.num_layers, bb.default_window, bb.temporal_compression) == ("svd", 3, 14, 1)
    # diffusers up_blocks[i] ends at output_blocks[3i+2], whose last module is the upsampler
    assert [bb.output_block_of(i) for i in range(3)] == [2, 5, 8]
    assert all(type(dm.output_blocks[bb.output_block_of(i)][-1]).__name__ == "Upsample" for i in range(3))
    assert [bb.layer_stride(i) for i in range(3)] == [32, 16, 8] and bb.spatial_stride == 8
    with pytest.raises(ValueError, match="kind"):
        bb.features(synthetic_clip(2, 64, 64), 0.2, FeatureSpec([2], kinds=("k",)), seed=0)
    with pytest.raises(ValueError, match="layer"):
        bb.features(synthetic_clip(2, 64, 64), 0.2, FeatureSpec([3], kinds=("block",)), seed=0)


def test_schedule_and_unet_input(bb, tiny):
    ms = tiny[0].get_model_object("model_sampling")
    for noise_level in (0.1, 0.5, 0.9):
        assert bb.sigma_at(noise_level) == pytest.approx(ms.percent_to_sigma(1.0 - noise_level), rel=1e-5)
        t = bb.timestep_from_noise_level(noise_level)
        assert bb.noise_level_from_timestep(t) == pytest.approx(noise_level, abs=1e-9)
    z = torch.zeros(4, 4, 16, 16)
    s = bb.sigma_at(0.3)
    assert bb.noise_to(z, 0.3, seed=2).std().item() == pytest.approx(s, rel=0.03)
    clip = synthetic_clip(3, 64, 64)
    x0 = bb.encode(clip)
    seen = []
    conds = bb._conds(ImageCond(clip[:1]), (64, 64), False)
    _call(bb, x0, s, conds, seed=5, unet_input=seen)
    # through ComfyUI's model_sampling: the UNet gets c_in * (x0 + sigma eps) and the raw image latent
    assert torch.allclose(seen[0][:, :4], bb.noise_to(x0, 0.3, seed=5) / (s * s + 1) ** 0.5, atol=1e-5)
    assert torch.allclose(seen[0][:, 4:], bb.vae.encode(clip[:1]).expand(3, -1, -1, -1), atol=1e-5)


def test_capture_read_only_matches_module_and_stops_early(bb, tiny):
    patcher = tiny[0]
    dm = patcher.model.diffusion_model
    opts_before = repr(patcher.model_options)
    clip = synthetic_clip(3, 64, 64)
    x0 = bb.encode(clip)
    conds = bb._conds(ImageCond(clip[:1]), (64, 64), False)
    plain = _call(bb, x0, 2.0, conds)
    cap = UpBlockCapture({2: 8, 0: 2}, stop_early=False)
    ref, calls = {}, []
    # forward_timestep_embed calls the layers of a block one by one: hook its first and last layer
    hs = [dm.output_blocks[8][-1].register_forward_hook(lambda m, a, o: ref.setdefault("b8", o.detach()))]
    hs += [blk[0].register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, blk in enumerate(dm.output_blocks)]
    try:
        hooked = _call(bb, x0, 2.0, conds, capture=cap)
        assert torch.equal(plain, hooked) and calls == list(range(12))
        assert torch.allclose(cap.store["block2"], ref["b8"].float(), atol=1e-6)
        calls.clear()
        f = bb.features(clip, 0.2, FeatureSpec([0], kinds=("block",)), seed=1)
        assert calls == [0, 1, 2] and f["block0"]["features"].shape == (3, 64, 2, 2)
    finally:
        for h in hs:
            h.remove()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in dm.modules()) == 0
    assert repr(patcher.model_options) == opts_before
    a = bb.features(clip, 0.2, FeatureSpec([2], kinds=("block",)), seed=1)["block2"]
    b = bb.features(clip, 0.2, FeatureSpec([2], kinds=("block",)), seed=1)["block2"]
    assert torch.equal(a["features"], b["features"]) and a["features"].shape == (3, 64, 8, 8)
    assert a["stride"] == (8.0, 8.0) and a["meta"]["output_block"] == 8


def test_windows_agree_with_single_window_runs(bb):
    clip = synthetic_clip(8, 64, 64, seed=4)
    long = bb.features(clip, 0.2, FeatureSpec([2], kinds=("block",), window=5, overlap=2), seed=3)["block2"]
    assert long["meta"]["windows"] == 2          # frames 0-4 keep 0-3, frames 3-7 keep 4-7
    first = bb.features(clip[:5], 0.2, FeatureSpec([2], kinds=("block",)), seed=3)["block2"]
    second = bb.features(clip[3:], 0.2, FeatureSpec([2], kinds=("block",)), seed=3)["block2"]
    assert torch.allclose(long["features"][:4], first["features"][:4], atol=1e-5)
    assert torch.allclose(long["features"][4:], second["features"][1:], atol=1e-5)


class _CVO:
    def __init__(self, seed):
        self.image_embeds = torch.randn(1, CTX, generator=torch.Generator().manual_seed(seed))


def test_guidance_formula_zero_guidance_and_mask(bb):
    clip = synthetic_clip(3, 64, 64, seed=5)
    edited = red_square(clip[:1], 24, 40)
    x0 = bb.encode(clip)
    pos = bb._conds(ImageCond(edited, _CVO(1)), (64, 64), True)
    neg = bb._conds(ImageCond(clip[:1], _CVO(2)), (64, 64), True)
    # hand-written Euler with den = den_pos + w (den_pos - den_neg), each branch a separate cfg-1 call
    w, steps, noise_level = 2.0, 4, 0.5
    sig = sdedit_sigmas(bb, "karras", steps, noise_level)
    den_at = lambda x, s: guided(denoised_at(bb.model, x, s, pos), lambda: denoised_at(bb.model, x, s, neg), w)
    x = euler(bb.noise_to(x0, noise_level, seed=3), sig, den_at)
    out = bb.regenerate_latent(x0, noise_level, pos, neg, w, steps, seed=3)
    assert torch.allclose(out, x, atol=1e-4)
    zero = bb.regenerate_latent(x0, noise_level, pos, neg, 0.0, steps, seed=3)
    assert torch.equal(zero, bb.regenerate_latent(x0, noise_level, pos, pos, 0.0, steps, seed=3))
    assert (zero - out).abs().max() > 1e-3
    mask = torch.zeros(3, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    masked = bb.regenerate_latent(x0, noise_level, pos, neg, w, steps, latent_mask=mask, seed=3)
    assert ((masked - x0) * (1 - mask)).abs().max() < 1e-5 and ((masked - x0) * mask).abs().max() > 1e-3
    with pytest.raises(ValueError, match="clip_vision"):
        bb.regenerate(clip, 0.5, ImageCond(edited), ImageCond(clip[:1]), 1.0, 2)


def test_nodes_run_with_svd(tiny, clip_vision):
    model, vae = tiny
    clip = synthetic_clip(4, 64, 64)
    f = VDT_ExtractDiffusionFeatures.execute(model, vae, clip, layer=2, kind="block", noise_level=0.1,
                                             seed=1).result[0]
    assert f["features"].shape == (4, 64, 8, 8) and f["meta"]["family"] == "svd"
    edited = red_square(clip[:1], 28, 36)
    mask = torch.zeros(4, 64, 64)
    mask[:, 16:48, 16:48] = 1
    out = VDT_CounterfactualRegenerate.execute(model, vae, clip, edited, clip[:1], noise_level=0.5, steps=4,
                                               guidance=2.0, seed=2, clip_vision=clip_vision, mask=mask).result[0]
    assert out.shape == clip.shape and torch.isfinite(out).all()
