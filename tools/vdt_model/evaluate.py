"""Evaluate the embedded model (models/) on held-out synthetic clips and write one table.

Rows: every tracking method (Point Prompting, HeFT, nearest neighbour, DiffTrack) on the trained model and on the
same architecture with random weights (the control: DiT from tools/train_embedded.new_dit with the training seed,
i.e. the trained model's own initial weights, and the trained VAE so only what the DiT learnt differs), next to
raw pixel features, optical flow and "static" (every point held at its query position, always visible).
TAP-Vid metrics (query-first, 256 px evaluation frame, mean over clips, x100) on "normal" clips (random objects,
30 % textureless, panning background) and on "identical" clips (two identical objects whose paths cross).
Then DAVIS J&F of first-frame label propagation on both clip sets with video-model features only (TED's
"motion" features, alpha = 1) next to pixel (appearance) features.

Clip seeds start at 900000 (training draws its own random seeds; --seed-base moves the held-out set).
Everything runs through ComfyUI's own loaders (comfy.sd) and the pack's backbone adapter, as in a workflow.

usage: .vdt/venv/bin/python tools/eval_embedded.py [--clips 4] [--points 6] [--out docs/embedded_eval.md]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from vdt_dev.paths import COMFYUI_DIR, ROOT

from .train import DIT_NAME, VAE_NAME, import_comfy, new_dit


@dataclass
class Settings:
    """Method settings on 64x64 clips (our choices, scaled from the papers' 480p values)."""
    pp_level: float = 0.5          # Point Prompting SDEdit strength (paper 0.5)
    pp_steps: int = 8              # schedule length; level 0.5 runs the last 4 steps
    pp_guidance: float = 4.0       # lambda of the edited-vs-unedited first-frame guidance
    pp_radius: float = 5.0         # marker radius, px (paper: 2 px at 480p; 5 survives the embedded VAE's 8 px cells)
    pp_search: float = 16.0        # red tracker initial search radius, px
    pp_refine: bool = False        # the published refinement pass (masked regeneration around the coarse track)
    feat_level: float = 0.02       # feature noise level (fraction of the schedule)
    feat_layer: int = 1            # DiT block whose self-attention q/k (and output) are read
    prop_level: float = 0.3        # label-propagation feature noise level
    seed: int = 0


# ----------------------------------------------------------------------------------------------- clips

def held_out_clips(kind: str, n: int, points: int, seed_base: int = 900000, size: int = 64, frames: int = 17):
    """Fixed held-out clips: kind "normal" or "identical"."""
    from vdtrack.kernels.synthetic import make_clip

    off = 0 if kind == "normal" else 5000
    return [make_clip(frames=frames, height=size, width=size, num_objects=3 if kind == "normal" else 2,
                      points_per_object=points, background_points=points // 2, seed=seed_base + off + i,
                      identical=kind == "identical", textureless=0.3 if kind == "normal" else 0.0)
            for i in range(n)]


def first_frame_queries(clip):
    """Tracks visible in frame 0, queried there (TAP-Vid 'first' with query frame 0): (index, queries [M,3])."""
    idx = torch.nonzero(clip.track_visibility[0]).flatten()
    q = torch.cat([torch.zeros(len(idx), 1), clip.track_path[0, idx]], 1)
    return idx, q


# ----------------------------------------------------------------------------------------------- models

def load_backbone(models_dir: str, control: bool = False, seed: int = 0):
    """ComfyWanBackbone over the embedded files (loaded as UNETLoader / VAELoader load them); control=True
    replaces the DiT by the same architecture with its initial (random) weights."""
    import comfy.sd
    import comfy.utils
    from safetensors.torch import load_file

    from vdtrack.backbones.comfy_wan import ComfyWanBackbone

    dit_path = os.path.join(models_dir, "diffusion_models", DIT_NAME)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(os.path.join(models_dir, "vae", VAE_NAME)))
    if not control:
        model = comfy.sd.load_diffusion_model(dit_path)
    else:
        sd = load_file(dit_path)
        dim, layers = sd["head.modulation"].shape[-1], len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        ffn = sd["blocks.0.ffn.0.weight"].shape[0]
        m = new_dit(dim, layers, ffn, seed)
        model = comfy.sd.load_diffusion_model_state_dict({k: v.to(torch.float16) for k, v in m.state_dict().items()})
    return ComfyWanBackbone(model, vae)


# ----------------------------------------------------------------------------------------------- methods

