"""HeFT head search node: one feature pass per window captures every requested layer, then every (layer, head,
RoPE band cut) is scored by tracking known points with HeFT (TAP-Vid metrics against the known tracks)."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..backbones.comfy_native import backbone_from_model
from ..backbones.protocol import FeatureSpec
from ..kernels.checks import check_video
from ..kernels.datatypes import check_tracks
from ..kernels.feature_select import LAYOUTS
from ..kernels.head_search import RANK_KEYS, parse_float_list, search_heads, table_csv, table_text
from ..kernels.heft_tracker import FB_MODES
from .common import Backbone, Progress, Tracks, category, output_path
from .features import parse_rope_dims
from .inputs import VdtNode, optional_prefix_syntax

MAX_LAYERS = 64


def parse_layers(text: str, num_layers: int) -> list[int]:
    """'16-20' / '12,18,24' / '18' -> sorted block indices inside 0..num_layers-1 (ValueError naming `layers`)."""
    out: set[int] = set()
    try:
        for part in str(text).replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ValueError(f"layers: expected block indices like '16-20' or '12,18,24', got {text!r}") from None
    if not out:
        raise ValueError("layers: no layer given")
    bad = sorted(v for v in out if not 0 <= v < num_layers)
    if bad:
        raise ValueError(f"layers: {bad} outside 0..{num_layers - 1}")
    if len(out) > MAX_LAYERS:
        raise ValueError(f"layers: {len(out)} layers; at most {MAX_LAYERS} per search")
    return sorted(out)


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
                io.Float.Input("noise_level", default=0.02, min=0.0, max=1.0, step=0.005,
                               tooltip="Fraction of the model's schedule (HeFT: the last of 50 steps = 0.02)."),
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
                io.Float.Input("argmax_radius", default=17.0, min=0.0, max=1024.0, step=0.5,
                               tooltip="HeFT soft-argmax disk, pixels."),
                io.Float.Input("search_radius", default=42.0, min=1.0, max=4096.0, step=0.5,
                               tooltip="HeFT search disk around the previous position, pixels."),
                io.Float.Input("vis_threshold", default=18.0, min=0.0, max=4096.0, step=0.5,
                               tooltip="HeFT forward-backward visibility threshold, pixels."),
                io.Float.Input("ema_alpha", default=0.05, min=0.0, max=1.0, step=0.01,
                               tooltip="HeFT query-descriptor EMA weight."),
                io.Combo.Input("heft_resolution", options=["pixels", "feature grid"], default="pixels",
                               tooltip="'pixels' = as published (sub-cell); 'feature grid' = much faster, coarser."),
                io.Combo.Input("fb_mode", options=list(FB_MODES), default="speculative",
                               tooltip="HeFT forward-backward mode (see the tracker; 'no_feedback' is fastest and not "
                                       "the published feedback)."),
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
        frames = check_video("images", images)[..., :3]
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


NODES = [VDT_HeFTHeadSearch]
