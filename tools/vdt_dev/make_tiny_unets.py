"""Build tiny, randomly initialised UNet models in ComfyUI's native key layout (tests and demo workflows):
an SD 1.x image UNet (TED's appearance features, DIFT protocol), an SVD video UNet (Track4Gen-style features)
and a TAESD pair as their 4-channel VAE.

They load through ComfyUI's own loaders: UNETLoader (comfy.sd.load_diffusion_model) detects the UNet family
from its keys and shapes, and VAELoader offers "taesd" when models/vae_approx holds taesd_encoder.* and
taesd_decoder.*. The detector fixes what makes a family: SD 1.x needs model_channels 320, a 768-wide
cross-attention context and no linear transformer projections; SVD needs model_channels 320, a 1024-wide
context, linear projections, temporal layers and exactly 4 levels of 2 res blocks with transformers in the first
3. Everything else (levels, res blocks, widths per level, depth) is read from the weights, so the files are
small where the detector allows:

  diffusion_models/vdtrack_tiny_sd15_unet.safetensors  SD 1.x UNet, channel_mult (1,1,1), 1 res block per level,
                                                       one transformer (level 0); diffusers up_blocks[1]
                                                       (DIFT's up_ft_index 1) is output block 3, stride 16 px
  diffusion_models/vdtrack_tiny_svd_unet.safetensors   SVD img2vid UNet, channel_mult (1,1,1,1), no transformer in
                                                       the middle and decoder (the detector reads their depth)
  vae_approx/taesd_encoder.safetensors,
  vae_approx/taesd_decoder.safetensors                 TAESD (ComfyUI's comfy.taesd), random weights

Weights are seeded (same bytes every run), fp16 for the UNets, fp32 for TAESD.
CLI:  python tools/vdt_dev/make_tiny_unets.py <ComfyUI models dir>
"""
from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from vdt_dev.make_tiny_models import _comfy_cpu_if_no_gpu, _fp16_state

SD15_NAME = "vdtrack_tiny_sd15_unet.safetensors"
SVD_NAME = "vdtrack_tiny_svd_unet.safetensors"
TAESD_ENCODER, TAESD_DECODER = "taesd_encoder.safetensors", "taesd_decoder.safetensors"

SD15_UNET = {"model_channels": 320, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1, 1],
             "channel_mult": [1, 1, 1], "transformer_depth": [1, 0, 0], "transformer_depth_output": [0, 0, 0, 0, 0, 0],
             "transformer_depth_middle": -1, "context_dim": 768, "use_linear_in_transformer": False,
             "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
             "num_heads": 8, "num_head_channels": -1, "image_size": 32, "use_spatial_transformer": True,
             "legacy": False, "use_checkpoint": False}
SVD_UNET = {"model_channels": 320, "in_channels": 8, "out_channels": 4, "use_linear_in_transformer": True,
            "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [0] * 12,
            "transformer_depth_middle": -1, "channel_mult": [1, 1, 1, 1], "num_res_blocks": [2, 2, 2, 2],
            "context_dim": 1024, "adm_in_channels": 768, "use_temporal_attention": True,
            "use_temporal_resblock": True, "extra_ff_mix_layer": True, "use_spatial_context": True,
            "merge_strategy": "learned_with_images", "merge_factor": 0.0, "video_kernel_size": [3, 1, 1],
            "disable_temporal_crossattention": False, "image_size": 32, "use_spatial_transformer": True,
            "legacy": False, "num_classes": "sequential", "num_head_channels": 64, "use_checkpoint": False}


def svd_unet_config(**changes) -> dict:
    """SVD_UNET with `changes` applied (KeyError naming a key SVD_UNET lacks): the one description of the SVD
    img2vid UNet, for the file this module writes and for smaller UNets built in memory (tests that need widths
    ComfyUI's detector would not accept in a file)."""
    unknown = sorted(set(changes) - set(SVD_UNET))
    if unknown:
        raise KeyError(f"svd_unet_config: {unknown} are not SVD UNet settings")
    return {**SVD_UNET, **changes}


def init_unet_(module: torch.nn.Module, seed: int) -> None:
    """Fan-in scaled weights (keep activations O(1) through the GroupNorms), zero biases, unit norm scales."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5)
            else:
                p.zero_()
        for m in module.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.fill_(1.0)


def _unet(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """ComfyUI's UNetModel (SVD's temporal layers are switched on by its config)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    m = UNetModel(**config, operations=comfy.ops.disable_weight_init)
    init_unet_(m, seed)
    return _fp16_state(m)


def _taesd(seed: int) -> tuple[dict, dict]:
    from comfy.taesd.taesd import TAESD

    t = TAESD(latent_channels=4)
    init_unet_(t, seed)
    enc = {k: v.detach().float().contiguous() for k, v in t.taesd_encoder.state_dict().items()}
    dec = {k: v.detach().float().contiguous() for k, v in t.taesd_decoder.state_dict().items()}
    return enc, dec


def build_tiny_unets(dest_models_dir: str, overwrite: bool = False, kinds=("sd15", "svd", "taesd")) -> dict[str, str]:
    """Write the files into <dest>/diffusion_models and <dest>/vae_approx. Returns {kind: path} of the kinds
    built (a subset of "sd15", "svd", "taesd")."""
    _comfy_cpu_if_no_gpu()
    dm_dir, approx_dir = (os.path.join(dest_models_dir, d) for d in ("diffusion_models", "vae_approx"))
    for d in (dm_dir, approx_dir):
        os.makedirs(d, exist_ok=True)
    out = {"sd15": os.path.join(dm_dir, SD15_NAME), "svd": os.path.join(dm_dir, SVD_NAME),
           "taesd_encoder": os.path.join(approx_dir, TAESD_ENCODER),
           "taesd_decoder": os.path.join(approx_dir, TAESD_DECODER)}

    def write(path, make):
        if overwrite or not os.path.exists(path):
            tmp = path + ".tmp"
            save_file(make(), tmp)
            os.replace(tmp, path)

    if "sd15" in kinds:
        write(out["sd15"], lambda: _unet(SD15_UNET, seed=21))
    if "svd" in kinds:
        write(out["svd"], lambda: _unet(SVD_UNET, seed=22))
    if "taesd" in kinds and (overwrite or not (os.path.exists(out["taesd_encoder"])
                                               and os.path.exists(out["taesd_decoder"]))):
        enc, dec = _taesd(seed=23)
        write(out["taesd_encoder"], lambda: enc)
        write(out["taesd_decoder"], lambda: dec)
    return {k: v for k, v in out.items() if k.split("_")[0] in kinds}


def _main(argv=None) -> int:
    from vdt_dev.make_tiny_models import builder_cli
    return builder_cli(build_tiny_unets, __doc__.split("\n")[0], "diffusion_models/ and vae_approx/", argv)


if __name__ == "__main__":
    raise SystemExit(_main())
