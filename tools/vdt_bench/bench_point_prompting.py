"""Benchmark of the Point Prompting tracker: seconds per point (amortised over the points of one call) and peak
memory, for 1, 4, 16 and 64 points per call.

What is timed: `PointPrompting.run` (the node's whole method: colour rebalancing, markers, the coarse SDEdit
regeneration with counterfactual guidance, colour tracking, the masked refinement regeneration and tracking again)
for K points with query frame 0, all K in one sampler call (mode "batched": the K single-marker generations run as
one batch), after one warm-up call (1 point, 2 steps) that loads the model.

- default: the tiny Wan I2V model and VAE of tools/vdt_dev/make_tiny_models.py (built into a temporary folder) on the CPU,
  17 frames at 64x64, 50 steps x 0.5 strength + refinement 0.3 (25 + 15 sampler steps).
- `--full`: the Wan2.1-I2V-1.3B architecture (dim 1536, 30 layers, 12 heads, ffn 8960, in_dim 36, CLIP image
  tokens) and the Wan 2.1 VAE with random weights (speed and memory do not depend on them), 49 frames at 480x832,
  the same schedule. Meant for a GPU: `--device cuda --full`.

Peak memory: torch.cuda.max_memory_allocated during the timed call on CUDA; on the CPU the peak resident set size
of a fresh process per row (each row runs in its own process unless --in-process).

    python tools/vdt_bench/bench_point_prompting.py                        # CPU rows 1, 4, 16, 64 (tiny models)
    python tools/vdt_bench/bench_point_prompting.py --device cuda --full --points 1 4 16 --dtype bf16
The function `run_point_prompting_bench(device, full, points_per_call, ...)` is what tools/vdt_bench/bench_gpu.py calls.
Needs ComfyUI importable (VDT_COMFYUI_DIR or --comfyui; default the tools/setup.sh tree).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from vdt_dev.paths import COMFYUI_DIR  # noqa: E402

FULL = dict(dim=1536, num_layers=30, ffn_dim=8960, vae_dim=96, frames=49, height=480, width=832)
TINY = dict(frames=17, height=64, width=64)
POINTS = (1, 4, 16, 64)


from vdt_bench.bench_wan_features import _setup_comfy  # noqa: E402  (the benchmarks' one set-up helper)


def build_full_i2v(dtype):
    """(MODEL, VAE) of a random Wan2.1-I2V-1.3B-shaped model through ComfyUI's own loaders."""
    from vdt_bench.bench_wan_features import build
    return build(FULL, dtype, model_type="i2v")


def build_tiny_i2v(dtype):
    """(MODEL, VAE) of the pack's tiny Wan I2V test model, built into a temporary folder and loaded with ComfyUI."""
    import comfy.sd
    import comfy.utils
    from vdt_dev import make_tiny_models as mod
    with tempfile.TemporaryDirectory() as d:
        paths = mod.build_tiny_models(d)
        model = comfy.sd.load_diffusion_model(paths["wan_i2v"], model_options={"dtype": dtype})
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(paths["wan_vae"]))
    return model, vae


class _ClipVisionOutput:
    """Random CLIP-vision image tokens (what clip_vision_h gives Wan 2.1 I2V), one per encoded image."""

    def __init__(self, device):
        import torch
        self.penultimate_hidden_states = torch.randn(1, 257, 1280, device=device) * 0.1


def query_grid(k: int, height: int, width: int):
    """k query points on frame 0, spread on a grid away from the border, [k,3] (t,x,y)."""
    import math

    import torch
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    pts = []
    for i in range(k):
        r, c = divmod(i, cols)
        pts.append([0.0, (c + 1) * width / (cols + 1), (r + 1) * height / (rows + 1)])
    return torch.tensor(pts)


