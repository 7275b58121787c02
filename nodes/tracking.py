"""Tracking family: point trackers, one node per method. From VDT_FEATURES: nearest neighbour (Track4Gen),
HeFT soft-argmax, DiffTrack q-k matching; from the frames: OpenCV optical flow. `VDT_TrackPoints` (all three
feature methods in one node) stays, deprecated, so saved workflows keep loading and running.

HeFT's settings around its tracker: `VDT_HeFTPreset` gives a backbone's published settings as values to link into
the extraction, head-selection and tracking nodes' widgets (a widget left unlinked keeps its own, custom value);
`VDT_HeFTHeadSearch` captures every requested layer in one feature pass per window, then scores every (layer,
head, RoPE band cut) by tracking known points with HeFT (TAP-Vid metrics against the known tracks)."""
from __future__ import annotations

import comfy.model_management
import torch
from comfy_api.latest import io, ui

from ..backbones.comfy_native import backbone_from_model
from ..backbones.protocol import FeatureSpec
from ..kernels.datatypes import check_features, check_tracks
from ..kernels.difftrack import track_difftrack
from ..kernels.feature_select import LAYOUTS
from ..kernels.flow_tracker import check_flow_size, track_with_flow
from ..kernels.head_search import RANK_KEYS, parse_float_list, search_heads, table_csv, table_text
from ..kernels.heft_presets import PRESETS, get_preset
from ..kernels.heft_tracker import FB_MODE_ALIASES, track_heft
from ..kernels.heft_tracker import FB_MODES as HEFT_FB_MODES
from ..kernels.nn_tracker import track_nearest_neighbour
from ..kernels.tracks_io import parse_points
from .common import Backbone, Features, Progress, Tracks, category, output_path
from .features import parse_rope_dims
from .inputs import (VdtNode, cells_radius_input, noise_level_input, optional_prefix_syntax, pixels_radius_input,
                     points_input, points_syntax, rgb_video, video_input)
from .timing import now, timed_tracks

METHODS = ["nearest_neighbour", "heft_soft_argmax", "difftrack"]
HEFT_RESOLUTION = ["pixels", "feature grid"]
FB_MODES = [*HEFT_FB_MODES, *FB_MODE_ALIASES]     # old names last, so saved workflows still load
DIFFTRACK_SCALES = ["heads", "head_dim"]
FLOW_METHODS = ["dis", "farneback"]


def _device() -> torch.device:
    return comfy.model_management.get_torch_device()


def _choice(name: str, value, options: list[str]) -> str:
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


def _features_and_points(features, points, heads):
    f = check_features("features", features, heads=heads)
    queries = parse_points(points, f["features"].shape[0], f["frame_size"])
    return f, f["features"].to(_device(), torch.float32), queries   # half-precision features: kernels use float32


def run_nearest_neighbour(features, points, threshold, refine_radius, refine_temperature) -> dict:
    start = now()
    f, x, queries = _features_and_points(features, points, heads="forbid")
    path, vis, conf = track_nearest_neighbour(x, f["stride"], queries, f["frame_size"], float(threshold),
                                              int(refine_radius), float(refine_temperature),
                                              progress=Progress(x.shape[0]))
    return timed_tracks(start, (features,), path, vis, queries, f["frame_size"], confidence=conf)


def run_heft(features, points, argmax_radius, search_radius, vis_threshold, ema_alpha, temperature, resolution,
             fb_mode) -> dict:
    start = now()
    _choice("resolution", resolution, HEFT_RESOLUTION)
    _choice("fb_mode", fb_mode, FB_MODES)
    f, x, queries = _features_and_points(features, points, heads="forbid")
    tq = queries[:, 0].long()
    steps = max(int(torch.maximum(x.shape[0] - 1 - tq, tq).max()), 1)
    # forward steps + backward checks; 'speculative' redoes both from a point's first wrong guess, so its total
    # grows when that happens (the bar never sits at 100 % while the tracker works)
    progress = Progress(steps * (1 if fb_mode == "sequential" else 2), grows=fb_mode == "speculative")
    path, vis, err = track_heft(x, f["stride"], queries, f["frame_size"], float(argmax_radius), float(search_radius),
                                float(vis_threshold), float(ema_alpha), float(temperature),
                                upsample=resolution == "pixels", fb_mode=fb_mode, progress=progress)
    progress.finish()
    return timed_tracks(start, (features,), path, vis, queries, f["frame_size"], fb_error=err)


