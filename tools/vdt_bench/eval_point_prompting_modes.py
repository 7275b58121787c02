"""Accuracy of several markers per generation against one marker per generation (Point Prompting), on synthetic
clips with exact ground truth.

For each seeded synthetic clip (kernels/synthetic.py: textured objects moving over a textured background, with
occlusions), the same query points are tracked twice with the same model, seed and settings:
- `single`: mode "batched" (one marker per generation; identical to one run per point),
- `multi`: mode "multi-marker" (up to --markers markers per generation at least --min-separation px apart),
and both are scored with the TAP-Vid metrics (kernels/metrics_tapvid.py, "first" queries) against the ground
truth; the mean distance between the two modes' tracks is reported as well.

    python tools/vdt_bench/eval_point_prompting_modes.py                                   # the tiny random Wan I2V
    python tools/vdt_bench/eval_point_prompting_modes.py --unet M.safetensors --vae V.safetensors --clips 8 --steps 50
A random-weights model gives near-chance numbers for both modes: this measures the plumbing, not the method. Use a
trained image-to-video model (e.g. the pack's demo model or Wan 2.1/2.2 I2V on a GPU) for a meaningful comparison.
Needs ComfyUI importable (VDT_COMFYUI_DIR; default the tools/setup.sh tree).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from vdt_dev.paths import COMFYUI_DIR  # noqa: E402


def load_model(unet: str, vae: str):
    """(MODEL, VAE) from files through ComfyUI's loaders, or the tiny Wan I2V test model when unet is empty."""
    import comfy.sd
    import comfy.utils
    if unet:
        return comfy.sd.load_diffusion_model(unet), comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae))
    from vdt_bench.bench_point_prompting import build_tiny_i2v
    import torch
    return build_tiny_i2v(torch.float32)


def compare(model, vae, clips: int, frames: int, size: int, steps: int, markers: int, min_separation: float,
            refine: bool, seed: int = 0) -> dict:
    """TAP-Vid metrics of both modes per clip and their means (see the module docstring)."""
    import numpy as np
    import torch

    from vdtrack.backbones.comfy_native import backbone_from_model
    from vdtrack.backbones.point_prompting import PointPrompting, PointPromptingSettings
    from vdtrack.kernels.metrics_tapvid import evaluate_tracks
    from vdtrack.kernels.synthetic import make_clip

    bb = backbone_from_model(model, vae)
    rows = []
    for c in range(clips):
        clip = make_clip(frames, size, size, num_objects=3, points_per_object=2, background_points=2, seed=c)
        out = {}
        for mode in ("single", "multi"):
            s = PointPromptingSettings(steps=steps, refine=refine, seed=seed, min_separation=min_separation,
                                       mode="batched" if mode == "single" else "multi-marker",
                                       points_per_generation=markers)
            with torch.inference_mode():
                res = PointPrompting(bb, s, keep_clips="none").run(clip.video, clip.query_points)
            m = evaluate_tracks(res.track_path, res.track_visibility, clip.track_path, clip.track_visibility,
                                clip.frame_size, query_points=clip.query_points, percent=True)
            out[mode] = dict(res=res, metrics=m)
        d = (out["single"]["res"].track_path - out["multi"]["res"].track_path).norm(dim=-1)
        rows.append({"clip": c, "points": int(clip.query_points.shape[0]),
                     **{f"{k}_{mode}": float(out[mode]["metrics"][k]) for mode in out
                        for k in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")},
                     "mean_px_between_modes": float(d.mean()),
                     "multi_generations": out["multi"]["res"].generations,
                     "single_generations": out["single"]["res"].generations})
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0] if k not in ("clip",)}
    return {"rows": rows, "mean": mean}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unet", default="", help="image-to-video diffusion model file (default: tiny random Wan I2V)")
    ap.add_argument("--vae", default="")
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--markers", type=int, default=4, help="markers per generation in multi-marker mode")
    ap.add_argument("--min-separation", type=float, default=16.0)
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    comfyui = COMFYUI_DIR
    if comfyui not in sys.path:
        sys.path.append(comfyui)
    import comfy.cli_args
    if a.device == "cpu":
        comfy.cli_args.args.cpu = True
    if bool(a.unet) != bool(a.vae):
        ap.error("--unet and --vae go together")
    model, vae = load_model(a.unet, a.vae)
    res = compare(model, vae, a.clips, a.frames, a.size, a.steps, a.markers, a.min_separation, not a.no_refine)
    print("| clip | points | AJ single | AJ multi | delta_avg single | delta_avg multi | OA single | OA multi | "
          "mean px between modes | generations single / multi |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"] + [dict(res["mean"], clip="mean")]:
        print(f"| {r['clip']} | {r['points']:g} | {r['average_jaccard_single']:.1f} | {r['average_jaccard_multi']:.1f} | "
              f"{r['average_pts_within_thresh_single']:.1f} | {r['average_pts_within_thresh_multi']:.1f} | "
              f"{r['occlusion_accuracy_single']:.1f} | {r['occlusion_accuracy_multi']:.1f} | "
              f"{r['mean_px_between_modes']:.2f} | {r['single_generations']:g} / {r['multi_generations']:g} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
