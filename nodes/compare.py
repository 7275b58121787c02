"""One table that compares trackers: the same clip and queries through every method, scored against one
ground truth (TAP-Vid AJ, delta_avg, OA) with the seconds each method's chain took (nodes/timing.py)."""
from __future__ import annotations

import csv
import math

from comfy_api.latest import io, ui

from ..kernels.checks import check_video
from ..kernels.datatypes import check_tracks
from ..kernels.metrics_tapvid import evaluate_tracks
from .common import Progress, Tracks, category, output_path
from .evaluation import _frame_size
from .timing import seconds_of
from .inputs import VdtNode, optional_prefix_syntax

MAX_METHODS = 8
COLUMNS = ("method", "AJ", "delta_avg", "OA", "seconds", "points", "frames")


def parse_names(text: str, count: int) -> list[str]:
    """'flow, HeFT' -> ['flow', 'HeFT', 'tracks_3', ...] (empty entries take the input's name)."""
    parts = [p.strip() for p in str(text or "").replace("\n", ",").split(",")]
    names = [(parts[i] if i < len(parts) and parts[i] else f"tracks_{i + 1}") for i in range(count)]
    for i, name in enumerate(names):
        if any(c in name for c in "\"\r\t"):
            raise ValueError(f"method_names: name {i + 1} {name!r} contains a quote or control character")
    return names


def score_tracks(name: str, tracks: dict, gt_path, gt_vis, gt_size, gt_queries, query_mode: str,
                 fallback_size) -> dict:
    """TAP-Vid metrics (x100) of one prediction against the ground truth, plus its carried seconds."""
    path, vis = check_tracks(name, tracks)
    if path.shape[0] != gt_path.shape[0]:
        raise ValueError(f"{name}: {path.shape[0]} frames but ground_truth_tracks has {gt_path.shape[0]}")
    if path.shape[1] != gt_path.shape[1]:
        raise ValueError(f"{name}: {path.shape[1]} points but ground_truth_tracks has {gt_path.shape[1]} "
                         "(track i must predict ground-truth track i; give every tracker the same points)")
    size = _frame_size(name, tracks.get("frame_size")) or fallback_size or gt_size
    if size is None:
        raise ValueError(f"{name}: no frame size; connect the images or use tracks with a 'frame_size' key")
    res = evaluate_tracks(path, vis, gt_path, gt_vis, size, query_mode=query_mode, query_points=gt_queries,
                          gt_frame_size=gt_size or size, percent=True)
    return {"AJ": res["average_jaccard"], "delta_avg": res["average_pts_within_thresh"],
            "OA": res["occlusion_accuracy"], "seconds": seconds_of(tracks), "points": int(path.shape[1]),
            "frames": int(path.shape[0])}


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of the rows (COLUMNS order)."""
    cells = [list(COLUMNS)] + [[_cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    out = []
    for k, line in enumerate(cells):
        out.append("  ".join(s.ljust(widths[i]) if i == 0 else s.rjust(widths[i]) for i, s in enumerate(line)))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_csv(prefix: str, rows: list[dict]) -> str:
    """The table as CSV under ComfyUI's output folder; returns the path relative to that folder."""
    path, subfolder, name = output_path("filename_prefix", prefix, "csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(["" if r[c] is None else (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c])
                        for c in COLUMNS])
    return f"{subfolder}/{name}" if subfolder else name


class VDT_CompareTrackers(VdtNode):
    TEXT_CHECKS = {"filename_prefix": optional_prefix_syntax}

    @classmethod
    def define_schema(cls):
        optional = [Tracks.Input(f"tracks_{i}", optional=True,
                                 tooltip=f"Tracks of method {i} (same points, same order as the ground truth).")
                    for i in range(1, MAX_METHODS + 1)]
        return io.Schema(
            node_id="VDT_CompareTrackers",
            display_name="VDT Compare Trackers",
            category=category("evaluation"),
            description="One table of TAP-Vid AJ / delta_avg / OA (x100) and seconds per method for up to "
                        f"{MAX_METHODS} track sets of the same clip and queries, shown here and saved as CSV. "
                        "Seconds = the time the pack's nodes that produced the tracks took (feature extraction, "
                        "head selection and tracking summed along the chain, as carried in the tracks); '-' "
                        "when the tracks carry no time (other packs).",
            inputs=[
                Tracks.Input("ground_truth_tracks", tooltip="Ground-truth tracks; visibility False = occluded."),
                io.String.Input("method_names", default="", multiline=False,
                                tooltip="Comma-separated names for tracks_1, tracks_2, ...; an empty entry keeps "
                                        "the input's name."),
                io.Combo.Input("query_mode", options=["first", "strided"], default="first",
                               tooltip="TAP-Vid query mode (queries from the ground truth's 'query_points' when "
                                       "present)."),
                io.String.Input("filename_prefix", default="vdtrack/compare",
                                tooltip="Save the table as CSV under ComfyUI's output folder with this prefix; "
                                        "empty = do not save."),
                io.Image.Input("images", optional=True,
                               tooltip="Optional: the frames, for the frame size of tracks without one."),
                *optional,
            ],
            outputs=[
                io.String.Output("report", display_name="report", tooltip="The comparison table as text."),
                io.String.Output("csv_path", display_name="csv_path",
                                 tooltip="Where the CSV was saved, relative to the output folder ('' if not)."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, ground_truth_tracks, method_names="", query_mode="first", filename_prefix="vdtrack/compare",
                images=None, **tracks) -> io.NodeOutput:
        connected = [(i, tracks.get(f"tracks_{i}")) for i in range(1, MAX_METHODS + 1)
                     if tracks.get(f"tracks_{i}") is not None]
        if not connected:
            raise ValueError("tracks_1: connect at least one track set to compare")
        gt_path, gt_vis = check_tracks("ground_truth_tracks", ground_truth_tracks)
        gt_size = _frame_size("ground_truth_tracks", ground_truth_tracks.get("frame_size"))
        img_size = None
        if images is not None:
            img_size = tuple(int(v) for v in check_video("images", images).shape[1:3])
        names = parse_names(method_names, MAX_METHODS)
        progress = Progress(len(connected))
        rows = []
        for i, t in connected:
            row = score_tracks(f"tracks_{i}", t, gt_path, gt_vis, gt_size, ground_truth_tracks.get("query_points"),
                               query_mode, img_size)
            rows.append({"method": names[i - 1], **row})
            progress()
        report = (f"TAP-Vid, query mode '{query_mode}' (AJ, delta_avg, OA x100); seconds = the pack's nodes "
                  "that made each track set\n" + format_table(rows))
        saved = ""
        if filename_prefix and filename_prefix.strip():
            saved = write_csv(filename_prefix, rows)
            report += f"\nsaved: {saved} (output folder)"
        return io.NodeOutput(report, saved, ui=ui.PreviewText(report))


NODES = [VDT_CompareTrackers]
