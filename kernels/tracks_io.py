"""Points and tracks in and out: point strings, ATI tracks JSON, and track files (npz/json/csv).

TRACKS and the coordinate convention are defined in datatypes.py; the TAP-Vid npz layout here stores
(t, y, x) queries and [N,T,2] tracks, converted on write and read.
"""
from __future__ import annotations

import csv
import io as _io
import json
import os
import re
import zipfile
import zlib

import numpy as np
import torch

from .datatypes import check_points, check_tracks, make_tracks

ATI_SAMPLES = 121   # core WanTrackToVideo pads/truncates every track to this many samples


# ----------------------------------------------------------------------------------------------- points

def _num(value, where: str, name: str = "points") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name}: {where}: expected a number, got {_clip(value)}")
    try:
        f = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{name}: {where}: expected a finite number, got {_clip(value)}") from None
    if not np.isfinite(f):
        raise ValueError(f"{name}: {where}: {_clip(value)} is not a finite number")
    return f


def _clip(value, n: int = 40) -> str:
    """repr of a value cut to n characters (a 400-digit number or a long string in an error message)."""
    r = repr(value) if not isinstance(value, int) else str(value)
    return r if len(r) <= n else f"{r[:n]}... ({len(r)} characters)"


def _loads(text: str, name: str):
    """json.loads with every failure as a ValueError naming the input: syntax, nesting too deep, numbers too
    long for Python's int conversion. Python-style single quotes are accepted (KJNodes and core read them)."""
    for attempt in (text, text.replace("'", '"')):
        try:
            return json.loads(attempt)
        except json.JSONDecodeError as e:
            err = f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        except RecursionError:
            raise ValueError(f"{name}: the JSON is nested too deeply") from None
        except ValueError as e:          # e.g. an integer with more digits than Python converts
            raise ValueError(f"{name}: not valid JSON ({str(e)[:80]})") from None
    raise ValueError(f"{name}: {err}")


def _point_from_entry(entry, where: str) -> tuple[float, float, float]:
    if isinstance(entry, dict):
        if "x" not in entry or "y" not in entry:
            raise ValueError(f"points: {where}: needs both 'x' and 'y', got keys {sorted(entry)}")
        t = _num(entry["t"], where) if entry.get("t") is not None else 0.0
        return t, _num(entry["x"], where), _num(entry["y"], where)
    if isinstance(entry, (list, tuple)):
        if len(entry) not in (2, 3):
            raise ValueError(f"points: {where}: expected [x, y] or [x, y, t], got {len(entry)} values")
        t = _num(entry[2], where) if len(entry) == 3 else 0.0
        return t, _num(entry[0], where), _num(entry[1], where)
    raise ValueError(f"points: {where}: expected {{\"x\":..,\"y\":..}} or [x, y], got {_clip(entry)}")


def _parse_json_points(text: str) -> list[tuple[float, float, float]]:
    data = _loads(text, "points")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError(f"points: expected a JSON list of points, got {type(data).__name__}")
    return [_point_from_entry(e, f"entry {i}") for i, e in enumerate(data)]


def _parse_lines(text: str) -> list[tuple[float, float, float]]:
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in re.split(r"[,\s;]+", line) if p]
        if len(parts) not in (2, 3):
            raise ValueError(f"points: line {lineno} '{raw.strip()}': expected 'x,y' or 'x,y,t'")
        where = f"line {lineno} '{raw.strip()}'"
        x, y = _num(parts[0], where), _num(parts[1], where)
        t = _num(parts[2], where) if len(parts) == 3 else 0.0
        out.append((t, x, y))
    return out


