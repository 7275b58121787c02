"""Build tiny, randomly initialised Wan models in ComfyUI's native key layout (for tests and demo workflows).

They load through ComfyUI's own loaders: UNETLoader (comfy.sd.load_diffusion_model) detects the Wan DiT
from its keys (head_dim 128 and text_dim 4096 are what the detector assumes) and VAELoader detects the
Wan 2.1 VAE from `decoder.middle.0.residual.0.gamma` (its width from `decoder.head.0.gamma`).

Files (under <models>/diffusion_models and <models>/vae):
  vdtrack_tiny_wan_t2v.safetensors       Wan 2.1 T2V layout, dim 256, 2 heads, 4 layers
  vdtrack_tiny_wan_i2v.safetensors       Wan 2.2-I2V layout (in_dim 36 = noise 16 + mask 4 + image 16, no CLIP)
  vdtrack_tiny_wan_i2v_clip.safetensors  Wan 2.1-I2V layout (in_dim 36 + CLIP-vision image tokens), 2 layers
  vdtrack_tiny_wan_vae.safetensors       Wan 2.1 VAE (8x spatial, 4x temporal, 16 latent channels), width 8
  vdtrack_tiny_cosmos_p2_v2w.safetensors Cosmos-Predict2 Video2World layout (in_channels 17 = latent 16 + condition
                                         mask; ComfyUI's CosmosI2VPredict2), model_channels 192, 16 heads of 12,
                                         10 blocks: the smallest the detector accepts (it fixes 16 heads and 10 blocks
                                         unless model_channels is 2048/5120, and RoPE needs head_dim >= 12). Uses the
                                         Wan 2.1 VAE, as Cosmos-Predict2 does in ComfyUI. About 31 MB.
  vdtrack_tiny_wan22_ti2v.safetensors    Wan 2.2 TI2V 5B layout (in_dim = out_dim = 48: the 48-channel Wan 2.2 latent;
                                         ComfyUI detects out_dim 48 as WAN22_T2V -> model_base.WAN22), dim 256 (2 heads
                                         of 128), 3 layers. About 8 MB.
  vdtrack_tiny/vdtrack_tiny_wan22_vae.safetensors
                                         Wan 2.2 VAE (comfy.ldm.wan.vae2_2: 16x spatial, 4x temporal, 48 channels) at
                                         encoder/decoder width 8. NOT loadable by VAELoader: ComfyUI 0.3.75 detects the
                                         Wan 2.2 VAE by `decoder.upsamples.0.upsamples.0.residual.2.weight` but then
                                         builds it at fixed widths (dim 160, dec_dim 256 = 705M parameters, 1.4 GB in
                                         fp16), so no small file passes its loader. `load_tiny_wan22_vae` runs
                                         comfy.sd.VAE's own Wan 2.2 branch with only those two widths reduced (read
                                         from the file's metadata). It lives outside vae/ so loaders never list it.
                                         About 4 MB.

Weights are seeded (same bytes every run) and stored in fp16 (DiT) / fp32 (VAE); the Wan files total about
20 MB, the Cosmos one about 31 MB, the Wan 2.2 pair about 12 MB.
CLI:  python tools/vdt_dev/make_tiny_models.py <ComfyUI models dir>
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from safetensors.torch import save_file

T2V_NAME = "vdtrack_tiny_wan_t2v.safetensors"
I2V_NAME = "vdtrack_tiny_wan_i2v.safetensors"
I2V_CLIP_NAME = "vdtrack_tiny_wan_i2v_clip.safetensors"
COSMOS_NAME = "vdtrack_tiny_cosmos_p2_v2w.safetensors"
VAE_NAME = "vdtrack_tiny_wan_vae.safetensors"
WAN22_NAME = "vdtrack_tiny_wan22_ti2v.safetensors"
WAN22_VAE_NAME = "vdtrack_tiny_wan22_vae.safetensors"
TINY_DIR = "vdtrack_tiny"          # not a ComfyUI model folder: files here are for load_tiny_wan22_vae only

DIM, FFN, HEAD_DIM, TEXT_DIM = 256, 512, 128, 4096
VAE_WIDTH = 8
WAN22_VAE_WIDTH = 8                # encoder `dim` and decoder `dec_dim` of the tiny Wan 2.2 VAE


def _init_(module: torch.nn.Module, seed: int) -> None:
    """ComfyUI's ops allocate with torch.empty: give every parameter a seeded value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gamma",) or (p.ndim == 1 and "norm" in name and leaf == "weight"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                fan_in = p[0].numel() if p.ndim >= 2 else p.numel()
                std = 0.02 if "modulation" in name or "emb_pos" in name else min(0.02, fan_in ** -0.5)
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _fp16_state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    """DiT weights as stored: fp16, contiguous."""
    return {k: v.detach().to(torch.float16).contiguous() for k, v in m.state_dict().items()}


