"""Time Wan feature extraction through the ComfyUI-native adapter on a full-size random Wan2.1-1.3B.

Builds the Wan2.1-T2V-1.3B architecture (dim 1536, 30 layers, 12 heads, ffn 8960) and the Wan 2.1 VAE
(width 96) with random weights, loads them through ComfyUI's own loaders (load_diffusion_model_state_dict,
comfy.sd.VAE), then extracts layer-18 keys for a 49-frame 480x832 clip (HeFT's Wan setting) and reports
VAE-encode time, forward time, total time and peak GPU memory.

  python tools/vdt_bench/bench_wan_features.py --device cuda [--frames 49 --height 480 --width 832 --layer 18 --repeat 3]
  python tools/vdt_bench/bench_wan_features.py --small         # CPU self-check on a small architecture
Needs ComfyUI importable (set VDT_COMFYUI_DIR or --comfyui).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from vdt_dev.paths import COMFYUI_DIR  # noqa: E402

FULL = dict(dim=1536, num_layers=30, ffn_dim=8960, vae_dim=96)
SMALL = dict(dim=256, num_layers=4, ffn_dim=512, vae_dim=8)


def _setup_comfy(comfyui: str, device: str) -> None:
    """Make ComfyUI importable (appended: its top-level `nodes` must not shadow anything); CPU mode on the CPU.
    The one set-up helper of the benchmarks."""
    if comfyui and comfyui not in sys.path:
        sys.path.append(comfyui)
    import comfy.cli_args

    if device == "cpu":
        comfy.cli_args.args.cpu = True


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights with sane scales (norm gains 1, biases 0): activations stay finite at full depth.
    The one random-weights helper of the benchmarks (speed and memory do not depend on the weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma") or (p.ndim == 1 and "norm" in name):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                std = min(0.02, p[0].numel() ** -0.5)
                p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))


def build(cfg: dict, dtype: torch.dtype, model_type: str = "t2v"):
    """(MODEL patcher, VAE) of a random Wan 2.1 DiT (model_type "t2v": 16 input channels; "i2v": 36) of the size
    in `cfg` (dim, num_layers, ffn_dim, vae_dim) and a Wan 2.1 VAE, loaded through ComfyUI's own loaders with
    weights in `dtype`."""
    import comfy.ops
    import comfy.sd
    from comfy.ldm.wan.model import WanModel
    from comfy.ldm.wan.vae import WanVAE

    dm = WanModel(model_type=model_type, in_dim=36 if model_type == "i2v" else 16, dim=cfg["dim"],
                  ffn_dim=cfg["ffn_dim"], num_heads=cfg["dim"] // 128, num_layers=cfg["num_layers"], out_dim=16,
                  text_dim=4096, operations=comfy.ops.disable_weight_init)
    _randomize(dm, 0)
    sd = {k: v.contiguous() for k, v in dm.state_dict().items()}
    del dm
    model = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype})
    del sd
    vae_mod = WanVAE(dim=cfg["vae_dim"], z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True], dropout=0.0)
    _randomize(vae_mod, 1)
    vae = comfy.sd.VAE(sd={k: v.contiguous() for k, v in vae_mod.state_dict().items()})
    return model, vae


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--small", action="store_true", help="small architecture and clip (quick CPU self-check)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--kind", default="k", choices=["k", "q", "block"])
    ap.add_argument("--noise-level", type=float, default=0.02)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--comfyui", default=COMFYUI_DIR)
    ap.add_argument("--json", default="", help="also write the results here")
    a = ap.parse_args(argv)
    _setup_comfy(a.comfyui, a.device)

    from vdtrack.backbones.comfy_wan import ComfyWanBackbone
    from vdtrack.backbones.protocol import FeatureSpec
    from vdtrack.backbones import windows

    cfg = SMALL if a.small else FULL
    frames = a.frames or (9 if a.small else 49)
    height = a.height or (64 if a.small else 480)
    width = a.width or (96 if a.small else 832)
    layer = a.layer if a.layer is not None else (2 if a.small else 18)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]

    t0 = time.perf_counter()
    model, vae = build(cfg, dtype if a.device == "cuda" else torch.float32)
    build_s = time.perf_counter() - t0
    bb = ComfyWanBackbone(model, vae)
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(frames, height, width, 3, generator=g)
    spec = FeatureSpec([layer], kinds=(a.kind,))
    cuda = a.device == "cuda" and torch.cuda.is_available()

    results = []
    with torch.inference_mode():
        for r in range(a.repeat + 1):               # first run = warm-up (loads weights to the GPU)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            x = bb._to_model_size(clip)
            length = windows.quantize_up(frames, 4)
            x0 = bb.encode(windows.pad_frames(x, length))
            if cuda:
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            raw = bb.capture_latent(x0, a.noise_level, spec, seed=0, conds=bb._conds(None, {}))
            if cuda:
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            feats = bb.features(clip, a.noise_level, spec, seed=0)
            if cuda:
                torch.cuda.synchronize()
            t3 = time.perf_counter()
            row = {"run": r, "vae_encode_s": t1 - t0, "forward_s": t2 - t1, "features_total_s": t3 - t2,
                   "blocks_run": len(bb.last_blocks_run),
                   "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
            results.append(row)
            print(json.dumps(row))
    key = spec.keys()[0]
    f = feats[key]["features"]
    summary = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "arch": cfg, "dtype": a.dtype,
               "frames": frames, "size": [height, width], "layer": layer, "kind": a.kind,
               "tokens": int(raw[key].shape[1]), "features_shape": list(f.shape),
               "features_finite": bool(torch.isfinite(f).all()), "build_s": build_s,
               "median_features_total_s": sorted(r["features_total_s"] for r in results[1:])[len(results[1:]) // 2]
               if len(results) > 1 else results[0]["features_total_s"],
               "runs": results}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
