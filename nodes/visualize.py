"""Track overlay with an animated preview: an mp4 (h264) in ComfyUI's temp folder returned as ui.PreviewVideo,
which the 0.3.75 frontend (1.32) plays as a video (animated output whose file is not webp/png)."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io, ui

from ..kernels.track_draw import draw_tracks
from .common import Progress, category, check_interrupt
from .inputs import VdtNode, pixels_radius_input, rgb_video, tracks_for_video, tracks_input, video_input

# (encoder, container) in order of preference: the first the installed PyAV has. Browsers play h264 mp4 and
# vp9 webm; mpeg4 part 2 is a last resort (downloadable but not every browser previews it).
CODECS = (("libx264", "mp4"), ("h264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "mp4"))


def write_preview_video(frames: torch.Tensor, fps: float, prefix: str = "vdt_tracks") -> ui.SavedResult:
    """Encode frames [T,H,W,3] 0..1 to an mp4 (or webm) in the temp folder (even size, yuv420p) -> SavedResult."""
    choice = next(((c, ext) for c, ext in CODECS if c in av.codecs_available), None)
    if choice is None:
        raise RuntimeError("preview: the installed PyAV has no h264, vp9 or mpeg4 encoder")
    codec, ext = choice
    temp = folder_paths.get_temp_directory()
    os.makedirs(temp, exist_ok=True)
    name = f"{prefix}_{os.urandom(5).hex()}.{ext}"
    img = (frames[..., :3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    h, w = img.shape[1] - img.shape[1] % 2, img.shape[2] - img.shape[2] % 2
    img = np.ascontiguousarray(img[:, :h, :w])
    with av.open(os.path.join(temp, name), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "24", "b": "0"}
        else:
            stream.options = {"crf": "18"}
        for frame in img:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return ui.SavedResult(name, "", io.FolderType.temp)


class VDT_VisualizeTracks(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_VisualizeTracks",
            display_name="VDT Visualize Tracks",
            category=category("visualize"),
            description="Draw tracks on the video: a coloured dot per visible point and a fading trail; shows "
                        "the result as an animated preview.",
            inputs=[
                video_input(what="The video to draw on"),
                tracks_input(what="Tracks with the same number of frames as the video (scaled to the video if "
                                  "they carry a different frame_size)"),
                pixels_radius_input("radius", 3.0, 0.0, 64.0, "Dot radius (0 = no dots)."),
                io.Int.Input("trail", default=8, min=0, max=1000,
                             tooltip="Trail length in frames (0 = no trail); older segments fade out."),
                io.Float.Input("fps", default=16.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frame rate of the animated preview only."),
            ],
            outputs=[io.Image.Output(display_name="images")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, tracks, radius, trail, fps=16.0) -> io.NodeOutput:
        video = rgb_video("images", images)
        path, vis = tracks_for_video("tracks", tracks, video)
        out = draw_tracks(video, path, vis, radius=radius, trail=trail, progress=Progress(video.shape[0]),
                          check=check_interrupt)
        return io.NodeOutput(out, ui=ui.PreviewVideo([write_preview_video(out, fps)]))


NODES = [VDT_VisualizeTracks]