def _vae_state(v: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded Wan VAE weights (unit `gamma` scales, zero biases, uniform fan-in scaled kernels) as fp32."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in v.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * (3.0 / fan_in) ** 0.5)
    return {k: t.detach().float().contiguous() for k, t in v.state_dict().items()}


def _comfy_cpu_if_no_gpu() -> None:
    """ComfyUI's device probe fails on a CPU-only torch unless told --cpu before its first import."""
    if "comfy.model_management" not in sys.modules and not torch.cuda.is_available():
        import comfy.cli_args

        comfy.cli_args.args.cpu = True


def _wan_dit(model_type: str, in_dim: int, num_layers: int, seed: int, out_dim: int = 16) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    m = WanModel(model_type=model_type, in_dim=in_dim, dim=DIM, ffn_dim=FFN, num_heads=DIM // HEAD_DIM,
                 num_layers=num_layers, out_dim=out_dim, text_dim=TEXT_DIM, operations=comfy.ops.disable_weight_init)
    _init_(m, seed)
    return _fp16_state(m)


def _cosmos_dit(seed: int) -> dict[str, torch.Tensor]:
    """MiniTrainDIT with the hyper-parameters comfy.model_detection derives for a non-2B/14B width."""
    import comfy.ops
    from comfy.ldm.cosmos.predict2 import MiniTrainDIT

    m = MiniTrainDIT(max_img_h=240, max_img_w=240, max_frames=128, in_channels=17, out_channels=16, patch_spatial=2,
                     patch_temporal=1, concat_padding_mask=True, model_channels=192, num_blocks=10, num_heads=16,
                     crossattn_emb_channels=1024, pos_emb_cls="rope3d", pos_emb_learnable=True,
                     use_adaln_lora=True, adaln_lora_dim=256, rope_enable_fps_modulation=False,
                     operations=comfy.ops.disable_weight_init)
    _init_(m, seed)
    return _fp16_state(m)


def _wan_vae(seed: int) -> dict[str, torch.Tensor]:
    from comfy.ldm.wan.vae import WanVAE

    v = WanVAE(dim=VAE_WIDTH, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=[False, True, True], dropout=0.0)
    return _vae_state(v, seed)


def _wan22_vae(seed: int) -> dict[str, torch.Tensor]:
    from comfy.ldm.wan.vae2_2 import WanVAE

    v = WanVAE(dim=WAN22_VAE_WIDTH, dec_dim=WAN22_VAE_WIDTH, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
               attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    return _vae_state(v, seed)


def load_tiny_wan22_vae(path: str):
    """comfy.sd.VAE of the tiny Wan 2.2 VAE file: ComfyUI's own detection branch (48 channels, 16x spatial and
    4x temporal index formulas, vae2_2 encode/decode) with only the hard-coded widths replaced by the file's."""
    _comfy_cpu_if_no_gpu()
    import comfy.ldm.wan.vae2_2 as vae2_2
    import comfy.sd
    import comfy.utils

    sd, meta = comfy.utils.load_torch_file(path, return_metadata=True)
    width = int((meta or {}).get("vdtrack_wan22_vae_width", 0))
    if "decoder.upsamples.0.upsamples.0.residual.2.weight" not in sd or width <= 0:
        raise ValueError(f"vae: {path} is not a tiny Wan 2.2 VAE written by make_tiny_models")
    full = vae2_2.WanVAE

    def narrow(**cfg):
        return full(**{**cfg, "dim": width, "dec_dim": width})

    vae2_2.WanVAE = narrow           # only for this constructor call (comfy.sd looks it up at call time)
    try:
        return comfy.sd.VAE(sd=sd)
    finally:
        vae2_2.WanVAE = full


def build_tiny_models(dest_models_dir: str, overwrite: bool = False) -> dict[str, str]:
    """Write the tiny models into <dest>/diffusion_models and <dest>/vae. Returns {kind: path}.

    Needs ComfyUI importable (its classes define the key layout). Existing files are kept unless overwrite.
    """
    _comfy_cpu_if_no_gpu()
    dm_dir, vae_dir, tiny_dir = (os.path.join(dest_models_dir, d) for d in ("diffusion_models", "vae", TINY_DIR))
    for d in (dm_dir, vae_dir, tiny_dir):
        os.makedirs(d, exist_ok=True)
    jobs = {
        "wan_t2v": (os.path.join(dm_dir, T2V_NAME), lambda: _wan_dit("t2v", 16, 4, seed=1)),
        "wan_i2v": (os.path.join(dm_dir, I2V_NAME), lambda: _wan_dit("t2v", 36, 2, seed=2)),
        "wan_i2v_clip": (os.path.join(dm_dir, I2V_CLIP_NAME), lambda: _wan_dit("i2v", 36, 2, seed=3)),
        "wan_vae": (os.path.join(vae_dir, VAE_NAME), lambda: _wan_vae(seed=4)),
        "cosmos_v2w": (os.path.join(dm_dir, COSMOS_NAME), lambda: _cosmos_dit(seed=5)),
        "wan22_ti2v": (os.path.join(dm_dir, WAN22_NAME), lambda: _wan_dit("t2v", 48, 3, seed=6, out_dim=48)),
        "wan22_vae": (os.path.join(tiny_dir, WAN22_VAE_NAME), lambda: _wan22_vae(seed=7)),
    }
    metadata = {"wan22_vae": {"vdtrack_wan22_vae_width": str(WAN22_VAE_WIDTH)}}
    out = {}
    for kind, (path, make) in jobs.items():
        if overwrite or not os.path.exists(path):
            tmp = path + ".tmp"
            save_file(make(), tmp, metadata=metadata.get(kind))
            os.replace(tmp, path)
        out[kind] = path
    return out


def builder_cli(build, description: str, folders: str, argv=None) -> int:
    """The command line of the tiny-model builders: `build(models_dir, overwrite=...)` -> {kind: path}, printed
    with sizes. `folders` names the model subfolders the builder writes (for --help)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("models_dir", help=f"ComfyUI models folder (files go to {folders})")
    ap.add_argument("--comfyui", default=os.environ.get("VDT_COMFYUI_DIR", ""),
                    help="ComfyUI source folder when `comfy` is not importable yet")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    if a.comfyui:
        sys.path.append(a.comfyui)
    for kind, path in build(a.models_dir, overwrite=a.overwrite).items():
        print(f"{kind}: {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


def _main(argv=None) -> int:
    return builder_cli(build_tiny_models, __doc__.split("\n")[0], "diffusion_models/ and vae/", argv)


if __name__ == "__main__":
    raise SystemExit(_main())
