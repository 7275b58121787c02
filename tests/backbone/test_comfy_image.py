"""DIFT features of a tiny SD 1.x UNet loaded by ComfyUI's own UNETLoader path (comfy.sd.load_diffusion_model)
with a TAESD VAE, checked against a direct computation of DIFT's rule: x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps
fed to the UNet at t, read at the end of diffusers up_blocks[i]."""
from __future__ import annotations


import pytest
import torch

from vdtrack.backbones.comfy_image import ComfyImageUNet, is_image_unet_model
from vdtrack.backbones.schedules import seeded_noise
from vdtrack.nodes.diffusion import VDT_ExtractAppearanceFeatures
from vdtrack.nodes.propagation import VDT_TEDPreset, ted_preset

from .conftest import synthetic_clip


def _builder():
    from vdt_dev import make_tiny_unets
    return make_tiny_unets


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    import comfy.sd
    import comfy.utils

    d = tmp_path_factory.mktemp("vdt_tiny_unets")
    paths = _builder().build_tiny_unets(str(d), kinds=("sd15", "taesd"))
    model = comfy.sd.load_diffusion_model(paths["sd15"])
    sd = {}
    for part in ("encoder", "decoder"):
        for k, v in comfy.utils.load_torch_file(paths[f"taesd_{part}"]).items():
            sd[f"taesd_{part}.{k}"] = v
    sd["vae_scale"], sd["vae_shift"] = torch.tensor(0.18215), torch.tensor(0.0)     # as core VAELoader("taesd")
    return model, comfy.sd.VAE(sd=sd)


def direct_dift(model, vae, frame, t, up_ft_index, ensemble, seed):
    """DIFT by hand: the UNet module called directly with DDPM add_noise inputs, a forward hook on the output
    block that ends up_blocks[up_ft_index]."""
    base = model.model
    dm = base.diffusion_model
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2   # SD's scaled_linear
    abar = torch.cumprod(1 - betas, 0)[t]
    x0 = base.process_latent_in(vae.encode(frame).float())
    x0 = x0.expand(ensemble, *x0.shape[1:])
    eps = seeded_noise(x0.shape, seed, x0.device, torch.float32)
    xt = (abar.sqrt() * x0 + (1 - abar).sqrt() * eps).float()
    end = 2 * up_ft_index + 1                              # (nrb + 1) * i + nrb with nrb = 1
    got = {}
    upsample = dm.output_blocks[end][-1]          # the block's Upsample (ComfyUI calls the layers one by one)
    h = upsample.register_forward_hook(lambda m, i, o: got.__setitem__("f", o.detach().float()))
    try:
        dm(xt.to(dm.dtype if hasattr(dm, "dtype") else torch.float32),
           timesteps=torch.full((ensemble,), float(t)), context=torch.zeros(ensemble, 77, 768))
    finally:
        h.remove()
    return got["f"].mean(0)


def test_detects_sd_and_rejects_others(sd):
    model, vae = sd
    assert is_image_unet_model(model)
    with pytest.raises(ValueError, match="model"):
        ComfyImageUNet(object(), vae)


@pytest.mark.parametrize("t,idx,ens", [(261, 1, 1), (51, 0, 2)])
def test_matches_dift_rule(sd, t, idx, ens):
    model, vae = sd
    frames = synthetic_clip(2, 64, 128, seed=3)
    bb = ComfyImageUNet(model, vae)
    before = dict(model.model_options)
    out = bb.features(frames, t, idx, ens, seed=5)
    assert model.model_options == before and not model.model_options.get("transformer_options")
    f = out["features"]
    stride = 32 // 2 ** (idx + 1)                         # 3 levels: latent/4 at the bottom, 32 px
    assert bb.pixel_multiple == 32 and bb.layer_stride(idx) == stride
    assert f.shape == (2, 320, 64 // stride, 128 // stride) and out["stride"] == (stride, stride)
    for k in range(2):
        ref = direct_dift(model, vae, frames[k:k + 1], t, idx, ens, 5)
        assert torch.allclose(f[k], ref, atol=2e-3, rtol=1e-3), (f[k] - ref).abs().max()
    assert out["meta"]["timestep"] == t and out["meta"]["ensemble_size"] == ens


def test_errors_name_the_input(sd):
    model, vae = sd
    bb = ComfyImageUNet(model, vae)
    frames = synthetic_clip(1, 64, 64)
    with pytest.raises(ValueError, match="up_ft_index"):
        bb.features(frames, 261, 2)                       # 3 levels: up blocks 0 and 1 only
    with pytest.raises(ValueError, match="timestep"):
        bb.features(frames, 1000, 1)
    with pytest.raises(ValueError, match="conditioning"):
        bb.features(frames, 261, 1, conditioning=[[torch.zeros(1, 77, 1024), {}]])


def test_node_runs_on_sd_and_on_a_video_model(sd, wan_t2v, wan_vae):
    model, vae = sd
    frames = synthetic_clip(3, 64, 64)
    out = VDT_ExtractAppearanceFeatures.execute(model, vae, frames, 261, 1, 1, 0).result[0]
    assert out["features"].shape[0] == 3 and out["meta"]["seconds"] >= 0
    vid = VDT_ExtractAppearanceFeatures.execute(wan_t2v, wan_vae, frames, 50, 1, 2, 0).result[0]
    assert vid["features"].shape[:1] == (3,) and vid["meta"]["protocol"].startswith("video model")


def test_presets_follow_ted_table_6():
    assert ted_preset("DAVIS (t=300, alpha 0.4)") == {"timestep": 300, "alpha": 0.4, "temperature": 0.2,
                                                       "window": 16, "overlap": 2, "radius": 15, "top_k": 10,
                                                       "n_context": 28}
    assert VDT_TEDPreset.execute("similar objects (t=600, alpha 0.6)").result[:4] == (600, 16, 2, 0.6)
    assert VDT_TEDPreset.execute("identical objects (t=900, motion only)").result[3] == 1.0
    with pytest.raises(ValueError, match="preset"):
        ted_preset("nope")
