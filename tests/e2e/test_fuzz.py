"""Seeded fuzzing of every vdtrack node through the real server (issue 11 item 12).

Nodes are enumerated from /object_info, so nodes added later are covered too. Two kinds of cases:
- validation: a malformed widget value (beyond min/max, not a number, not in the combo, a typo in a checked text
  input) in a prompt whose required links are left out, so it can never run: /prompt must refuse it with an
  error naming that input;
- execution (cheap graphs on a tiny synthetic clip): a value that passes ComfyUI's widget checks or arrives
  through a link (NaN, out-of-range numbers from primitive nodes, hostile text, hostile uploaded track files):
  the run must fail with a message starting with the input's (or the file's) name.
Afterwards: the server answers, its memory (RSS) stayed bounded, and nothing was written outside output/ and
temp/ (input/ holds only the files this test uploaded)."""
from __future__ import annotations

import io
import json
import os
import random
import sys
import zipfile

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

SEED = 20261130
PER_NODE = 9       # validation cases drawn (seeded) per node from all its malformed values
CHECKED_TEXT = {   # text inputs with a validate_inputs check, and malformed values for them
    "points": ["3;x", "[{'x': 1}]", "1," + "9" * 400, "[" * 50000, "1,2,-3"],
    "heads": ["1,a", "one"],
    "rope_dims": ["44,42", "a,b,c"],
    "color": ["redd", "#12345"],
    "filename_prefix": ["a\x00b", "../outside", "/abs/path"],
    "tracks_json": ["[[{", "[" * 50000],
}
CLIP = {"class_type": "VDT_SyntheticClip",
        "inputs": {"seed": 0, "frames": 3, "width": 32, "height": 32, "num_objects": 1, "points_per_object": 1,
                   "background_points": 1, "variant": "moving_objects"}}
# cheap graphs: node -> its inputs with links to the clip "c" (outputs: 0 images, 1 tracks, 4 query points)
CHEAP = {
    "VDT_SyntheticClip": dict(CLIP["inputs"]),
    "VDT_TracksToATI": {"tracks": ["c", 1], "num_samples": 121},
    "VDT_ATIToTracks": {"tracks_json": '[[{"x": 1, "y": 2}, {"x": 3, "y": 4}]]', "frames": 3, "stretch": False},
    "VDT_TracksToMask": {"tracks": ["c", 1], "images": ["c", 0], "radius": 4.0},
    "VDT_VisualizeTracks": {"images": ["c", 0], "tracks": ["c", 1], "radius": 3.0, "trail": 8, "fps": 16.0},
    "VDT_FlowTracker": {"images": ["c", 0], "points": "5,5", "method": "farneback", "fb_threshold": 1.5},
    "VDT_PixelFeatures": {"images": ["c", 0], "patch_size": 8, "projection_dim": 0, "seed": 0, "center": True,
                          "coords_weight": 0.0},
    "VDT_DrawMarkers": {"images": ["c", 0], "points": "5,5", "color": "#ff0000", "radius": 2.0,
                        "frames": "query frame"},
    "VDT_RebalanceColors": {"images": ["c", 0], "strength": 0.8, "hue_width": 20.0},
    "VDT_TrackRedMarkers": {"images": ["c", 0], "points": "5,5", "radius": 20.0, "growth": 1.5,
                            "centroid_radius": 6.0, "h_low": 10.0, "h_high": 170.0, "s_min": 120.0, "v_min": 70.0},
    "VDT_SaveTracks": {"tracks": ["c", 1], "format": "csv", "filename_prefix": "vdtrack/fuzz"},
}


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _files(root: str, skip: tuple[str, ...]) -> set[str]:
    out = set()
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)).split(os.sep)[0] not in skip]
        out |= {os.path.normpath(os.path.join(rel, f)) for f in files}
    return out


def _widgets(info: dict) -> dict[str, tuple[str, dict]]:
    """input name -> (type or combo options list, options) for the widget inputs of a node's object_info."""
    out = {}
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            if isinstance(kind, list) or kind == "COMBO" or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                out[name] = (kind, opts)
    return out


