"""Batches inside the graph: a folder of clips as a list (the rest of the graph runs once per clip) and a
report that scores every clip's tracks / masks and aggregates them into one table (shown and saved as CSV).

For thousands of shots or several GPUs use the `vdtrack-batch` command instead (vdtrack/batch): a ComfyUI list
holds every clip's outputs of a node at once, so a list is for a folder that fits in memory.
"""
from __future__ import annotations

import csv
import math
import os

import folder_paths
import psutil
from comfy_api.latest import InputImpl, io

from ..kernels.tracks_io import load_tracks, points_to_json
from .common import Progress, Tracks, category, check_interrupt, output_path
from .evaluation import VDT_DavisReport, VDT_TapVidReport, report_ui
from .inputs import VdtNode, optional_prefix_syntax

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi")
TRACK_SUFFIXES = (".tracks.npz", ".tracks.json", ".tracks.csv")   # ground truth beside NAME.mp4 (our choice)
POINTS_SUFFIX = ".points.json"                                      # query points beside NAME.mp4, as vdtrack-batch
MEMORY_SHARE = 0.5      # refuse a folder whose decoded frames would need more than this share of free RAM


def clip_folder(folder: str) -> str:
    """`folder` relative to ComfyUI's input folder -> its real path; ValueError naming the input otherwise."""
    text = (folder or "").strip()
    rel = text.replace("\\", "/").strip("/")
    if text and (os.path.isabs(text) or text[0] in "/\\"):
        raise ValueError(f"folder: '{folder}' must be a relative folder inside ComfyUI's input folder")
    if not rel:
        raise ValueError("folder: empty; give a folder inside ComfyUI's input folder, e.g. 'vdtrack_clips'")
    if "\x00" in rel or ":" in rel or any(p == ".." for p in rel.split("/")):
        raise ValueError(f"folder: '{folder}' must be a relative folder inside ComfyUI's input folder")
    root = os.path.realpath(folder_paths.get_input_directory())
    full = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([full, root]) != root:
        raise ValueError(f"folder: '{folder}' points outside the input folder")
    if not os.path.isdir(full):
        raise ValueError(f"folder: '{folder}' is not a folder in ComfyUI's input folder")
    return full


def list_clip_files(full: str, start: int, max_clips: int) -> list[str]:
    names = sorted(f for f in os.listdir(full) if f.lower().endswith(VIDEO_EXTENSIONS)
                   and os.path.isfile(os.path.join(full, f)))
    if not names:
        raise ValueError(f"folder: no clips ({', '.join(VIDEO_EXTENSIONS)}) in '{os.path.basename(full)}'")
    if start >= len(names):
        raise ValueError(f"start: {start} but the folder holds {len(names)} clips")
    return names[start:start + max_clips] if max_clips > 0 else names[start:]


def _ground_truth(full: str, name: str) -> str | None:
    stem = os.path.splitext(name)[0]
    return next((os.path.join(full, stem + s) for s in TRACK_SUFFIXES if os.path.isfile(os.path.join(full, stem + s))),
                None)


