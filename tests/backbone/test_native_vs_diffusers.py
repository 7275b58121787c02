"""The ComfyUI-native Wan adapter (comfy_wan on a ModelPatcher from comfy.sd.load_diffusion_model) and the
diffusers Wan adapter (WanTransformer3DModel.from_single_file on the SAME file) compute the same features
(block output, per-head k) and the same guided, masked SDEdit regeneration."""
from __future__ import annotations

import json
import os

import pytest
import torch

from .conftest import synthetic_clip

TOL = 1e-4


def _tiny_wan_config(dest: str, in_channels: int, num_layers: int) -> str:
    """diffusers config of vdt_dev.make_tiny_models's Wan DiT (dim 256 = 2 heads x 128, ffn 512, text 4096)."""
    os.makedirs(dest, exist_ok=True)
    json.dump(dict(_class_name="WanTransformer3DModel", patch_size=[1, 2, 2], num_attention_heads=2,
                   attention_head_dim=128, in_channels=in_channels, out_channels=16, text_dim=4096, freq_dim=256,
                   ffn_dim=512, num_layers=num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                   eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024),
              open(os.path.join(dest, "config.json"), "w"))
    return dest


def _vae_config(dest: str) -> str:
    os.makedirs(dest, exist_ok=True)
    json.dump(dict(_class_name="AutoencoderKLWan", base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                   attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0),
              open(os.path.join(dest, "config.json"), "w"))
    return dest


@pytest.fixture(scope="module")
def pair_t2v(tiny_models, wan_t2v, wan_vae, tmp_path_factory):
    from vdtrack.backbones.comfy_wan import ComfyWanBackbone
    from vdtrack.backbones.diffusers_wan import DiffusersWanBackbone

    d = tmp_path_factory.mktemp("wan_cfg")
    db = DiffusersWanBackbone.load(tiny_models["wan_t2v"], config_dir=_tiny_wan_config(str(d / "t2v"), 16, 4),
                                   vae_file=tiny_models["wan_vae"], vae_config_dir=_vae_config(str(d / "vae")),
                                   shift=float(wan_t2v.get_model_object("model_sampling").shift))
    return ComfyWanBackbone(wan_t2v, wan_vae), db


def test_offline_single_file_load(pair_t2v, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cb, db = pair_t2v
    assert (db.num_layers, db.num_heads, db.head_dim) == (cb.num_layers, cb.num_heads, cb.head_dim)
    assert db.timestep_from_noise_level(0.4) == pytest.approx(cb.timestep_from_noise_level(0.4), abs=1e-9)


def test_same_features_on_same_latent(pair_t2v):
    from vdtrack.backbones.protocol import FeatureSpec

    cb, db = pair_t2v
    torch.manual_seed(0)
    x0 = torch.randn(1, 16, 3, 8, 8)
    spec = FeatureSpec(layers=[1, 3], kinds=("block", "k", "q"), heads=[1])
    fc = cb.capture_latent(x0, 0.5, spec, 7, cb._conds(None, {}), stop_early=True)
    fd = db.capture_latent(x0, 0.5, spec, 7)
    assert set(fc) == set(fd) == set(spec.keys())
    for k in fc:
        diff = (fc[k].float() - fd[k].float()).abs().max().item()
        assert fc[k].shape == fd[k].shape, k
        assert diff < TOL * max(1.0, fc[k].abs().max().item()), (k, diff)


def test_same_features_from_frames(pair_t2v):
    """Whole protocol path (VAE encode, windows, time mapping): the VAEs differ only by float rounding."""
    from vdtrack.backbones.protocol import FeatureSpec

    cb, db = pair_t2v
    frames = synthetic_clip(9, 32, 48)
    spec = FeatureSpec(layers=[2], kinds=("block", "k"))
    fc = cb.features(frames, 0.3, spec, seed=3)
    fd = db.features(frames, 0.3, spec, seed=3)
    for k in spec.keys():
        a, b = fc[k]["features"], fd[k]["features"]
        assert a.shape == b.shape and fc[k]["stride"] == fd[k]["stride"]
        rel = ((a - b).abs().max() / a.abs().max()).item()
        assert rel < 1e-3, (k, rel)


def test_same_guided_masked_regeneration(tiny_models, wan_i2v, wan_vae, tmp_path):
    import comfy.samplers

    from vdtrack.backbones import schedules
    from vdtrack.backbones.comfy_wan import ComfyWanBackbone
    from vdtrack.backbones.diffusers_wan import DiffusersWanBackbone
    from vdtrack.backbones.protocol import ImageCond

    cb = ComfyWanBackbone(wan_i2v, wan_vae)
    db = DiffusersWanBackbone.load(tiny_models["wan_i2v"], config_dir=_tiny_wan_config(str(tmp_path / "i2v"), 36, 2),
                                   vae_file=tiny_models["wan_vae"], vae_config_dir=_vae_config(str(tmp_path / "v")),
                                   shift=cb.shift)
    frames = synthetic_clip(9, 64, 64)
    x0 = cb.encode(frames)
    marked = frames[:1].clone()
    marked[0, 20:30, 20:30] = torch.tensor([1.0, 0.0, 0.0])
    ys, conds = [], []
    for img in (marked, frames[:1]):
        extra = cb._image_extra(ImageCond(img), 9, (64, 64), need_image=True)
        conds.append(cb._conds(None, extra))
        known = (1.0 - extra["concat_mask"]).expand(-1, 4, -1, -1, -1)
        ys.append(torch.cat([known, wan_i2v.model.process_latent_in(extra["concat_latent_image"])], 1))
    mask = torch.zeros(1, 1, x0.shape[2], 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    steps, noise_level, w = 6, 0.6, 3.0
    full = comfy.samplers.calculate_sigmas(cb.model_sampling, "simple", steps).float()
    assert torch.allclose(full, db.simple_sigmas(steps), atol=1e-6)
    sig = schedules.sdedit_tail(full, noise_level, cb.sigma_at(noise_level))
    for m in (None, mask):
        rc = cb.regenerate_latent(x0, noise_level, conds[0], conds[1], w, steps, m, seed=5)
        rd = db.regenerate_latent(x0, noise_level, ys[0], ys[1], w, sig, m, seed=5)
        diff = (rc - rd).abs().max().item()
        assert diff < TOL * max(1.0, rc.abs().max().item()), diff
        assert (rc - x0).abs().max() > 1e-2                     # it did regenerate
        if m is not None:
            assert ((rc - x0) * (1 - m)).abs().max() < 1e-5     # outside the mask: the original latent
