"""Point Prompting helper nodes: colour rebalancing, red markers, and the red-marker colour tracker."""
from __future__ import annotations

import re

import torch
from comfy_api.latest import io

from ..kernels.datatypes import inside_frame, make_tracks
from ..kernels.color_rebalance import rebalance_colors
from ..kernels.markers import draw_markers
from ..kernels.red_tracker import track_red_markers
from ..kernels.tracks_io import parse_points
from .timing import now, stamp_tracks
from .common import Progress, Tracks, category
from .inputs import (VdtNode, optional_points_syntax, pixels_radius_input, points_input, points_syntax, rgb_video,
                     tracks_for_video, tracks_input, video_input)

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
        return io.NodeOutput(draw_markers(v, q.to(v.device), parse_color(color), float(radius)))


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
        return io.NodeOutput(stamp_tracks(make_tracks(path, vis, query_points=q, frame_size=(h, w)), t0))


NODES = [VDT_DrawMarkers, VDT_RebalanceColors, VDT_TrackRedMarkers]
