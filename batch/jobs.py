"""The jobs of a batch (clips x a grid of swept input values), their folder names, the manifest that lets a
batch resume, and the summary (CSV/JSON with metrics aggregated per setting and per swept value).

Everything here is plain data: no HTTP, no Ray; the runners (runner.py, ray_runner.py) execute jobs.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field

VIDEO_EXT = (".mp4", ".webm", ".mov", ".mkv", ".avi")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# files beside a clip NAME.ext that belong to it (our choice of names): NAME.points.json holds the query points
# (the text a `points` input takes), NAME.mask.png the first-frame mask
POINTS_SUFFIX = ".points.json"
MASK_SUFFIX = ".mask.png"
SIDECAR_SUFFIXES = (POINTS_SUFFIX, MASK_SUFFIX)
MANIFEST = "manifest.jsonl"
KEY_CHARS = "-_.+=,"


class BatchError(Exception):
    """A problem with the command line, the workflow or the clips (reported without a traceback)."""


@dataclass(frozen=True)
class Setting:
    """One swept input: node id, input name, the values to try (already in the input's type)."""
    node: str
    name: str
    values: tuple

    @property
    def label(self) -> str:
        return f"{self.node}.{self.name}"


@dataclass
class Job:
    """One prompt of the batch: a clip (or none) with one value per swept input. `key` is its results folder
    (relative, '/'-separated, unique in the batch); `spec` a hash of everything that defines it."""
    key: str
    clip: str | None = None
    points: str | None = None          # path of the clip's points file, if any
    mask: str | None = None            # path of the clip's mask file, if any
    values: dict = field(default_factory=dict)      # "node.input" -> value
    spec: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# -------------------------------------------------------------------------------------------------- clips

def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES)


def list_clips(sources: list[str], exts: tuple[str, ...]) -> list[str]:
    """Clip files from folders (their files ending in `exts`, not recursing, sidecars excluded) and files
    named one by one, in the order given (a folder's files sorted by name)."""
    clips: list[str] = []
    for src in sources:
        if os.path.isdir(src):
            found = sorted(os.path.join(src, f) for f in os.listdir(src)
                           if f.lower().endswith(exts) and not is_sidecar(f) and os.path.isfile(os.path.join(src, f)))
            if not found:
                raise BatchError(f"no clips in {src}: expected files ending in {', '.join(exts)}")
            clips += found
        elif os.path.isfile(src):
            if not src.lower().endswith(exts):
                raise BatchError(f"{src}: not a clip this workflow's loader takes ({', '.join(exts)})")
            clips.append(src)
        else:
            raise BatchError(f"clip folder or file not found: {src}")
    seen: set[str] = set()
    dupes = [c for c in clips if os.path.realpath(c) in seen or seen.add(os.path.realpath(c))]
    if dupes:
        raise BatchError(f"clip given twice: {dupes[0]}")
    return clips


def sidecar(clip: str, suffix: str) -> str | None:
    """NAME<suffix> beside the clip NAME.ext, if it exists."""
    path = os.path.splitext(clip)[0] + suffix
    return path if os.path.isfile(path) else None


# -------------------------------------------------------------------------------------------------- keys

def _safe(text: str) -> str:
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in KEY_CHARS) else "_" for ch in text).strip(".")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def unique_keys(names: list[str], identities: list[str] | None = None) -> list[str]:
    """A folder name per item: `names[i]` where it is already safe (ASCII letters, digits and -_.+=,, at most
    60 characters) and no other safe name equals it ignoring case; otherwise its safe form with a short hash
    of `identities[i]` (default the name) appended. A name's key does not depend on the other items unless
    they clash, and two different identities never get the same key (ValueError if a hash ever collided)."""
    identities = identities or names
    if len(set(identities)) != len(identities):
        raise ValueError("unique_keys: identities must be distinct")
    safe = [_safe(n)[:60] for n in names]
    kept = [s.lower() for s, n in zip(safe, names) if s and s == n]
    keys = [s if s and s == n and kept.count(s.lower()) == 1 else f"{s or 'item'}-{_digest(i)}"
            for s, n, i in zip(safe, names, identities)]
    if len({k.lower() for k in keys}) != len(keys):
        raise ValueError("two items would share a results folder name: rename one of "
                         + ", ".join(repr(n) for n, k in zip(names, keys)
                                     if [x.lower() for x in keys].count(k.lower()) > 1))
    return keys


def clip_keys(clips: list[str]) -> list[str]:
    """Folder names of clips: the file stem where that is safe and unique, else the name with a hash of the
    path ('a b.mp4' and 'a_b.mp4' never share a folder)."""
    stems = [os.path.splitext(os.path.basename(c))[0] for c in clips]
    return unique_keys(stems, [os.path.abspath(c) for c in clips])


def setting_grid(settings: list[Setting]) -> list[dict]:
    """Every combination of the swept values, in order (the last setting varies fastest)."""
    labels = [s.label for s in settings]
    return [dict(zip(labels, combo)) for combo in itertools.product(*(s.values for s in settings))]