def static_tracks(clip, q):
    t = clip.video.shape[0]
    return q[None, :, 1:].repeat(t, 1, 1), torch.ones(t, q.shape[0], dtype=torch.bool)


def flow_tracks(clip, q):
    from vdtrack.kernels.flow_tracker import track_with_flow

    return track_with_flow(clip.video, q, method="dis")[:2]


def point_prompting_tracks(bb, clip, q, s: Settings):
    """The pack's Point Prompting (backbones.point_prompting, what VDT_PointPromptingTracker runs): reds
    desaturated, a red dot pasted per point, SDEdit regeneration guided by the marked vs the unmarked first frame,
    red-dot tracking, refinement pass. Returns (path, vis, regenerated clips)."""
    from vdtrack.backbones.point_prompting import PointPrompting, PointPromptingSettings

    settings = PointPromptingSettings(noise_level=s.pp_level, steps=s.pp_steps, guidance=s.pp_guidance,
                                      marker_radius=s.pp_radius, search_radius=s.pp_search, refine=s.pp_refine,
                                      points_per_generation=8, mode="batched", seed=s.seed).check()
    with torch.inference_mode():
        res = PointPrompting(bb, settings, keep_clips="first").run(clip.video, q)
    return res.track_path, res.track_visibility, res.clips


def diffusion_features(bb, clip, s: Settings, noise_level: float | None = None):
    from vdtrack.backbones.protocol import FeatureSpec

    spec = FeatureSpec([s.feat_layer], kinds=("q", "k", "block"))
    with torch.inference_mode():
        return bb.features(clip.video, s.feat_level if noise_level is None else noise_level, spec, seed=s.seed)


def feature_trackers(feats: dict, layer: int, clip, q):
    """{method: (path, vis)} for HeFT, nearest neighbour (on the keys) and DiffTrack (queries vs keys)."""
    k = feats[f"k{layer}"]
    kf = k["features"].float().flatten(1, 2)              # [T, heads*d, h, w]
    qf = feats[f"q{layer}"]["features"].float()
    return _trackers(kf, k["stride"], qf, k["features"].float(), clip, q)


def _trackers(kf, stride, qf, keys, clip, q):
    from vdtrack.kernels.difftrack import track_difftrack
    from vdtrack.kernels.heft_tracker import track_heft
    from vdtrack.kernels.nn_tracker import track_nearest_neighbour

    size = clip.frame_size
    out = {}
    out["HeFT"] = track_heft(kf, stride, q, size, argmax_radius=8, search_radius=24, vis_threshold=8,
                             temperature=0.05, fb_mode="sequential")[:2]
    out["nearest neighbour"] = track_nearest_neighbour(kf, stride, q, size, refine_radius=1)[:2]
    out["DiffTrack"] = track_difftrack(qf, keys, stride, q, size)[:2]
    return out


def pixel_trackers(clip, q, patch: int = 4):
    from vdtrack.kernels.pixel_features import patch_features

    f = patch_features(clip.video, patch=patch)
    x = f["features"]
    return _trackers(x, f["stride"], x[:, None], x[:, None], clip, q)


def score(clip, idx, path, vis) -> dict:
    from vdtrack.kernels.metrics_tapvid import evaluate_tracks

    q = torch.cat([torch.zeros(len(idx), 1), clip.track_path[0, idx]], 1)
    return evaluate_tracks(path, vis, clip.track_path[:, idx], clip.track_visibility[:, idx], clip.frame_size,
                           query_points=q)


