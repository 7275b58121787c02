"""Label and keypoint propagation nodes (DINO/DIFT protocol, TED; JHMDB keypoint variant) and TED's presets (TED,
Temporal Enhanced Diffusion, Zhang et al. 2024, arXiv 2403.18526: the numbers to link into the motion-feature,
fusion and propagation nodes)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..kernels.checks import check_mask, check_video
from ..kernels.datatypes import check_features
from ..kernels.keypoint_propagation import propagate_keypoints
from ..kernels.propagation import propagate_label_map
from ..kernels.tracks_io import parse_points
from .common import Features, Progress, Tracks, category, check_interrupt
from .inputs import VdtNode, cells_radius_input, points_input, points_syntax, video_input
from .timing import now, timed_tracks

MASK_KINDS = ["binary", "label map", "object per batch entry"]
# DAVIS palette for objects 1.. (background is not tinted)
PALETTE = torch.tensor([[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
                        [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0], [64, 0, 128]],
                       dtype=torch.float32) / 255.0


def _match_frames(f: torch.Tensor, size: tuple[int, int], images: torch.Tensor) -> None:
    t, h, w = images.shape[:3]
    if f.shape[0] != t:
        raise ValueError(f"images: {t} frames but the features have {f.shape[0]}")
    if (h, w) != size:
        raise ValueError(f"images: frames are {h}x{w} but the features were computed on {size[0]}x{size[1]}")


def first_label_map(mask: torch.Tensor, mask_kind: str, size: tuple[int, int]) -> torch.Tensor:
    """The node's first-frame MASK -> integer label map [H,W] (0 = background, objects 1..K)."""
    m = check_mask("mask", mask, size=size)
    if mask_kind == "binary":                       # frame 0 of the batch (a whole-video mask works too)
        lab = (m[0] > 0.5).long()
    elif mask_kind == "label map":
        ids = m[0]
        if not bool((ids == ids.round()).all()) or bool((ids < 0).any()):
            raise ValueError("mask: 'label map' needs whole-number object ids >= 0 (0 = background); use "
                             "'binary' for a 0..1 mask")
        lab = ids.round().long()
    elif mask_kind == "object per batch entry":     # entry k is object k+1; later entries win overlaps
        lab = torch.zeros(size, dtype=torch.long)
        for k in range(m.shape[0]):
            lab[m[k] > 0.5] = k + 1
        for k in range(m.shape[0]):
            if not bool((lab == k + 1).any()):
                raise ValueError(f"mask: object {k + 1} (batch entry {k}) is empty or fully covered by later ones")
    else:
        raise ValueError(f"mask_kind: expected one of {MASK_KINDS}, got {mask_kind!r}")
    if not bool((lab > 0).any()):
        raise ValueError("mask: the first-frame mask is empty (no object pixel)")
    return lab


def overlay(images: torch.Tensor, labels: torch.Tensor, opacity: float) -> torch.Tensor:
    """Frames [T,H,W,C] tinted with one palette colour per object id."""
    rgb = images[..., :3].float()
    ids = labels.to(rgb.device)
    pal = PALETTE.to(rgb.device)
    col = pal[(ids - 1).clamp_min(0) % len(pal)]
    a = (ids > 0).to(rgb.dtype)[..., None] * float(opacity)
    return (rgb * (1 - a) + col * a).clamp(0, 1)


