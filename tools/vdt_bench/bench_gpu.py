"""Full-size GPU benchmark of the pack: every row in its own process, one JSON + markdown table.

Speed and memory do not depend on the weights, so the full-size architectures are built with random weights.
Rows (full sizes; `--smoke` runs the same code at tiny sizes on the CPU, as the test suite does):

- Wan2.1-T2V-1.3B architecture (dim 1536, 30 layers, 12 heads, ffn 8960; Wan 2.1 VAE), 49 frames at 480x832:
  the floor = VAE encode + the model's own forward through blocks 0..18 (the same weights, the block list cut after
  block 18, no vdtrack code); vdtrack's extraction of layer-18 keys (`backbone_from_model(...).features`) in bf16,
  in fp32, and in bf16 with ComfyUI's torch.compile wrapper (`set_torch_compile_wrapper`, as core's
  TorchCompileModel node applies it).
- HeFT tracking of 256 and 1024 points (queries on frame 0, the longest forward-backward checks) over features of
  that size (one head: [49, 128, 30, 52], stride 16), sequential and speculative modes.
- DiffTrack matching (12 heads of q/k, [49, 12, 128, 30, 52]) and nearest neighbour, 1024 points.
- Label propagation at 480p features (60x104 cells, 256 channels), 28 context frames: frames per second.
- Point Prompting (Wan2.1-I2V-1.3B-shaped model, 49 frames at 480x832, 25 of 50 steps), seconds per point for
  1, 4 and 16 points per call, when the pack's Point Prompting benchmark (tools/vdt_bench/bench_point_prompting.py) exists;
  bf16 and torch.compile variants where it offers them.

Time = wall clock of the timed call after one warm-up call (model rows) or of one call (kernel rows);
peak memory = torch.cuda.max_memory_allocated during the timed call on CUDA, peak RSS of the row's process on CPU.
Goals (from the project's issue): features within 1.5x of the floor; HeFT 1024 points x 49 frames under 1 s;
propagation >= 50 frames/s under 2 GB; Point Prompting <= 30 s per point amortised.

    python tools/vdt_bench/bench_gpu.py --device cuda --out bench_gpu_out        # the full run (GPU)
    python tools/vdt_bench/bench_gpu.py --smoke --out /some/dir                  # tiny sizes on the CPU (the test suite)
    python tools/vdt_bench/bench_gpu.py --device cuda --only heft,propagation    # rows whose name starts with these
Needs ComfyUI importable (VDT_COMFYUI_DIR or --comfyui; default the tools/setup.sh tree).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time

from vdt_dev.paths import COMFYUI_DIR, ROOT  # noqa: E402

# Wan2.1-T2V-1.3B (the published config) and a tiny stand-in for --smoke
WAN_FULL = dict(dim=1536, num_layers=30, ffn_dim=8960, vae_dim=96, frames=49, height=480, width=832, layer=18)
WAN_SMOKE = dict(dim=256, num_layers=4, ffn_dim=512, vae_dim=8, frames=9, height=64, width=96, layer=2)
# feature sizes for the kernel rows: (frames, channels, h, w, stride)
TRACK_FULL = dict(frames=49, c=128, h=30, w=52, stride=16, heads=12)
TRACK_SMOKE = dict(frames=9, c=16, h=4, w=6, stride=16, heads=2)
PROP_FULL = dict(frames=60, c=256, h=60, w=104, n_context=28)
PROP_SMOKE = dict(frames=6, c=8, h=12, w=20, n_context=3)

GOALS = {
    "features_ratio": 1.5,           # vdtrack features time / floor time
    "heft_1024_s": 1.0,
    "propagation_fps": 50.0,
    "propagation_peak_gb": 2.0,
    "pp_s_per_point": 30.0,
}


def rows(smoke: bool) -> list[dict]:
    """The benchmark rows: name, kind and arguments. Point counts shrink in smoke mode."""
    p_small, p_big = (8, 16) if smoke else (256, 1024)
    out = [
        dict(name="wan_floor_bf16", kind="wan_floor", dtype="bf16"),
        dict(name="wan_features_bf16", kind="wan_features", dtype="bf16"),
        dict(name="wan_features_fp32", kind="wan_features", dtype="fp32"),
        dict(name="wan_features_bf16_compile", kind="wan_features", dtype="bf16", compile=True),
    ]
    for pts in (p_small, p_big):
        for mode in ("sequential", "speculative"):
            out.append(dict(name=f"heft_{pts}_{mode}", kind="heft", points=pts, fb_mode=mode))
    out += [
        dict(name=f"difftrack_{p_big}", kind="difftrack", points=p_big),
        dict(name=f"nn_{p_big}", kind="nn", points=p_big),
        dict(name="propagation_480p", kind="propagation"),
    ]
    for k in (1,) if smoke else (1, 4, 16):      # smoke: each kind of row once (CI time)
        out.append(dict(name=f"pp_{k}_bf16", kind="pp", points=k, dtype="bf16"))
    k = 2 if smoke else 4
    out.append(dict(name=f"pp_{k}_fp32", kind="pp", points=k, dtype="fp32"))
    out.append(dict(name=f"pp_{k}_bf16_compile", kind="pp", points=k, dtype="bf16", compile=True))
    return out


# ------------------------------------------------------------------------------------------- one row
class _Clock:
    """Times a block and records its peak memory (CUDA: max_memory_allocated; CPU: the process's peak RSS)."""

    def __init__(self, device: str):
        import torch
        self.torch = torch
        self.cuda = device == "cuda"

    def __enter__(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        if self.cuda:
            self.peak_gb = self.torch.cuda.max_memory_allocated() / 2 ** 30
        else:
            self.peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30


def build_wan(cfg: dict, dtype_name: str):
    """(MODEL patcher, VAE) of a random Wan 2.1 T2V of the given size, through ComfyUI's own loaders."""
    import torch
    from vdt_bench.bench_wan_features import build
    return build(cfg, {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name])


def _clip(cfg: dict):
    import torch
    g = torch.Generator().manual_seed(0)
    return torch.rand(cfg["frames"], cfg["height"], cfg["width"], 3, generator=g)


def row_wan_floor(a, r: dict) -> dict:
    """VAE encode + the model's own forward through blocks 0..layer, no vdtrack code on the path."""
    import torch
    import comfy.model_management as mm
    cfg = WAN_SMOKE if a.smoke else WAN_FULL
    model, vae = build_wan(cfg, r["dtype"])
    base = model.model
    dm = base.diffusion_model
    dm.blocks = torch.nn.ModuleList(list(dm.blocks)[:cfg["layer"] + 1])   # this process's own model: cut it
    mm.load_models_gpu([model])
    clip = _clip(cfg)
    dev = mm.get_torch_device()
    dt = base.get_dtype()
    ctx = torch.zeros(1, 512, 4096, device=dev, dtype=dt)

    def once():
        lat = base.process_latent_in(vae.encode(clip)).to(dev, dt)
        t = torch.full((1,), 20.0, device=dev)
        return dm(lat, t, ctx)

    with torch.inference_mode():
        once()                                                            # warm-up
        with _Clock(a.device) as c:
            out = once()
    return dict(seconds=c.seconds, peak_gb=c.peak_gb, blocks=len(dm.blocks), finite=bool(torch.isfinite(out).all()))


def row_wan_features(a, r: dict) -> dict:
    """vdtrack's extraction of one layer's keys through the backbone the feature node uses."""
    import torch
    from vdtrack.backbones.comfy_native import backbone_from_model
    from vdtrack.backbones.protocol import FeatureSpec
    cfg = WAN_SMOKE if a.smoke else WAN_FULL
    model, vae = build_wan(cfg, r["dtype"])
    if r.get("compile"):
        from comfy_api.torch_helpers import set_torch_compile_wrapper
        model = model.clone()
        # eager backend in smoke mode: the same dynamo path without minutes of CPU code generation
        set_torch_compile_wrapper(model, backend="eager" if a.smoke else "inductor")
    bb = backbone_from_model(model, vae)
    spec = FeatureSpec([cfg["layer"]], kinds=("k",))
    clip = _clip(cfg)
    with torch.inference_mode():
        bb.features(clip, 0.02, spec, seed=0)                             # warm-up (weights to the device)
        with _Clock(a.device) as c:
            feats = bb.features(clip, 0.02, spec, seed=0)
    f = feats[spec.keys()[0]]["features"]
    res = dict(seconds=c.seconds, peak_gb=c.peak_gb, shape=list(f.shape), finite=bool(torch.isfinite(f).all()))
    if r.get("compile"):   # did the compiled module run on this path at all? (dynamo's own count)
        from torch._dynamo.utils import counters
        res["compiled_graphs"] = int(counters["stats"]["unique_graphs"])
    return res


def _drifting_features(frames: int, c: int, h: int, w: int, heads: int, device: str, seed: int = 0):
    """Features [T,C,h,w] (heads=0) or [T,heads,C,h,w]: a random texture drifting one cell every 4 frames plus
    per-frame noise, so trackers see motion and occasional low similarity as on real features."""
    import torch
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(max(heads, 1), c, h, w, generator=g)
    out = torch.stack([base.roll((t // 4, t // 8), dims=(2, 3)) + 0.3 * torch.randn(base.shape, generator=g)
                       for t in range(frames)])
    return (out if heads else out[:, 0]).to(device)


def _queries(points: int, height: int, width: int, seed: int = 1):
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.zeros(points), torch.rand(points, generator=g) * (width - 1),
                        torch.rand(points, generator=g) * (height - 1)], 1)


def row_tracker(a, r: dict) -> dict:
    """HeFT / DiffTrack / nearest neighbour over full-size features (time of one call)."""
    import torch
    from vdtrack.kernels import difftrack, heft_tracker, nn_tracker
    cfg = TRACK_SMOKE if a.smoke else TRACK_FULL
    heads = cfg["heads"] if r["kind"] == "difftrack" else 0
    f = _drifting_features(cfg["frames"], cfg["c"], cfg["h"], cfg["w"], heads, a.device)
    size = (cfg["h"] * cfg["stride"], cfg["w"] * cfg["stride"])
    q = _queries(r["points"], *size)
    s = (cfg["stride"], cfg["stride"])
    if r["kind"] == "heft":
        fn = lambda: heft_tracker.track_heft(f, s, q, size, fb_mode=r["fb_mode"])  # noqa: E731
    elif r["kind"] == "difftrack":
        fn = lambda: difftrack.track_difftrack(f, None, s, q, size)  # noqa: E731
    else:
        fn = lambda: nn_tracker.track_nearest_neighbour(f, s, q, size)  # noqa: E731
    with torch.inference_mode():
        with _Clock(a.device) as c:
            out = fn()
    path = out[0]
    return dict(seconds=c.seconds, peak_gb=c.peak_gb, frames=cfg["frames"], points=r["points"],
                finite=bool(torch.isfinite(path).all()))


def row_propagation(a, r: dict) -> dict:
    """DINO/DIFT label propagation at 480p feature size: frames per second over all propagated frames."""
    import torch
    from vdtrack.kernels import propagation
    cfg = PROP_SMOKE if a.smoke else PROP_FULL
    f = _drifting_features(cfg["frames"], cfg["c"], cfg["h"], cfg["w"], 0, a.device)
    lab = torch.zeros(cfg["h"] * 8, cfg["w"] * 8, dtype=torch.long, device=a.device)
    lab[: cfg["h"] * 4, : cfg["w"] * 4] = 1
    lab[cfg["h"] * 5:, cfg["w"] * 5:] = 2
    with torch.inference_mode():
        with _Clock(a.device) as c:
            soft, labels = propagation.propagate_label_map(f, lab, n_context=cfg["n_context"])
    n = cfg["frames"] - 1
    return dict(seconds=c.seconds, peak_gb=c.peak_gb, frames=n, fps=n / max(c.seconds, 1e-9),
                finite=bool(torch.isfinite(soft).all()))


def row_point_prompting(a, r: dict) -> dict:
    """Point Prompting through the pack's own benchmark function, when it exists."""
    try:
        from vdt_bench.bench_point_prompting import run_point_prompting_bench
    except ImportError as e:
        return dict(status="skipped", why=f"no Point Prompting benchmark in this tree ({e})")
    params = inspect.signature(run_point_prompting_bench).parameters
    kw = dict(device=a.device, full=not a.smoke, points_per_call=r["points"])
    if a.smoke:    # the same code at a few steps; eager dynamo backend instead of minutes of CPU code generation
        kw.update(steps=4, compile_backend="eager")
    for opt in ("dtype", "compile"):
        if opt in r:
            if opt not in params:
                return dict(status="skipped", why=f"the Point Prompting node offers no '{opt}' option")
            kw[opt] = r[opt]
    kw = {k: v for k, v in kw.items() if k in params}
    res = dict(run_point_prompting_bench(**kw))
    res.setdefault("status", "ok")
    return res


KINDS = {"wan_floor": row_wan_floor, "wan_features": row_wan_features, "heft": row_tracker,
         "difftrack": row_tracker, "nn": row_tracker, "propagation": row_propagation, "pp": row_point_prompting}


def run_row(a) -> dict:
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    r = next((x for x in rows(a.smoke) if x["name"] == a.row), None)
    if r is None:
        raise SystemExit(f"--row: unknown row '{a.row}'")
    if r["kind"] in ("wan_floor", "wan_features", "pp"):
        from vdt_bench.bench_wan_features import _setup_comfy
        _setup_comfy(a.comfyui, a.device)
    res = KINDS[r["kind"]](a, r)
    res.setdefault("status", "ok")
    return res


# ------------------------------------------------------------------------------------------- the table
def _device_name(device: str) -> str:
    import torch
    if device == "cuda":
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cuda (not available)"
    return f"cpu ({os.cpu_count()} cores)"


def judge(results: dict) -> dict:
    """Goal verdicts (True/False) per row where a goal applies; ratio of features to floor."""
    verdicts = {}
    floor = results.get("wan_floor_bf16", {})
    for name, res in results.items():
        if res.get("status") != "ok":
            continue
        if name.startswith("wan_features") and floor.get("status") == "ok":
            res["ratio_to_floor"] = res["seconds"] / max(floor["seconds"], 1e-9)
            if name == "wan_features_bf16":
                verdicts[name] = res["ratio_to_floor"] <= GOALS["features_ratio"]
        elif name.startswith("heft_") and name.split("_")[1] == str(max(
                int(n.split("_")[1]) for n in results if n.startswith("heft_"))):
            verdicts[name] = res["seconds"] < GOALS["heft_1024_s"]
        elif name == "propagation_480p":
            verdicts[name] = res["fps"] >= GOALS["propagation_fps"] and res["peak_gb"] < GOALS["propagation_peak_gb"]
        elif name.startswith("pp_") and "s_per_point" in res:
            verdicts[name] = res["s_per_point"] <= GOALS["pp_s_per_point"]
    return verdicts


def markdown(summary: dict) -> str:
    lines = [f"Device: {summary['device']} ({'smoke sizes' if summary['smoke'] else 'full sizes'}), "
             f"torch {summary['torch']}, threads {summary['threads']}", "",
             "| row | status | seconds | peak memory (GiB) | detail | goal met |", "|---|---|---:|---:|---|---|"]
    for name, res in summary["results"].items():
        sec = f"{res['seconds']:.3f}" if "seconds" in res else ""
        peak = f"{res['peak_gb']:.2f}" if res.get("peak_gb") is not None else ""
        detail = []
        if "compiled_graphs" in res:
            detail.append(f"compiled graphs {res['compiled_graphs']}")
        for k in ("ratio_to_floor", "fps", "s_per_point"):
            if k in res:
                detail.append(f"{k} {res[k]:.2f}")
        if res.get("status") != "ok":
            detail.append(str(res.get("why", ""))[:120])
        goal = summary["goals_met"].get(name)
        lines.append(f"| {name} | {res.get('status')} | {sec} | {peak} | {'; '.join(detail)} | "
                     f"{'' if goal is None else ('yes' if goal else 'NO')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite runs this)")
    ap.add_argument("--out", default="bench_gpu_out", help="folder for results.json and results.md")
    ap.add_argument("--only", default="", help="comma list of row-name prefixes to run")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--row-timeout-s", type=float, default=0,
                    help="per-row limit in seconds (default 600 on full sizes; none in smoke mode, whose speed "
                         "depends on how busy the machine is)")
    ap.add_argument("--comfyui", default=COMFYUI_DIR)
    ap.add_argument("--row", help=argparse.SUPPRESS)        # internal: run one row in this process
    a = ap.parse_args(argv)
    if a.smoke:
        a.device = "cpu"
    if a.row:
        print(json.dumps(run_row(a)))
        return 0
    import torch
    timeout = a.row_timeout_s or (None if a.smoke else 600)
    prefixes = [p.strip() for p in a.only.split(",") if p.strip()]
    results = {}
    for r in rows(a.smoke):
        if prefixes and not any(r["name"].startswith(p) for p in prefixes):
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--row", r["name"], "--device", a.device,
               "--threads", str(a.threads), "--comfyui", a.comfyui] + (["--smoke"] if a.smoke else [])
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            if p.returncode == 0 and p.stdout.strip():
                res = json.loads(p.stdout.strip().splitlines()[-1])
            else:
                tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
                res = dict(status="failed", why=tail)
        except subprocess.TimeoutExpired:
            res = dict(status="failed", why=f"row ran past {timeout} s")
        res["row_wall_s"] = time.perf_counter() - t0
        results[r["name"]] = res
        print(f"{r['name']}: {json.dumps(res)}", flush=True)
    summary = dict(device=_device_name(a.device), smoke=a.smoke, torch=torch.__version__,
                   threads=a.threads or torch.get_num_threads(), goals=GOALS, results=results)
    summary["goals_met"] = judge(results)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    md = markdown(summary)
    with open(os.path.join(a.out, "results.md"), "w") as fh:
        fh.write(md)
    print(md)
    return 0 if all(res.get("status") in ("ok", "skipped") for res in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