def value_text(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def make_jobs(clips: list[str], settings: list[Setting], base_spec: str) -> list[Job]:
    """clips x grid (a single clip-less job set when `clips` is empty); keys 'clip/setting', 'clip' or
    'setting'. `base_spec` identifies the workflow (its API prompt)."""
    grid = setting_grid(settings)
    names = [",".join(f"{k}={value_text(v)}" for k, v in point.items()) for point in grid]
    grid_keys = unique_keys(names) if settings else [""]
    ckeys = clip_keys(clips) if clips else [""]
    jobs = []
    for clip, ckey in zip(clips or [None], ckeys):
        points = sidecar(clip, POINTS_SUFFIX) if clip else None
        mask = sidecar(clip, MASK_SUFFIX) if clip else None
        for point, gkey in zip(grid, grid_keys):
            key = "/".join(k for k in (ckey, gkey) if k) or "job"
            ident = {"workflow": base_spec, "values": {k: value_text(v) for k, v in point.items()},
                     "files": [_file_id(p) for p in (clip, points, mask)]}
            jobs.append(Job(key=key, clip=clip, points=points, mask=mask, values=point,
                            spec=_digest(json.dumps(ident, sort_keys=True), 16)))
    return jobs


def _file_id(path: str | None) -> list | None:
    if path is None:
        return None
    st = os.stat(path)
    return [os.path.basename(path), st.st_size, st.st_mtime_ns]


def prompt_spec(prompt: dict) -> str:
    return _digest(json.dumps(prompt, sort_keys=True), 16)


# -------------------------------------------------------------------------------------------------- manifest

class Manifest:
    """results/manifest.jsonl: one JSON line appended (and flushed to disk) per finished job. A job counts as
    done on --resume when its last line has status 'success' and the same spec (same workflow, values and
    clip files); anything else is run again."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, MANIFEST)

    def exists(self) -> bool:
        return os.path.isfile(self.path)

    def read(self) -> dict[str, dict]:
        """key -> last record (a torn last line from a killed run is ignored)."""
        last: dict[str, dict] = {}
        if not self.exists():
            return last
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                    last[rec["key"]] = rec
        return last

    def finished(self, jobs: list[Job]) -> dict[str, dict]:
        records = self.read()
        return {j.key: records[j.key] for j in jobs
                if records.get(j.key, {}).get("status") == "success" and records[j.key].get("spec") == j.spec}

    def append(self, record: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        torn = False
        if os.path.isfile(self.path) and os.path.getsize(self.path):
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"              # a line cut by a killed run: start a new one
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(("\n" if torn else "") + json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


# -------------------------------------------------------------------------------------------------- summary

def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def flat_metrics(result: dict) -> dict[str, float]:
    """{'<node id>.<metric>': value} of every report node of a job."""
    return {f"{nid}.{k}": v for nid, m in (result.get("metrics") or {}).items() for k, v in m.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def aggregate(results: list[dict], settings: list[Setting]) -> dict:
    """Mean of every metric over the successful jobs: per grid point ('by_setting') and per value of each swept
    input ('by_value', averaged over everything else), with job and success counts."""
    def group(rows: list[dict]) -> dict:
        ok = [r for r in rows if r["status"] == "success"]
        names = sorted({k for r in ok for k in flat_metrics(r)})
        return {"jobs": len(rows), "succeeded": len(ok),
                "seconds_mean": _mean([r.get("seconds") for r in ok]),
                "metrics": {n: _mean([flat_metrics(r).get(n) for r in ok]) for n in names}}

    by_setting = []
    for point in setting_grid(settings) if settings else [{}]:
        rows = [r for r in results if all(value_text(r["values"].get(k)) == value_text(v) for k, v in point.items())]
        by_setting.append({"values": point, **group(rows)})
    by_value = {s.label: [{"value": v, **group([r for r in results
                                                if value_text(r["values"].get(s.label)) == value_text(v)])}
                          for v in s.values] for s in settings}
    return {"by_setting": by_setting, "by_value": by_value}


def write_summary(folder: str, header: dict, results: list[dict], settings: list[Setting]) -> tuple[str, str]:
    """summary.json (header, one entry per job, aggregates) and summary.csv (one row per job: key, clip, swept
    values, status, seconds, output count and files, metrics, error). Returns both paths."""
    agg = aggregate(results, settings)
    jpath, cpath = os.path.join(folder, "summary.json"), os.path.join(folder, "summary.csv")
    with open(jpath + ".part", "w", encoding="utf-8") as f:
        json.dump({**header, "jobs": results, **agg}, f, indent=1)
    os.replace(jpath + ".part", jpath)
    metric_names = sorted({k for r in results for k in flat_metrics(r)})
    labels = [s.label for s in settings]
    with open(cpath + ".part", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "clip", *labels, "status", "seconds", "retries", "outputs", "files", *metric_names,
                    "error"])
        for r in results:
            m = flat_metrics(r)
            w.writerow([r["key"], os.path.basename(r["clip"]) if r.get("clip") else "",
                        *[value_text(r["values"].get(k)) for k in labels], r["status"],
                        "" if r.get("seconds") is None else f"{r['seconds']:.3f}", r.get("retries", 0),
                        len(r.get("outputs", [])), ";".join(r.get("outputs", [])),
                        *["" if m.get(n) is None else f"{m[n]:.6g}" for n in metric_names], r.get("error") or ""])
    os.replace(cpath + ".part", cpath)
    return jpath, cpath


def format_table(results: list[dict], settings: list[Setting]) -> str:
    """The per-setting aggregate as a readable table (the terminal summary)."""
    agg = aggregate(results, settings)
    names = sorted({n for row in agg["by_setting"] for n in row["metrics"]})
    rows = [["setting" if settings else "batch", "ok", *names]]
    for row in agg["by_setting"]:
        label = ", ".join(f"{k}={value_text(v)}" for k, v in row["values"].items()) or "all jobs"
        rows.append([label, f"{row['succeeded']}/{row['jobs']}",
                     *["-" if row["metrics"].get(n) is None else f"{row['metrics'][n]:.2f}" for n in names]])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in results if r["status"] != "success"]
    lines += [f"{r['key']}: {r['status']}: {r.get('error')}" for r in failed]
    lines.append(f"{len(results) - len(failed)}/{len(results)} jobs succeeded")
    return "\n".join(lines)
