"""Write a synthetic clip with exact ground truth to a folder.

    python tools/vdt_dev/make_synthetic.py OUT_DIR [--seed 0] [--frames 24] [--size 256 | --size 192x256]
                                   [--identical] [--objects 3] [--points 8] [--background-points 8] [--mp4]

Writes frames/00000.png... (or video.mp4 with --mp4), tracks.npz in TAP-Vid layout (tracks [N,T,2] pixel xy,
occluded/visibles [N,T], query_points [N,3] as (t,y,x), frame_size), masks/00000.png... (label maps: pixel
value = object id, 0 = background), and clip.json (parameters and object ids).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction

import numpy as np
from PIL import Image

from vdtrack.kernels.synthetic import make_clip   # the pack, installed editable by tools/setup.sh
from vdtrack.kernels.tracks_io import save_tracks_npz

def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])   # HxW
    raise argparse.ArgumentTypeError(f"--size: expected N or HxW, got {text!r}")


def _write_mp4(path: str, frames: np.ndarray, fps: float) -> None:
    import av

    codec = next(c for c in ("libx264", "h264", "mpeg4") if c in av.codecs_available)
    h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec != "mpeg4":
            stream.options = {"crf": "12"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_clip_mp4(path: str, seed: int = 0, frames: int = 16, size: tuple[int, int] = (160, 160),
                   fps: float = 16.0, num_objects: int = 3) -> str:
    """Render a seeded synthetic clip (no ground truth kept) and encode it as an mp4 at `path` (HxW `size`,
    even sides). Used to give the end-to-end server and the batch tests real video files."""
    h, w = size
    clip = make_clip(frames=frames, height=h, width=w, num_objects=num_objects, points_per_object=0, seed=seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _write_mp4(path, (clip.video.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8), fps)
    return path


def write_clip_with_truth(path: str, seed: int = 0, frames: int = 16, size: tuple[int, int] = (128, 128),
                          fps: float = 16.0, num_objects: int = 2, points_per_object: int = 4,
                          background_points: int = 4) -> str:
    """A seeded synthetic clip encoded as an mp4 at `path` (HxW `size`, even sides) and its ground truth
    beside it as NAME.tracks.npz (TAP-Vid layout): the layout VDT Clip Folder reads. Returns `path`."""
    h, w = size
    clip = make_clip(frames=frames, height=h, width=w, num_objects=num_objects, points_per_object=points_per_object,
                     background_points=background_points, seed=seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _write_mp4(path, (clip.video.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8), fps)
    save_tracks_npz(os.path.splitext(path)[0] + ".tracks.npz", clip.track_path, clip.track_visibility,
                    clip.query_points, clip.frame_size)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=_size, default=(256, 256), help="N or HxW pixels")
    ap.add_argument("--identical", action="store_true", help="two identical objects whose paths cross")
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--points", type=int, default=8, help="tracks per object")
    ap.add_argument("--background-points", type=int, default=8)
    ap.add_argument("--mp4", action="store_true", help="write video.mp4 instead of PNG frames")
    ap.add_argument("--fps", type=float, default=16.0)
    a = ap.parse_args(argv)

    h, w = a.size
    clip = make_clip(frames=a.frames, height=h, width=w, num_objects=a.objects, points_per_object=a.points,
                     seed=a.seed, identical=a.identical, background_points=a.background_points)
    if os.path.splitext(a.out_dir)[1].lower() in (".mp4", ".png", ".npz", ".json"):
        ap.error(f"out_dir {a.out_dir!r} looks like a file name: it is a folder (the clip goes to "
                 f"OUT_DIR/video.mp4 with --mp4, OUT_DIR/frames/ without)")
    os.makedirs(a.out_dir, exist_ok=True)
    frames = (clip.video.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    if a.mp4:
        _write_mp4(os.path.join(a.out_dir, "video.mp4"), frames, a.fps)
    else:
        os.makedirs(os.path.join(a.out_dir, "frames"), exist_ok=True)
        for t, f in enumerate(frames):
            Image.fromarray(f).save(os.path.join(a.out_dir, "frames", f"{t:05d}.png"))
    os.makedirs(os.path.join(a.out_dir, "masks"), exist_ok=True)
    for t, lab in enumerate(clip.labels.numpy().astype(np.uint8)):
        Image.fromarray(lab).save(os.path.join(a.out_dir, "masks", f"{t:05d}.png"))
    save_tracks_npz(os.path.join(a.out_dir, "tracks.npz"), clip.track_path, clip.track_visibility,
                    clip.query_points, clip.frame_size)
    meta = {"seed": a.seed, "frames": a.frames, "height": h, "width": w, "identical": a.identical,
            "objects": int(clip.masks.shape[1]), "object_ids": clip.object_ids.tolist(),
            "points": int(clip.track_path.shape[1])}
    with open(os.path.join(a.out_dir, "clip.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    what = os.path.join(a.out_dir, "video.mp4") if a.mp4 else os.path.join(a.out_dir, "frames", "*.png")
    print(f"wrote {what} ({a.frames} frames {w}x{h}) and beside it tracks.npz ({meta['points']} tracks), masks/ "
          f"({meta['objects']} objects), clip.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