class VDT_PropagateLabels(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_PropagateLabels",
            display_name="VDT Propagate Labels",
            category=category("propagation"),
            description="Propagate a first-frame mask (one or several objects) through the clip with the DINO/DIFT "
                        "protocol: first frame + a queue of recent soft predictions, square window, top-k, softmax "
                        "temperature. Use TED/DIFT/backbone features.",
            inputs=[
                Features.Input("features", tooltip="Per-frame features (VDT_FEATURES) of the clip."),
                video_input(what="The frames the features were computed on (same count and size; used for the "
                                 "overlay and the output size)"),
                io.Mask.Input("mask", tooltip="First-frame object mask(s) at frame size; see mask_kind."),
                io.Combo.Input("mask_kind", options=MASK_KINDS, default="binary",
                               tooltip="binary: one object, pixels > 0.5 of the first mask. label map: the first mask "
                                       "holds whole-number object ids (0 = background). object per batch entry: "
                                       "a batch of K masks, entry k is object k+1."),
                io.Int.Input("n_context", default=28, min=0, max=256,
                             tooltip="Recent predicted frames kept as context besides the first frame (DIFT 28, "
                                     "DINO 7)."),
                cells_radius_input("radius", 15, 0, 512, "Neighbourhood: sources within this many cells (square "
                                                          "window)."),
                io.Int.Input("top_k", default=10, min=1, max=1024,
                             tooltip="Sources kept per target cell, jointly over all context frames."),
                io.Float.Input("temperature", default=0.1, min=0.001, max=10.0, step=0.01,
                               tooltip="Softmax temperature on cosine similarity (DINO/DIFT-ADM 0.1, TED DAVIS 0.2)."),
                io.Int.Input("output_object", default=0, min=0, max=255,
                             tooltip="Which object the mask output shows: 0 = union of all objects, k = object k."),
                io.Float.Input("overlay_opacity", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Tint strength of the object colours in the overlay."),
            ],
            outputs=[
                io.Mask.Output("propagated_mask", display_name="mask", tooltip="Propagated mask [frames,H,W] (0/1)."),
                io.Mask.Output("label_map", display_name="label_map",
                               tooltip="Object ids per pixel [frames,H,W] (0 = background), for multi-object use "
                                       "and DAVIS evaluation ('label map')."),
                io.Image.Output("overlay", display_name="overlay", tooltip="Frames tinted with per-object colours."),
            ],
        )

    @classmethod
    def execute(cls, features, images, mask, mask_kind, n_context, radius, top_k, temperature, output_object=0,
                overlay_opacity=0.5) -> io.NodeOutput:
        frames = check_video("images", images)
        fd = check_features("features", features, heads="flatten", cast_float=True)  # per-head: mean cosine
        f, size = fd["features"], fd["frame_size"]
        _match_frames(f, size, frames)
        lab = first_label_map(mask, mask_kind, size)
        n_obj = int(lab.max())
        if int(output_object) > n_obj:
            raise ValueError(f"output_object: {output_object} but the mask has {n_obj} object(s)")
        _, labels = propagate_label_map(f, lab.to(f.device), int(n_context), int(radius), int(top_k),
                                        float(temperature), progress=Progress(f.shape[0] - 1),
                                        check=check_interrupt)
        labels = labels.cpu()
        out = (labels > 0) if int(output_object) == 0 else (labels == int(output_object))
        return io.NodeOutput(out.float(), labels.float(), overlay(frames, labels, overlay_opacity))


class VDT_PropagateKeypoints(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_PropagateKeypoints",
            display_name="VDT Propagate Keypoints",
            category=category("propagation"),
            description="JHMDB-style keypoint propagation: frame-0 points become Gaussian heatmaps (label channels), "
                        "propagated like masks; each frame's point is the weighted mean of its 3 best cells.",
            inputs=[
                Features.Input("features", tooltip="Per-frame features (VDT_FEATURES) of the clip."),
                points_input(default="", note="Keypoints at frame 0: a 't' other than 0 is an error."),
                io.Int.Input("n_context", default=20, min=0, max=256,
                             tooltip="Recent predicted frames kept as context besides the first frame (CRW 20)."),
                cells_radius_input("radius", 15, 0, 512, "Neighbourhood: sources within this many cells (square "
                                                          "window)."),
                io.Int.Input("top_k", default=10, min=1, max=1024,
                             tooltip="Sources kept per target cell, jointly over all context frames."),
                io.Float.Input("temperature", default=0.1, min=0.001, max=10.0, step=0.01,
                               tooltip="Softmax temperature on cosine similarity."),
                io.Float.Input("sigma", default=0.5, min=0.1, max=8.0, step=0.1,
                               tooltip="Gaussian heatmap sigma in feature cells (CRW/JHMDB 0.5)."),
            ],
            outputs=[Tracks.Output("tracks", display_name="tracks",
                                   tooltip="One track per keypoint; a lost keypoint is not visible and keeps its "
                                           "last position.")],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, features, points, n_context, radius, top_k, temperature, sigma=0.5) -> io.NodeOutput:
        start = now()
        fd = check_features("features", features, heads="flatten", cast_float=True)  # per-head: mean cosine
        f, size = fd["features"], fd["frame_size"]
        q = parse_points(points, f.shape[0], size)
        if bool((q[:, 0] != 0).any()):
            raise ValueError("points: keypoint propagation starts from frame 0; remove the 't' values")
        pts, found = propagate_keypoints(f, q[:, 1:].to(f.device), size, int(n_context), int(radius), int(top_k),
                                         float(temperature), float(sigma), progress=Progress(f.shape[0] - 1),
                                         check=check_interrupt)
        pts, found = pts.cpu(), found.cpu()
        for t in range(1, pts.shape[0]):            # lost (-1) -> hold the last position, keep it not visible
            pts[t] = torch.where(found[t, :, None], pts[t], pts[t - 1])
        return io.NodeOutput(timed_tracks(start, (features,), pts, found, q, size))


# TED Table 6 (motion timestep of 1000, fusion alpha, softmax temperature, propagation radius in feature cells,
# top-k); window 16 with overlap 2 (Sec. 4.4: overlap l = 2 is enough). The number of recent context frames is
# not given: DIFT's DAVIS default, 28. 'identical objects' (Kubric-Similar): motion features only (alpha 1),
# t = 900 where R_v peaks; its propagation settings are not given, so DAVIS's radius/top-k and DIFT-ADM's
# temperature 0.1 (our choice).
TED_PRESETS = {
    "DAVIS (t=300, alpha 0.4)": {"timestep": 300, "alpha": 0.4, "temperature": 0.2},
    "similar objects (t=600, alpha 0.6)": {"timestep": 600, "alpha": 0.6, "temperature": 0.1},
    "identical objects (t=900, motion only)": {"timestep": 900, "alpha": 1.0, "temperature": 0.1},
}
TED_COMMON = {"window": 16, "overlap": 2, "radius": 15, "top_k": 10, "n_context": 28}


def ted_preset(name: str) -> dict:
    """The full setting of one TED preset (TED_PRESETS + TED_COMMON)."""
    if name not in TED_PRESETS:
        raise ValueError(f"preset: expected one of {list(TED_PRESETS)}, got {name!r}")
    return {**TED_COMMON, **TED_PRESETS[name]}


class VDT_TEDPreset(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TEDPreset",
            display_name="VDT TED Preset",
            category=category("propagation"),
            description="TED's settings (Table 6) as numbers to link into the motion-feature, fusion and "
                        "propagation nodes: motion timestep, window 16 / overlap 2, fusion alpha, softmax "
                        "temperature, radius 15, top-k 10, 28 context frames (DIFT's default; TED does not say).",
            inputs=[io.Combo.Input("preset", options=list(TED_PRESETS), default=list(TED_PRESETS)[0],
                                   tooltip="DAVIS: real videos. similar objects: YouTube-Similar (several "
                                           "look-alike objects). identical objects: Kubric-Similar (identical "
                                           "objects, motion features only).")],
            outputs=[
                io.Int.Output("timestep", display_name="timestep",
                              tooltip="Motion features: noise timestep t of 1000 (-> Extract Diffusion Features)."),
                io.Int.Output("window", display_name="window", tooltip="Frames per window (16)."),
                io.Int.Output("overlap", display_name="overlap", tooltip="Frames shared by windows (2)."),
                io.Float.Output("alpha", display_name="alpha", tooltip="Fusion weight of the motion features."),
                io.Float.Output("temperature", display_name="temperature", tooltip="Propagation softmax temperature."),
                io.Int.Output("radius", display_name="radius", tooltip="Propagation window radius (feature cells)."),
                io.Int.Output("top_k", display_name="top_k", tooltip="Sources kept per target cell."),
                io.Int.Output("n_context", display_name="n_context", tooltip="Recent context frames."),
            ],
        )

    @classmethod
    def execute(cls, preset) -> io.NodeOutput:
        p = ted_preset(preset)
        return io.NodeOutput(p["timestep"], p["window"], p["overlap"], p["alpha"], p["temperature"], p["radius"],
                             p["top_k"], p["n_context"])


NODES = [VDT_PropagateLabels, VDT_PropagateKeypoints, VDT_TEDPreset]
