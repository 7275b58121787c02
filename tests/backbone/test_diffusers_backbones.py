"""Tiny diffusers backbones (I2VGen-XL, SVD, CogVideoX) built by vdt_dev.make_tiny_diffusers: offline loading
from a folder and from a single file + config, feature shapes/strides per video frame, the noise schedules,
noise_level <-> timestep, CogVideoX q/k after RoPE, and the loader/extractor nodes."""
from __future__ import annotations

import math
import os

import pytest
import torch

from .conftest import synthetic_clip


pytestmark = pytest.mark.usefixtures("offline")      # tests/backbone/conftest.py: no network


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vdt_dev import make_tiny_diffusers as mod
    models = tmp_path_factory.mktemp("models")
    built = mod.build_tiny_diffusers(str(models / "diffusers"))
    return {"models": str(models), **built}


@pytest.fixture(scope="module")
def backbones(tiny):
    from vdtrack.backbones.diffusers_common import load_backbone

    return {f: load_backbone(tiny[f"tiny_{f}"]["folder"]) for f in ("i2vgen", "svd", "cogvideox")}


@pytest.mark.parametrize("family,layer,kind,channels,stride", [
    ("i2vgen", 2, "block", 16, 8.0), ("i2vgen", 1, "block", 32, 16.0),
    ("svd", 2, "block", 32, 8.0), ("cogvideox", 1, "block", 32, 16.0)])
def test_block_features_shape_and_stride(backbones, family, layer, kind, channels, stride):
    from vdtrack.backbones.protocol import FeatureSpec

    b = backbones[family]
    frames = synthetic_clip(10, 64, 64)
    spec = FeatureSpec(layers=[layer], kinds=(kind,), window=6, overlap=2)
    out = b.features(frames, 0.3, spec, seed=0)
    f = out[f"{kind}{layer}"]
    assert f["features"].shape == (10, channels, int(64 / stride), int(64 / stride))
    assert f["stride"] == (stride, stride) and f["frame_size"] == (64, 64)
    assert f["meta"]["windows"] == 2 and torch.isfinite(f["features"]).all()
    again = b.features(frames, 0.3, spec, seed=0)
    assert torch.equal(again[f"{kind}{layer}"]["features"], f["features"])   # same seed, same features


def test_svd_block2_is_the_third_decoder_upsampler(backbones):
    from vdtrack.backbones.protocol import FeatureSpec

    b = backbones["svd"]
    seen = {}
    h = b.unet.up_blocks[2].upsamplers[0].register_forward_hook(lambda m, a, o: seen.__setitem__("u", o))
    try:
        f = b.features(synthetic_clip(6, 64, 64), 0.2, FeatureSpec(layers=[2], kinds=("block",)), seed=1)
    finally:
        h.remove()
    assert torch.equal(seen["u"].float(), f["block2"]["features"])


def test_cogvideox_qk_after_rope_and_text_stripped(tiny, tmp_path):
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import apply_rotary_emb

    from vdtrack.backbones.diffusers_cogvideox import CogVideoXBackbone
    from vdtrack.backbones.diffusers_common import load_backbone
    from vdtrack.backbones.protocol import FeatureSpec

    base = load_backbone(tiny["tiny_cogvideox"]["folder"])
    torch.manual_seed(3)
    cfg = dict(base.transformer.config)
    cfg["use_rotary_positional_embeddings"] = True
    tr = CogVideoXTransformer3DModel.from_config(cfg).eval()
    b = CogVideoXBackbone(tr, base.vae, {}, source=tiny["tiny_cogvideox"]["folder"])
    frames = synthetic_clip(5, 64, 64)
    procs = [blk.attn1.processor for blk in tr.transformer_blocks]
    ref = b.features(frames, 0.1, FeatureSpec(layers=[2], kinds=("block",)), seed=0)["block2"]["features"]
    a = b.features(frames, 0.1, FeatureSpec(layers=[1, 2], kinds=("k", "q", "block"), rope="after"), seed=0)
    bf = b.features(frames, 0.1, FeatureSpec(layers=[1], kinds=("k",), rope="before", heads=[1]), seed=0)
    assert [blk.attn1.processor for blk in tr.transformer_blocks] == procs          # processors restored
    assert torch.equal(a["block2"]["features"], ref)                                 # recording changes nothing
    k_after, k_before = a["k1"]["features"][:, 1:2], bf["k1"]["features"]
    assert k_after.shape == (5, 1, 16, 4, 4) and a["q1"]["features"].shape == (5, 2, 16, 4, 4)
    rope = b._rope(5, 8, 8)
    tokens = k_before.permute(1, 0, 3, 4, 2).reshape(1, 1, -1, 16)                   # [B, heads, F*h*w, hd]
    rotated = apply_rotary_emb(tokens, rope).reshape(1, 5, 4, 4, 16).permute(1, 0, 4, 2, 3)
    assert torch.allclose(rotated, k_after, atol=1e-5) and not torch.allclose(k_before, k_after, atol=1e-3)


