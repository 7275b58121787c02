"""VDT_PointPromptingTracker: the whole Point Prompting method in one node (many points per generation, any query
frame, long clips in windows, refinement) over a ComfyUI MODEL + VAE, through backbones/point_prompting.py."""
from __future__ import annotations

import json
import logging

import torch
from comfy_api.latest import io

from ..backbones.comfy_native import backbone_from_model
from ..backbones.point_prompting import MODES, PointPrompting, PointPromptingSettings
from ..kernels.checks import check_video
from ..kernels.datatypes import make_tracks
from ..kernels.tracks_io import parse_points
from .common import Progress, Tracks, category
from .point_prompting import parse_color
from .inputs import VdtNode, points_input, points_syntax
from .timing import now, stamp_tracks

CLIPS = ["first generation", "all generations"]
CLIPS_LIMIT_BYTES = 4 << 30      # "all generations" refused above this (float32 frames held in memory)


class VDT_PointPromptingTracker(VdtNode):
    TEXT_CHECKS = {"points": points_syntax, "marker_color": lambda c: parse_color(c)}

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_PointPromptingTracker",
            display_name="VDT Point Prompting Tracker",
            category=category("point_prompting"),
            description="Point Prompting end to end: reds in the clip are desaturated, a red dot is pasted at each "
                        "query point, an image-to-video model regenerates the clip conditioned on the marked frame "
                        "(the unmarked frame as negative prompt) and the dot is followed by colour; optionally a "
                        "masked regeneration around the coarse track refines it. Several points per sampler call "
                        "(batched generations or several markers per generation), any query frame (frames before it "
                        "come from the time-reversed clip), long clips in overlapping windows. Lengths marked "
                        "'generation px' are pixels of the size the model generates at (the input rounded to the "
                        "model's 16 px token grid).",
            inputs=[
                io.Model.Input("model", tooltip="An image-to-video model: Wan 2.1 I2V (with clip_vision), Wan 2.2 I2V "
                                                "or TI2V 5B, Cosmos-Predict2 Video2World, SVD."),
                io.Vae.Input("vae", tooltip="The model's VAE."),
                io.Image.Input("images", tooltip="The clip [frames,H,W,3], at least 2 frames. Resize it to the size "
                                                 "the model works at (the paper: 480x832 for Wan) beforehand."),
                points_input(default=""),
                io.Float.Input("noise_level", default=0.5, min=0.01, max=1.0, step=0.01,
                               tooltip="SDEdit strength: fraction of the schedule re-run (paper: 0.5)."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Steps of the full schedule; round(steps x noise_level) run (paper: 50)."),
                io.Float.Input("guidance", default=8.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Counterfactual guidance lambda: v = v_pos + lambda (v_pos - v_neg), the "
                                       "unmarked frame as negative. Not given in the paper; 8 is from an unofficial "
                                       "implementation. 0 = plain conditional sampling."),
                io.String.Input("marker_color", default="#ff0000",
                                tooltip="Marker colour '#rrggbb' or 'r,g,b' (0..255); must be a saturated red, the "
                                        "colour the tracker follows (paper: pure red)."),
                io.Float.Input("marker_radius", default=2.0, min=0.5, max=32.0, step=0.25,
                               tooltip="Marker radius in generation px (paper's best: 2 at 480x832)."),
                io.Float.Input("rebalance_strength", default=0.8, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of saturation removed from red hues of the clip before the marker "
                                       "is pasted, so natural reds are not taken for it (0 = off)."),
                io.Boolean.Input("refine", default=True,
                                 tooltip="Second pass: regenerate only a disk around the coarse track (RePaint "
                                         "mask on the latent grid) and track again (paper: on)."),
                io.Float.Input("refine_noise_level", default=0.3, min=0.01, max=1.0, step=0.01,
                               tooltip="SDEdit strength of the refinement pass (paper silent; 0.3 from an "
                                       "unofficial implementation)."),
                io.Float.Input("refine_mask_radius", default=16.0, min=1.0, max=512.0, step=1.0,
                               tooltip="Radius of the refinement mask around the coarse track, generation px "
                                       "(paper silent; ours: two 8 px VAE cells)."),
                io.Int.Input("points_per_generation", default=4, min=1, max=256,
                             tooltip="Points per sampler call: batched generations per call, or markers per "
                                     "generation in multi-marker mode. Memory grows with it in batched mode."),
                io.Combo.Input("mode", options=list(MODES), default="batched",
                               tooltip="batched: one marker per generation, up to points_per_generation "
                                       "generations in one sampler batch (same result as one run per point). "
                                       "multi-marker: several markers in one generation when at least "
                                       "min_separation apart (one model pass for all; accuracy may drop); closer "
                                       "points fall back to batched (said in the log)."),
                io.Float.Input("min_separation", default=64.0, min=1.0, max=4096.0, step=1.0,
                               tooltip="multi-marker: smallest distance between markers of one generation, "
                                       "generation px."),
                io.Int.Input("window", default=0, min=0, max=1024,
                             tooltip="Frames per generation for long clips (rounded down to 4k+1 for Wan); "
                                     "0 = the model's own length (81 for Wan)."),
                io.Int.Input("overlap", default=4, min=0, max=1023,
                             tooltip="Frames shared by consecutive windows. The next window starts on the first "
                                     "shared frame with the marker pasted where it was tracked there."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed, the same for every generation (tracks do not depend on how "
                                     "points are grouped)."),
                io.Float.Input("search_radius", default=20.0, min=1.0, max=4096.0, step=1.0,
                               tooltip="Colour tracker's search radius around the previous position, generation "
                                       "px (grows x1.5 per frame without the marker)."),
                io.Combo.Input("keep_clips", options=CLIPS, default="first generation",
                               tooltip="Regenerated clips returned for inspection: the first generation's "
                                       "windows, or every generation's (refused above 4 GiB)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP vision model (clip_vision_h) for Wan 2.1 I2V: marked and unmarked "
                                            "frames are encoded with it. Not needed for Wan 2.2."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Text conditioning for both branches; default: empty prompt (paper)."),
            ],
            outputs=[
                Tracks.Output("tracks", display_name="tracks",
                              tooltip="TRACKS [frames,points,2] in input pixels with visibility (marker found) and "
                                      "per-frame confidence."),
                io.Image.Output("clips", display_name="clips",
                                tooltip="Regenerated clips (the marker moving), windows one after another."),
                io.String.Output("confidence", display_name="confidence",
                                 tooltip="JSON list, one number per point in 0..1: mean marker strength over the "
                                         "frames where it was found."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, images, points, noise_level=0.5, steps=50, guidance=8.0, marker_color="#ff0000",
                marker_radius=2.0, rebalance_strength=0.8, refine=True, refine_noise_level=0.3,
                refine_mask_radius=16.0, points_per_generation=4, mode="batched", min_separation=64.0, window=0,
                overlap=4, seed=0, search_radius=20.0, keep_clips="first generation", clip_vision=None,
                conditioning=None) -> io.NodeOutput:
        start = now()
        frames = check_video("images", images, min_frames=2)
        T, H, W = frames.shape[:3]
        q = parse_points(points, T, (H, W))
        if keep_clips not in CLIPS:
            raise ValueError(f"keep_clips: expected one of {CLIPS}, got {keep_clips!r}")
        settings = PointPromptingSettings(
            noise_level=float(noise_level), steps=int(steps), guidance=float(guidance),
            marker_color=parse_color(marker_color), marker_radius=float(marker_radius),
            rebalance_strength=float(rebalance_strength), refine=bool(refine),
            refine_noise_level=float(refine_noise_level), refine_mask_radius=float(refine_mask_radius),
            points_per_generation=int(points_per_generation), mode=mode, min_separation=float(min_separation),
            window=int(window), overlap=int(overlap), seed=int(seed), search_radius=float(search_radius)).check()
        bb = backbone_from_model(model, vae, text=conditioning)
        if not bb.image_prompt:
            raise ValueError("model: Point Prompting needs an image-to-video model (the marked first frame is its "
                             "prompt); this one takes no image (a text-to-video Wan?)")
        encode = None
        if clip_vision is not None:
            encode = lambda image: clip_vision.encode_image(image, crop=False)   # noqa: E731
        keep = "all" if keep_clips == CLIPS[1] else "first"
        pp = PointPrompting(bb, settings, text=conditioning, encode_image=encode, keep_clips=keep)
        frames = frames[..., :3].float()
        if keep == "all":
            need = pp.clip_frames(T, (H, W), q) * H * W * 3 * 4
            if need > CLIPS_LIMIT_BYTES:
                raise ValueError(f"keep_clips: keeping all generations would hold {need / 2**30:.1f} GiB of "
                                 "frames; use 'first generation' or fewer points per run")
        pp.progress = Progress(pp.sampler_steps(T, (H, W), q))
        res = pp.run(frames, q)
        for line in res.log:
            logging.info("vdtrack point prompting: %s", line)
        tracks = make_tracks(res.track_path, res.track_visibility, query_points=q, frame_size=(H, W),
                             confidence=res.confidence)
        out = torch.cat([c.to(frames.device) for c in res.clips], 0) if res.clips else frames
        conf = json.dumps([round(float(c), 4) for c in res.point_confidence])
        return io.NodeOutput(stamp_tracks(tracks, start), out, conf)


NODES = [VDT_PointPromptingTracker]
