"""Benchmark of the point-tracking kernels: time and peak memory of the fast versions against the references.

Each case runs in a fresh subprocess so its peak memory is its own: on CPU, peak RSS (ru_maxrss) minus the RSS
after the inputs were built; on CUDA, torch.cuda.max_memory_allocated minus the memory allocated before the call.
References run on fewer points (--ref-points) because they loop per point; nothing is extrapolated, every row
reports the sizes it actually ran. Prints a markdown table.

  python tools/vdt_bench/bench_tracking.py --device cpu
  python tools/vdt_bench/bench_tracking.py --device cpu --heft-pixel-points 256 --threads 1
  python tools/vdt_bench/bench_tracking.py --threads 1 --points 256 --only "HeFT feature grid"   # the HeFT fb_mode rows
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from vdt_dev.paths import ROOT  # noqa: E402


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(a, points: int, heads: int = 0):
    import torch
    g = torch.Generator().manual_seed(0)
    base = torch.randn(max(heads, 1), a.c, a.h, a.w, generator=g)
    frames = []
    for t in range(a.frames):     # texture drifting one cell every 4 frames, plus per-frame noise
        frames.append(base.roll((t // 4, t // 8), dims=(2, 3)) + 0.3 * torch.randn(base.shape, generator=g))
    f = torch.stack(frames)                                      # [T,heads,C,h,w]
    f = f if heads else f[:, 0]
    H, W = a.h * a.stride, a.w * a.stride
    q = torch.stack([torch.zeros(points), torch.rand(points, generator=g) * (W - 1),
                     torch.rand(points, generator=g) * (H - 1)], 1)
    return f.to(a.device), q, (H, W)


def run_one(a) -> dict:
    import torch
    from vdtrack.kernels import cost_volume, difftrack, heft_tracker, nn_tracker
    from vdtrack.references import cost_volume as cost_volume_ref, difftrack as difftrack_ref, heft as heft_ref
    from vdtrack.references import nn as nn_ref
    torch.set_num_threads(a.threads)
    case, which, pts = a.case, a.which, a.points
    heads = a.heads if case == "difftrack" else 0
    f, q, size = _inputs(a, pts, heads)
    s = (a.stride, a.stride)
    heft_kw = dict(upsample=a.upsample, fb_mode=a.fb_mode)
    if case == "cost_volume":
        desc = cost_volume.sample_descriptors(f, q, s)
        if which == "fast":   # stream the volume chunk by chunk, keep only the per-frame best score
            fn = lambda: [c.amax((2, 3)) for _, c in cost_volume.iter_cost_volume(desc, f)]  # noqa: E731
        else:
            fn = lambda: cost_volume_ref.cost_volume_ref(desc, f)  # noqa: E731
    elif case == "nn":
        fn = (lambda: nn_tracker.track_nearest_neighbour(f, s, q, size)) if which == "fast" else \
             (lambda: nn_ref.track_nearest_neighbour_ref(f, s, q, size))
    elif case == "heft":
        fn = (lambda: heft_tracker.track_heft(f, s, q, size, **heft_kw)) if which == "fast" else \
             (lambda: heft_ref.track_heft_ref(f, s, q, size, **heft_kw))
    elif case == "difftrack":
        fn = (lambda: difftrack.track_difftrack(f, None, s, q, size)) if which == "fast" else \
             (lambda: difftrack_ref.track_difftrack_ref(f, None, s, q, size))
    else:
        raise ValueError(f"unknown case {case}")
    cuda = a.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"seconds": dt, "peak_mb": max(peak, 0) / 2 ** 20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--h", type=int, default=60)
    p.add_argument("--w", type=int, default=104)
    p.add_argument("--c", type=int, default=64)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--points", type=int, default=1024, help="points for the fast versions")
    p.add_argument("--heft-pixel-points", type=int, default=1024, help="points for fast HeFT at pixel resolution")
    p.add_argument("--heft-batched-points", type=int, default=1024, help="points for fast HeFT, fb_mode batched")
    p.add_argument("--ref-points", type=int, default=4, help="points for the NN/cost-volume references")
    p.add_argument("--heft-ref-points", type=int, default=1, help="points for the HeFT reference")
    p.add_argument("--difftrack-points", type=int, default=64)
    p.add_argument("--difftrack-ref-points", type=int, default=1)
    p.add_argument("--heads", type=int, default=2, help="heads for DiffTrack")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--skip", default="", help="comma list of row labels to skip")
    p.add_argument("--only", default="", help="run only the rows whose label starts with this")
    # internal: one case in this process
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--which", help=argparse.SUPPRESS)
    p.add_argument("--upsample", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--fb-mode", default="speculative", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads == 0:
        import torch
        a.threads = torch.get_num_threads()
    if a.one:
        print(json.dumps(run_one(a)))
        return
    rows = [  # label, case, which, points, upsample, fb_mode
        ("cost volume (cosine, streamed)", "cost_volume", "fast", a.points, 1, "sequential"),
        ("cost volume reference", "cost_volume", "ref", a.ref_points, 1, "sequential"),
        ("NN tracker", "nn", "fast", a.points, 1, "sequential"),
        ("NN tracker reference", "nn", "ref", a.ref_points, 1, "sequential"),
        ("HeFT feature grid, speculative (default)", "heft", "fast", a.points, 0, "speculative"),
        ("HeFT feature grid, sequential", "heft", "fast", a.points, 0, "sequential"),
        ("HeFT feature grid, batched", "heft", "fast", a.heft_batched_points, 0, "batched"),
        ("HeFT feature grid reference", "heft", "ref", a.heft_ref_points, 0, "sequential"),
        ("HeFT pixels, speculative (default)", "heft", "fast", a.heft_pixel_points, 1, "speculative"),
        ("HeFT pixels, sequential", "heft", "fast", a.heft_pixel_points, 1, "sequential"),
        ("HeFT pixels reference", "heft", "ref", a.heft_ref_points, 1, "sequential"),
        ("DiffTrack", "difftrack", "fast", a.difftrack_points, 1, "sequential"),
        ("DiffTrack reference", "difftrack", "ref", a.difftrack_ref_points, 1, "sequential"),
    ]
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    base = [sys.executable, os.path.abspath(__file__), "--one", "--device", a.device, "--frames", str(a.frames),
            "--h", str(a.h), "--w", str(a.w), "--c", str(a.c), "--stride", str(a.stride), "--heads", str(a.heads),
            "--threads", str(a.threads)]
    print(f"device {a.device}, {a.frames} frames, {a.h}x{a.w} cells (stride {a.stride}, frames "
          f"{a.h * a.stride}x{a.w * a.stride} px), C={a.c}, DiffTrack heads={a.heads}, torch threads {a.threads}; "
          "queries in frame 0 (the longest forward-backward checks)\n", flush=True)
    print("| kernel | version | points | seconds | peak extra memory (MiB) |")
    print("|---|---|---:|---:|---:|", flush=True)
    for label, case, which, pts, up, fb in rows:
        if label in skip or not label.startswith(a.only):
            continue
        cmd = base + ["--case", case, "--which", which, "--points", str(pts), "--upsample", str(up),
                      "--fb-mode", fb]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(f"| {label} | {which} | {pts} | failed | {out.stderr.strip().splitlines()[-1][:80]} |", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {label} | {which} | {pts} | {r['seconds']:.2f} | {r['peak_mb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