def test_single_file_loads_the_same_weights(tiny, backbones):
    from vdtrack.backbones.diffusers_common import load_backbone
    from vdtrack.backbones.diffusers_i2vgen import I2VGenBackbone
    from vdtrack.backbones.diffusers_common import load_from_single_file
    from vdtrack.backbones.protocol import FeatureSpec
    from diffusers import I2VGenXLUNet

    t = tiny["tiny_i2vgen"]
    unet = load_from_single_file(I2VGenXLUNet, t["file"], t["config_dir"], torch.float32)
    ref = backbones["i2vgen"]
    b = I2VGenBackbone(unet, ref.vae, {"prediction_type": "v_prediction", "beta_schedule": "scaled_linear",
                                       "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
                       source=t["folder"], image_encoder=ref.image_encoder)
    spec = FeatureSpec(layers=[2], kinds=("block",))
    frames = synthetic_clip(4, 64, 64)
    assert torch.equal(b.features(frames, 0.4, spec, 0)["block2"]["features"],
                       ref.features(frames, 0.4, spec, 0)["block2"]["features"])
    # a file that does not match the config names the input
    with pytest.raises(ValueError, match="model:"):
        load_backbone(tiny["tiny_svd"]["file"], "i2vgen", vae_file=t["folder"])


def test_noise_statistics_follow_the_schedule(backbones):
    x = torch.zeros(1, 4, 16, 32, 32)
    for fam in ("i2vgen", "cogvideox"):
        b = backbones[fam]
        t = int(b.timestep_from_noise_level(0.5))
        abar = float(b.alphas_cumprod[t])
        n = b.noise_to(x, 0.5, seed=0)
        assert n.std().item() == pytest.approx(math.sqrt(1 - abar), rel=0.02)
        assert b.noise_to(x + 1, 0.5, seed=0).mean().item() == pytest.approx(math.sqrt(abar), abs=0.02)
        assert torch.equal(b.noise_to(x, 0.5, seed=0), n)
    svd = backbones["svd"]
    s = svd.sigma_from_noise_level(0.3)
    assert svd.noise_to(x, 0.3, seed=1).std().item() == pytest.approx(s, rel=0.02)
    # I2VGen-XL's zero terminal SNR: pure noise at noise_level 1; CogVideoX-2B's SNR shift makes t=999 pure noise too
    assert float(backbones["i2vgen"].alphas_cumprod[-1]) < 1e-6


def test_cogvideox_text_encoder_is_managed_by_comfyui(tiny, tmp_path):
    """The folder's T5 text encoder is a ModelPatcher that ComfyUI loads: it is among
    comfy.model_management.current_loaded_models while it encodes, unload_all_models unloads it (weights back on
    the offload device) and the next prompt loads it again; the embeddings are the encoder's own output."""
    import shutil

    import comfy.model_management as mm
    import transformers

    from vdt_dev.make_tiny_diffusers import add_tiny_t5_text_encoder
    from vdtrack.backbones.diffusers_common import load_backbone

    folder = str(tmp_path / "cogvideox_t5")
    shutil.copytree(tiny["tiny_cogvideox"]["folder"], folder)
    add_tiny_t5_text_encoder(folder, d_model=32)                 # the tiny transformer's text_embed_dim
    b = load_backbone(folder)

    def loaded(module) -> bool:
        return any(lm.model is not None and lm.model.model.inner is module for lm in mm.current_loaded_models)

    first = b._prompt("a red ball")                                # loads the encoder through ComfyUI
    tokenizer, patcher = b._text_encoder
    encoder = patcher.model.inner
    assert loaded(encoder)
    seen = []
    hook = encoder.register_forward_pre_hook(lambda m, args: seen.append(loaded(m)))
    try:
        mm.unload_all_models()
        assert not loaded(encoder)
        assert all(p.device == b.offload_device for p in encoder.parameters())
        second = b._prompt("the green grass")                      # loaded again for this prompt
    finally:
        hook.remove()
    assert seen == [True] and loaded(encoder)
    ref_tok = transformers.AutoTokenizer.from_pretrained(os.path.join(folder, "tokenizer"), local_files_only=True)
    ref_enc = transformers.T5EncoderModel.from_pretrained(os.path.join(folder, "text_encoder"), local_files_only=True)
    for prompt, got in (("a red ball", first), ("the green grass", second)):
        ids = ref_tok([prompt], padding="max_length", max_length=8, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            want = ref_enc(ids)[0]
        assert got.shape == (1, 8, 32) and torch.allclose(got.cpu(), want, atol=1e-6)
    assert b._prompt("a red ball") is not None and len(seen) == 1    # cached: not encoded again
    mm.unload_all_models()


@pytest.mark.parametrize("family", ["i2vgen", "svd", "cogvideox"])
def test_level_timestep_round_trip(backbones, family):
    from vdtrack.backbones.protocol import VideoBackbone

    b = backbones[family]
    assert isinstance(b, VideoBackbone)                    # every member the protocol declares
    for noise_level in (0.05, 0.3, 0.6, 0.9):
        t = b.timestep_from_noise_level(noise_level)
        assert b.noise_level_from_timestep(t) == pytest.approx(noise_level, abs=1e-3)
    if family != "svd":
        assert b.timestep_from_noise_level(b.noise_level_from_timestep(300)) == 300.0      # TED's t = 300
        assert b.timestep_from_noise_level(b.noise_level_from_timestep(19)) == 19.0        # DiffTrack's t = 19


@pytest.mark.parametrize("family", ["i2vgen", "svd", "cogvideox"])
def test_regenerate_guided_masked(backbones, family):
    from vdtrack.backbones.protocol import ImageCond

    b = backbones[family]
    frames = synthetic_clip(5, 64, 64)
    mask = torch.zeros(5, 64, 64)
    mask[:, 16:48, 16:48] = 1
    pos, neg = ImageCond(frames[:1] * 0.5), ImageCond(frames[:1])
    out = b.regenerate(frames, 0.5, pos, neg, 2.0, 4, mask=mask, seed=0)
    assert out.shape == frames.shape and torch.isfinite(out).all()
    again = b.regenerate(frames, 0.5, pos, neg, 2.0, 4, mask=mask, seed=0)
    assert torch.equal(out, again)
    if family != "cogvideox":      # text-to-video: with no text encoder both conds are the empty prompt
        assert not torch.equal(out, b.regenerate(frames, 0.5, pos, neg, 0.0, 4, mask=mask, seed=0))  # guidance acts
    else:
        with pytest.raises(ValueError, match="^positive/negative:"):
            b.regenerate(frames, 0.5, ImageCond(frames[:1], text="a red dot"), neg, 2.0, 4, seed=0)


def test_ddim_sdedit_keeps_the_original_outside_the_mask(backbones):
    """Latent level (a decoded frame mixes neighbouring latents): outside the mask the result is x0."""
    from vdtrack.backbones.diffusers_common import vpred_ddim_sdedit

    ac = backbones["i2vgen"].alphas_cumprod
    x0, noise = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    m = torch.zeros(1, 1, 3, 8, 8)
    m[..., 2:6, 2:6] = 1
    calls = []
    out = vpred_ddim_sdedit(x0, noise, ac, 0.6, 10, lambda x, t, w: (calls.append((t, w)), torch.zeros_like(x))[1],
                            2.0, m)
    assert ((out - x0) * (1 - m)).abs().max() == 0 and (out - x0).abs().max() > 0.1
    assert [t for t, w in calls if w == "pos"][0] == 599 and len(calls) == 2 * 6    # run_steps(0.6, 10) = 6
    # v = 0 everywhere: each DDIM step scales x by a fixed factor; x0 = sqrt(a)*x  ->  out = sqrt(a_t0)*x_t0


def test_nodes_list_load_reject_and_extract(tiny, monkeypatch):
    import folder_paths

    from vdtrack.nodes.backbone import VDT_ExtractBackboneFeatures, VDT_LoadDiffusersBackbone, model_choices

    dm = os.path.join(tiny["models"], "diffusion_models")
    os.makedirs(dm, exist_ok=True)
    link = os.path.join(dm, "tiny_i2vgen_unet.safetensors")
    if not os.path.exists(link):
        os.symlink(tiny["tiny_i2vgen"]["file"], link)
    saved = {k: folder_paths.folder_names_and_paths[k] for k in ("diffusers", "diffusion_models")}
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusers",
                        ([os.path.join(tiny["models"], "diffusers")], saved["diffusers"][1]))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models", ([dm], saved["diffusion_models"][1]))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    choices = model_choices()
    for name in ("diffusers/tiny_i2vgen", "diffusers/tiny_svd", "diffusers/tiny_cogvideox",
                 "diffusion_models/tiny_i2vgen_unet.safetensors"):
        assert name in choices
    for bad in ("diffusers/../tiny_i2vgen", "/etc/passwd", "diffusers//etc", "other/x"):
        with pytest.raises(ValueError, match="^model:"):
            VDT_LoadDiffusersBackbone.execute(bad)
    with pytest.raises(ValueError, match="^model: no folder"):
        VDT_LoadDiffusersBackbone.execute("diffusers/not_installed")
    with pytest.raises(ValueError, match="^family:"):
        VDT_LoadDiffusersBackbone.execute("diffusion_models/tiny_i2vgen_unet.safetensors", "auto")
    b = VDT_LoadDiffusersBackbone.execute("diffusers/tiny_cogvideox", "auto", frame_as_latent=True).result[0]
    assert b.family == "cogvideox" and b.frame_as_latent
    f = VDT_ExtractBackboneFeatures.execute(b, synthetic_clip(6, 64, 64), timestep=19, layer=2, kind="k",
                                            window=0, overlap=2, seed=0).result[0]
    assert f["features"].shape == (6, 2, 16, 4, 4) and f["meta"]["timestep"] == 19.0
    # the shipped full-size I2VGen-XL config does not fit the tiny file: a clear error naming the input
    with pytest.raises(ValueError, match="^model: .* does not match I2VGenXLUNet"):
        VDT_LoadDiffusersBackbone.execute("diffusion_models/tiny_i2vgen_unet.safetensors", "i2vgen",
                                          "diffusers/tiny_i2vgen")
    # with the tiny config in the shipped-config place, the single file + a folder's VAE loads
    import shutil

    from vdtrack.backbones import diffusers_common

    cfg_root = os.path.join(tiny["models"], "configs")
    os.makedirs(os.path.join(cfg_root, "i2vgen"), exist_ok=True)
    shutil.copytree(tiny["tiny_i2vgen"]["config_dir"], os.path.join(cfg_root, "i2vgen", "unet"), dirs_exist_ok=True)
    shutil.copytree(os.path.join(diffusers_common.CONFIG_ROOT, "i2vgen", "scheduler"),
                    os.path.join(cfg_root, "i2vgen", "scheduler"), dirs_exist_ok=True)
    monkeypatch.setattr(diffusers_common, "CONFIG_ROOT", cfg_root)
    single = VDT_LoadDiffusersBackbone.execute("diffusion_models/tiny_i2vgen_unet.safetensors", "i2vgen",
                                               "diffusers/tiny_i2vgen").result[0]
    assert single.family == "i2vgen" and single.image_encoder is None     # zero image embeddings fallback


def test_modules_are_loaded_and_offloaded_by_comfyui(backbones):
    """Each diffusers module sits in a ComfyUI ModelPatcher that load_models_gpu loads; ComfyUI's own unloading
    (what it does when one of its models needs the memory) takes them off its list, and the next use reloads."""
    import comfy.model_management as mm
    import comfy.model_patcher

    from vdtrack.backbones.protocol import FeatureSpec

    b = backbones["i2vgen"]
    frames = synthetic_clip(4, 64, 64)
    spec = FeatureSpec(layers=[2], kinds=("block",))
    b.features(frames, 0.3, spec, seed=0)
    patchers = b.patchers()
    assert len(patchers) == len(b._modules()) and all(isinstance(p, comfy.model_patcher.ModelPatcher) for p in patchers)
    assert [p.model.inner for p in patchers] == b._modules()

    def loaded():
        return [p for p in patchers if any(lm.model is p for lm in mm.current_loaded_models)]

    assert loaded() == patchers
    mm.unload_all_models()
    assert loaded() == []
    first = b.features(frames, 0.3, spec, seed=0)["block2"]["features"]
    assert loaded() == patchers and torch.isfinite(first).all()


def test_wan_qk_capture_leaves_diffusers_globals_alone(tiny_models, tmp_path):
    """The diffusers Wan q/k capture hooks the adapter's own modules only: while a q/k capture runs, diffusers'
    module-level attention function is the original one, and afterwards no hook is left on the modules."""
    import diffusers.models.transformers.transformer_wan as tw

    from vdtrack.backbones.diffusers_wan import DiffusersWanBackbone
    from vdtrack.backbones.protocol import FeatureSpec

    from .test_native_vs_diffusers import _tiny_wan_config, _vae_config

    db = DiffusersWanBackbone.load(tiny_models["wan_t2v"], config_dir=_tiny_wan_config(str(tmp_path / "cfg"), 16, 4),
                                   vae_file=tiny_models["wan_vae"], vae_config_dir=_vae_config(str(tmp_path / "vae")))
    original = tw.dispatch_attention_fn
    seen = []
    attn = db.transformer.blocks[2].attn1
    # inside the captured self-attention's processor call (where a global swap would be in force)
    h = attn.norm_k.register_forward_hook(lambda m, a, o: seen.append(tw.dispatch_attention_fn is original))
    try:
        x0 = torch.randn(1, 16, 2, 8, 8)
        got = db.capture_latent(x0, 0.5, FeatureSpec(layers=[2], kinds=("q", "k")), 0)
    finally:
        h.remove()
    assert seen == [True] and set(got) == {"q2", "k2"}
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in db.transformer.modules())