def _bad_widget_values(rng: random.Random, name: str, kind, opts: dict) -> list:
    """Values ComfyUI's own validation or the pack's validate_inputs must refuse, naming the input."""
    if kind == "INT" or kind == "FLOAT":
        vals = ["abc", "", [1]] if kind == "INT" else ["abc", ""]
        hi, lo = opts.get("max"), opts.get("min")
        if hi is not None:
            vals += [hi + 1 if kind == "INT" else hi * 2 + 1, 10 ** 400 if kind == "INT" else 1e308]
        if lo is not None:
            vals += [lo - 1 if kind == "INT" else lo - 1.5]
        return vals
    if isinstance(kind, list) or kind == "COMBO":
        return [f"not-an-option-{rng.randrange(10 ** 6)}"]
    if kind == "STRING" and name in CHECKED_TEXT:
        return list(CHECKED_TEXT[name])
    return []


def _linked_value_cases(info: dict, inputs: dict) -> list[tuple[str, object]]:
    """(input, value) pairs for the numeric inputs of a cheap node: beyond its own limits or NaN, to be sent
    through a primitive node (ComfyUI does not check linked values)."""
    cases = []
    for name, (kind, opts) in _widgets(info).items():
        if kind not in ("INT", "FLOAT") or name not in inputs:
            continue
        for limit, step in (("max", 1), ("min", -1)):
            v = opts.get(limit)
            if v is not None and abs(v + step) < sys.maxsize:
                cases.append((name, v + step if kind == "INT" else v + step * max(1.0, abs(v))))
        if kind == "FLOAT":
            cases.append((name, float("nan")))
    return cases


def _queue_validation(server, prompt: dict):
    status, r = server.post("/prompt", {"prompt": prompt, "client_id": "fuzz"})
    return status, r


def _names_input(node_errors: dict, node_id: str, name: str) -> bool:
    for err in node_errors.get(node_id, {}).get("errors", []):
        extra = err.get("extra_info") or {}
        details = str(err.get("details", ""))
        if err.get("type") == "custom_validation_failed":
            if f"- {name}:" in details:
                return True
        elif extra.get("input_name") == name or details.split(",")[0].split(":")[0].strip() == name:
            return True
    return False


def _write_hostile_files(input_dir: str) -> dict[str, bytes]:
    files = {"fuzz_index.csv": b"frame,track,x,y,visible\n100000000,0,1,2,1\n",
             "fuzz_frames.json": json.dumps({"track_path": [], "frames": 10 ** 12, "points": 0}).encode(),
             "fuzz_ragged.json": json.dumps({"track_path": [[[1, 2]], [[1, 2], [3, 4]]]}).encode(),
             "fuzz_latin1.csv": "frame,track,x,y\n0,0,1,2\xe9\n".encode("latin-1"),
             "fuzz_deep.json": b"[" * 50000 + b"]" * 50000}
    for name, data in files.items():
        with open(os.path.join(input_dir, name), "wb") as f:
            f.write(data)
    head = io.BytesIO()                            # a well-formed .npy header claiming 2e12 floats
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False,
                                                "shape": (1000000, 1000000, 2)})
    with zipfile.ZipFile(os.path.join(input_dir, "fuzz_claim.npz"), "w") as z:
        z.writestr("tracks.npy", head.getvalue() + bytes(64))
    with zipfile.ZipFile(os.path.join(input_dir, "fuzz_header.npz"), "w") as z:   # a malformed header
        z.writestr("tracks.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'shape': (9,), }".ljust(118) + b"\n")
    return files