def parse_points(text: str, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Query points from text -> float32 [N,3] as (t,x,y) pixels, validated against `frames` and `size` (H,W).

    Accepts KJNodes JSON `[{"x":..,"y":..}]` (optional "t"), a JSON list of `[x,y]` / `[x,y,t]`, or one
    `x,y[,t]` per line (commas or spaces; blank lines and `#` comments ignored). t defaults to 0.
    """
    if not isinstance(text, str):
        raise ValueError(f"points: expected a string, got {type(text).__name__}")
    body = text.strip()
    if not body:
        raise ValueError("points: no points given (the text is empty)")
    pts = _parse_json_points(body) if body[0] in "[{" else _parse_lines(body)
    if not pts:
        raise ValueError("points: no points given")
    return check_points("points", torch.tensor(pts, dtype=torch.float32), size, frames)


def points_to_json(points: torch.Tensor) -> str:
    """[N,3] (t,x,y) -> KJNodes-style JSON with "t": `[{"x":..,"y":..,"t":..}]` (x,y rounded to 1/1000 px)."""
    p = torch.as_tensor(points, dtype=torch.float32).cpu()
    items = [{"x": _compact(float(x)), "y": _compact(float(y)), "t": int(round(float(t)))}
             for t, x, y in p.tolist()]
    return json.dumps(items)


def _compact(v: float):
    r = round(v, 3)
    return int(r) if r == int(r) else r


# ----------------------------------------------------------------------------------------------- ATI

def _resample(values: np.ndarray, valid: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear resampling along axis 0 of [S,N,2] samples (evenly spread over the same time span) to n_out.
    An output sample is valid if its nearest input sample is; positions interpolate between valid neighbours
    (one invalid neighbour -> the valid one's position)."""
    s = values.shape[0]
    if s == 1 or n_out == 1:
        idx = np.zeros(n_out, dtype=np.int64)
        return values[idx].copy(), valid[idx].copy()
    pos = np.arange(n_out, dtype=np.float64) * (s - 1) / (n_out - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, s - 1)
    hi = np.clip(lo + 1, 0, s - 1)
    w = (pos - lo)[:, None]
    vlo, vhi = valid[lo], valid[hi]
    wv = np.where(vlo & ~vhi, 0.0, np.where(~vlo & vhi, 1.0, w))[..., None]
    out = values[lo] * (1 - wv) + values[hi] * wv
    near = np.where(w[:, 0] < 0.5, lo, hi)
    return out, valid[near].copy()


def _hold_invisible(path: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Fill invisible frames with the last visible position (before the first visible: the first visible).
    A track never visible keeps its positions."""
    out = path.copy()
    for n in range(path.shape[1]):
        v = np.flatnonzero(vis[:, n])
        if v.size == 0:
            continue
        idx = np.maximum.accumulate(np.where(vis[:, n], np.arange(path.shape[0]), -1))
        idx = np.where(idx < 0, v[0], idx)
        out[:, n] = path[idx, n]
    return out


def tracks_to_ati_json(track_path, track_visibility, num_samples: int = ATI_SAMPLES) -> str:
    """TRACKS -> ATI tracks JSON string for core WanTrackToVideo: a list of tracks, each a list of
    `num_samples` per-frame {"x","y"} dicts spanning the whole clip (linear resampling in time).

    ATI has no per-sample visibility (core marks every given sample visible), so invisible frames hold the
    last visible position (before the first visible frame: the first visible position)."""
    path, vis = check_tracks("tracks", {"track_path": track_path, "track_visibility": track_visibility})
    p = _hold_invisible(path.detach().cpu().double().numpy(), vis.cpu().numpy())
    res, _ = _resample(p, np.ones(p.shape[:2], dtype=bool), int(num_samples))
    tracks = [[{"x": _compact(float(res[s, n, 0])), "y": _compact(float(res[s, n, 1]))}
               for s in range(res.shape[0])] for n in range(res.shape[1])]
    return json.dumps(tracks)


def _load_track_list(text: str, name: str = "tracks") -> list[list[dict]]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name}: the tracks text is empty")
    data = _loads(text, name)
    if isinstance(data, list) and data and all(isinstance(d, str) for d in data):   # list of JSON strings
        data = [_load_track_list(d, name) for d in data]
        data = [t for group in data for t in group]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{name}: expected a JSON list of tracks (each a list of {{\"x\",\"y\"}})")
    if isinstance(data[0], dict):   # one track (KJNodes Spline Editor coord_str with one spline)
        data = [data]
    for i, tr in enumerate(data):
        if not isinstance(tr, list) or not tr:
            raise ValueError(f"{name}: track {i} must be a non-empty list of {{\"x\",\"y\"}} points")
        for j, p in enumerate(tr):
            if not isinstance(p, dict) or "x" not in p or "y" not in p:
                raise ValueError(f"{name}: track {i} sample {j} must be {{\"x\":..,\"y\":..}}, got {_clip(p)}")
    return data


def ati_json_to_tracks(text: str, frames: int, stretch: bool = False,
                       name: str = "tracks") -> tuple[torch.Tensor, torch.Tensor]:
    """ATI tracks JSON (or a KJNodes Spline Editor coord_str) -> (path float32 [frames,N,2], vis bool [frames,N]).

    Like core WanTrackToVideo, each track is padded/truncated to 121 samples spanning the clip; samples past a
    short track's end are invisible. `stretch=True` instead spreads a track of any length over the whole clip."""
    if int(frames) < 1:
        raise ValueError(f"frames: must be at least 1, got {frames}")
    tracks = _load_track_list(text, name)
    n_samples = ATI_SAMPLES
    if stretch:
        n_samples = max(len(t) for t in tracks)
    vals = np.zeros((n_samples, len(tracks), 2), dtype=np.float64)
    valid = np.zeros((n_samples, len(tracks)), dtype=bool)
    for i, tr in enumerate(tracks):
        pts = np.array([[_num(p["x"], f"track {i}", name), _num(p["y"], f"track {i}", name)] for p in tr],
                       dtype=np.float64)
        if stretch and len(pts) != n_samples:
            pts, _ = _resample(pts[:, None], np.ones((len(pts), 1), dtype=bool), n_samples)
            pts = pts[:, 0]
        k = min(len(pts), n_samples)
        vals[:k, i] = pts[:k]
        valid[:k, i] = True
    path, vis = _resample(vals, valid, int(frames))
    return torch.from_numpy(path.astype(np.float32)), torch.from_numpy(vis)


# ----------------------------------------------------------------------------------------------- files

def _as_np(track_path, vis):
    path, v = check_tracks("tracks", {"track_path": track_path, "track_visibility": vis})
    return path.detach().cpu().numpy().astype(np.float32), v.cpu().numpy().astype(bool)


def _query_np(query_points, n: int):
    if query_points is None:
        return None
    q = torch.as_tensor(query_points, dtype=torch.float32).detach().cpu().numpy()
    if q.shape != (n, 3):
        raise ValueError(f"query_points: expected [{n},3] as (t,x,y), got {tuple(q.shape)}")
    return q


def _size_tuple(frame_size):
    if frame_size is None:
        return None
    fs = tuple(int(v) for v in (frame_size.tolist() if hasattr(frame_size, "tolist") else frame_size))
    if len(fs) != 2:
        raise ValueError(f"frame_size: expected (H, W), got {frame_size!r}")
    return fs


def save_tracks_npz(path: str, track_path, vis, query_points=None, frame_size=None) -> str:
    """TAP-Vid layout: tracks [N,T,2] float32 pixel (x,y), occluded [N,T] bool, visibles [N,T] bool,
    query_points [N,3] as (t,y,x) like TAP-Vid (only when given), frame_size [2] (H,W) (only when given)."""
    p, v = _as_np(track_path, vis)
    arrays = {"tracks": np.ascontiguousarray(p.transpose(1, 0, 2)),
              "occluded": np.ascontiguousarray(~v.T), "visibles": np.ascontiguousarray(v.T)}
    q = _query_np(query_points, p.shape[1])
    if q is not None:
        arrays["query_points"] = q[:, [0, 2, 1]]
    fs = _size_tuple(frame_size)
    if fs is not None:
        arrays["frame_size"] = np.array(fs, dtype=np.int64)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def save_tracks_json(path: str, track_path, vis, query_points=None, frame_size=None) -> str:
    """{"format": "vdtrack-tracks", "track_path": [T][N][2], "track_visibility": [T][N], ...}; float32 values
    are written with full precision (repr of the float32 value) so they load back bit-identical."""
    p, v = _as_np(track_path, vis)
    doc = {"format": "vdtrack-tracks", "version": 1, "frames": int(p.shape[0]), "points": int(p.shape[1]),
           "track_path": p.astype(np.float64).tolist(), "track_visibility": v.tolist()}
    q = _query_np(query_points, p.shape[1])
    if q is not None:
        doc["query_points"] = q.astype(np.float64).tolist()
    fs = _size_tuple(frame_size)
    if fs is not None:
        doc["frame_size"] = list(fs)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    return path


def save_tracks_csv(path: str, track_path, vis, query_points=None, frame_size=None, check=None) -> str:
    """Columns frame,track,x,y,visible (one row per frame and track). Query points and frame size go into
    leading `#` comment lines (`# frame_size H W`, `# query track t x y`). `check` (optional) is called once
    per frame (an interrupt check: a large file takes minutes)."""
    p, v = _as_np(track_path, vis)
    q = _query_np(query_points, p.shape[1])
    fs = _size_tuple(frame_size)
    buf = _io.StringIO()
    buf.write(f"# vdtrack tracks frames={p.shape[0]} points={p.shape[1]}\n")
    if fs is not None:
        buf.write(f"# frame_size {fs[0]} {fs[1]}\n")
    if q is not None:
        for n in range(q.shape[0]):
            buf.write(f"# query {n} {_f32(q[n, 0])} {_f32(q[n, 1])} {_f32(q[n, 2])}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["frame", "track", "x", "y", "visible"])
    for t in range(p.shape[0]):
        if check is not None:
            check()
        for n in range(p.shape[1]):
            w.writerow([t, n, _f32(p[t, n, 0]), _f32(p[t, n, 1]), int(v[t, n])])
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return path


def _f32(x) -> str:
    return repr(float(np.float32(x)))   # shortest text that round-trips to the same float32


def _tracks_dict(path: np.ndarray, vis: np.ndarray, query, frame_size) -> dict:
    return make_tracks(np.ascontiguousarray(path, dtype=np.float32), np.ascontiguousarray(vis, dtype=bool),
                       query_points=None if query is None else np.asarray(query, dtype=np.float32),
                       frame_size=frame_size)


MAX_FILE_BYTES = 1 << 30           # an npz file (or one npz member, uncompressed) larger than this is refused
MAX_TEXT_BYTES = 1 << 27           # JSON / CSV: parsed into Python objects, ~10x their size in memory
# points x frames of one track set (our choice): as many samples as one ATI track string may hold
# (MAX_ATI_SAMPLES in nodes/tracks.py), e.g. 32,768 points over 512 frames; 128 MiB of float32 (x, y). An npz
# of 1.2 MB can unpack to 2^27 positions: loading and saving that took 83 s and 4.5 GB.
MAX_TRACK_POSITIONS = 1 << 24
# JSON / CSV write up to ~60 bytes per position (full-precision x, y, visible, indices and separators; measured
# 47 for CSV, more for JSON): a text file with more positions than this could be larger than MAX_TEXT_BYTES, so
# the loader could not read it back
MAX_TEXT_POSITIONS = MAX_TEXT_BYTES // 64
MAX_FRAMES = 1 << 20


def _bad(path: str, problem: str) -> ValueError:
    return ValueError(f"tracks file: {os.path.basename(path)}: {problem}")


def _check_dims(path: str, frames: int, points: int, cap: int = MAX_TRACK_POSITIONS) -> None:
    """Refuse a track set with no frame, more than MAX_FRAMES frames or more than `cap` points x frames."""
    if frames < 1 or points < 0:
        raise _bad(path, f"needs at least one frame, got {frames} frames and {points} points")
    if frames > MAX_FRAMES or frames * max(points, 1) > cap:
        raise _bad(path, f"{frames:,} frames x {points:,} points = {frames * max(points, 1):,} positions is "
                         f"more than a tracks file may hold ({cap:,} positions, {MAX_FRAMES:,} frames)")


def _npz_member(z: zipfile.ZipFile, path: str, name: str) -> np.ndarray:
    """One array of an npz (a zip of .npy files), read only after its header is checked: a known numeric dtype,
    a shape within the limits and matching the member's real size (a header may claim 2e12 values; a zip bomb
    declares a huge uncompressed size)."""
    info = z.getinfo(name + ".npy")
    if info.file_size > MAX_FILE_BYTES:
        raise _bad(path, f"'{name}' unpacks to {info.file_size:,} bytes, more than {MAX_FILE_BYTES:,}")
    with z.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise _bad(path, f"'{name}' has an unsupported .npy version {version}")
        except ValueError as e:
            if str(e).startswith("tracks file:"):
                raise
            raise _bad(path, f"'{name}' has a malformed .npy header") from None
        if dtype.hasobject or dtype.kind not in "biuf":
            raise _bad(path, f"'{name}' must hold numbers, got dtype {dtype}")
        count = int(np.prod(shape, dtype=object))
        if count * dtype.itemsize > info.file_size:
            raise _bad(path, f"'{name}' claims shape {shape} ({count:,} values), more than the file holds")
        if count > 2 * MAX_TRACK_POSITIONS:     # 'tracks' holds (x, y) per position, the largest member
            raise _bad(path, f"'{name}' has shape {shape} ({count:,} values), more than a tracks file may "
                             f"hold ({MAX_TRACK_POSITIONS:,} positions of (x, y))")
        data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise _bad(path, f"'{name}' is truncated")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def _load_npz(path: str) -> dict:
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise _bad(path, "not an npz archive") from None
    with z:
        names = {n[:-4] for n in z.namelist() if n.endswith(".npy")}
        if "tracks" not in names:
            raise _bad(path, "has no 'tracks' array (TAP-Vid layout)")
        tr = _npz_member(z, path, "tracks").astype(np.float32)
        if tr.ndim != 3 or tr.shape[-1] != 2:
            raise _bad(path, f"'tracks' must be [N,T,2], got {tr.shape}")
        n, t = tr.shape[:2]
        _check_dims(path, t, n)
        if "visibles" in names:
            vis = _npz_member(z, path, "visibles").astype(bool)
        elif "occluded" in names:
            vis = ~_npz_member(z, path, "occluded").astype(bool)
        else:
            vis = np.ones(tr.shape[:2], dtype=bool)
        if vis.shape != (n, t):
            raise _bad(path, f"visibility must be [N,T] = [{n},{t}], got {vis.shape}")
        q = _npz_member(z, path, "query_points") if "query_points" in names else None
        if q is not None:
            if q.shape != (n, 3):
                raise _bad(path, f"'query_points' must be [N,3] = [{n},3] as (t,y,x), got {q.shape}")
            q = q[:, [0, 2, 1]]
        fs = _frame_size(path, _npz_member(z, path, "frame_size").tolist()) if "frame_size" in names else None
    return _tracks_dict(tr.transpose(1, 0, 2), vis.T, q, fs)


def _frame_size(path: str, value):
    try:
        fs = tuple(int(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        raise _bad(path, f"'frame_size' must be (H, W), got {_clip(value)}") from None
    if len(fs) != 2 or min(fs) < 1 or max(fs) > 1 << 20:
        raise _bad(path, f"'frame_size' must be two positive sizes (H, W), got {_clip(value)}")
    return fs


def _array(path: str, key: str, value, dtype, shape: tuple | None = None) -> np.ndarray:
    """A JSON list as an array of `dtype` with the expected shape; ragged or non-numeric lists are refused."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise _bad(path, f"'{key}' must be a rectangular list of numbers") from None
    if shape is not None and arr.shape != shape:
        raise _bad(path, f"'{key}' must have shape {list(shape)}, got {list(arr.shape)}")
    return arr


def _load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = _loads(text, f"tracks file: {os.path.basename(path)}")
    if not isinstance(doc, dict) or "track_path" not in doc:
        raise _bad(path, "is not a vdtrack tracks JSON (no 'track_path'); for ATI track strings use "
                         "VDT ATI To Tracks")
    frames, points = doc.get("frames"), doc.get("points")
    if not all(v is None or isinstance(v, int) and not isinstance(v, bool) for v in (frames, points)):
        raise _bad(path, "'frames' and 'points' must be whole numbers")
    p = _array(path, "track_path", doc["track_path"], np.float32)
    if p.size == 0:
        _check_dims(path, frames or 0, points or 0)
        p = p.reshape(frames, points, 2) if points == 0 else p
    if p.ndim != 3 or p.shape[-1] != 2:
        raise _bad(path, f"'track_path' must be [frames][points][2], got shape {list(p.shape)}")
    for key, value, real in (("frames", frames, p.shape[0]), ("points", points, p.shape[1])):
        if value is not None and value != real:
            raise _bad(path, f"the header says {key} = {value:,} but 'track_path' holds {real:,}")
    _check_dims(path, p.shape[0], p.shape[1])
    vis = doc.get("track_visibility")
    vis = np.ones(p.shape[:2], dtype=bool) if vis is None else _array(path, "track_visibility", vis, bool,
                                                                          p.shape[:2])
    q = doc.get("query_points")
    q = None if q is None else _array(path, "query_points", q, np.float32, (p.shape[1], 3))
    fs = doc.get("frame_size")
    return _tracks_dict(p, vis, q, None if fs is None else _frame_size(path, fs))


def _load_csv(path: str) -> dict:
    query, frame_size, rows = {}, None, []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    body = []
    for line in lines:
        if line.startswith("#"):
            parts = line[1:].split()
            try:
                if parts[:1] == ["frame_size"] and len(parts) == 3:
                    frame_size = _frame_size(path, parts[1:])
                elif parts[:1] == ["query"] and len(parts) == 5:
                    query[int(parts[1])] = [float(v) for v in parts[2:]]
            except ValueError:
                raise _bad(path, f"malformed comment line {_clip(line)}") from None
        elif line.strip():
            body.append(line)
    reader = csv.DictReader(body)
    need = {"frame", "track", "x", "y"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise _bad(path, "needs columns frame,track,x,y[,visible]")
    for i, r in enumerate(reader):
        try:
            row = (int(r["frame"]), int(r["track"]), float(r["x"]), float(r["y"]),
                   bool(int(float(r.get("visible") or 1))))
        except (TypeError, ValueError, OverflowError):
            raise _bad(path, f"row {i + 1} is malformed: {_clip(r, 80)}") from None
        if row[0] < 0 or row[1] < 0:
            raise _bad(path, f"row {i + 1}: frame and track must be >= 0, got {row[0]}, {row[1]}")
        if not (np.isfinite(row[2]) and np.isfinite(row[3])):
            raise _bad(path, f"row {i + 1}: x and y must be finite numbers")
        rows.append(row)
    if not rows:
        raise _bad(path, "has no rows")
    t_n = max(r[0] for r in rows) + 1
    n_n = max(r[1] for r in rows) + 1
    _check_dims(path, t_n, n_n)
    if t_n * n_n > 4 * len(rows):     # a saved file has one row per frame and track: refuse sparse giants
        raise _bad(path, f"rows name {t_n:,} frames x {n_n:,} tracks but there are only {len(rows):,} rows")
    p = np.zeros((t_n, n_n, 2), dtype=np.float32)
    vis = np.zeros((t_n, n_n), dtype=bool)
    for t, n, x, y, v in rows:
        p[t, n] = (x, y)
        vis[t, n] = v
    q = np.array([query[n] for n in range(n_n)], dtype=np.float32) if len(query) == n_n else None
    return _tracks_dict(p, vis, q, frame_size)


def save_tracks(path: str, tracks: dict, check=None) -> str:
    """Write a TRACKS dict; the format follows the extension (.npz, .json, .csv). `check` (optional): called
    between frames of a CSV (an interrupt check). Raises ValueError naming the file and the counts for more
    than MAX_TRACK_POSITIONS points x frames (MAX_TEXT_POSITIONS for .json / .csv: what their loader reads)."""
    ext = os.path.splitext(path)[1].lower()
    writers = {".npz": save_tracks_npz, ".json": save_tracks_json, ".csv": save_tracks_csv}
    if ext not in writers:
        raise ValueError(f"format: unknown tracks file extension '{ext}' (use .npz, .json or .csv)")
    path_t, vis = check_tracks("tracks", tracks)
    _check_dims(path, int(path_t.shape[0]), int(path_t.shape[1]),
                MAX_TRACK_POSITIONS if ext == ".npz" else MAX_TEXT_POSITIONS)
    extra = {"check": check} if ext == ".csv" else {}
    return writers[ext](path, path_t, vis, tracks.get("query_points"), tracks.get("frame_size"), **extra)


def load_tracks(path: str) -> dict:
    """Read a tracks file written by save_tracks_* (npz in TAP-Vid layout, json, csv) -> TRACKS dict."""
    if not os.path.isfile(path):
        raise ValueError(f"tracks file: '{path}' does not exist")
    ext = os.path.splitext(path)[1].lower()
    loaders = {".npz": _load_npz, ".json": _load_json, ".csv": _load_csv}
    if ext not in loaders:
        raise ValueError(f"tracks file: unknown extension '{ext}' (expected .npz, .json or .csv)")
    size, cap = os.path.getsize(path), MAX_FILE_BYTES if ext == ".npz" else MAX_TEXT_BYTES
    if size > cap:
        raise _bad(path, f"{size:,} bytes is more than the {cap:,} this loader reads from a {ext} file (save "
                         "large tracks as npz)")
    try:
        return loaders[ext](path)
    except UnicodeDecodeError as e:
        raise _bad(path, f"is not UTF-8 text (byte {e.start})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise _bad(path, f"cannot be read ({type(e).__name__}: {str(e)[:80]})") from None
