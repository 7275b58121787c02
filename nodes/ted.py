"""TED (Temporal Enhanced Diffusion, Zhang et al. 2024, arXiv 2403.18526): the per-frame appearance features
(DIFT on an image UNet, or the video model's own low-noise pass frame by frame) and TED's presets. The motion
features come from `VDT Extract Diffusion Features` (kind 'block', the preset's timestep, window and overlap),
the fusion from `VDT Fuse Features`, the propagation from `VDT Propagate Labels`."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..backbones.comfy_image import DIFT_TIMESTEP, DIFT_UP_FT_INDEX, ComfyImageUNet, is_image_unet_model
from ..backbones.comfy_native import backbone_from_model
from ..backbones.protocol import FeatureSpec
from ..kernels.checks import check_video
from ..kernels.datatypes import check_features
from .common import Features, Progress, category
from .inputs import VdtNode
from .timing import now, stamp_features

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


def video_model_frame_features(model, vae, frames: torch.Tensor, layer: int, timestep: int, ensemble_size: int,
                               seed: int, conditioning, progress) -> dict:
    """Appearance features from a video model run on each frame alone (a 1-frame clip), block `layer`,
    averaged over `ensemble_size` noise draws (seeds seed..seed+n-1)."""
    bb = backbone_from_model(model, vae, text=conditioning)
    level = bb.level_from_timestep(float(timestep))
    spec = FeatureSpec([int(layer)], kinds=("block",))
    key = spec.keys()[0]
    out = None
    for t in range(frames.shape[0]):
        acc = None
        for e in range(int(ensemble_size)):
            f = bb.features(frames[t:t + 1], level, spec, int(seed) + e)[key]
            acc = f["features"] if acc is None else acc + f["features"]
        f["features"] = acc / int(ensemble_size)
        if out is None:
            out = {**f, "features": f["features"].new_empty((frames.shape[0],) + tuple(f["features"].shape[1:]))}
        out["features"][t] = f["features"][0]
        progress()
    out["meta"] = dict(out["meta"], protocol="video model, one frame per pass", ensemble_size=int(ensemble_size),
                       timestep=int(timestep))
    return out


class VDT_ExtractAppearanceFeatures(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_ExtractAppearanceFeatures",
            display_name="VDT Extract Appearance Features",
            category=category("diffusion"),
            description="TED's appearance features, one frame at a time. With an SD 1.x/2.x image UNet: DIFT "
                        "(noise the frame's latent to timestep t, one UNet pass, the output of decoder up block "
                        "'layer' in diffusers numbering, averaged over an ensemble of noise draws). With a video "
                        "model (Wan, Cosmos, SVD): each frame alone through the video model's own pass at t, block "
                        "'layer'. Frames are resized to the model's multiples inside the node.",
            inputs=[
                io.Model.Input("model", tooltip="An SD 1.x/2.x UNet (Load Checkpoint / Load Diffusion Model) or a "
                                                "video model."),
                io.Vae.Input("vae", tooltip="The model's VAE (taesd works for SD)."),
                io.Image.Input("images", tooltip="The clip [frames,H,W,3]."),
                io.Int.Input("timestep", default=DIFT_TIMESTEP, min=1, max=999,
                             tooltip="Noise timestep t of 1000. DIFT semantic matching 261; DIFT-SD on DAVIS 51; "
                                     "TED's ADM 51."),
                io.Int.Input("layer", default=DIFT_UP_FT_INDEX, min=0, max=255,
                             tooltip="Image UNet: diffusers up block index (DIFT's up_ft_index: 1 = stride 16, "
                                     "2 = stride 8). Video model: its block index."),
                io.Int.Input("ensemble_size", default=1, min=1, max=64,
                             tooltip="Noise draws averaged per frame (DIFT: 8 for matching, 4-8 for DAVIS; "
                                     "TED 'best')."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed (the same draws for every frame)."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Text embedding (DIFT: CLIPTextEncode of the empty prompt with the "
                                              "checkpoint's CLIP); default: an all-zero context."),
            ],
            outputs=[Features.Output(display_name="features", tooltip="VDT_FEATURES [frames,C,h,w].")],
        )

    @classmethod
    def execute(cls, model, vae, images, timestep=DIFT_TIMESTEP, layer=DIFT_UP_FT_INDEX, ensemble_size=1, seed=0,
                conditioning=None) -> io.NodeOutput:
        start = now()
        frames = check_video("images", images)[..., :3].float()
        if int(ensemble_size) < 1:
            raise ValueError(f"ensemble_size: {ensemble_size} must be >= 1")
        progress = Progress(frames.shape[0])
        if is_image_unet_model(model):
            out = ComfyImageUNet(model, vae).features(frames, int(timestep), int(layer), int(ensemble_size),
                                                      int(seed), conditioning, progress=progress)
        else:
            out = video_model_frame_features(model, vae, frames, int(layer), int(timestep), int(ensemble_size),
                                             int(seed), conditioning, progress)
        return io.NodeOutput(stamp_features(out, start))


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


NODES = [VDT_TEDPreset, VDT_ExtractAppearanceFeatures, VDT_AverageFeatures]
