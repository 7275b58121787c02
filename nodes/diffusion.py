"""Video-diffusion nodes: feature extraction (HeFT / DiffTrack / TED style), TED's per-frame appearance features
(TED, Temporal Enhanced Diffusion, Zhang et al. 2024, arXiv 2403.18526: DIFT on an image UNet, or the video model's
own low-noise pass frame by frame) and counterfactual regeneration (Point Prompting), all over a ComfyUI MODEL + VAE
through backbones/ (never model internals here). TED's motion features come from `VDT Extract Diffusion Features`
(kind 'block', the preset's timestep, window and overlap), the fusion from `VDT Fuse Features`, the propagation
from `VDT Propagate Labels`."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..backbones.comfy_image import DIFT_TIMESTEP, DIFT_UP_FT_INDEX, ComfyImageUNet, is_image_unet_model
from ..backbones.comfy_native import backbone_from_model
from ..backbones.protocol import FeatureSpec, ImageCond
from ..kernels.checks import check_mask, check_video
from ..kernels.feature_select import parse_head_ids
from .common import Features, Progress, category
from .inputs import (KEYS_OUTPUT_TOOLTIP, NOISE_LEVEL_DEFAULT, QK, TIMESTEP_OFF, VdtNode, extract, feature_kinds,
                     noise_level_input, rgb_video, seed_input, timestep_input, video_input)
from .timing import now, stamp_features

KINDS = ("k", "q", "block", QK)
SIZE_NOTE = ("Frames whose height/width are not multiples of the model's token stride (16 px for Wan 2.1, Wan 2.2 "
             "14B and Cosmos, 32 px for Wan 2.2 5B) are "
             "resized to the nearest multiples inside the node; outputs are reported in the input's pixels.")


def _first_frame(name: str, image, size: tuple[int, int]) -> torch.Tensor:
    img = check_video(name, image)
    if tuple(img.shape[1:3]) != tuple(size):
        raise ValueError(f"{name}: is {img.shape[1]}x{img.shape[2]} but the frames are {size[0]}x{size[1]}")
    return img[:1, ..., :3].float()


class VDT_ExtractDiffusionFeatures(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_ExtractDiffusionFeatures",
            display_name="VDT Extract Diffusion Features",
            category=category("diffusion"),
            description="One conditional forward pass of a video diffusion model on the slightly noised clip; "
                        "captures a block output or the per-head self-attention query/key (after QK-norm) of one "
                        "layer, per video frame. Long clips run in overlapping windows. " + SIZE_NOTE,
            inputs=[
                io.Model.Input("model", tooltip="A video diffusion model: Wan 2.1/2.2 or Cosmos-Predict2 (Load "
                                                "Diffusion Model), or SVD (Image Only Checkpoint Loader)."),
                io.Vae.Input("vae", tooltip="The model's VAE (the Wan 2.1 VAE for Wan 2.1, Wan 2.2 14B and "
                                            "Cosmos-Predict2; the checkpoint's VAE for SVD)."),
                video_input(what="The clip"),
                io.Int.Input("layer", default=18, min=0, max=255,
                             tooltip="Transformer block index (0-based). HeFT: 18 for Wan2.1-1.3B and Cosmos-2B."),
                io.Combo.Input("kind", options=list(KINDS), default="k",
                               tooltip="k/q: self-attention key/query per head [frames,heads,128,h,w] (HeFT and "
                                       "DiffTrack use keys/queries); q+k: both from ONE forward pass (queries "
                                       "out first, keys second: DiffTrack); block: the block output "
                                       "[frames,C,h,w]. Default k: HeFT tracks on keys."),
                io.Combo.Input("rope", options=["after", "before"], default="after",
                               tooltip="q/k after RoPE (what attention sees; HeFT/DiffTrack) or before it."),
                noise_level_input(),
                timestep_input(),
                io.String.Input("heads", default="",
                                tooltip="Heads to keep for q/k (the model's head ids), e.g. '1' or '1,6'; empty, "
                                        "'all', '*' or '-1' = all heads."),
                io.Int.Input("window", default=0, min=0, max=1024,
                             tooltip="Video frames per window (rounded down to 4k+1 for Wan); 0 = model default "
                                     "(81 for Wan, 25 for Cosmos (HeFT), 14 for SVD)."),
                io.Int.Input("overlap", default=0, min=0, max=1023,
                             tooltip="Frames shared by consecutive windows (split in the middle; a short final "
                                     "window borrows earlier frames and drops their features). Default 0 (ours: "
                                     "no frame computed twice); TED uses 2 (VDT TED Preset)."),
                seed_input("Noise seed (same inputs + seed = same features).", control_after_generate=True),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Text conditioning (umT5 for Wan); default: empty prompt as an "
                                              "all-zero context."),
                io.ClipVisionOutput.Input("clip_vision_output", optional=True,
                                          tooltip="Only for Wan 2.1 I2V models with first-frame conditioning: "
                                                  "the CLIP vision encoding of frame 0."),
                io.Boolean.Input("condition_on_first_frame", default=False, optional=True,
                                 tooltip="Image-to-video models only: condition each window on its first frame "
                                         "(off = no image conditioning, as HeFT)."),
            ],
            outputs=[Features.Output(display_name="features",
                                     tooltip="VDT_FEATURES: per-frame features, stride and frame size."),
                     Features.Output(display_name="key_features", tooltip=KEYS_OUTPUT_TOOLTIP)],
        )

    TEXT_CHECKS = {"heads": parse_head_ids}

    @classmethod
    def execute(cls, model, vae, images, layer=18, kind="k", rope="after", noise_level=NOISE_LEVEL_DEFAULT,
                timestep=TIMESTEP_OFF, heads="", window=0, overlap=0, seed=0, conditioning=None,
                clip_vision_output=None, condition_on_first_frame=False) -> io.NodeOutput:
        start = now()
        frames = rgb_video("images", images)
        bb = backbone_from_model(model, vae, text=conditioning)
        head_list = parse_head_ids(heads)
        spec = FeatureSpec([int(layer)], kinds=feature_kinds(kind, KINDS), heads=head_list, rope=rope,
                           window=int(window), overlap=int(overlap))
        cond = None
        if condition_on_first_frame or clip_vision_output is not None:
            cond = ImageCond(frames[:1].float(), clip_vision_output, conditioning)
        return extract(bb, frames, noise_level, timestep, spec, seed, kind, start, cond=cond)


class VDT_CounterfactualRegenerate(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_CounterfactualRegenerate",
            display_name="VDT Counterfactual Regenerate",
            category=category("diffusion"),
            description="Point Prompting: SDEdit-regenerate the clip with an image-to-video model conditioned on the "
                        "edited (marked) first frame, pushed away from the unedited one: per step v = v_pos + "
                        "w (v_pos - v_neg). With a mask only the masked region is regenerated (RePaint-style); "
                        "outside it the original latent is kept. " + SIZE_NOTE,
            inputs=[
                io.Model.Input("model", tooltip="An image-to-video model: Wan 2.1/2.2 I2V, Cosmos-Predict2 Video2World "
                                                "or SVD."),
                io.Vae.Input("vae", tooltip="The model's VAE."),
                video_input(what="The clip to regenerate (usually rebalanced, marker pasted on frame 0)"),
                io.Image.Input("edited_first_frame", tooltip="Positive image prompt: frame 0 with the marker."),
                io.Image.Input("unedited_first_frame", tooltip="Negative image prompt: frame 0 without the marker."),
                io.Float.Input("noise_level", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="SDEdit strength: fraction of the schedule re-run (paper: 0.5; refinement "
                                       "0.3 in an unofficial implementation)."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Steps of the full schedule; round(steps * noise_level) are run (paper: 50)."),
                io.Float.Input("guidance", default=8.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Counterfactual guidance w (lambda). Not given in the paper; 8 is from an "
                                       "unofficial implementation (unverified). 0 = plain conditional sampling."),
                seed_input(control_after_generate=True),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP vision model (clip_vision_h) for Wan 2.1 I2V: both first frames "
                                            "are encoded with it. Not needed for Wan 2.2 I2V."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Regenerate only here (1 = regenerate), [frames,H,W] or one frame; pooled "
                                      "to the latent grid (max over each VAE cell, 8x8 or 16x16 px, and 4-frame group)."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Text conditioning for both branches; default: empty prompt."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The regenerated clip, same size as the input.")],
        )

    @classmethod
    def execute(cls, model, vae, images, edited_first_frame, unedited_first_frame, noise_level=0.5, steps=50,
                guidance=8.0, seed=0, clip_vision=None, mask=None, conditioning=None) -> io.NodeOutput:
        frames = check_video("images", images)
        T, H, W = frames.shape[:3]
        edited = _first_frame("edited_first_frame", edited_first_frame, (H, W))
        unedited = _first_frame("unedited_first_frame", unedited_first_frame, (H, W))
        if mask is not None:
            mask = check_mask("mask", mask, frames=T, size=(H, W), allow_empty=False)
        if float(guidance) < 0:
            raise ValueError(f"guidance: {guidance} must be >= 0")
        bb = backbone_from_model(model, vae, text=conditioning)
        cvo_pos = cvo_neg = None
        if clip_vision is not None:
            cvo_pos = clip_vision.encode_image(edited, crop=False)
            cvo_neg = clip_vision.encode_image(unedited, crop=False)
        pos = ImageCond(edited, cvo_pos, conditioning)
        neg = ImageCond(unedited, cvo_neg, conditioning)
        progress = Progress(bb.regen_steps(float(noise_level), int(steps)))
        out = bb.regenerate(frames[..., :3].float(), float(noise_level), pos, neg, float(guidance), int(steps),
                            mask=mask, seed=int(seed), progress=progress)
        return io.NodeOutput(out.to(frames.device))


def video_model_frame_features(model, vae, frames: torch.Tensor, layer: int, timestep: int, ensemble_size: int,
                               seed: int, conditioning, progress) -> dict:
    """Appearance features from a video model run on each frame alone (a 1-frame clip), block `layer`,
    averaged over `ensemble_size` noise draws (seeds seed..seed+n-1)."""
    bb = backbone_from_model(model, vae, text=conditioning)
    level = bb.noise_level_from_timestep(float(timestep))
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


NODES = [VDT_ExtractDiffusionFeatures, VDT_ExtractAppearanceFeatures, VDT_CounterfactualRegenerate]