class VDT_ClipFolder(VdtNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VDT_ClipFolder",
            display_name="VDT Clip Folder",
            category=category("batch"),
            description=("The clips of a folder in ComfyUI's input folder as lists: everything downstream runs "
                         "once per clip. Beside a clip NAME.mp4 the node reads NAME.points.json (query points) "
                         "and NAME.tracks.npz/.json/.csv (ground-truth tracks, as VDT Save Tracks writes). "
                         "ComfyUI holds every clip's frames of a list at once: the node refuses a folder whose "
                         "frames would not fit in half the free memory (use start/max_clips, or the "
                         "vdtrack-batch command)."),
            inputs=[
                io.String.Input("folder", default="vdtrack_clips",
                                tooltip="Folder inside ComfyUI's input folder (subfolders allowed, no '..')."),
                io.Int.Input("start", default=0, min=0, max=1_000_000,
                             tooltip="Skip this many clips (sorted by file name)."),
                io.Int.Input("max_clips", default=0, min=0, max=100_000,
                             tooltip="At most this many clips from start; 0 = all."),
                io.Boolean.Input("ground_truth", default=True,
                                 tooltip="Load each clip's NAME.tracks.npz/.json/.csv (every clip must have one); "
                                         "off: the ground-truth list is empty."),
            ],
            outputs=[
                io.Video.Output(display_name="video", is_output_list=True, tooltip="One video per clip."),
                io.String.Output(display_name="name", is_output_list=True, tooltip="The clip's file name."),
                io.String.Output(display_name="points", is_output_list=True,
                                 tooltip="NAME.points.json's text, else the ground truth's query points (JSON, "
                                         "pixels), else empty."),
                Tracks.Output(display_name="ground_truth_tracks", is_output_list=True,
                              tooltip="Ground-truth tracks per clip (empty list when ground_truth is off)."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, folder, start=0, max_clips=0, ground_truth=True):
        try:
            full = clip_folder(folder)
        except ValueError:
            return f"{folder}|{start}|{max_clips}|{ground_truth}"
        return "|".join(f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}"
                        for e in sorted(os.scandir(full), key=lambda e: e.name) if e.is_file())

    @classmethod
    def execute(cls, folder, start=0, max_clips=0, ground_truth=True) -> io.NodeOutput:
        start, max_clips = int(start), int(max_clips)
        if start < 0 or max_clips < 0:
            raise ValueError(f"start / max_clips: must be >= 0, got {start} / {max_clips}")
        full = clip_folder(folder)
        names = list_clip_files(full, start, max_clips)
        progress = Progress(len(names))
        videos, points, truths, need = [], [], [], 0
        for name in names:
            video = InputImpl.VideoFromFile(os.path.join(full, name))
            try:
                w, h = video.get_dimensions()
                need += int(video.get_frame_count()) * int(h) * int(w) * 3 * 4      # float32 RGB frames
            except Exception as e:        # PyAV raises its own errors on a broken file
                raise ValueError(f"folder: clip '{name}' cannot be read as a video ({e})") from None
            gt_path = _ground_truth(full, name) if ground_truth else None
            if ground_truth and gt_path is None:
                raise ValueError(f"ground_truth: clip '{name}' has no {os.path.splitext(name)[0]}.tracks.npz "
                                 "(or .json/.csv) beside it; add it or turn ground_truth off")
            gt = _load_gt(gt_path, name) if gt_path else None
            points.append(_points(full, name, gt))
            videos.append(video)
            if gt is not None:
                truths.append(gt)
            progress()
        free = psutil.virtual_memory().available
        if need > MEMORY_SHARE * free:
            raise ValueError(f"max_clips: the {len(names)} clips decode to about {need / 2**30:.1f} GiB of frames, "
                             f"more than half the free memory ({free / 2**30:.1f} GiB); take fewer clips at once "
                             "(start/max_clips) or run them with the vdtrack-batch command")
        return io.NodeOutput(videos, names, points, truths)


def _load_gt(path: str, name: str) -> dict:
    try:
        return load_tracks(path)
    except ValueError as e:
        raise ValueError(f"ground_truth: {os.path.basename(path)} (clip '{name}'): {e}") from None


def _points(full: str, name: str, gt: dict | None) -> str:
    path = os.path.join(full, os.path.splitext(name)[0] + POINTS_SUFFIX)
    if os.path.isfile(path):
        if os.path.getsize(path) > 1 << 20:
            raise ValueError(f"folder: {os.path.basename(path)} is over 1 MiB; not a points file")
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    if gt is not None and gt.get("query_points") is not None:
        return points_to_json(gt["query_points"])          # TRACKS keep them as (t, x, y) pixels
    return ""


TAPVID_COLUMNS = ("average_jaccard", "delta_avg", "occlusion_accuracy")
DAVIS_COLUMNS = ("J&F-Mean", "J-Mean", "F-Mean")
HEADERS = {"average_jaccard": "AJ", "delta_avg": "delta_avg", "occlusion_accuracy": "OA",
           "J&F-Mean": "J&F", "J-Mean": "J", "F-Mean": "F"}


def _one(values: list | None, default=None):
    return values[0] if values else default


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


class VDT_BatchReport(VdtNode):
    TEXT_CHECKS = {"filename_prefix": optional_prefix_syntax}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VDT_BatchReport",
            display_name="VDT Batch Report",
            category=category("batch"),
            description=("TAP-Vid (AJ, delta_avg, OA) and/or DAVIS (J&F, J, F) of every clip of a list, in one "
                         "table with the mean over clips (NaN values left out of the mean); shown in the node "
                         "and saved as CSV. Item i of the predictions is scored against item i of the ground "
                         "truth, exactly as VDT TAP-Vid Report / VDT DAVIS J&F Report score one clip."),
            is_input_list=True,
            inputs=[
                Tracks.Input("predicted_tracks", optional=True, tooltip="Tracks per clip (a list)."),
                Tracks.Input("ground_truth_tracks", optional=True, tooltip="Ground-truth tracks per clip."),
                io.Mask.Input("predicted_mask", optional=True, tooltip="Predicted masks per clip (a list)."),
                io.Mask.Input("ground_truth_mask", optional=True, tooltip="Ground-truth masks per clip."),
                io.String.Input("names", optional=True, force_input=True,
                                tooltip="Clip names for the table (e.g. VDT Clip Folder's name)."),
                io.Combo.Input("query_mode", options=["first", "strided"], default="first",
                               tooltip="TAP-Vid query mode, as in VDT TAP-Vid Report."),
                io.Combo.Input("mask_kind", options=["binary", "label map"], default="binary",
                               tooltip="DAVIS masks: binary (one object) or integer label maps."),
                io.String.Input("filename_prefix", default="vdtrack/batch_report",
                                tooltip="Save the table as CSV under ComfyUI's output folder with this prefix. "
                                        "Empty = do not save."),
            ],
            outputs=[
                io.String.Output("report", display_name="report", tooltip="The table as text."),
                io.Float.Output("mean_average_jaccard", display_name="mean AJ",
                                tooltip="Mean AJ x100 over clips (NaN without tracks)."),
                io.Float.Output("mean_jf", display_name="mean J&F",
                                tooltip="Mean J&F x100 over clips (NaN without masks)."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, predicted_tracks=None, ground_truth_tracks=None, predicted_mask=None, ground_truth_mask=None,
                names=None, query_mode=None, mask_kind=None, filename_prefix=None) -> io.NodeOutput:
        query_mode = _one(query_mode, "first")
        mask_kind = _one(mask_kind, "binary")
        prefix = _one(filename_prefix, "")
        pairs = {"tracks": (predicted_tracks or [], ground_truth_tracks or []),
                 "masks": (predicted_mask or [], ground_truth_mask or [])}
        for kind, (pred, gt) in pairs.items():
            if len(pred) != len(gt):
                raise ValueError(f"ground_truth_{'tracks' if kind == 'tracks' else 'mask'}: {len(gt)} items but "
                                 f"predicted_{'tracks' if kind == 'tracks' else 'mask'} has {len(pred)} (one "
                                 "ground truth per clip)")
        n = max(len(pairs["tracks"][0]), len(pairs["masks"][0]))
        if n == 0:
            raise ValueError("predicted_tracks / predicted_mask: connect tracks or masks (with their ground truth)")
        for kind, (pred, _) in pairs.items():
            if pred and len(pred) != n:
                raise ValueError(f"predicted_mask: {len(pairs['masks'][0])} clips but predicted_tracks has "
                                 f"{len(pairs['tracks'][0])}")
        names = list(names or [])
        if names and len(names) != n:
            raise ValueError(f"names: {len(names)} names for {n} clips")
        names = names or [f"clip {i}" for i in range(n)]
        columns = (TAPVID_COLUMNS if pairs["tracks"][0] else ()) + (DAVIS_COLUMNS if pairs["masks"][0] else ())
        progress = Progress(n)
        rows = []
        for i in range(n):
            check_interrupt()
            row = {}
            try:
                if pairs["tracks"][0]:
                    out = VDT_TapVidReport.execute(pairs["tracks"][0][i], pairs["tracks"][1][i], query_mode)
                    row.update(out.ui["vdtrack_metrics"][0])
                if pairs["masks"][0]:
                    out = VDT_DavisReport.execute(pairs["masks"][0][i], pairs["masks"][1][i], mask_kind)
                    row.update(out.ui["vdtrack_metrics"][0])
            except ValueError as e:
                raise ValueError(f"clip '{names[i]}' (item {i}): {e}") from None
            rows.append({c: (float("nan") if row.get(c) is None else float(row[c])) for c in columns})
            progress()
        means = {c: _mean([r[c] for r in rows]) for c in columns}
        report = cls.format_table(names, rows, means, columns, query_mode)
        if prefix and prefix.strip():
            report += f"\nsaved: {cls.save_csv(prefix, names, rows, means, columns)} (output folder)"
        return io.NodeOutput(report, means.get("average_jaccard", float("nan")), means.get("J&F-Mean", float("nan")),
                             ui=report_ui(report, {**means, "clips": n}))

    @staticmethod
    def format_table(names, rows, means, columns, query_mode) -> str:
        width = max(8, *(len(str(x)) for x in names))
        head = f"{'clip':<{width}}" + "".join(f"{HEADERS[c]:>10}" for c in columns)
        fmt = lambda v: f"{v:10.2f}" if math.isfinite(v) else f"{'nan':>10}"   # noqa: E731
        lines = [f"batch report: {len(rows)} clips (values x100"
                 + (f", TAP-Vid query mode '{query_mode}'" if "average_jaccard" in columns else "") + ")", "",
                 head, "-" * len(head)]
        lines += [f"{str(nm):<{width}}" + "".join(fmt(r[c]) for c in columns) for nm, r in zip(names, rows)]
        lines += ["-" * len(head), f"{'mean':<{width}}" + "".join(fmt(means[c]) for c in columns)]
        return "\n".join(lines)

    @staticmethod
    def save_csv(prefix, names, rows, means, columns) -> str:
        path, subfolder, name = output_path("filename_prefix", prefix, "csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["clip", *[HEADERS[c] for c in columns]])
            for nm, r in zip(names, rows):
                w.writerow([nm, *[f"{r[c]:.4f}" if math.isfinite(r[c]) else "nan" for c in columns]])
            w.writerow(["mean", *[f"{means[c]:.4f}" if math.isfinite(means[c]) else "nan" for c in columns]])
        return f"{subfolder}/{name}" if subfolder else name


NODES = [VDT_ClipFolder, VDT_BatchReport]