def anchor_passes(features, key_features=None):
    """DiffTrack's per-pass features [(frames, queries, keys)] when the extraction ran with chunking 'anchor'
    (both inputs must carry them), else None (plain per-frame matching)."""
    q_passes = features.get("anchor_passes") if isinstance(features, dict) else None
    k_src = features if key_features is None else key_features
    k_passes = k_src.get("anchor_passes") if isinstance(k_src, dict) else None
    if not q_passes and not k_passes:
        return None
    if not q_passes or not k_passes or len(q_passes) != len(k_passes):
        raise ValueError("key_features: extracted with a different chunking than features (use the same "
                         "extraction, kind 'q+k')")
    return [(fr, q, k) for (fr, q), (_, k) in zip(q_passes, k_passes)]


def run_difftrack(features, points, scale, key_features=None) -> dict:
    start = now()
    _choice("scale", scale, DIFFTRACK_SCALES)
    f, x, queries = _features_and_points(features, points, heads="any")
    keys = None
    if key_features is not None:
        k = check_features("key_features", key_features)
        if k["features"].shape != x.shape:
            raise ValueError(f"key_features: shape {tuple(k['features'].shape)} does not match features "
                             f"{tuple(x.shape)}")
        if k["stride"] != f["stride"] or k["frame_size"] != f["frame_size"]:
            raise ValueError("key_features: stride/frame_size differ from features")
        keys = k["features"].to(x.device, torch.float32)
    n_src = int(queries[:, 0].unique().numel())
    progress = Progress(n_src * max(x.shape[0] - 1, 1))
    path, vis, conf = track_difftrack(x, keys, f["stride"], queries, f["frame_size"], scale=scale, progress=progress,
                                      anchor_passes=anchor_passes(features, key_features))
    return timed_tracks(start, (features, key_features), path, vis, queries, f["frame_size"], confidence=conf)


# ------------------------------------------------------------------------------------------- inputs per method

FEATURES_TOOLTIP = ("VDT_FEATURES [T,C,h,w] (pick one head of q/k with 'VDT Select Heads/Frequencies' first). "
                    "Points are in the pixel frame of its frame_size.")


def _nn_inputs(prefix: str = "") -> list:
    return [
        io.Float.Input(f"{prefix}threshold", default=0.6, min=-1.0, max=1.0, step=0.01,
                       tooltip="Occluded when the best cosine is below this (0.6, after DINO-Tracker)."),
        cells_radius_input(f"{prefix}refine_radius", 0, 0, 16,
                           "0 = hard argmax (published); r > 0 = soft-argmax over the (2r+1)^2 cells around the "
                           "argmax for sub-cell positions."),
        io.Float.Input(f"{prefix}refine_temperature", default=0.05, min=0.001, max=10.0, step=0.001,
                       tooltip="Softmax temperature of the optional refinement."),
    ]


def _heft_setting_inputs() -> list:
    """The four HeFT settings its configs give per backbone (VDT HeFT Preset outputs them), for the tracker nodes
    and the head search."""
    return [
        pixels_radius_input("argmax_radius", 17.0, 0.0, 1024.0,
                            "Soft-argmax disk around the argmax (Wan 17, Cosmos 18, CogVideoX 13)."),
        pixels_radius_input("search_radius", 42.0, 1.0, 4096.0,
                            "Search disk around the previous position (Wan/Cosmos 42, CogVideoX 43); unbounded "
                            "after a frame predicted occluded."),
        pixels_radius_input("vis_threshold", 18.0, 0.0, 4096.0,
                            "Visible iff the forward-backward RMS gap is at most this (Wan 18, Cosmos 26, "
                            "CogVideoX 27)."),
        io.Float.Input("ema_alpha", default=0.05, min=0.0, max=1.0, step=0.01,
                       tooltip="Query-descriptor EMA weight (0.05 Wan/Cosmos, 0.1 CogVideoX; 0 = fixed query)."),
    ]


