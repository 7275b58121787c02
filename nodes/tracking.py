"""Point tracking from VDT_FEATURES: nearest neighbour (Track4Gen), HeFT soft-argmax, DiffTrack q-k matching."""
from __future__ import annotations

import comfy.model_management
import torch
from comfy_api.latest import io

from ..kernels.difftrack import track_difftrack
from ..kernels.heft_tracker import track_heft
from ..kernels.nn_tracker import track_nearest_neighbour
from ..kernels.tracks_io import parse_points
from .common import Features, Progress, Tracks, category
from .features import check_features
from .timing import now, stamp_tracks

METHODS = ["nearest_neighbour", "heft_soft_argmax", "difftrack"]
HEFT_RESOLUTION = ["pixels", "feature grid"]
FB_MODES = ["speculative", "sequential", "batched"]
DIFFTRACK_SCALES = ["heads", "head_dim"]


def _device() -> torch.device:
    return comfy.model_management.get_torch_device()


class VDT_TrackPoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TrackPoints",
            display_name="VDT Track Points",
            category=category("tracking"),
            description="Track query points through the clip by matching diffusion (or pixel) features.",
            inputs=[
                Features.Input("features",
                               tooltip="VDT_FEATURES. nearest_neighbour/heft: [T,C,h,w] (select a head first for "
                                       "q/k); difftrack: per-head queries [T,heads,C,h,w] (or [T,C,h,w]). Points "
                                       "are in the pixel frame of its frame_size."),
                io.String.Input("points", multiline=True, default='[{"x": 64, "y": 64}]',
                                tooltip='Query points in pixels: KJNodes JSON [{"x":..,"y":..}] with optional "t" '
                                        "(query frame, default 0), or one 'x,y[,t]' per line."),
                io.Combo.Input("method", options=METHODS, default="heft_soft_argmax",
                               tooltip="nearest_neighbour: cosine hard argmax, occluded below the threshold "
                                       "(Track4Gen/SVD). heft_soft_argmax: windowed soft-argmax + query EMA + "
                                       "forward-backward visibility (HeFT). difftrack: symmetric q-k attention "
                                       "matching, no occlusion (DiffTrack)."),
                io.Float.Input("nn_threshold", default=0.6, min=-1.0, max=1.0, step=0.01,
                               tooltip="nearest_neighbour: occluded when the best cosine is below this (0.6, "
                                       "after DINO-Tracker)."),
                io.Int.Input("nn_refine_radius", default=0, min=0, max=16,
                             tooltip="nearest_neighbour: 0 = hard argmax (published); r > 0 = soft-argmax over the "
                                     "(2r+1)^2 cells around the argmax for sub-cell positions."),
                io.Float.Input("nn_refine_temperature", default=0.05, min=0.001, max=10.0, step=0.001,
                               tooltip="nearest_neighbour: softmax temperature of the optional refinement."),
                io.Float.Input("argmax_radius", default=17.0, min=0.0, max=1024.0, step=0.5,
                               tooltip="heft: soft-argmax disk around the argmax, pixels (Wan 17, Cosmos 18, "
                                       "CogVideoX 13)."),
                io.Float.Input("search_radius", default=42.0, min=1.0, max=4096.0, step=0.5,
                               tooltip="heft: search disk around the previous position, pixels (Wan/Cosmos 42, "
                                       "CogVideoX 43); unbounded after a frame predicted occluded."),
                io.Float.Input("vis_threshold", default=18.0, min=0.0, max=4096.0, step=0.5,
                               tooltip="heft: visible iff the forward-backward RMS gap is at most this many pixels "
                                       "(Wan 18, Cosmos 26, CogVideoX 27)."),
                io.Float.Input("ema_alpha", default=0.05, min=0.0, max=1.0, step=0.01,
                               tooltip="heft: query-descriptor EMA weight (0.05 Wan/Cosmos, 0.1 CogVideoX; 0 = "
                                       "fixed query)."),
                io.Float.Input("temperature", default=1.0, min=0.001, max=100.0, step=0.01,
                               tooltip="heft: softmax temperature over cosine (1 in HeFT)."),
                io.Combo.Input("heft_resolution", options=HEFT_RESOLUTION, default="pixels",
                               tooltip="heft: 'pixels' = cosine of the bilinearly upsampled features at every "
                                       "pixel, as published (sub-cell accurate); 'feature grid' = match on feature "
                                       "cells (much faster, positions pulled towards cell centres)."),
                io.Combo.Input("fb_mode", options=FB_MODES, default="speculative",
                               tooltip="heft forward-backward visibility. 'speculative' = the published algorithm "
                                       "(visibility feeds the next frame's search radius and EMA), computed by "
                                       "guessing visibilities, checking all frames' backward tracks together and "
                                       "restarting a point from its first wrong guess: same result as "
                                       "'sequential', O(T x surprises) batched steps (best on a GPU). "
                                       "'sequential' = the same result step by step: O(T^2) small steps (least "
                                       "work on CPU). 'batched' = forward pass first, then all backward checks "
                                       "together, no feedback: O(T) steps, not the published algorithm."),
                io.Combo.Input("difftrack_scale", options=DIFFTRACK_SCALES, default="heads",
                               tooltip="difftrack: softmax scale sqrt(number of heads) (the published code's quirk) "
                                       "or sqrt(head_dim)."),
                Features.Input("key_features", optional=True,
                               tooltip="difftrack: per-head keys [T,heads,C,h,w]; if absent, 'features' serves as "
                                       "both queries and keys."),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    @classmethod
    def execute(cls, features, points, method, nn_threshold, nn_refine_radius, nn_refine_temperature,
                argmax_radius, search_radius, vis_threshold, ema_alpha, temperature, heft_resolution, fb_mode,
                difftrack_scale, key_features=None) -> io.NodeOutput:
        start = now()
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        f = check_features("features", features, heads_axis=None if method == "difftrack" else False)
        x = f["features"]
        t_total = x.shape[0]
        queries = parse_points(points, t_total, f["frame_size"])
        dev = _device()
        x = x.to(dev, torch.float32)     # half-precision backbone features: the kernels work in float32
        extra = {}
        if method == "nearest_neighbour":
            progress = Progress(t_total)
            path, vis, conf = track_nearest_neighbour(x, f["stride"], queries, f["frame_size"], float(nn_threshold),
                                                      int(nn_refine_radius), float(nn_refine_temperature),
                                                      progress=progress)
            extra["confidence"] = conf.cpu()
        elif method == "heft_soft_argmax":
            if heft_resolution not in HEFT_RESOLUTION:
                raise ValueError(f"heft_resolution: expected one of {HEFT_RESOLUTION}, got {heft_resolution!r}")
            tq = queries[:, 0].long()
            steps = int(torch.maximum(t_total - 1 - tq, tq).max())
            progress = Progress(steps * (1 if fb_mode == "sequential" else 2))
            path, vis, err = track_heft(x, f["stride"], queries, f["frame_size"], float(argmax_radius),
                                        float(search_radius), float(vis_threshold), float(ema_alpha),
                                        float(temperature), upsample=heft_resolution == "pixels", fb_mode=fb_mode,
                                        progress=progress)
            extra["fb_error"] = err.cpu()
        else:
            keys = None
            if key_features is not None:
                k = check_features("key_features", key_features)
                if k["features"].shape != x.shape:
                    raise ValueError(f"key_features: shape {tuple(k['features'].shape)} does not match features "
                                     f"{tuple(x.shape)}")
                if k["stride"] != f["stride"] or k["frame_size"] != f["frame_size"]:
                    raise ValueError("key_features: stride/frame_size differ from features")
                keys = k["features"].to(dev, torch.float32)
            n_src = int(queries[:, 0].unique().numel())
            progress = Progress(n_src * max(t_total - 1, 1))
            path, vis, conf = track_difftrack(x, keys, f["stride"], queries, f["frame_size"],
                                              scale=difftrack_scale, progress=progress)
            extra["confidence"] = conf.cpu()
        tracks = {"track_path": path.float().cpu(), "track_visibility": vis.bool().cpu(),
                  "query_points": queries.cpu(), "frame_size": tuple(f["frame_size"]), **extra}
        return io.NodeOutput(stamp_tracks(tracks, start, features, key_features))


NODES = [VDT_TrackPoints]
