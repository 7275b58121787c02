"""Diffusers backbones (what ComfyUI does not load natively: I2VGen-XL, SVD as diffusers, CogVideoX, Wan)
and the generic feature-extraction node over any VDT_BACKBONE."""
from __future__ import annotations

import os

import comfy.model_management
import folder_paths
import torch
from comfy_api.latest import io

from ..backbones.diffusers_common import FAMILIES, detect_family, load_backbone
from ..backbones.protocol import FeatureSpec
from .common import Backbone, Features, category
from .inputs import (KEYS_OUTPUT_TOOLTIP, NOISE_LEVEL_DEFAULT, QK, TIMESTEP_OFF, VdtNode, extract, feature_kinds,
                     noise_level_input, rgb_video, seed_input, timestep_input, video_input)
from .timing import now

NONE = "(from the model folder)"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _folders() -> list[str]:
    """'diffusers/<name>' for every folder under models/diffusers with a diffusers layout."""
    out = []
    for root in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            d = os.path.join(root, name)
            if os.path.isfile(os.path.join(d, "model_index.json")) or os.path.isfile(os.path.join(d, "config.json")):
                out.append(f"diffusers/{name}")
    return out


def _files(kind: str) -> list[str]:
    return [f"{kind}/{f}" for f in folder_paths.get_filename_list(kind) if f.endswith(".safetensors")]


def model_choices() -> list[str]:
    return _folders() + _files("diffusion_models") + _files("checkpoints")


def vae_choices() -> list[str]:
    return [NONE] + _folders() + _files("vae")


def resolve(name: str, value: str) -> str:
    """'<folder kind>/<relative name>' from a combo -> the absolute path inside that models folder.
    Rejects absolute paths, '..' and anything that resolves outside the folder."""
    value = (value or "").replace("\\", "/")
    kind, _, rel = value.partition("/")
    if not rel or value.startswith("/") or ".." in rel.split("/") or ":" in value:
        raise ValueError(f"{name}: '{value}' is not a model inside ComfyUI's models folders")
    if kind not in ("diffusers", "diffusion_models", "checkpoints", "vae"):
        raise ValueError(f"{name}: '{value}' must start with diffusers/, diffusion_models/, checkpoints/ or vae/")
    if kind == "diffusers":
        for root in folder_paths.get_folder_paths("diffusers"):
            cand = os.path.realpath(os.path.join(root, rel))
            if os.path.commonpath([cand, os.path.realpath(root)]) != os.path.realpath(root):
                raise ValueError(f"{name}: '{value}' points outside models/diffusers")
            if os.path.isdir(cand):
                return cand
        raise ValueError(f"{name}: no folder '{rel}' under models/diffusers")
    path = folder_paths.get_full_path(kind, rel)
    if path is None:
        raise ValueError(f"{name}: no file '{rel}' in models/{kind}")
    return path


def _dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice != "auto":
        if choice not in DTYPES:
            raise ValueError(f"dtype: '{choice}' not in auto, {', '.join(DTYPES)}")
        return DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float16


