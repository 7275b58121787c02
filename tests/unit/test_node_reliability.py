"""Inputs an outside tester (or a shared server's users) may send: typos caught before the graph runs, untrusted
track files, hostile text, 1-channel images, tiny frames, tracks that do not fit the video, requests for more
memory than a node may use. Each is a ValueError naming the input (or the file), never a crash or a hang."""
from __future__ import annotations

import io as _io
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from vdtrack.kernels.tracks_io import load_tracks, parse_points
from vdtrack.nodes.data import VDT_SyntheticClip
from vdtrack.nodes.diffusion import VDT_ExtractDiffusionFeatures
from vdtrack.nodes.evaluation import VDT_TapVidReport
from vdtrack.nodes.features import VDT_SelectHeadsFrequencies
from vdtrack.nodes.point_prompting import VDT_DrawMarkers, VDT_TrackRedMarkers
from vdtrack.nodes.tracking import VDT_FlowTracker, VDT_TrackHeFT
from vdtrack.nodes.tracks import (VDT_ATIToTracks, VDT_LoadTracks, VDT_SaveTracks, VDT_TracksToATI,
                                  VDT_TracksToMask, resolve_track_file)


def test_text_inputs_are_checked_before_the_graph_runs():
    ok = [(VDT_TrackHeFT, {"points": "3,4\n5,6,2"}), (VDT_TrackHeFT, {"points": None}),
          (VDT_DrawMarkers, {"points": "", "color": "#ff0000"}),
          (VDT_SelectHeadsFrequencies, {"heads": "1,6", "rope_dims": "44,42,42"}),
          (VDT_ExtractDiffusionFeatures, {"heads": ""}), (VDT_SaveTracks, {"filename_prefix": "a/b"}),
          (VDT_TapVidReport, {"filename_prefix": ""}), (VDT_ATIToTracks, {"tracks_json": '[[{"x":1,"y":2}]]'})]
    for node, kw in ok:
        assert node.validate_inputs(**kw) is True, (node, kw)
    bad = [(VDT_TrackHeFT, {"points": "3;x"}, "points"), (VDT_TrackHeFT, {"points": "[{'x': 1}]"}, "points"),
           (VDT_DrawMarkers, {"points": "1,2", "color": "redd"}, "color"),
           (VDT_SelectHeadsFrequencies, {"heads": "1,a", "rope_dims": "44,42,42"}, "heads"),
           (VDT_SelectHeadsFrequencies, {"heads": "1", "rope_dims": "44,42"}, "rope_dims"),
           (VDT_ExtractDiffusionFeatures, {"heads": "one"}, "heads"),
           (VDT_SaveTracks, {"filename_prefix": "a\x00b"}, "filename_prefix"),
           (VDT_SaveTracks, {"filename_prefix": "../up"}, "filename_prefix"),
           (VDT_ATIToTracks, {"tracks_json": "[[{"}, "tracks_json"),
           (VDT_TrackHeFT, {"search_radius": float("nan")}, "search_radius"),
           (VDT_TrackHeFT, {"fb_mode": "fast"}, "fb_mode"),
           (VDT_SaveTracks, {"filename_prefix": ""}, "filename_prefix")]
    for node, kw, name in bad:
        msg = node.validate_inputs(**kw)
        assert isinstance(msg, str) and msg.startswith(f"{name}:"), (node, kw, msg)


def test_hostile_point_text():
    for text in ("1" * 400 + ",5", '[{"x": ' + "9" * 400 + ', "y": 1}]', "[" * 50000 + "]" * 50000,
                 '[{"x": 1e999, "y": 1}]', '[{"x": ' + "1" * 5000 + ', "y": 1}]'):
        with pytest.raises(ValueError, match="^points: "):
            parse_points(text, 4, (32, 32))


def _npy(arr: np.ndarray, claim_shape=None) -> bytes:
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, arr)
    data = buf.getvalue()
    if claim_shape is not None:   # rewrite the header to claim another shape (same header length)
        old = repr(arr.shape).encode()
        new = repr(claim_shape).encode()
        data = data.replace(old, new.ljust(len(old)) if len(new) <= len(old) else new, 1)
    return data


def _npz(path, members: dict, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)