def _heft_inputs() -> list:
    return [
        *_heft_setting_inputs(),
        io.Float.Input("temperature", default=1.0, min=0.001, max=100.0, step=0.01,
                       tooltip="Softmax temperature over cosine (1 in HeFT)."),
    ]


RESOLUTION_TOOLTIP = ("'pixels' = cosine of the bilinearly upsampled features at every pixel, as published "
                      "(sub-cell accurate); 'feature grid' = match on feature cells (much faster, positions pulled "
                      "towards cell centres).")
FB_MODE_TOOLTIP = ("Forward-backward visibility. 'speculative' = the published algorithm (visibility feeds the next "
                   "frame's search radius and EMA), computed by guessing visibilities, checking all frames' "
                   "backward tracks together and restarting a point from its first wrong guess: same result as "
                   "'sequential', O(T x surprises) batched steps (best on a GPU). 'sequential' = the same result "
                   "step by step: O(T^2) small steps (least work on CPU). 'no_feedback' = forward pass first, "
                   "then all backward checks together, no feedback: O(T) steps, not the published algorithm "
                   "('batched' is its old name).")
SCALE_TOOLTIP = "Softmax scale sqrt(number of heads) (the published code's quirk) or sqrt(head_dim)."
KEYS_TOOLTIP = "Per-head keys [T,heads,C,h,w]; if absent, 'features' serves as both queries and keys."


class VDT_TrackNearestNeighbour(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TrackNearestNeighbour",
            display_name="VDT Track Points (Nearest Neighbour)",
            category=category("tracking"),
            description="Track4Gen-style zero-shot tracking: each query's descriptor is matched to every frame by "
                        "cosine similarity (hard argmax); occluded when the best cosine is below the threshold.",
            inputs=[Features.Input("features", tooltip=FEATURES_TOOLTIP), points_input(), *_nn_inputs()],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, features, points, threshold=0.6, refine_radius=0, refine_temperature=0.05) -> io.NodeOutput:
        return io.NodeOutput(run_nearest_neighbour(features, points, threshold, refine_radius, refine_temperature))