def run_point_prompting_bench(device: str = "cpu", full: bool = False, points_per_call: int = 4,
                              dtype: str = "fp32", compile: bool = False, steps: int = 50,
                              noise_level: float = 0.5, refine: bool = True, mode: str = "batched",
                              compile_backend: str = "inductor") -> dict:
    """Time one Point Prompting call of `points_per_call` points (one sampler batch) after a warm-up.
    Returns {"s_per_point", "seconds", "peak_gb", "points", "sampler_calls", "device", ...}."""
    comfyui = COMFYUI_DIR
    _setup_comfy(comfyui, device)
    import torch

    from vdtrack.backbones.comfy_native import backbone_from_model
    from vdtrack.backbones.point_prompting import PointPrompting, PointPromptingSettings

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    cfg = FULL if full else TINY
    model, vae = build_full_i2v(torch_dtype) if full else build_tiny_i2v(torch_dtype)
    if compile:
        from comfy_api.torch_helpers import set_torch_compile_wrapper
        set_torch_compile_wrapper(model, backend=compile_backend)
    bb = backbone_from_model(model, vae)
    encode = (lambda image: _ClipVisionOutput(image.device)) if bb.uses_clip else None
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(cfg["frames"], cfg["height"], cfg["width"], 3, generator=g)
    q = query_grid(int(points_per_call), cfg["height"], cfg["width"])
    cuda = device == "cuda" and torch.cuda.is_available()

    def settings(n_steps):
        return PointPromptingSettings(noise_level=noise_level, steps=n_steps, refine=refine,
                                      points_per_generation=int(points_per_call), mode=mode, seed=0)

    with torch.inference_mode():
        PointPrompting(bb, settings(2), encode_image=encode, keep_clips="none").run(clip, q[:1])   # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        pp = PointPrompting(bb, settings(int(steps)), encode_image=encode, keep_clips="none")
        ticks = []
        pp.progress = lambda: ticks.append(1)
        t0 = time.perf_counter()
        res = pp.run(clip, q)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30
    return dict(points=int(points_per_call), seconds=seconds, s_per_point=seconds / int(points_per_call),
                peak_gb=peak, peak_kind="cuda max allocated" if cuda else "process peak RSS",
                sampler_calls=res.sampler_calls, sampler_steps=len(ticks), mode=mode, refine=refine,
                device=torch.cuda.get_device_name(0) if cuda else "cpu", threads=torch.get_num_threads(),
                model="Wan2.1-I2V-1.3B shape, random weights" if full else "tiny Wan I2V (tools/vdt_dev/make_tiny_models.py)",
                frames=cfg["frames"], size=[cfg["height"], cfg["width"]], dtype=dtype, compile=bool(compile),
                steps=int(steps), noise_level=noise_level,
                finite=bool(torch.isfinite(res.track_path).all()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--full", action="store_true", help="full Wan2.1-I2V-1.3B shape at 49x480x832 (GPU)")
    ap.add_argument("--points", type=int, nargs="+", default=list(POINTS), help="points per call (one row each)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true", help="ComfyUI's torch.compile wrapper (inductor)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--mode", default="batched", choices=["batched", "multi-marker"])
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--in-process", action="store_true", help="all rows in this process (CPU peak RSS then "
                                                                "accumulates over rows)")
    ap.add_argument("--json", default="", help="also write the rows here")
    a = ap.parse_args(argv)
    rows = []
    for k in a.points:
        kw = dict(device=a.device, full=a.full, points_per_call=k, dtype=a.dtype, compile=a.compile,
                  steps=a.steps, refine=not a.no_refine, mode=a.mode)
        if a.in_process or len(a.points) == 1:
            row = run_point_prompting_bench(**kw)
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "--points", str(k), "--device", a.device, "--dtype",
                   a.dtype, "--steps", str(a.steps), "--mode", a.mode, "--json", "-"]
            cmd += ["--full"] * a.full + ["--compile"] * a.compile + ["--no-refine"] * a.no_refine
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        if a.json != "-":
            print(json.dumps(row), flush=True)
    if a.json == "-":
        print(json.dumps(rows[-1]))
    else:
        print("| points per call | s per point | total s | peak GiB | sampler calls |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['points']} | {r['s_per_point']:.2f} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | "
                  f"{r['sampler_calls']} |")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