def test_fuzz_every_node(server, object_info):
    rng = random.Random(SEED)
    ours = sorted(k for k in object_info if k.startswith("VDT_"))
    assert len(ours) >= 20, ours
    assert "PreviewAny" in object_info and "PrimitiveInt" in object_info and "PrimitiveFloat" in object_info
    pid = server.proc.pid
    rss0 = _rss_bytes(pid)
    skip = ("output", "temp", "input", "user")
    before = _files(server.base, skip)
    failures, cases, per_node = [], 0, {}

    # 1. validation cases: never run (the node's required links are left out)
    for node in ours:
        info = object_info[node]
        widgets = _widgets(info)
        defaults = {n: o.get("default") for n, (k, o) in widgets.items() if o.get("default") is not None}
        has_output = bool(info.get("output"))
        candidates = [(name, bad) for name, (kind, opts) in widgets.items()
                      for bad in _bad_widget_values(rng, name, kind, opts)]
        for name, bad in rng.sample(candidates, min(len(candidates), PER_NODE)):
            prompt = {"1": {"class_type": node, "inputs": dict(defaults, **{name: bad})}}
            if has_output:
                prompt["2"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
            status, r = _queue_validation(server, prompt)
            cases += 1
            per_node[node] = per_node.get(node, 0) + 1
            if status == 200 and not r.get("node_errors"):
                failures.append(f"{node}.{name}={str(bad)[:30]!r}: accepted (would have run)")
            elif not _names_input(r.get("node_errors", {}), "1", name):
                failures.append(f"{node}.{name}={str(bad)[:30]!r}: error does not name it: "
                                f"{json.dumps(r)[:300]}")

    # 2. execution cases: cheap graphs, bad values through links / past the widget checks
    def run(prompt: dict, expect: str, label: str) -> None:
        nonlocal cases
        cases += 1
        status, r = server.queue(prompt)
        if status != 200 or r.get("node_errors"):
            failures.append(f"{label}: refused at validation instead: {json.dumps(r)[:300]}")
            return
        h = server.wait(r["prompt_id"], timeout=300)
        err = [m for k, m in h["status"].get("messages", []) if k == "execution_error"]
        if h["status"]["status_str"] != "error" or not err:
            failures.append(f"{label}: ran to {h['status']['status_str']}")
        elif not err[0]["exception_message"].startswith(expect) or err[0]["exception_type"] != "ValueError":
            failures.append(f"{label}: {err[0]['exception_type']}: {err[0]['exception_message'][:200]}")

    for node, inputs in CHEAP.items():
        if node not in object_info:
            continue
        for name, value in _linked_value_cases(object_info[node], inputs):
            prim = "PrimitiveFloat" if isinstance(value, float) else "PrimitiveInt"
            prompt = {"c": CLIP, "p": {"class_type": prim, "inputs": {"value": value}},
                      "n": {"class_type": node, "inputs": dict(inputs, **{name: ["p", 0]})}}
            prompt["o"] = {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}
            run(prompt, f"{name}: ", f"{node}.{name}<-{prim}({value})")
        for name in [n for n in inputs if n in CHECKED_TEXT]:     # hostile text through a link
            for text in ("a\x00b" if name == "filename_prefix" else "1,a", "[" * 50000):
                prompt = {"c": CLIP, "p": {"class_type": "PrimitiveString", "inputs": {"value": text}},
                          "n": {"class_type": node, "inputs": dict(inputs, **{name: ["p", 0]})},
                          "o": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}
                run(prompt, f"{name}: ", f"{node}.{name}<-text")
    for name in _write_hostile_files(server.path("input")):
        prompt = {"n": {"class_type": "VDT_LoadTracks", "inputs": {"file": "(use path)", "path": name}},
                  "o": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}
        run(prompt, f"tracks file: {name}", f"VDT_LoadTracks({name})")
    for name in ("fuzz_claim.npz", "fuzz_header.npz"):
        run({"n": {"class_type": "VDT_LoadTracks", "inputs": {"file": "(use path)", "path": name}},
             "o": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}, f"tracks file: {name}",
            f"VDT_LoadTracks({name})")

    # 3. the server still answers and runs a normal prompt; memory bounded; nothing written where it must not be
    h = server.run({"c": CLIP, "s": {"class_type": "VDT_SaveTracks",
                                     "inputs": {"tracks": ["c", 1], "format": "json",
                                                "filename_prefix": "vdtrack/after_fuzz"}}})
    assert h["status"]["status_str"] == "success"
    rss1 = _rss_bytes(pid)
    assert rss1 - rss0 < 1.5 * 2 ** 30, f"server RSS grew from {rss0 / 2 ** 20:.0f} to {rss1 / 2 ** 20:.0f} MiB"
    written = _files(server.base, skip) - before
    assert not written, sorted(written)[:20]
    assert cases >= 300, (cases, per_node)
    assert all(per_node.get(n, 0) or not _widgets(object_info[n]) for n in ours), per_node
    assert not failures, f"{len(failures)} of {cases} cases failed:\n" + "\n".join(failures[:40])