class VDT_TrackHeFT(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TrackHeFT",
            display_name="VDT Track Points (HeFT)",
            category=category("tracking"),
            description="HeFT tracking: windowed soft-argmax around the previous position, query-descriptor EMA, "
                        "forward-backward visibility (an occluded frame unbounds the next search).",
            inputs=[
                Features.Input("features", tooltip=FEATURES_TOOLTIP), points_input(), *_heft_inputs(),
                io.Combo.Input("resolution", options=HEFT_RESOLUTION, default="pixels", tooltip=RESOLUTION_TOOLTIP),
                io.Combo.Input("fb_mode", options=FB_MODES, default="speculative", tooltip=FB_MODE_TOOLTIP),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, features, points, argmax_radius=17.0, search_radius=42.0, vis_threshold=18.0, ema_alpha=0.05,
                temperature=1.0, resolution="pixels", fb_mode="speculative") -> io.NodeOutput:
        return io.NodeOutput(run_heft(features, points, argmax_radius, search_radius, vis_threshold, ema_alpha,
                                      temperature, resolution, fb_mode))


class VDT_TrackDiffTrack(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TrackDiffTrack",
            display_name="VDT Track Points (DiffTrack)",
            category=category("tracking"),
            description="DiffTrack matching: symmetric query-key attention between the query frame and every "
                        "frame, per head, soft-argmax of the averaged map; no occlusion output (all visible). "
                        "Features extracted with chunking 'anchor' (DiffTrack's passes: frame 0 plus strided "
                        "frames) match each frame against frame 0 as its own pass saw it.",
            inputs=[
                Features.Input("features", tooltip="Per-head queries [T,heads,C,h,w] (or [T,C,h,w]) as VDT_FEATURES."),
                points_input(),
                io.Combo.Input("scale", options=DIFFTRACK_SCALES, default="heads", tooltip=SCALE_TOOLTIP),
                Features.Input("key_features", optional=True, tooltip=KEYS_TOOLTIP),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, features, points, scale="heads", key_features=None) -> io.NodeOutput:
        return io.NodeOutput(run_difftrack(features, points, scale, key_features))


class VDT_TrackPoints(VdtNode):
    """Deprecated: the three feature trackers in one node (9 of its 14 inputs belong to one method). Kept so
    saved workflows load and run; new graphs use the per-method nodes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TrackPoints",
            display_name="VDT Track Points (deprecated)",
            category=category("tracking"),
            description="Deprecated: use 'VDT Track Points (Nearest Neighbour)', '(HeFT)' or '(DiffTrack)'. "
                        "Runs the chosen method with the same results.",
            is_deprecated=True,
            inputs=[
                Features.Input("features", tooltip=FEATURES_TOOLTIP + " difftrack: per-head queries."),
                points_input(),
                io.Combo.Input("method", options=METHODS, default="heft_soft_argmax",
                               tooltip="nearest_neighbour (Track4Gen), heft_soft_argmax (HeFT) or difftrack."),
                *_nn_inputs("nn_"), *_heft_inputs(),
                io.Combo.Input("heft_resolution", options=HEFT_RESOLUTION, default="pixels",
                               tooltip="heft: " + RESOLUTION_TOOLTIP),
                io.Combo.Input("fb_mode", options=FB_MODES, default="speculative", tooltip="heft: " + FB_MODE_TOOLTIP),
                io.Combo.Input("difftrack_scale", options=DIFFTRACK_SCALES, default="heads",
                               tooltip="difftrack: " + SCALE_TOOLTIP),
                Features.Input("key_features", optional=True, tooltip="difftrack: " + KEYS_TOOLTIP),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, features, points, method, nn_threshold=0.6, nn_refine_radius=0, nn_refine_temperature=0.05,
                argmax_radius=17.0, search_radius=42.0, vis_threshold=18.0, ema_alpha=0.05, temperature=1.0,
                heft_resolution="pixels", fb_mode="speculative", difftrack_scale="heads",
                key_features=None) -> io.NodeOutput:
        _choice("method", method, METHODS)
        if method == "nearest_neighbour":
            return io.NodeOutput(run_nearest_neighbour(features, points, nn_threshold, nn_refine_radius,
                                                       nn_refine_temperature))
        if method == "heft_soft_argmax":
            return io.NodeOutput(run_heft(features, points, argmax_radius, search_radius, vis_threshold, ema_alpha,
                                          temperature, heft_resolution, fb_mode))
        return io.NodeOutput(run_difftrack(features, points, difftrack_scale, key_features))


class VDT_FlowTracker(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_FlowTracker",
            display_name="VDT Flow Tracker",
            category=category("tracking"),
            description="Track points by chaining OpenCV optical flow between consecutive frames, forwards and "
                        "backwards from each query frame; forward-backward consistency gives visibility.",
            inputs=[
                video_input(what="The video to track in"),
                points_input(),
                io.Combo.Input("method", options=FLOW_METHODS, default="dis",
                               tooltip="dis: OpenCV DIS (preset MEDIUM), fast; farneback: dense polynomial "
                                       "expansion, slower; often better on small frames."),
                pixels_radius_input("fb_threshold", 1.5, 0.01, 100.0, "Forward-backward error above which a step "
                                                                      "counts as occluded; 5% of the motion is "
                                                                      "added to it.", step=0.1),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, images, points, method="dis", fb_threshold=1.5) -> io.NodeOutput:
        start = now()
        video = rgb_video("images", images)
        t_n, h, w = video.shape[:3]
        check_flow_size("images", (h, w), _choice("method", method, FLOW_METHODS))
        query = parse_points(points, t_n, (h, w))
        path, vis = track_with_flow(video, query, method=method,
                                    fb_threshold=fb_threshold, progress=Progress(max(t_n - 1, 1)))
        return io.NodeOutput(timed_tracks(start, (), path, vis, query, (h, w)))


MAX_LAYERS = 64


def _short_text(text, limit: int = 60) -> str:
    """repr of `text` cut to `limit` characters, so an error message (kept in ComfyUI's history) stays short."""
    r = repr(str(text))
    return r if len(r) <= limit else f"{r[:limit]}... ({len(str(text)):,} characters)"


def parse_layers(text: str, num_layers: int) -> list[int]:
    """'16-20' / '12,18,24' / '18' -> sorted block indices inside 0..num_layers-1 (ValueError naming `layers`).

    Ranges are checked by their ends before any is expanded, so '0-100000000' is refused at once (no list of
    1e8 numbers); the error shows the count and the first few offending values, never all of them."""
    spans: list[tuple[int, int]] = []
    try:
        for part in str(text).replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
            else:
                a = b = int(part)
            if a <= b:                              # a reversed range 'b-a' selects nothing, as before
                spans.append((a, b))
    except ValueError:
        raise ValueError(f"layers: expected block indices like '16-20' or '12,18,24', got "
                         f"{_short_text(text)}") from None
    if not spans:
        raise ValueError("layers: no layer given")
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    bad = [(a, min(b, -1)) for a, b in merged if a < 0] + [(max(a, num_layers), b) for a, b in merged
                                                            if b >= num_layers]
    if bad:
        count = sum(b - a + 1 for a, b in bad)
        first = [v for a, b in bad for v in range(a, min(b, a + 4) + 1)][:5]
        more = ", ..." if count > len(first) else ""
        raise ValueError(f"layers: {count:,} value(s) outside 0..{num_layers - 1} "
                         f"({', '.join(map(str, first))}{more})")
    total = sum(b - a + 1 for a, b in merged)
    if total > MAX_LAYERS:
        raise ValueError(f"layers: {total:,} layers; at most {MAX_LAYERS} per search")
    return [v for a, b in merged for v in range(a, b + 1)]


def known_queries(path: torch.Tensor, vis: torch.Tensor, tracks: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries [N,3] (t, x, y): the tracks' own query_points, else each track's first visible frame; returns
    (queries, kept track indices). Tracks never visible are dropped."""
    qp = tracks.get("query_points")
    if qp is not None:
        q = torch.as_tensor(qp).float()
        if q.shape != (path.shape[1], 3):
            raise ValueError(f"tracks: query_points {tuple(q.shape)} do not match {path.shape[1]} tracks")
        return q, torch.arange(path.shape[1])
    keep = vis.any(0).nonzero().flatten()
    if keep.numel() == 0:
        raise ValueError("tracks: no track is visible in any frame")
    t0 = vis[:, keep].float().argmax(0)
    xy = path[t0, keep]
    return torch.cat([t0[:, None].float(), xy], 1), keep


class VDT_HeFTHeadSearch(VdtNode):
    TEXT_CHECKS = {"rope_dims": lambda d: parse_rope_dims(d), "filename_prefix": optional_prefix_syntax}

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_HeFTHeadSearch",
            display_name="VDT HeFT Head Search",
            category=category("tracking"),
            is_output_node=True,          # it shows its table and saves a CSV: a graph may end in it
            description="Which layer, attention head and RoPE band cut track best on a clip with known tracks: one "
                        "feature pass per window captures all the layers, then HeFT tracks the known queries with "
                        "every (layer, head, cut) and the TAP-Vid metrics rank them. Shows the table, saves it as "
                        "CSV in the output folder and returns the best setting.",
            inputs=[
                io.Image.Input("images", tooltip="The clip [frames,H,W,3] the tracks belong to."),
                Tracks.Input("tracks", tooltip="Known tracks of this clip (e.g. the synthetic clip's ground truth or "
                                               "tracks you trust), in the clip's pixels."),
                io.String.Input("layers", default="16-20",
                                tooltip="Blocks to search, e.g. '16-20' or '12,18,24' (0-based)."),
                io.Combo.Input("kind", options=["k", "q"], default="k",
                               tooltip="Self-attention keys (HeFT) or queries, after QK-norm and RoPE."),
                noise_level_input(timestep=False),
                io.Int.Input("window", default=25, min=0, max=1024,
                             tooltip="Video frames per pass (HeFT: 25); 0 = the model's default."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Noise seed."),
                io.String.Input("freq_cuts", default="0, 0.1, 0.15",
                                tooltip="RoPE band cuts to try: fractions of each (T,H,W) group dropped from the "
                                        "high-frequency end (HeFT: Wan 0.15, Cosmos 0.1, CogVideoX 0)."),
                io.String.Input("rope_dims", default="44,42,42",
                                tooltip="Channels of the (T,H,W) RoPE groups of one head (Wan/Cosmos 44,42,42; "
                                        "CogVideoX 16,24,24)."),
                io.Combo.Input("layout", options=list(LAYOUTS), default="contiguous",
                               tooltip="RoPE channel layout for the cut ('contiguous' = HeFT's slicing)."),
                *_heft_setting_inputs(),
                io.Combo.Input("heft_resolution", options=HEFT_RESOLUTION, default="pixels",
                               tooltip=RESOLUTION_TOOLTIP),
                io.Combo.Input("fb_mode", options=list(HEFT_FB_MODES), default="speculative",
                               tooltip=FB_MODE_TOOLTIP),
                io.Combo.Input("rank_by", options=list(RANK_KEYS), default="average_jaccard",
                               tooltip="Metric the table is sorted by (ties: delta_avg)."),
                io.Float.Input("max_feature_gib", default=8.0, min=1e-6, max=1024.0, step=0.5,
                               tooltip="Refuse searches whose captured features would exceed this many GiB."),
                io.String.Input("filename_prefix", default="vdtrack/head_search",
                                tooltip="CSV file name inside ComfyUI's output folder."),
                io.Model.Input("model", optional=True,
                               tooltip="Wan 2.1/2.2 or Cosmos-Predict2 (Load Diffusion Model); or connect a backbone."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE (with model)."),
                Backbone.Input("backbone", optional=True,
                               tooltip="A VDT_BACKBONE (e.g. CogVideoX through diffusers); used instead of model."),
            ],
            outputs=[
                io.String.Output(display_name="table"),
                io.Int.Output(display_name="best_layer"),
                io.String.Output(display_name="best_heads"),
                io.Float.Output(display_name="best_freq_low"),
            ],
        )

    @classmethod
    def execute(cls, images, tracks, layers, kind, noise_level, window, seed, freq_cuts, rope_dims, layout,
                argmax_radius, search_radius, vis_threshold, ema_alpha, heft_resolution, fb_mode, rank_by,
                max_feature_gib, filename_prefix, model=None, vae=None, backbone=None) -> io.NodeOutput:
        frames = rgb_video("images", images)
        t_total, H, W = frames.shape[:3]
        path, vis = check_tracks("tracks", tracks, frames=t_total)
        queries, kept = known_queries(path, vis, tracks)
        cuts = parse_float_list("freq_cuts", freq_cuts)
        dims = parse_rope_dims(rope_dims)
        if kind not in ("k", "q"):
            raise ValueError(f"kind: expected 'k' or 'q', got {kind!r}")
        bb = backbone if backbone is not None else backbone_from_model(model, vae)
        layer_list = parse_layers(layers, bb.num_layers)
        s = bb.spatial_stride
        gib = (len(layer_list) * t_total * bb.num_heads * bb.head_dim * -(-H // s) * -(-W // s) * 4) / 2 ** 30
        if gib > max_feature_gib:
            raise ValueError(f"layers: {len(layer_list)} layers of {bb.num_heads} heads over {t_total} frames need "
                             f"about {gib:.1f} GiB of features (max_feature_gib {max_feature_gib:g}); search fewer "
                             "layers or a shorter clip")
        spec = FeatureSpec(layer_list, kinds=(kind,), rope="after", window=int(window), overlap=0)
        n_windows = bb.num_windows(t_total, spec)
        n_cand = len(layer_list) * bb.num_heads * len(cuts)
        progress = Progress(n_windows + n_cand)
        feats = bb.features(frames.float(), float(noise_level), spec, int(seed), progress=progress)
        per_layer, head_ids, geometry = {}, {}, None
        for layer in layer_list:
            f = feats[f"{kind}{layer}"]
            per_layer[layer] = f["features"].float()
            head_ids[layer] = list(f.get("meta", {}).get("heads") or range(per_layer[layer].shape[1]))
            geometry = (f["stride"], f["frame_size"])
        stride, frame_size = geometry
        heft_kw = dict(argmax_radius=float(argmax_radius), search_radius=float(search_radius),
                       vis_threshold=float(vis_threshold), alpha=float(ema_alpha),
                       upsample=heft_resolution == "pixels", fb_mode=fb_mode)
        rows = search_heads(per_layer, stride, frame_size, path[:, kept], vis[:, kept], queries, cuts, dims, layout,
                            head_ids, rank_by, heft_kw, progress=progress)
        full, _, file = output_path("filename_prefix", filename_prefix, "csv")
        with open(full, "w", encoding="utf-8") as fh:
            fh.write(table_csv(rows))
        best = rows[0]
        text = (f"HeFT head search: {len(rows)} candidates ({len(layer_list)} layers x {bb.num_heads} heads x "
                f"{len(cuts)} band cuts), {queries.shape[0]} known tracks, ranked by {rank_by} (values x100)\n"
                f"best: layer {best['layer']}, head {best['head']}, band cut {best['freq_low']:g}\n\n"
                f"{table_text(rows)}\n\nsaved: {file} (output folder)")
        return io.NodeOutput(text, best["layer"], str(best["head"]), best["freq_low"], ui=ui.PreviewText(text))


class VDT_HeFTPreset(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_HeFTPreset",
            display_name="VDT HeFT Preset",
            category=category("tracking"),
            description="HeFT's settings for a backbone (layer, head, RoPE band cut, noise level, window, radii, "
                        "visibility threshold, EMA weight), from the authors' configs; link the outputs into the "
                        "matching widgets of Extract Diffusion Features, Select Heads/Frequencies and the HeFT "
                        "tracker. Wan2.1-14B and CogVideoX-5B have no published settings: their presets are our "
                        "starting points (all heads), to refine with VDT HeFT Head Search.",
            inputs=[
                io.Combo.Input("preset", options=list(PRESETS), default="Wan2.1-1.3B",
                               tooltip="Backbone. Published (HeFT configs): Wan2.1-1.3B, Cosmos-Predict2-2B, "
                                       "CogVideoX-2B. Ours (not published): Wan2.1-14B, CogVideoX-5B."),
            ],
            outputs=[
                io.Int.Output(display_name="layer"),
                io.String.Output(display_name="heads"),
                io.String.Output(display_name="rope_dims"),
                io.Float.Output(display_name="freq_low"),
                io.Float.Output(display_name="freq_high"),
                io.Float.Output(display_name="noise_level"),
                io.Int.Output(display_name="window"),
                io.Float.Output(display_name="argmax_radius"),
                io.Float.Output(display_name="search_radius"),
                io.Float.Output(display_name="vis_threshold"),
                io.Float.Output(display_name="ema_alpha"),
                io.String.Output(display_name="summary"),
            ],
        )

    @classmethod
    def execute(cls, preset) -> io.NodeOutput:
        p = get_preset(preset)
        summary = (f"{p.name} ({p.model}): layer {p.layer}, heads {p.heads}, RoPE dims "
                   f"{','.join(map(str, p.rope_dims))}, band cut {p.freq_low:g}-{p.freq_high:g}, noise level "
                   f"{p.noise_level:.4f}, window {p.window} frames, argmax/search radius {p.argmax_radius:g}/"
                   f"{p.search_radius:g} px, visibility threshold {p.vis_threshold:g} px, EMA {p.ema_alpha:g}; "
                   f"radii tuned at {p.resolution[0]}x{p.resolution[1]} (scale them with your frame size). "
                   f"Source: {p.source}.")
        return io.NodeOutput(p.layer, p.heads, ",".join(map(str, p.rope_dims)), p.freq_low, p.freq_high,
                             p.noise_level, p.window, p.argmax_radius, p.search_radius, p.vis_threshold,
                             p.ema_alpha, summary, ui=ui.PreviewText(summary))


NODES = [VDT_TrackNearestNeighbour, VDT_TrackHeFT, VDT_TrackDiffTrack, VDT_TrackPoints, VDT_FlowTracker, VDT_HeFTPreset,
         VDT_HeFTHeadSearch]