class VDT_LoadDiffusersBackbone(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_LoadDiffusersBackbone",
            display_name="VDT Load Diffusers Backbone",
            category=category("backbone"),
            description="Load a video diffusion model through diffusers, offline (local files only, safetensors "
                        "only): a folder under models/diffusers, or a single denoiser file (diffusers key layout; "
                        "for Wan also ComfyUI's) with the config shipped in vdtrack/backbones/configs/<family>.",
            inputs=[
                io.Combo.Input("model", options=model_choices(),
                               tooltip="diffusers/<folder> (model_index.json layout) or a single .safetensors file "
                                       "from diffusion_models/ or checkpoints/."),
                io.Combo.Input("family", options=["auto", *FAMILIES], default="auto",
                               tooltip="Model family: auto reads the folder's model_index.json; single files need "
                                       "it set (i2vgen = I2VGen-XL, svd = Stable Video Diffusion, cogvideox, wan)."),
                io.Combo.Input("vae", options=vae_choices(), default=NONE,
                               tooltip="VAE for a single-file model (a models/vae file with the family's shipped "
                                       "config, or a diffusers folder); folders use their own vae/."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Weights/compute dtype: auto = fp32 on CPU, bf16 (or fp16) on GPU."),
                io.Boolean.Input("frame_as_latent", default=True,
                                 tooltip="CogVideoX only: encode every RGB frame as its own latent frame "
                                         "(DiffTrack; no temporal compression)."),
            ],
            outputs=[Backbone.Output(display_name="backbone")],
        )

    @classmethod
    def execute(cls, model, family="auto", vae=NONE, dtype="auto", frame_as_latent=True) -> io.NodeOutput:
        source = resolve("model", model)
        vae_path = "" if vae in (None, "", NONE) else resolve("vae", vae)
        device = comfy.model_management.get_torch_device()
        kw = {}          # devices: ComfyUI's (the adapter's modules are loaded through its model management)
        fam = detect_family(source) if family == "auto" and os.path.isdir(source) else family
        if fam == "cogvideox":
            kw["frame_as_latent"] = bool(frame_as_latent)
        backbone = load_backbone(source, family, dtype=_dtype(dtype, device), vae_file=vae_path, **kw)
        return io.NodeOutput(backbone)

KINDS = ("block", "q", "k", QK)
CHUNKING_OPTIONS = ("auto", "anchor", "windows")


class VDT_ExtractBackboneFeatures(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_ExtractBackboneFeatures",
            display_name="VDT Extract Backbone Features",
            category=category("backbone"),
            description="One noised forward pass per temporal window; returns one layer's block output or "
                        "per-head q/k as VDT_FEATURES (time per video frame).",
            inputs=[
                Backbone.Input("backbone", tooltip="A VDT_BACKBONE (diffusers or ComfyUI-native adapter)."),
                video_input(what="The video (resized to the model's size multiple)"),
                noise_level_input(),
                timestep_input(),
                io.Int.Input("layer", default=-1, min=-1, max=200,
                             tooltip="Block index (UNets: up block; DiTs: transformer block); -1 = the family's "
                                     "default (I2VGen-XL/SVD 2, CogVideoX 17, Wan 18, clamped to the model)."),
                io.Combo.Input("kind", options=list(KINDS), default="block",
                               tooltip="block output, or per-head self-attention queries/keys (DiTs only); q+k: "
                                       "both from ONE pass (queries out first, keys second: DiffTrack). Default "
                                       "block: TED's motion features and Track4Gen's SVD features."),
                io.Int.Input("window", default=0, min=0, max=1024,
                             tooltip="Video frames per forward pass; 0 = the model's default (I2VGen 16, SVD 14/25, "
                                     "CogVideoX 13, Wan 81)."),
                io.Int.Input("overlap", default=2, min=0, max=1023,
                             tooltip="Frames shared by consecutive windows. Default 2: TED's (its overlap ablation)."),
                seed_input("Seed of the added noise.", control_after_generate=True),
                io.Combo.Input("chunking", options=list(CHUNKING_OPTIONS), default="auto", optional=True,
                               tooltip="anchor: DiffTrack's published passes, frame 0 plus `window` - 1 strided "
                                       "frames each (interval T // (window - 1)), so every frame is matched "
                                       "against frame 0 as seen in its own pass; overlap unused. windows: "
                                       "consecutive overlapping windows, frame 0 only in the first (matches to "
                                       "later frames cross passes). auto: anchor for q/k of CogVideoX with "
                                       "frame_as_latent (DiffTrack's setting), windows otherwise."),
            ],
            outputs=[Features.Output(display_name="features"),
                     Features.Output(display_name="key_features", tooltip=KEYS_OUTPUT_TOOLTIP)],
        )

    @classmethod
    def execute(cls, backbone, images, noise_level=NOISE_LEVEL_DEFAULT, timestep=TIMESTEP_OFF, layer=-1, kind="block",
                window=0, overlap=2, seed=0, chunking="auto") -> io.NodeOutput:
        start = now()
        frames = rgb_video("images", images)
        if layer < 0:
            layer = backbone.default_layer
        if layer >= backbone.num_layers:
            raise ValueError(f"layer: {layer} outside 0..{backbone.num_layers - 1}")
        kinds = feature_kinds(kind, KINDS)
        chunking = resolve_chunking(chunking, backbone, kinds)
        spec = FeatureSpec(layers=[layer], kinds=kinds, window=window, overlap=overlap if chunking == "windows" else 0,
                           chunking=chunking)
        return extract(backbone, frames, noise_level, timestep, spec, seed, kind, start)


def resolve_chunking(chunking: str, backbone, kinds) -> str:
    """'auto' -> 'anchor' for q/k of a CogVideoX with one latent per frame (DiffTrack's setting), else 'windows'."""
    if chunking not in CHUNKING_OPTIONS:
        raise ValueError(f"chunking: expected one of {list(CHUNKING_OPTIONS)}, got {chunking!r}")
    if chunking != "auto":
        return chunking
    qk_only = "block" not in kinds
    return "anchor" if backbone.family == "cogvideox" and backbone.temporal_compression == 1 and qk_only \
        else "windows"


NODES = [VDT_LoadDiffusersBackbone, VDT_ExtractBackboneFeatures]
