"""Seconds a method took, carried with its output so a comparison can show them (our choice).

Every node that makes VDT_FEATURES or TRACKS stamps its own wall-clock time plus the time already carried by
the VDT_FEATURES / TRACKS it consumed: TRACKS carry it as the optional key `seconds`, VDT_FEATURES as
`meta["seconds"]`. So the `seconds` of a track set is the whole chain that produced it (diffusion pass +
head selection + tracker), as measured when it actually ran: a node ComfyUI serves from its cache keeps the
time of the run that computed it. Time spent outside the pack's nodes (ComfyUI loaders, VAE decode by core
nodes) is not counted. Payloads from other packs carry no time; they count as 0 and `chain_complete` says so.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

from ..kernels.datatypes import make_tracks

SECONDS_KEY = "seconds"


def now() -> float:
    return time.perf_counter()


def seconds_of(payload: Any) -> Optional[float]:
    """Time carried by a TRACKS dict (`seconds`) or a VDT_FEATURES dict (`meta["seconds"]`); None if absent."""
    if not isinstance(payload, dict):
        return None
    value = payload.get(SECONDS_KEY)
    if value is None and isinstance(payload.get("meta"), dict):
        value = payload["meta"].get(SECONDS_KEY)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def elapsed(start: float, *upstream: Any) -> float:
    """Seconds since `start` plus what the upstream payloads (None skipped) carry."""
    return (now() - start) + sum(seconds_of(u) or 0.0 for u in upstream if u is not None)


def stamp_tracks(tracks: dict, start: float, *upstream: Any) -> dict:
    """TRACKS with `seconds` = own time since `start` + upstream time. Returns the same dict."""
    tracks[SECONDS_KEY] = elapsed(start, *upstream)
    return tracks


def stamp_features(features: dict, start: float, *upstream: Any) -> dict:
    """VDT_FEATURES with meta['seconds'] = own time since `start` + upstream time. Returns the same dict."""
    meta = dict(features.get("meta") or {})
    meta[SECONDS_KEY] = elapsed(start, *upstream)
    features["meta"] = meta
    return features


def timed_tracks(start: float, upstream: tuple, path, vis, queries, frame_size, **extra) -> dict:
    """A tracker node's TRACKS (datatypes.make_tracks of path [T,N,2] px, visibility [T,N], query points [N,3]
    (t,x,y), frame_size (H,W) and the tracker's optional keys in `extra`) stamped with the seconds of the whole
    chain: own time since `start` + what the `upstream` payloads carry."""
    return stamp_tracks(make_tracks(path, vis, query_points=queries, frame_size=frame_size, **extra), start,
                        *upstream)
