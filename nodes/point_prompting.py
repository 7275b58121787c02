"""Point Prompting nodes: the whole method in one node (`VDT_PointPromptingTracker`: many points per generation,
any query frame, long clips in windows, refinement, over a ComfyUI MODEL + VAE through backbones/point_prompting.py)
and its pieces as helper nodes: colour rebalancing, red markers, and the red-marker colour tracker."""
from __future__ import annotations

import json
import logging
import re

import torch
from comfy_api.latest import io

from ..backbones.comfy_native import backbone_from_model
from ..backbones.point_prompting import MODES, PointPrompting, PointPromptingSettings
from ..kernels.checks import check_memory, check_video
from ..kernels.color_rebalance import rebalance_colors
from ..kernels.datatypes import inside_frame
from ..kernels.markers import draw_markers
from ..kernels.red_tracker import track_red_markers
from ..kernels.tracks_io import parse_points
from .common import Progress, Tracks, category, check_interrupt
from .inputs import (VdtNode, optional_points_syntax, pixels_radius_input, points_input, points_syntax, rgb_video,
                     tracks_for_video, tracks_input, video_input)
from .timing import now, timed_tracks

FRAMES = ["query frame", "all frames"]


def parse_color(text: str) -> tuple[float, float, float]:
    """'#rrggbb' or 'r,g,b' (0..255) -> RGB in 0..1."""
    s = (text or "").strip()
    if re.fullmatch(r"#?[0-9a-fA-F]{6}", s):
        s = s.lstrip("#")
        return tuple(int(s[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
    parts = [p for p in re.split(r"[,\s;]+", s) if p]
    if len(parts) == 3 and all(re.fullmatch(r"\d+(\.\d+)?", p) for p in parts):
        vals = [float(p) for p in parts]
        if all(0 <= v <= 255 for v in vals):
            return tuple(v / 255.0 for v in vals)
    raise ValueError(f"color: expected '#rrggbb' or 'r,g,b' with values 0..255, got {text!r}")


def _visible_track_points(tracks, video: torch.Tensor) -> torch.Tensor:
    """Every visible, in-frame position of TRACKS (scaled to the video's pixels) as marker points [M,3] (t,x,y)."""
    path, vis = tracks_for_video("tracks", tracks, video)
    size = video.shape[1:3]
    tt, nn = vis.nonzero(as_tuple=True)
    xy = path[tt, nn]
    inside = inside_frame(xy, size)
    if not bool(inside.any()):
        raise ValueError("tracks: no visible point inside the frame to draw")
    return torch.cat([tt[inside, None].float(), xy[inside]], 1)


class VDT_DrawMarkers(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_DrawMarkers",
            display_name="VDT Draw Markers",
            category=category("point_prompting"),
            description="Paste anti-aliased filled dots (default pure red, radius 2 px) at the points: the "
                        "Point Prompting marker.",
            inputs=[
                video_input(what="The video to mark"),
                points_input(default="", note="Ignored when tracks are connected."),
                io.String.Input("color", default="#ff0000", tooltip="Marker colour, '#rrggbb' or 'r,g,b' (0..255)."),
                pixels_radius_input("radius", 2.0, 0.25, 64.0, "Dot radius in these frames (the paper's best: 2 at "
                                                               "480x832).", step=0.25),
                io.Combo.Input("frames", options=FRAMES, default="query frame",
                               tooltip="query frame: each dot only on its point's query frame (t, default 0). "
                                       "all frames: the same dot position on every frame."),
                tracks_input(optional=True, what="Optional: draw a dot at every visible position of these tracks "
                                                 "instead of the points (what a perfect regeneration would show; "
                                                 "useful to check the colour tracker on ground truth); scaled to "
                                                 "the video if their frame_size differs"),
            ],
            outputs=[io.Image.Output("marked", display_name="images", tooltip="The marked video.")],
        )

    TEXT_CHECKS = {"points": optional_points_syntax, "color": lambda c: parse_color(c)}   # points: or tracks

    @classmethod
    def execute(cls, images, points, color="#ff0000", radius=2.0, frames="query frame",
                tracks=None) -> io.NodeOutput:
        v = rgb_video("images", images)
        t, h, w = v.shape[:3]
        if tracks is not None:
            q = _visible_track_points(tracks, v)
        else:
            q = parse_points(points, t, (h, w))
        if tracks is None and frames == "all frames":
            ts = torch.arange(t, dtype=q.dtype).repeat_interleave(q.shape[0])
            q = torch.cat([ts[:, None], q[:, 1:].repeat(t, 1)], 1)
        elif tracks is None and frames != "query frame":
            raise ValueError(f"frames: expected one of {FRAMES}, got {frames!r}")
        return io.NodeOutput(draw_markers(v, q.to(v.device), parse_color(color), float(radius),
                                          check=check_interrupt))


class VDT_RebalanceColors(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_RebalanceColors",
            display_name="VDT Rebalance Colors",
            category=category("point_prompting"),
            description="Lower the saturation of red hues so natural reds are not mistaken for the red marker; "
                        "other colours are returned unchanged.",
            inputs=[
                video_input(what="The video to rebalance (before the marker is drawn)"),
                io.Float.Input("strength", default=0.8, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of saturation removed from hues within hue_width of red."),
                io.Float.Input("hue_width", default=20.0, min=1.0, max=90.0, step=1.0,
                               tooltip="Degrees of hue around red that lose the full strength; the effect fades "
                                       "to nothing at twice this distance."),
            ],
            outputs=[io.Image.Output("rebalanced", display_name="images", tooltip="The rebalanced video.")],
        )

    @classmethod
    def execute(cls, images, strength=0.8, hue_width=20.0) -> io.NodeOutput:
        return io.NodeOutput(rebalance_colors(rgb_video("images", images), float(strength), float(hue_width)))


class VDT_TrackRedMarkers(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TrackRedMarkers",
            display_name="VDT Track Red Markers",
            category=category("point_prompting"),
            description="Follow red dots by colour from each query point: nearest red pixel within the search "
                        "radius, refined by the blob centroid; no red pixel = occluded, the radius grows until "
                        "the dot reappears. Frames before a point's query frame are not visible.",
            inputs=[
                video_input(what="The regenerated (marked) video"),
                points_input(default="", note="Where the markers were drawn."),
                pixels_radius_input("radius", 20.0, 1.0, 4096.0, "Initial search radius r0 around the previous "
                                                                  "position.", step=1.0),
                io.Float.Input("growth", default=1.5, min=1.0, max=10.0, step=0.1,
                               tooltip="Search radius multiplier per frame without the marker (capped at the "
                                       "image diagonal, back to r0 once found)."),
                pixels_radius_input("centroid_radius", 6.0, 0.5, 256.0, "Red pixels within this distance of the "
                                                                         "nearest one are averaged (about 3 x the "
                                                                         "marker radius)."),
                io.Float.Input("h_low", default=10.0, min=0.0, max=180.0, step=1.0,
                               tooltip="Red hue: H <= h_low (OpenCV scale 0..180)."),
                io.Float.Input("h_high", default=170.0, min=0.0, max=180.0, step=1.0,
                               tooltip="Red hue: or H >= h_high (OpenCV scale 0..180)."),
                io.Float.Input("s_min", default=120.0, min=0.0, max=255.0, step=1.0,
                               tooltip="Minimum saturation (0..255)."),
                io.Float.Input("v_min", default=70.0, min=0.0, max=255.0, step=1.0,
                               tooltip="Minimum value/brightness (0..255)."),
            ],
            outputs=[Tracks.Output("tracks", display_name="tracks",
                                   tooltip="One track per point with visibility = marker found.")],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, images, points, radius=20.0, growth=1.5, centroid_radius=6.0, h_low=10.0, h_high=170.0,
                s_min=120.0, v_min=70.0) -> io.NodeOutput:
        t0 = now()
        v = rgb_video("images", images)
        t, h, w = v.shape[:3]
        q = parse_points(points, t, (h, w))
        start = int(q[:, 0].min())
        path, vis = track_red_markers(v, q.to(v.device), float(radius), float(growth), float(centroid_radius),
                                      float(h_low), float(h_high), float(s_min), float(v_min),
                                      progress=Progress(max(t - 1 - start, 1)))
        return io.NodeOutput(timed_tracks(t0, (), path, vis, q, (h, w)))


CLIPS = ["first generation", "all generations"]


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
            check_memory("keep_clips", pp.clip_frames(T, (H, W), q) * H * W * 3 * 4,
                         "keeping every generation's frames", "use 'first generation' or fewer points per run")
        pp.progress = Progress(pp.sampler_steps(T, (H, W), q))
        res = pp.run(frames, q)
        for line in res.log:
            logging.info("vdtrack point prompting: %s", line)
        out = torch.cat([c.to(frames.device) for c in res.clips], 0) if res.clips else frames
        conf = json.dumps([round(float(c), 4) for c in res.point_confidence])
        tracks = timed_tracks(start, (), res.track_path, res.track_visibility, q, (H, W), confidence=res.confidence)
        return io.NodeOutput(tracks, out, conf)


NODES = [VDT_PointPromptingTracker, VDT_DrawMarkers, VDT_RebalanceColors, VDT_TrackRedMarkers]
