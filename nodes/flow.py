"""Classical optical-flow point tracker (OpenCV DIS / Farneback) as a baseline beside the diffusion trackers."""
from __future__ import annotations

from comfy_api.latest import io

from ..kernels.checks import check_video
from ..kernels.flow_tracker import track_with_flow
from ..kernels.tracks_io import parse_points
from .common import Progress, Tracks, category
from .io import POINTS_TOOLTIP
from .timing import now, stamp_tracks


class VDT_FlowTracker(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_FlowTracker",
            display_name="VDT Flow Tracker",
            category=category("tracking"),
            description="Track points by chaining OpenCV optical flow between consecutive frames, forwards and "
                        "backwards from each query frame; forward-backward consistency gives visibility.",
            inputs=[
                io.Image.Input("images", tooltip="The video to track in."),
                io.String.Input("points", multiline=True, default='[{"x": 64, "y": 64}]', tooltip=POINTS_TOOLTIP),
                io.Combo.Input("method", options=["dis", "farneback"], default="dis",
                               tooltip="dis: OpenCV DIS (preset MEDIUM), fast; farneback: dense polynomial "
                                       "expansion, slower; often better on small frames."),
                io.Float.Input("fb_threshold", default=1.5, min=0.01, max=100.0, step=0.1,
                               tooltip="Forward-backward error (px) above which a step counts as occluded; 5% "
                                       "of the motion is added to it."),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    @classmethod
    def execute(cls, images, points, method="dis", fb_threshold=1.5) -> io.NodeOutput:
        start = now()
        video = check_video("images", images, min_frames=1)
        t_n, h, w = video.shape[:3]
        query = parse_points(points, t_n, (h, w))
        path, vis = track_with_flow(video, query, method=method, fb_threshold=fb_threshold,
                                    progress=Progress(max(t_n - 1, 1)))
        return io.NodeOutput(stamp_tracks({"track_path": path, "track_visibility": vis, "query_points": query,
                                           "frame_size": (h, w)}, start))


NODES = [VDT_FlowTracker]
