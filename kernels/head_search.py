"""HeFT head search: score every (layer, head, frequency cut) of per-head q/k features by tracking known points
with HeFT and computing the TAP-Vid metrics against the known tracks (how HeFT picks its head and band, arXiv
2512.04619: the best head of the best layer, highest RoPE bands dropped).

Inputs: {layer: per-head features [T,heads,C,h,w]} (one forward pass can capture several layers), ground truth
tracks [T,N,2] pixels (x, y) with visibility [T,N], queries [N,3] (t, x, y) pixels. Every candidate is tracked
from the same queries with the same HeFT settings; rows are ranked by `rank_by` (AJ by default, ties by
delta_avg), best first. NaN metrics (e.g. OA with no occluded frame) rank last.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable

import torch

from .feature_select import rope_band_indices
from .heft_tracker import track_heft
from .metrics_tapvid import evaluate_tracks

RANK_KEYS = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
COLUMNS = ("layer", "head", "freq_low", "average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")


def parse_float_list(name: str, text: str, low: float = 0.0, high: float = 1.0) -> list[float]:
    """'0, 0.1, 0.15' -> [0.0, 0.1, 0.15]; each value in [low, high); ValueError naming `name` otherwise."""
    try:
        vals = [float(p) for p in str(text).replace(";", ",").split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers like '0, 0.1, 0.15', got {text!r}") from None
    if not vals or any(not (low <= v < high) or math.isnan(v) for v in vals):
        raise ValueError(f"{name}: expected numbers in [{low:g}, {high:g}), got {text!r}")
    return sorted(set(vals))


def search_heads(features: dict[int, torch.Tensor], stride, frame_size, gt_path: torch.Tensor,
                 gt_visibility: torch.Tensor, queries: torch.Tensor, freq_lows=(0.0,), rope_dims=None,
                 layout: str = "contiguous", head_ids: dict[int, list[int]] | None = None,
                 rank_by: str = "average_jaccard", heft_kwargs: dict | None = None,
                 progress: Callable[[], None] | None = None) -> list[dict]:
    """Rows {layer, head, freq_low, average_jaccard, average_pts_within_thresh, occlusion_accuracy} (fractions),
    best first. `head_ids[layer]` maps head positions to the model's head ids (default: positions).
    rope_dims None allows only freq_low 0 (no band selection). `progress` is called once per candidate.
    Raises ValueError naming the input on bad arguments."""
    if rank_by not in RANK_KEYS:
        raise ValueError(f"rank_by: expected one of {RANK_KEYS}, got {rank_by!r}")
    if not features:
        raise ValueError("features: no layer to search")
    freq_lows = [float(f) for f in freq_lows]
    if rope_dims is None and any(f > 0 for f in freq_lows):
        raise ValueError("rope_dims: needed to cut frequencies (freq_low > 0)")
    kw = dict(heft_kwargs or {})
    rows = []
    for layer, x in features.items():
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            raise ValueError(f"features: layer {layer} must be per-head [T,heads,C,h,w], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        t, nh, c, h, w = x.shape
        ids = list((head_ids or {}).get(layer) or range(nh))
        if len(ids) != nh:
            raise ValueError(f"features: layer {layer} has {nh} heads but {len(ids)} head ids")
        for f_low in freq_lows:
            bands = None if rope_dims is None or f_low == 0 else \
                rope_band_indices(c, rope_dims, (f_low, 1.0), layout).to(x.device)
            for pos in range(nh):
                f = x[:, pos] if bands is None else x[:, pos].index_select(1, bands)
                path, vis, _ = track_heft(f, stride, queries, frame_size, **kw)
                m = evaluate_tracks(path.cpu(), vis.cpu(), gt_path, gt_visibility, frame_size,
                                    query_points=queries.cpu())
                rows.append({"layer": int(layer), "head": int(ids[pos]), "freq_low": f_low,
                             **{k: float(m[k]) for k in RANK_KEYS}})
                if progress is not None:
                    progress()

    def key(r):
        v = r[rank_by]
        second = r["average_pts_within_thresh"]
        return (math.isnan(v), -(v if not math.isnan(v) else 0.0), -(second if not math.isnan(second) else 0.0))

    return sorted(rows, key=key)


def table_text(rows: list[dict], limit: int = 20) -> str:
    """The best `limit` rows as an aligned text table (values x100)."""
    lines = [f"{'layer':>5} {'head':>4} {'freq_low':>8} {'AJ':>6} {'d_avg':>6} {'OA':>6}"]
    for r in rows[:limit]:
        lines.append(f"{r['layer']:>5} {r['head']:>4} {r['freq_low']:>8.3g} {100 * r['average_jaccard']:>6.1f} "
                     f"{100 * r['average_pts_within_thresh']:>6.1f} {100 * r['occlusion_accuracy']:>6.1f}")
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in the CSV")
    return "\n".join(lines)


def table_csv(rows: list[dict]) -> str:
    """All rows as CSV text (fractions, as computed), header = COLUMNS."""
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: r[k] for k in COLUMNS})
    return buf.getvalue()
