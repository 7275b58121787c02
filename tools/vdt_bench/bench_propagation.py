"""Benchmark: reference (full affinity) vs fast (windowed tiles) label propagation.

Times the propagation of `--targets` frames with a full context (first frame + `--context` queued frames)
at realistic feature sizes, and reports the peak memory of each. The reference is skipped when its
affinity would need more than `--ref-limit-gb` (its peak is about two (contexts*h*w) x (h*w) float32
matrices, measured at 30x52 cells); the table then shows the bytes it would need.

    python tools/vdt_bench/bench_propagation.py --device cpu
    python tools/vdt_bench/bench_propagation.py --device cuda --sizes 60x104 --channels 64 256

Each run is a fresh subprocess. CPU peak memory = the highest resident set size sampled every 2 ms
(/proc/self/statm) during the timed loop, minus the RSS just before it (the inputs are excluded);
CUDA peak memory = torch.cuda.max_memory_allocated above the inputs. Times: wall clock per target
frame and process CPU time per target frame (all threads; steadier on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

from vdt_dev.paths import ROOT  # noqa: E402


class _RssPeak:
    """Samples the current RSS in a thread; falls back to ru_maxrss growth where /proc is missing."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.proc = os.path.exists("/proc/self/statm")
        self.base = self._now()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _now(self) -> int:
        if self.proc:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._now())
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _one(args) -> dict:
    """One timed run in this process (called in a subprocess by main)."""
    import torch
    import torch.nn.functional as F

    from vdtrack.kernels.propagation import context_frames, window_step
    from vdtrack.references.propagation import full_affinity_step, neighbourhood_mask

    dev = torch.device(args.device)
    torch.manual_seed(0)
    h, w = args.h, args.w
    t_all = 1 + args.context + args.targets
    feats = F.normalize(torch.randn(t_all, args.c, h, w, device=dev), dim=1)
    soft = torch.rand(t_all, args.labels, h, w, device=dev)
    targets = range(1 + args.context, t_all)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    mask = neighbourhood_mask(h, w, args.radius, dev) if args.which == "ref" else None
    with _RssPeak() as rss:
        t0, c0 = time.perf_counter(), time.process_time()
        for t in targets:
            ctx = context_frames(t, args.context)
            if args.which == "ref":
                out = full_affinity_step(t, ctx, feats, soft, mask, args.top_k, 0.1)
            else:
                out = window_step(feats[t], feats, soft, ctx, args.radius, args.top_k, 0.1, args.tile)
            soft[t] = out
        if dev.type == "cuda":
            torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / len(targets)
        cpu = (time.process_time() - c0) / len(targets)
    peak = torch.cuda.max_memory_allocated() - base if dev.type == "cuda" else rss.growth
    return {"sec_per_frame": sec, "cpu_per_frame": cpu, "peak_bytes": int(peak)}


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(b) < 1024 or unit == "TB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} TB"


def _run_sub(argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one"] + argv
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["failed"]
        return {"error": tail[0][:120]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", nargs="+", default=["30x52", "60x104"], help="feature grids h x w")
    ap.add_argument("--channels", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--context", type=int, default=28)
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--radius", type=int, default=15)
    ap.add_argument("--top-k", dest="top_k", type=int, default=10)
    ap.add_argument("--labels", type=int, default=4, help="label channels (background + objects)")
    ap.add_argument("--tile", type=int, default=16)
    ap.add_argument("--ref-limit-gb", dest="ref_limit_gb", type=float, default=6.0)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--which", default="fast", choices=["fast", "ref"], help=argparse.SUPPRESS)
    ap.add_argument("--h", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--w", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--c", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args)))
        return

    from vdtrack.references.propagation import affinity_bytes

    common = ["--device", args.device, "--context", str(args.context), "--targets", str(args.targets),
              "--radius", str(args.radius), "--top-k", str(args.top_k), "--labels", str(args.labels),
              "--tile", str(args.tile)]
    print(f"device {args.device}; contexts 1+{args.context}; r={args.radius}; k={args.top_k}; "
          f"{args.targets} target frames; tile {args.tile}; ref skipped above {args.ref_limit_gb:g} GB\n")
    print("| cells (h x w) | C | ref s/frame (wall / CPU) | ref peak | fast s/frame (wall / CPU) | fast peak | "
          "CPU-time ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split("x"))
        for c in args.channels:
            dims = ["--h", str(h), "--w", str(w), "--c", str(c)]
            fast = _run_sub(common + dims + ["--which", "fast"])
            need = 2 * affinity_bytes(h, w, 1 + args.context)
            if need > args.ref_limit_gb * 1024 ** 3:
                ref = {"skip": f"skipped: needs ~{_fmt_bytes(need)}"}
            else:
                ref = _run_sub(common + dims + ["--which", "ref"])
            diff = _max_diff(h, w, c, args) if "sec_per_frame" in ref else None

            def cell(r, key):
                if "skip" in r:
                    return r["skip"] if key == "sec_per_frame" else "-"
                if "error" in r:
                    return f"failed: {r['error']}" if key == "sec_per_frame" else "-"
                if key == "sec_per_frame":
                    return f"{r['sec_per_frame']:.2f} / {r['cpu_per_frame']:.2f}"
                return _fmt_bytes(r[key])

            speed = (f"{ref['cpu_per_frame'] / fast['cpu_per_frame']:.1f}x"
                     if "sec_per_frame" in ref and "sec_per_frame" in fast else "-")
            print(f"| {h} x {w} | {c} | {cell(ref, 'sec_per_frame')} | {cell(ref, 'peak_bytes')} | "
                  f"{cell(fast, 'sec_per_frame')} | {cell(fast, 'peak_bytes')} | {speed} | "
                  f"{'-' if diff is None else f'{diff:.1e}'} |", flush=True)


def _max_diff(h, w, c, args) -> float:
    """Fast vs reference on one full-context target frame of this size (same process, small extra cost)."""
    import torch
    import torch.nn.functional as F

    from vdtrack.kernels.propagation import context_frames, window_step
    from vdtrack.references.propagation import full_affinity_step, neighbourhood_mask

    dev = torch.device(args.device)
    torch.manual_seed(1)
    t = 1 + args.context
    feats = F.normalize(torch.randn(t + 1, c, h, w, device=dev), dim=1)
    soft = torch.rand(t + 1, args.labels, h, w, device=dev)
    ctx = context_frames(t, args.context)
    a = window_step(feats[t], feats, soft, ctx, args.radius, args.top_k, 0.1, args.tile)
    b = full_affinity_step(t, ctx, feats, soft, neighbourhood_mask(h, w, args.radius, dev), args.top_k, 0.1)
    return float((a - b).abs().max())


if __name__ == "__main__":
    main()