def test_untrusted_track_files(tmp_path):
    cases = {}
    cases["frame_index.csv"] = b"frame,track,x,y,visible\n100000000,0,1,2,1\n"
    cases["negative.csv"] = b"frame,track,x,y,visible\n-1,0,1,2,1\n"
    cases["frames.json"] = json.dumps({"track_path": [], "frames": 10 ** 12, "points": 0}).encode()
    cases["ragged.json"] = json.dumps({"track_path": [[[1, 2]], [[1, 2], [3, 4]]]}).encode()
    cases["deep.json"] = b"[" * 50000 + b"]" * 50000
    cases["latin1.csv"] = "frame,track,x,y\n0,0,1,2 \xe9\xff\n".encode("latin-1")
    cases["query2.json"] = json.dumps({"track_path": [[[1, 2]]], "query_points": [[0, 1]]}).encode()
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    # npz: a header claiming 2e12 floats; a zip bomb (4 GiB of zeros declared, deflated to a few MB is too slow
    # to build here: a member whose declared size exceeds the limit is enough); query_points with 2 columns
    tracks = np.zeros((2, 3, 2), np.float32)
    _npz(tmp_path / "claim.npz", {"tracks": _npy(np.zeros((4, 4, 2), np.float32), claim_shape=(1000000, 1000000, 2))})
    _npz(tmp_path / "query2.npz", {"tracks": _npy(tracks), "query_points": _npy(np.zeros((2, 2), np.float32))})
    _npz(tmp_path / "objects.npz", {"tracks": _npy(tracks), "visibles": _npy(np.zeros((2, 3), dtype=object))})
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("tracks.npy", "w", force_zip64=True) as f:
            f.write(np.lib.format.magic(1, 0))
            chunk = bytes(1 << 24)
            for _ in range(72):                    # 1.2 GiB of zeros, a few MB compressed
                f.write(chunk)
    (tmp_path / "notzip.npz").write_bytes(b"PK\x03\x04 not really")
    for name in [*cases, "claim.npz", "query2.npz", "objects.npz", "bomb.npz", "notzip.npz"]:
        with pytest.raises(ValueError, match=f"tracks file: {name}") as e:
            load_tracks(str(tmp_path / name))
        assert len(str(e.value)) < 400, str(e.value)


def test_load_tracks_path_input(comfy_folders):
    with pytest.raises(ValueError, match="^path: "):
        resolve_track_file(5)
    with pytest.raises(ValueError, match="^path: "):
        resolve_track_file("a\x00.npz")
    with pytest.raises(ValueError, match="^path: "):
        VDT_LoadTracks.execute("(use path)", "x" * 5000 + ".npz")


def test_save_prefix_control_characters(comfy_folders):
    tracks = {"track_path": torch.zeros(2, 1, 2), "track_visibility": torch.ones(2, 1, dtype=torch.bool)}
    for prefix in ("a\x00b", "a\nb", 5):
        with pytest.raises(ValueError, match="^filename_prefix: "):
            VDT_SaveTracks.execute(tracks, "csv", prefix)
    assert not any(os.scandir(comfy_folders / "output"))


def test_one_channel_images_and_tiny_frames():
    grey = torch.rand(3, 24, 24, 1)
    marked = VDT_DrawMarkers.execute(grey, "5,5", "#ff0000", 2.0).result[0]
    assert marked.shape == (3, 24, 24, 3) and marked[0, 5, 5, 0] > 0.9 and marked[0, 5, 5, 1] < 0.1
    tracks = VDT_TrackRedMarkers.execute(marked, "5,5").result[0]
    assert tracks["track_path"].shape == (3, 1, 2)
    small = torch.rand(3, 15, 40, 3)
    with pytest.raises(ValueError, match="^images: .*farneback"):
        VDT_FlowTracker.execute(small, "5,5", "dis", 1.5)
    assert VDT_FlowTracker.execute(small, "5,5", "farneback", 1.5).result[0]["track_path"].shape == (3, 1, 2)


def test_tracks_must_fit_the_video():
    video = torch.zeros(4, 20, 30, 3)
    long = {"track_path": torch.zeros(9, 1, 2), "track_visibility": torch.ones(9, 1, dtype=torch.bool)}
    with pytest.raises(ValueError, match="^tracks: .*9 frames"):
        VDT_TracksToMask.execute(long, video, 2.0)
    # computed on 40x60 frames: a point at pixel (59, 39) lands on the video's (29, 19) corner pixel region
    big = {"track_path": torch.tensor([[[59.0, 39.0]]]).repeat(4, 1, 1),
           "track_visibility": torch.ones(4, 1, dtype=torch.bool), "frame_size": (40, 60)}
    mask = VDT_TracksToMask.execute(big, video, 1.0).result[0]
    assert mask[0, 19, 29] > 0.5 and mask[0, :15, :25].max() == 0
    marked = VDT_DrawMarkers.execute(video, "", "#ff0000", 1.0, "query frame", big).result[0]
    assert marked[0, 19, 29, 0] > 0.5


def test_memory_refused_up_front():
    tracks = {"track_path": torch.zeros(2, 5000, 2), "track_visibility": torch.ones(2, 5000, dtype=torch.bool)}
    with pytest.raises(ValueError, match="^num_samples: .*GiB"):
        VDT_TracksToATI.execute(tracks, 10000)
    with pytest.raises(ValueError, match="^frames: .*GiB"):
        VDT_SyntheticClip.execute(0, 8, 4096, 4096, 3, 8, 8, "moving_objects")
