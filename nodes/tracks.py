"""Tracks family: points in, tracks files in and out, ATI track strings, track masks."""
from __future__ import annotations

import os
import time

import folder_paths
from comfy_api.latest import io, ui

from ..kernels.checks import check_video
from ..kernels.datatypes import check_tracks, make_tracks
from ..kernels.track_draw import tracks_to_mask
from ..kernels.tracks_io import (ATI_SAMPLES, ati_json_to_tracks, load_tracks, parse_points, points_to_json,
                                 save_tracks, tracks_to_ati_json)
from .common import Tracks, category, check_interrupt, output_path
from .inputs import (VdtNode, filename_prefix_input, pixels_radius_input, points_input, points_syntax, prefix_syntax,
                     tracks_for_video, tracks_input, video_input)

TRACK_EXTENSIONS = (".npz", ".json", ".csv")
USE_PATH = "(use path)"
MAX_ATI_SAMPLES = 2 ** 24   # tracks x samples in one ATI string (~0.5 GiB of JSON); our choice


class VDT_PointsFromString(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_PointsFromString",
            display_name="VDT Points From String",
            category=category("tracks"),
            description="Validate query points against a video and normalise them to KJNodes-style JSON with "
                        "a query frame 't' per point.",
            inputs=[
                points_input(),
                video_input(what="The video the points belong to (gives the frame size and the number of "
                                 "frames the points are checked against)"),
            ],
            outputs=[
                io.String.Output(display_name="points"),
                io.Int.Output(display_name="count"),
            ],
        )

    TEXT_CHECKS = {"points": points_syntax}

    @classmethod
    def execute(cls, points, images) -> io.NodeOutput:
        video = check_video("images", images)
        p = parse_points(points, video.shape[0], (video.shape[1], video.shape[2]))
        return io.NodeOutput(points_to_json(p), int(p.shape[0]))


class VDT_SaveTracks(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_SaveTracks",
            display_name="VDT Save Tracks",
            category=category("tracks"),
            description="Write tracks to ComfyUI's output folder: npz (TAP-Vid layout: tracks [N,T,2], occluded, "
                        "visibles, query_points (t,y,x)), JSON, or CSV (frame,track,x,y,visible).",
            inputs=[
                tracks_input(what="The tracks to save"),
                io.Combo.Input("format", options=["npz", "json", "csv"], default="npz",
                               tooltip="npz: TAP-Vid layout for numpy users; json: readable; csv: one row per "
                                       "frame and track."),
                filename_prefix_input("vdtrack/tracks", "File name prefix (a counter is appended),"),
            ],
            outputs=[io.String.Output(display_name="path")],
            is_output_node=True,
        )

    TEXT_CHECKS = {"filename_prefix": prefix_syntax}

    @classmethod
    def execute(cls, tracks, format, filename_prefix) -> io.NodeOutput:
        if format not in ("npz", "json", "csv"):
            raise ValueError(f"format: expected npz, json or csv, got {format!r}")
        check_tracks("tracks", tracks)
        full, subfolder, file = output_path("filename_prefix", filename_prefix, format)
        save_tracks(full, tracks, check=check_interrupt)
        rel = f"{subfolder}/{file}" if subfolder else file
        return io.NodeOutput(full, ui=ui.PreviewText(f"saved {rel} (output folder)"))


MAX_LISTED = 2000           # files the combo lists; more are reachable through the path text
LIST_DEPTH = 3              # folder levels searched below the input and output folders
LIST_TTL_S = 10.0           # a listing is reused this long: /object_info and every prompt validation build the
_listing: dict = {}         # schema, and must not walk whole folder trees each time (our choice)


def _track_files() -> list[str]:
    """Track files under the input folder (plain names) and the output folder ("name [output]"): at most
    MAX_LISTED, LIST_DEPTH folder levels deep, hidden folders skipped, the listing reused for LIST_TTL_S."""
    roots = ((folder_paths.get_input_directory(), ""), (folder_paths.get_output_directory(), " [output]"))
    key = tuple(r for r, _ in roots)
    cached = _listing.get(key)
    if cached is not None and time.monotonic() - cached[0] < LIST_TTL_S:
        return cached[1]
    found = []
    for root, tag in roots:
        if not os.path.isdir(root):
            continue
        base_depth = root.rstrip(os.sep).count(os.sep)
        for dirpath, dirs, files in os.walk(root):
            if dirpath.count(os.sep) - base_depth >= LIST_DEPTH:
                dirs[:] = []
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in files:
                if f.lower().endswith(TRACK_EXTENSIONS) and len(found) < MAX_LISTED:
                    rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                    found.append(rel + tag)
            if len(found) >= MAX_LISTED:
                break
    found = sorted(found)
    _listing[key] = (time.monotonic(), found)
    return found


def _inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([os.path.realpath(path), root]) == root


def resolve_track_file(name: str) -> str:
    """'rel/path.npz' (input folder, else output folder) or 'rel/path.npz [output]' / '[input]' -> a real path
    strictly inside ComfyUI's input or output folder."""
    if name is not None and not isinstance(name, str):
        raise ValueError(f"path: expected a file name, got {type(name).__name__} {str(name)[:40]!r}")
    name = (name or "").strip()
    if not name:
        raise ValueError("path: no tracks file given (pick a file or type a path)")
    if any(ord(c) < 32 for c in name) or len(name) > 1024:
        raise ValueError("path: not a file name (control characters or longer than 1024 characters)")
    roots = {"input": folder_paths.get_input_directory(), "output": folder_paths.get_output_directory()}
    order = ["input", "output"]
    for tag in ("input", "output"):
        if name.endswith(f" [{tag}]"):
            name, order = name[: -len(tag) - 3].strip(), [tag]
    rel = name.replace("\\", "/")
    if os.path.isabs(rel) or rel.startswith("/") or ":" in rel or any(p == ".." for p in rel.split("/")):
        raise ValueError(f"path: '{name}' must be relative to ComfyUI's input or output folder")
    if not rel.lower().endswith(TRACK_EXTENSIONS):
        raise ValueError(f"path: '{name}' is not a tracks file (.npz, .json or .csv)")
    for tag in order:
        full = os.path.join(roots[tag], rel)
        if not _inside(full, roots[tag]):
            raise ValueError(f"path: '{name}' points outside the {tag} folder")
        if os.path.isfile(full):
            return os.path.realpath(full)
    raise ValueError(f"path: '{name}' was not found in the {' or '.join(order)} folder")


