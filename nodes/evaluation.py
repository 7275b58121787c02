"""Evaluation nodes: TAP-Vid point-tracking metrics and DAVIS J&F of one method, shown as text in the graph, and one
table that compares trackers (the same clip and queries through every method, scored against one ground truth:
TAP-Vid AJ, delta_avg, OA, with the seconds each method's chain took, nodes/timing.py)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
from comfy_api.latest import io, ui

from ..kernels.checks import check_mask, check_video
from ..kernels.datatypes import check_tracks
from ..kernels.metrics_davis import VOID_LABEL, evaluate_davis
from ..kernels.metrics_tapvid import EVAL_SIZE, THRESHOLDS, evaluate_tracks
from .common import Progress, Tracks, category, output_path
from .inputs import VdtNode, filename_prefix_input, optional_prefix_syntax, video_input
from .timing import seconds_of

def _report_prefix_input():
    return filename_prefix_input("", "Optional: also save the report as JSON with this prefix (empty = do not "
                                     "save),", optional=True)


def _frame_size(name: str, value) -> tuple[int, int] | None:
    if value is None:
        return None
    size = tuple(int(v) for v in np.asarray(value).reshape(-1).tolist())
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name}: 'frame_size' must be (H, W), got {value!r}")
    return size


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _save_json(prefix: str, payload: dict) -> str:
    """Writes the report JSON; returns where, relative to ComfyUI's output folder (what a user can find)."""
    path, subfolder, name = output_path("filename_prefix", prefix, "json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_json_safe(payload), f, indent=2)
    return f"{subfolder}/{name}" if subfolder else name


def report_ui(report: str, metrics: dict) -> dict:
    """The node's ui: the report text (shown in the node) and its headline metrics under 'vdtrack_metrics'
    (read from /history by vdtrack-batch, which aggregates them over a batch)."""
    return {**ui.PreviewText(report).as_dict(), "vdtrack_metrics": [_json_safe(metrics)]}


def _fmt(v: float) -> str:
    return "   nan" if math.isnan(v) else f"{v:6.2f}"


class VDT_TapVidReport(VdtNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VDT_TapVidReport",
            display_name="VDT TAP-Vid Report",
            category=category("evaluation"),
            description=("TAP-Vid metrics of predicted point tracks against ground truth (one video): "
                         "average Jaccard, <delta^x_avg, occlusion accuracy, per-threshold Jaccard and "
                         "position accuracy at 1/2/4/8/16 px of the 256x256 frame (x*256/W, y*256/H). "
                         "Predicted track i must correspond to ground-truth track i. Queries come from the "
                         "ground truth's 'query_points' when present, otherwise from its first visible "
                         "frame ('first') or every 5th frame where it is visible ('strided')."),
            inputs=[
                Tracks.Input("predicted_tracks", tooltip="Tracks from a tracker, one per ground-truth track, "
                             "same frames."),
                Tracks.Input("ground_truth_tracks", tooltip="Ground-truth tracks; visibility False = occluded."),
                io.Combo.Input("query_mode", options=["first", "strided"], default="first",
                               tooltip="first: score frames after each query (first visible frame); strided: "
                                       "score every frame except the query frame (needs backward tracking)."),
                video_input(optional=True, what="Optional: the frames the prediction was computed on, for the "
                                                "frame size when the tracks carry no 'frame_size'"),
                _report_prefix_input(),
            ],
            outputs=[
                io.String.Output("report", display_name="report", tooltip="Readable metric table."),
                io.Float.Output("average_jaccard", display_name="AJ",
                                tooltip="Average Jaccard x100 (NaN when undefined)."),
                io.Float.Output("delta_avg", display_name="delta_avg",
                                tooltip="Average fraction of visible points within 1..16 px, x100."),
                io.Float.Output("occlusion_accuracy", display_name="OA", tooltip="Occlusion accuracy x100."),
            ],
            is_output_node=True,
        )

    TEXT_CHECKS = {"filename_prefix": optional_prefix_syntax}     # empty = do not save

    @classmethod
    def execute(cls, predicted_tracks, ground_truth_tracks, query_mode, images=None,
                filename_prefix="") -> io.NodeOutput:
        pred_path, pred_vis = check_tracks("predicted_tracks", predicted_tracks)
        gt_path, gt_vis = check_tracks("ground_truth_tracks", ground_truth_tracks)
        if pred_path.shape[0] != gt_path.shape[0]:
            raise ValueError(f"predicted_tracks: {pred_path.shape[0]} frames but ground_truth_tracks has "
                             f"{gt_path.shape[0]}")
        if pred_path.shape[1] != gt_path.shape[1]:
            raise ValueError(f"predicted_tracks: {pred_path.shape[1]} points but ground_truth_tracks has "
                             f"{gt_path.shape[1]} (track i must predict ground-truth track i)")
        img_size = None
        if images is not None:
            img_size = tuple(int(v) for v in check_video("images", images).shape[1:3])
            if images.shape[0] != pred_path.shape[0]:
                raise ValueError(f"images: {images.shape[0]} frames but predicted_tracks has {pred_path.shape[0]}")
        pred_size = _frame_size("predicted_tracks", predicted_tracks.get("frame_size"))
        gt_size = _frame_size("ground_truth_tracks", ground_truth_tracks.get("frame_size"))
        if pred_size and img_size and pred_size != img_size:
            raise ValueError(f"images: frames are {img_size[0]}x{img_size[1]} but predicted_tracks says "
                             f"frame_size {pred_size[0]}x{pred_size[1]}")
        size_source = "its frame_size" if pred_size else "images" if img_size else "ground truth (assumed)"
        pred_size = pred_size or img_size or gt_size
        if pred_size is None:
            raise ValueError("predicted_tracks: no frame size; connect the images or use tracks with a "
                             "'frame_size' key")
        gt_size = gt_size or pred_size

        query_points = ground_truth_tracks.get("query_points")
        res = evaluate_tracks(pred_path, pred_vis, gt_path, gt_vis, pred_size, query_mode=query_mode,
                              query_points=query_points, gt_frame_size=gt_size, percent=True)
        report = cls.format_report(res, pred_size, gt_size) + f"\npredicted frame size from: {size_source}"
        if filename_prefix and filename_prefix.strip():
            path = _save_json(filename_prefix, {**res, "predicted_frame_size": pred_size,
                                                "ground_truth_frame_size": gt_size})
            report += f"\nsaved: {path} (output folder)"
        headline = {"average_jaccard": res["average_jaccard"], "delta_avg": res["average_pts_within_thresh"],
                    "occlusion_accuracy": res["occlusion_accuracy"]}
        return io.NodeOutput(report, res["average_jaccard"], res["average_pts_within_thresh"],
                             res["occlusion_accuracy"], ui=report_ui(report, headline))

    @staticmethod
    def format_report(res: dict, pred_size, gt_size) -> str:
        lines = [
            f"TAP-Vid metrics, query mode '{res['query_mode']}' (values x100)",
            f"tracks: {res['num_tracks']}, queries: {res['num_queries']} ({res['query_source']}), "
            f"frames: {res['num_frames']}",
            f"evaluated points: {res['num_evaluated_points']} "
            f"(ground-truth visible: {res['num_visible_evaluated_points']})",
            f"eval frame: {res['eval_frame']}; predicted {pred_size[0]}x{pred_size[1]}, "
            f"ground truth {gt_size[0]}x{gt_size[1]} (HxW)",
            "",
            f"delta (px@{EVAL_SIZE})   jaccard   pts_within",
        ]
        for d in THRESHOLDS:
            lines.append(f"{d:>14}    {_fmt(res[f'jaccard_{d}'])}    {_fmt(res[f'pts_within_{d}'])}")
        lines += [
            "",
            f"AJ        {_fmt(res['average_jaccard'])}",
            f"delta_avg {_fmt(res['average_pts_within_thresh'])}",
            f"OA        {_fmt(res['occlusion_accuracy'])}",
        ]
        for key, reason in res["nan_reasons"].items():
            lines.append(f"NaN {key}: {reason}")
        return "\n".join(lines)


class VDT_DavisReport(VdtNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VDT_DavisReport",
            display_name="VDT DAVIS J&F Report",
            category=category("evaluation"),
            description=("DAVIS-2017 semi-supervised J (region IoU) and F (boundary, disk radius "
                         "ceil(0.008 x diagonal)) of a propagated mask or label map against ground truth; "
                         "per-object mean, recall and decay, J&F = mean of J and F."),
            inputs=[
                io.Mask.Input("predicted_mask", tooltip="Predicted masks [frames,H,W]: binary (one object) or "
                              "a label map with integer object ids, see mask_kind."),
                io.Mask.Input("ground_truth_mask", tooltip="Ground-truth masks, same frames and size."),
                io.Combo.Input("mask_kind", options=["binary", "label map"], default="binary",
                               tooltip="binary: one object, pixels > 0.5; label map: integer ids, 0 = background, "
                                       "objects = 1..max id of the first ground-truth frame."),
                io.Boolean.Input("drop_first_last", default=True,
                                 tooltip="Skip the first (given) and last frames, as the official DAVIS script."),
                _report_prefix_input(),
            ],
            outputs=[
                io.String.Output("report", display_name="report", tooltip="Readable metric table."),
                io.Float.Output("jf_mean", display_name="J&F", tooltip="J&F-Mean x100."),
                io.Float.Output("j_mean", display_name="J", tooltip="J-Mean x100."),
                io.Float.Output("f_mean", display_name="F", tooltip="F-Mean x100."),
            ],
            is_output_node=True,
        )

    TEXT_CHECKS = {"filename_prefix": optional_prefix_syntax}     # empty = do not save

    @classmethod
    def execute(cls, predicted_mask, ground_truth_mask, mask_kind, drop_first_last=True,
                filename_prefix="") -> io.NodeOutput:
        gt = check_mask("ground_truth_mask", ground_truth_mask)
        pred = check_mask("predicted_mask", predicted_mask)
        if pred.shape[0] != gt.shape[0]:
            raise ValueError(f"predicted_mask: {pred.shape[0]} frames but ground_truth_mask has {gt.shape[0]}")
        check_mask("predicted_mask", pred, size=tuple(gt.shape[1:]))
        if mask_kind == "binary":
            pred_l, gt_l = (pred > 0.5).long(), (gt > 0.5).long()
        elif mask_kind == "label map":
            pred_l, gt_l = pred, gt
        else:
            raise ValueError(f"mask_kind: expected 'binary' or 'label map', got {mask_kind!r}")
        first = gt_l[0].float().round()
        objects = int(first.masked_fill(first == VOID_LABEL, 0).max())   # evaluate_davis validates; sizes the bar
        res = evaluate_davis(pred_l, gt_l, drop_first_last=bool(drop_first_last), progress=Progress(max(objects, 1)),
                             pred_name="predicted_mask", gt_name="ground_truth_mask")
        report = cls.format_report(res, tuple(gt.shape[1:]))
        if filename_prefix and filename_prefix.strip():
            path = _save_json(filename_prefix, res)
            report += f"\nsaved: {path} (output folder)"
        headline = {k: 100 * res[k] for k in ("J&F-Mean", "J-Mean", "F-Mean")}
        return io.NodeOutput(report, 100 * res["J&F-Mean"], 100 * res["J-Mean"], 100 * res["F-Mean"],
                             ui=report_ui(report, headline))

    @staticmethod
    def format_report(res: dict, size) -> str:
        lines = [
            "DAVIS-2017 J&F (values x100)",
            f"objects: {res['num_objects']}, evaluated frames: {res['num_frames']}, frame {size[0]}x{size[1]}, "
            f"boundary tolerance {res['bound_pixels']} px",
            "",
            f"J&F-Mean {_fmt(100 * res['J&F-Mean'])}",
            f"J-Mean   {_fmt(100 * res['J-Mean'])}   J-Recall {_fmt(100 * res['J-Recall'])}   "
            f"J-Decay {_fmt(100 * res['J-Decay'])}",
            f"F-Mean   {_fmt(100 * res['F-Mean'])}   F-Recall {_fmt(100 * res['F-Recall'])}   "
            f"F-Decay {_fmt(100 * res['F-Decay'])}",
        ]
        if res["num_objects"] > 1:
            lines += ["", "object      J       F"]
            lines += [f"{o['id']:>6}  {_fmt(100 * o['J_mean'])}  {_fmt(100 * o['F_mean'])}" for o in res["objects"]]
        return "\n".join(lines)


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


NODES = [VDT_TapVidReport, VDT_DavisReport, VDT_CompareTrackers]
