"""Synthetic test clips with exact ground truth, for trying trackers and propagation without real data."""
from __future__ import annotations

from comfy_api.latest import io

from ..kernels.checks import check_memory
from ..kernels.synthetic import make_clip
from ..kernels.tracks_io import points_to_json
from .common import Tracks, category, check_interrupt
from .inputs import VdtNode, seed_input

VARIANTS = ["moving_objects", "identical_objects"]


MAX_PIXELS = 2 ** 27   # e.g. 512 frames at 512x512


def clip_bytes(pixels: int, objects: int) -> int:
    """Peak memory of make_clip plus this node's outputs, per pixel of the clip (counted from its tensors): RGB
    and its sampling grids (~40 bytes), per object coordinates, distance, coverage and hit mask (~21 bytes,
    two kept per object for the masks) and the [T,K,H,W] masks (4), labels int64 + float (12), union (4)."""
    return int(pixels) * (64 + 25 * max(int(objects), 2))


class VDT_SyntheticClip(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_SyntheticClip",
            display_name="VDT Synthetic Clip",
            category=category("data"),
            description="A seeded procedural clip: textured discs/rectangles/ellipses moving (bouncing, some "
                        "rotating) over a panning textured background, with exact ground-truth tracks, "
                        "visibility (occlusion by nearer objects or leaving the frame) and object masks.",
            inputs=[
                seed_input("Same seed = same clip.", max=2 ** 31 - 1),
                io.Int.Input("frames", default=24, min=1, max=1000, tooltip="Number of frames."),
                io.Int.Input("width", default=256, min=16, max=4096, step=8, tooltip="Frame width in pixels."),
                io.Int.Input("height", default=256, min=16, max=4096, step=8, tooltip="Frame height in pixels."),
                io.Int.Input("num_objects", default=3, min=0, max=32,
                             tooltip="Moving objects (identical_objects: at least 2, the first two are the pair)."),
                io.Int.Input("points_per_object", default=8, min=0, max=1024,
                             tooltip="Ground-truth tracks sampled on each object (preferably visible in frame 0)."),
                io.Int.Input("background_points", default=8, min=0, max=4096,
                             tooltip="Ground-truth tracks on the panning background."),
                io.Combo.Input("variant", options=VARIANTS, default="moving_objects",
                               tooltip="moving_objects: random objects; identical_objects: two identical objects "
                                       "whose paths cross (they swap sides), the classic identity-switch trap."),
            ],
            outputs=[
                io.Image.Output(display_name="images"),
                Tracks.Output(display_name="tracks"),
                io.Mask.Output(display_name="objects_mask", tooltip="Union of all objects per frame (0..1, "
                                                                  "anti-aliased edges)."),
                io.Mask.Output(display_name="label_map", tooltip="Integer object ids per pixel as float values: "
                                                               "0 = background, k = object k (nearest wins); "
                                                               "the 'label map' kind of VDT DAVIS J&F."),
                io.String.Output(display_name="query_points", tooltip="Ground-truth query points (first visible "
                                                                     "frame of each track) as JSON with 't'."),
            ],
        )

    @classmethod
    def execute(cls, seed, frames, width, height, num_objects, points_per_object, background_points=8,
                variant="moving_objects") -> io.NodeOutput:
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        if frames * width * height > MAX_PIXELS:
            # the clip, its masks and labels are held in memory as float tensors: fail clearly, not by OOM
            raise ValueError(f"frames: {frames} frames of {width}x{height} is {frames * width * height:,} pixels, "
                             f"more than the {MAX_PIXELS:,} this node generates; use fewer frames or a smaller size")
        check_memory("frames", clip_bytes(frames * width * height, num_objects),
                     f"{frames} frames of {width}x{height} with {num_objects} objects",
                     "use fewer frames, a smaller size or fewer objects")
        clip = make_clip(frames=frames, height=height, width=width, num_objects=num_objects,
                         points_per_object=points_per_object, seed=seed, identical=variant == "identical_objects",
                         background_points=background_points, check=check_interrupt)
        union = clip.masks.sum(dim=1).clamp(0, 1)
        query = points_to_json(clip.query_points) if clip.query_points.shape[0] else "[]"
        return io.NodeOutput(clip.video, clip.tracks(), union, clip.labels.float(), query)


NODES = [VDT_SyntheticClip]