def propagation_jf(features: torch.Tensor, clip) -> float:
    from vdtrack.kernels.metrics_davis import evaluate_davis
    from vdtrack.kernels.propagation import propagate_label_map

    f = features.float()
    grid = (clip.video.shape[1] // 4, clip.video.shape[2] // 4)
    if tuple(f.shape[-2:]) != grid:          # our choice: every feature on the same 4 px grid (bilinear)
        f = torch.nn.functional.interpolate(f, size=grid, mode="bilinear", align_corners=False)
    _, labels = propagate_label_map(f, clip.labels[0], n_context=8, radius=3, top_k=5, temperature=0.1)
    return float(evaluate_davis(labels, clip.labels)["J&F-Mean"])


# ----------------------------------------------------------------------------------------------- table

def evaluate(models_dir: str, clips: int, points: int, s: Settings, seed_base: int = 900000,
             methods: tuple[str, ...] = ("pp", "features", "baselines", "propagation"), log=print) -> dict:
    """All rows: {(clip set, row name): {AJ, delta_avg, OA}} and {(clip set, row name): J&F}."""
    from vdtrack.kernels.metrics_tapvid import nanmean_metrics
    from vdtrack.kernels.pixel_features import patch_features

    torch.manual_seed(s.seed)
    sets = {kind: held_out_clips(kind, clips, points, seed_base) for kind in ("normal", "identical")}
    backbones = {"trained": load_backbone(models_dir), "random-weight control": load_backbone(models_dir, True,
                                                                                              s.seed)}
    per: dict = {}
    jf: dict = {}

    def add(kind, name, clip, idx, pv):
        per.setdefault((kind, name), []).append(score(clip, idx, *pv))

    for kind, cl in sets.items():
        for ci, clip in enumerate(cl):
            t0 = time.monotonic()
            idx, q = first_frame_queries(clip)
            if "baselines" in methods:
                add(kind, "static (query position)", clip, idx, static_tracks(clip, q))
                add(kind, "optical flow (DIS)", clip, idx, flow_tracks(clip, q))
                for m, pv in pixel_trackers(clip, q).items():
                    add(kind, f"{m}, pixel features", clip, idx, pv)
            for bname, bb in backbones.items():
                if "pp" in methods:
                    path, vis, _ = point_prompting_tracks(bb, clip, q, s)
                    add(kind, f"Point Prompting, {bname}", clip, idx, (path, vis))
                if "features" in methods or "propagation" in methods:
                    feats = diffusion_features(bb, clip, s)
                if "features" in methods:
                    for m, pv in feature_trackers(feats, s.feat_layer, clip, q).items():
                        add(kind, f"{m}, {bname}", clip, idx, pv)
                if "propagation" in methods:
                    pf = diffusion_features(bb, clip, s, noise_level=s.prop_level)[f"block{s.feat_layer}"]["features"]
                    jf.setdefault((kind, f"video features only (alpha 1), {bname}"), []).append(
                        propagation_jf(pf, clip))
            if "propagation" in methods:
                jf.setdefault((kind, "pixel features (appearance)"), []).append(
                    propagation_jf(patch_features(clip.video, patch=4)["features"], clip))
            log(f"[eval] {kind} clip {ci + 1}/{len(cl)} in {time.monotonic() - t0:.1f}s")
    tap = {key: nanmean_metrics(v) for key, v in per.items()}
    return {"tapvid": {key: {"AJ": 100 * m["average_jaccard"], "delta_avg": 100 * m["average_pts_within_thresh"],
                             "OA": 100 * m["occlusion_accuracy"]} for key, m in tap.items()},
            "jf": {key: 100 * float(np.mean(v)) for key, v in jf.items()}}


def table(res: dict, header: str) -> str:
    lines = [header, "", "| clips | method | AJ | delta_avg | OA |", "|---|---|---|---|---|"]
    for (kind, name), m in res["tapvid"].items():
        lines.append(f"| {kind} | {name} | {m['AJ']:.1f} | {m['delta_avg']:.1f} | {m['OA']:.1f} |")
    if res["jf"]:
        lines += ["", "| clips | label propagation features | DAVIS J&F |", "|---|---|---|"]
        for (kind, name), v in res["jf"].items():
            lines.append(f"| {kind} | {name} | {v:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=os.path.join(ROOT, "models"), help="folder with diffusion_models/ and vae/")
    ap.add_argument("--clips", type=int, default=6, help="held-out clips per set")
    ap.add_argument("--points", type=int, default=3, help="ground-truth points per object")
    ap.add_argument("--seed-base", type=int, default=900000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="", help="write the table (markdown) here")
    ap.add_argument("--json", default="", help="write the numbers (json) here")
    ap.add_argument("--comfyui", default=COMFYUI_DIR)
    for f, v in Settings().__dict__.items():
        kind = (lambda x: x.lower() in ("1", "true", "yes")) if isinstance(v, bool) else type(v)
        ap.add_argument("--" + f.replace("_", "-"), type=kind, default=v)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import_comfy(a.comfyui)
    s = Settings(**{f: getattr(a, f) for f in Settings().__dict__})
    t0 = time.monotonic()
    res = evaluate(a.models, a.clips, a.points, s, a.seed_base)
    header = (f"Held-out synthetic clips: {a.clips} normal + {a.clips} identical-objects, 17 frames at 64x64, "
              f"queries = every ground-truth point visible in frame 0. Settings: {json.dumps(s.__dict__)}. "
              f"{time.monotonic() - t0:.0f} s on {a.threads} CPU thread(s).")
    text = table(res, header)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"|".join(k): v for part in ("tapvid", "jf") for k, v in res[part].items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
