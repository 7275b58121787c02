"""TAP-Vid report of the feature trackers on pixel/patch features next to the optical-flow baseline, on seeded
synthetic clips with ground truth (query-first mode, mean over clips, x100). This is the floor that diffusion
features have to beat. No ComfyUI needed.

usage: .vdt/venv/bin/python tools/vdt_bench/report_trackers.py [--seeds 5] [--frames 24] [--size 128] [--patch 4]
"""
from __future__ import annotations

import argparse
import time

import torch

from vdtrack.kernels.difftrack import track_difftrack
from vdtrack.kernels.flow_tracker import track_with_flow
from vdtrack.kernels.heft_tracker import track_heft
from vdtrack.kernels.metrics_tapvid import evaluate_tracks, nanmean_metrics
from vdtrack.kernels.nn_tracker import track_nearest_neighbour
from vdtrack.kernels.pixel_features import patch_features
from vdtrack.kernels.synthetic import make_clip


def trackers(patch: int):
    def feats(clip):
        return patch_features(clip.video, patch=patch)

    def flow(clip):
        return track_with_flow(clip.video, clip.query_points, method="dis")[:2]

    def nn(clip):
        f = feats(clip)
        return track_nearest_neighbour(f["features"], f["stride"], clip.query_points, clip.frame_size,
                                       refine_radius=1)[:2]

    def heft(clip):
        f = feats(clip)
        # radii scaled from HeFT's 480p values to these small clips; "sequential" gives the same tracks as the
        # default "speculative" mode and is the faster one on a CPU
        return track_heft(f["features"], f["stride"], clip.query_points, clip.frame_size, argmax_radius=8,
                          search_radius=24, vis_threshold=8, temperature=0.05, fb_mode="sequential")[:2]

    def difftrack(clip):
        f = feats(clip)["features"][:, None]       # one "head": q = k = the patch features
        return track_difftrack(f, None, (patch, patch), clip.query_points, clip.frame_size)[:2]

    return {"optical flow (DIS, fwd-bwd)": flow, "nearest neighbour (cos < 0.6 occluded)": nn,
            "HeFT soft-argmax + fwd-bwd": heft, "DiffTrack matching (always visible)": difftrack}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--patch", type=int, default=4)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    clips = [make_clip(frames=args.frames, height=args.size, width=args.size, num_objects=3, points_per_object=8,
                       background_points=8, seed=s) for s in range(args.seeds)]
    print(f"{args.seeds} synthetic clips, {args.frames} frames at {args.size}x{args.size}, "
          f"{clips[0].query_points.shape[0]} tracks each; pixel features: raw {args.patch}x{args.patch} colour patches\n")
    print("| tracker | AJ | delta_avg | OA | pts_within_1 | pts_within_4 | s/clip |")
    print("|---|---|---|---|---|---|---|")
    for name, fn in trackers(args.patch).items():
        per, t0 = [], time.perf_counter()
        for c in clips:
            path, vis = fn(c)
            per.append(evaluate_tracks(path, vis, c.track_path, c.track_visibility, c.frame_size,
                                       query_points=c.query_points))
        m = nanmean_metrics(per)
        dt = (time.perf_counter() - t0) / len(clips)
        print(f"| {name} | {100 * m['average_jaccard']:.1f} | {100 * m['average_pts_within_thresh']:.1f} | "
              f"{100 * m['occlusion_accuracy']:.1f} | {100 * m['pts_within_1']:.1f} | {100 * m['pts_within_4']:.1f} "
              f"| {dt:.2f} |")


if __name__ == "__main__":
    main()
