"""Feature nodes that need no model: colour-patch features, head/RoPE-band selection, TED fusion, and the mean of
features over noise draws (DIFT's and TED's ensemble)."""
from __future__ import annotations

from comfy_api.latest import io

from ..kernels.datatypes import check_features, make_features
from ..kernels.feature_select import LAYOUTS, head_positions, parse_heads, select_heads_frequencies
from ..kernels.feature_select import spatial_lowpass as lowpass_maps
from ..kernels.fusion import fuse_feature_dicts
from ..kernels.pixel_features import patch_features
from .common import Features, Progress, category
from .inputs import VdtNode, seed_input, video_input
from .timing import now, stamp_features


def parse_rope_dims(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise ValueError(f"rope_dims: expected three integers like '44,42,42', got {text!r}") from None
    if len(dims) != 3:
        raise ValueError(f"rope_dims: expected three integers (T,H,W) like '44,42,42', got {text!r}")
    return dims


class VDT_PixelFeatures(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_PixelFeatures",
            display_name="VDT Pixel Features",
            category=category("features"),
            description="Model-free features: colour patches (optionally randomly projected), so the trackers run "
                        "without a diffusion model.",
            inputs=[
                video_input(what="The video frames"),
                io.Int.Input("patch_size", default=8, min=1, max=64,
                             tooltip="Patch size and stride in pixels; one feature cell per patch."),
                io.Int.Input("projection_dim", default=0, min=0, max=4096,
                             tooltip="0 = raw 3*p*p colour values; otherwise a fixed random projection to this "
                                     "many channels."),
                seed_input("Seed of the random projection.", max=2 ** 31 - 1),
                io.Boolean.Input("center", default=True,
                                 tooltip="Subtract the clip's mean colour first, so cosine similarity compares "
                                         "colours rather than brightness."),
                io.Float.Input("coords_weight", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Append normalised (x,y) cell coordinates times this weight (0 = off)."),
            ],
            outputs=[Features.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, images, patch_size, projection_dim, seed, center, coords_weight) -> io.NodeOutput:
        start = now()
        progress = Progress(1)
        out = patch_features(images, int(patch_size), int(projection_dim), int(seed), bool(center),
                             float(coords_weight))
        progress()
        return io.NodeOutput(stamp_features(out, start))


class VDT_SelectHeadsFrequencies(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_SelectHeadsFrequencies",
            display_name="VDT Select Heads/Frequencies",
            category=category("features"),
            description="HeFT head and RoPE-band selection of per-head q/k features, plus an optional spatial "
                        "low-pass.",
            inputs=[
                Features.Input("features", tooltip="Per-head features [T,heads,C,h,w] (attention q or k)."),
                io.String.Input("heads", default="all",
                                tooltip="Head ids of the model, as extracted: one head ('6'), a list ('1,3,5', "
                                        "concatenated in that order) or 'all' (also empty, '*' or '-1'). HeFT: Cosmos 6, "
                                        "Wan 1, CogVideoX 19."),
                io.String.Input("rope_dims", default="44,42,42",
                                tooltip="Channels of the (T,H,W) RoPE groups of one head; must sum to head_dim. "
                                        "Wan/Cosmos head_dim 128: 44,42,42; CogVideoX 64: 16,24,24."),
                io.Float.Input("freq_low", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Drop this fraction of each group's RoPE bands from the high-frequency end "
                                       "(HeFT: Cosmos 0.1, Wan 0.15, CogVideoX 0)."),
                io.Float.Input("freq_high", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Keep bands up to this fraction of each group (1 = up to the lowest "
                                       "frequency)."),
                io.Combo.Input("layout", options=list(LAYOUTS), default="contiguous",
                               tooltip="Channel layout of the RoPE pairs: 'contiguous' = HeFT's slicing (used for "
                                       "every model in the paper), 'interleaved' = Wan pairs (2i,2i+1), "
                                       "'half_split' = Cosmos (i, i+C/2)."),
                io.Float.Input("spatial_lowpass", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="Keep spatial frequencies up to this fraction of Nyquist on each feature "
                                       "map (1 = off). Not HeFT's 'frequency' (that is the RoPE band)."),
            ],
            outputs=[Features.Output(display_name="features")],
        )

    # head ids are checked against the features' head count when the node runs
    TEXT_CHECKS = {"heads": lambda h: parse_heads(h, 1 << 16), "rope_dims": lambda d: parse_rope_dims(d)}

    @classmethod
    def execute(cls, features, heads, rope_dims, freq_low, freq_high, layout, spatial_lowpass) -> io.NodeOutput:
        start = now()
        f = check_features("features", features, heads="require")
        x = f["features"]
        progress = Progress(2)
        dims = parse_rope_dims(rope_dims)
        if freq_low <= 0 and freq_high >= 1:
            dims = None                         # the full range keeps every channel, whatever the head size
        ids = f["meta"]["heads"]                # the original head ids along the heads axis
        pos = head_positions(heads, ids)
        out = select_heads_frequencies(x, pos, dims, (freq_low, freq_high), layout)
        progress()
        out = lowpass_maps(out, spatial_lowpass)
        progress()
        meta = dict(f["meta"], heads=[ids[i] for i in pos], rope_dims=dims,
                    freq_range=(float(freq_low), float(freq_high)), rope_layout=layout,
                    spatial_lowpass=float(spatial_lowpass))
        return io.NodeOutput(stamp_features(make_features(out, f["stride"], f["frame_size"], meta), start, features))



class VDT_FuseFeatures(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_FuseFeatures",
            display_name="VDT Fuse Features",
            category=category("features"),
            description="TED fusion (Eq. 4): concat(alpha*a/|a|, (1-alpha)*b/|b|) per pixel; b is resized to a's "
                        "grid.",
            inputs=[
                Features.Input("features_a", tooltip="Motion/video features R_v (their grid and stride are kept)."),
                Features.Input("features_b", tooltip="Appearance features R_i (resized bilinearly to a's grid)."),
                io.Float.Input("alpha", default=0.4, min=0.0, max=1.0, step=0.01,
                               tooltip="Weight of features_a (TED: 0.4 DAVIS, 0.6 YouTube-Similar, 1.0 = a only)."),
            ],
            outputs=[Features.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, features_a, features_b, alpha) -> io.NodeOutput:
        start = now()
        progress = Progress(1)
        out = fuse_feature_dicts(features_a, features_b, float(alpha))
        progress()
        return io.NodeOutput(stamp_features(out, start, features_a, features_b))


MAX_ENSEMBLE_INPUTS = 8


def average_feature_dicts(items: list[tuple[str, dict]]) -> dict:
    """Mean of several VDT_FEATURES of the same clip, grid and stride (an ensemble over noise draws).
    items: (input name, features). ValueError naming the input that differs."""
    name0, first = items[0]
    f0 = check_features(name0, first, heads="any")
    acc = f0["features"].float().clone()
    for name, fd in items[1:]:
        f = check_features(name, fd, heads="any")
        if f["features"].shape != f0["features"].shape:
            raise ValueError(f"{name}: shape {tuple(f['features'].shape)} differs from {name0} "
                             f"{tuple(f0['features'].shape)} (same clip, model, layer and window needed)")
        if f["stride"] != f0["stride"] or f["frame_size"] != f0["frame_size"]:
            raise ValueError(f"{name}: stride/frame_size differ from {name0}")
        acc += f["features"].to(acc.device, acc.dtype)
    meta = dict(f0["meta"], ensemble_size=len(items),
                ensemble_seeds=[fd.get("meta", {}).get("seed") for _, fd in items])
    return {"features": acc / len(items), "stride": f0["stride"], "frame_size": f0["frame_size"], "meta": meta}


class VDT_AverageFeatures(VdtNode):
    @classmethod
    def define_schema(cls):
        optional = [Features.Input(f"features_{i}", optional=True, tooltip=f"Features of draw {i}.")
                    for i in range(2, MAX_ENSEMBLE_INPUTS + 1)]
        return io.Schema(
            node_id="VDT_AverageFeatures",
            display_name="VDT Average Features",
            category=category("features"),
            description="Ensemble over noise draws (DIFT; TED's 'best' setting): the mean of the same features "
                        "extracted with different seeds. Connect up to 8 extraction nodes that differ only in "
                        "their seed.",
            inputs=[Features.Input("features_1", tooltip="Features of draw 1."), *optional],
            outputs=[Features.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, features_1, **more) -> io.NodeOutput:
        start = now()
        items = [("features_1", features_1)] + [(f"features_{i}", more[f"features_{i}"])
                                                for i in range(2, MAX_ENSEMBLE_INPUTS + 1)
                                                if more.get(f"features_{i}") is not None]
        out = average_feature_dicts(items)
        return io.NodeOutput(stamp_features(out, start, *[fd for _, fd in items]))


NODES = [VDT_PixelFeatures, VDT_SelectHeadsFrequencies, VDT_FuseFeatures, VDT_AverageFeatures]