class VDT_LoadTracks(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_LoadTracks",
            display_name="VDT Load Tracks",
            category=category("tracks"),
            description="Load tracks (npz in TAP-Vid layout, JSON or CSV as written by VDT Save Tracks) from "
                        "ComfyUI's input or output folder.",
            inputs=[
                io.Combo.Input("file", options=[USE_PATH] + _track_files(), default=USE_PATH,
                               tooltip="Tracks files found in the input folder and the output folder ([output]). "
                                       f"'{USE_PATH}' uses the path text instead."),
                io.String.Input("path", default="", optional=True,
                                tooltip="Used when file is '(use path)': a path relative to the input folder "
                                        "(or the output folder; add ' [output]' to choose it)."),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    @classmethod
    def _chosen(cls, file, path) -> str:
        return resolve_track_file(path if file == USE_PATH else file)

    @classmethod
    def fingerprint_inputs(cls, file, path=""):
        try:
            full = cls._chosen(file, path)
            return f"{full}:{os.path.getmtime(full)}"
        except ValueError:
            return f"{file}|{path}"

    @classmethod
    def execute(cls, file, path="") -> io.NodeOutput:
        return io.NodeOutput(load_tracks(cls._chosen(file, path)))


class VDT_TracksToATI(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TracksToATI",
            display_name="VDT Tracks To ATI",
            category=category("tracks"),
            description="Tracks -> the tracks JSON string core WanTrackToVideo (ATI) reads: a list of tracks, each "
                        "121 {x,y} samples over the clip. Invisible frames hold the last visible position.",
            inputs=[
                tracks_input(what="Tracks in pixels of the frames they were computed on (use the same "
                                  "width/height in WanTrackToVideo)"),
                io.Int.Input("num_samples", default=ATI_SAMPLES, min=1, max=10000,
                             tooltip="Samples per track. WanTrackToVideo expects 121 (it pads/truncates to 121)."),
            ],
            outputs=[io.String.Output(display_name="tracks_json")],
        )

    @classmethod
    def execute(cls, tracks, num_samples=ATI_SAMPLES) -> io.NodeOutput:
        path, vis = check_tracks("tracks", tracks)
        samples = path.shape[1] * int(num_samples)
        if samples > MAX_ATI_SAMPLES:     # ~30 bytes of JSON text per sample, several copies while building it
            raise ValueError(f"num_samples: {path.shape[1]:,} tracks x {num_samples:,} samples is {samples:,} "
                             f"samples (about {samples * 30 / 2 ** 30:.1f} GiB of text), more than the "
                             f"{MAX_ATI_SAMPLES:,} this node writes; use fewer samples or fewer tracks")
        return io.NodeOutput(tracks_to_ati_json(path, vis, num_samples))


class VDT_ATIToTracks(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_ATIToTracks",
            display_name="VDT ATI To Tracks",
            category=category("tracks"),
            description="ATI tracks JSON (WanTrackToVideo format) or a KJNodes Spline Editor coord_str -> TRACKS "
                        "resampled to the given number of frames.",
            inputs=[
                io.String.Input("tracks_json", multiline=True, default="[]",
                                tooltip="A list of tracks, each a list of {\"x\",\"y\"} samples, or one track."),
                io.Int.Input("frames", default=81, min=1, max=10000, tooltip="Number of video frames to resample to."),
                io.Boolean.Input("stretch", default=False,
                                 tooltip="Off: like WanTrackToVideo, 121 samples span the clip and a shorter track "
                                         "ends early (invisible after). On: every track spans the whole clip."),
            ],
            outputs=[Tracks.Output(display_name="tracks")],
        )

    TEXT_CHECKS = {"tracks_json": lambda text: ati_json_to_tracks(text, 2, name="tracks_json")}

    @classmethod
    def execute(cls, tracks_json, frames, stretch=False) -> io.NodeOutput:
        path, vis = ati_json_to_tracks(tracks_json, frames, stretch=stretch, name="tracks_json")
        return io.NodeOutput(make_tracks(path, vis))


class VDT_TracksToMask(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_TracksToMask",
            display_name="VDT Tracks To Mask",
            category=category("tracks"),
            description="A mask with an anti-aliased disk around every visible track point, per frame.",
            inputs=[
                tracks_input(what="The tracks to draw (scaled to the video if their frame_size differs)"),
                video_input(what="The video: gives the mask's frame count, width and height"),
                pixels_radius_input("radius", 4.0, 0.5, 256.0, "Disk radius."),
            ],
            outputs=[io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, tracks, images, radius) -> io.NodeOutput:
        video = check_video("images", images)
        path, vis = tracks_for_video("tracks", tracks, video)
        return io.NodeOutput(tracks_to_mask(path, vis, (video.shape[1], video.shape[2]), radius,
                                            check=check_interrupt))


NODES = [VDT_PointsFromString, VDT_SaveTracks, VDT_LoadTracks, VDT_TracksToATI, VDT_ATIToTracks, VDT_TracksToMask]
