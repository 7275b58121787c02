"""Points parsing, ATI tracks JSON and track files (npz/json/csv)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vdtrack.kernels.tracks_io import (ati_json_to_tracks, load_tracks, parse_points, points_to_json,
                                       save_tracks, save_tracks_csv, save_tracks_json, save_tracks_npz,
                                       tracks_to_ati_json)

SIZE = (48, 64)   # H, W


@pytest.mark.parametrize("text", [
    '[{"x": 3, "y": 4}, {"x": 5.5, "y": 6, "t": 2}]',
    "[{'x': 3, 'y': 4}, {'x': 5.5, 'y': 6, 't': 2}]",          # Python-style quotes
    "[[3, 4], [5.5, 6, 2]]",
    "3,4\n5.5,6,2",
    "# header\n\n3, 4   # first\n  5.5 6 2\n",
])
def test_parse_points_formats(text):
    p = parse_points(text, frames=4, size=SIZE)
    assert p.dtype == torch.float32
    assert torch.equal(p, torch.tensor([[0.0, 3.0, 4.0], [2.0, 5.5, 6.0]]))


def test_parse_points_single_dict_and_null_t():
    assert parse_points('{"x": 1, "y": 2}', 1, SIZE).tolist() == [[0.0, 1.0, 2.0]]
    assert parse_points('[{"x": 1, "y": 2, "t": null}]', 1, SIZE).tolist() == [[0.0, 1.0, 2.0]]


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("   \n# only a comment\n", "no points"),
    ("[]", "no points"),
    ('[{"x": 1}]', "entry 0"),
    ('[{"x": 1, "y": 2}, {"x": "a", "y": 2}]', "entry 1"),
    ("[[1, 2, 3, 4]]", "entry 0"),
    ('[{"x": 1, "y": 2', "not valid JSON"),
    ("1,2\n3", "line 2"),
    ("1,2\nfoo,3", "line 2"),
    ("1,nan", "line 1"),
    ("100,2", "outside"),          # x beyond the 64 px width
    ("1,2,4", "query frame"),      # t outside 0..3
    ("1,2,1.5", "query frame"),    # t not an integer
    ("[true, false]", "entry 0"),
    ('"hello"', "line 1"),
    ('{"a": 1}', "entry 0"),
])
def test_parse_points_errors_name_the_input(text, fragment):
    with pytest.raises(ValueError) as e:
        parse_points(text, frames=4, size=SIZE)
    assert str(e.value).startswith("points")
    assert fragment in str(e.value)


def test_points_to_json_round_trip():
    p = torch.tensor([[0.0, 3.0, 4.25], [2.0, 5.5, 6.0]])
    text = points_to_json(p)
    assert json.loads(text) == [{"x": 3, "y": 4.25, "t": 0}, {"x": 5.5, "y": 6, "t": 2}]
    assert torch.equal(parse_points(text, 4, SIZE), p)


def _tracks(t=7, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    path = torch.rand(t, n, 2, generator=g) * 60
    vis = torch.rand(t, n, generator=g) > 0.3
    return path, vis


def test_ati_round_trip_121_frames_exact():
    path, _ = _tracks(t=121, n=3)
    vis = torch.ones(121, 3, dtype=torch.bool)
    text = tracks_to_ati_json(path, vis)
    data = json.loads(text)
    assert len(data) == 3 and all(len(tr) == 121 for tr in data)
    assert set(data[0][0]) == {"x", "y"}
    back, bvis = ati_json_to_tracks(text, 121)
    assert bvis.all()
    assert torch.allclose(back, path, atol=6e-4)   # values are written with 3 decimals


def test_ati_linear_motion_resamples_exactly():
    t = torch.arange(17, dtype=torch.float32)
    path = torch.stack([10 + 1.5 * t, 20 - 0.5 * t], -1)[:, None]      # [17,1,2]
    text = tracks_to_ati_json(path, torch.ones(17, 1, dtype=torch.bool))
    samples = json.loads(text)[0]
    assert samples[0] == {"x": 10, "y": 20} and samples[-1] == {"x": 34, "y": 12}
    assert samples[60] == {"x": 22, "y": 16}                        # halfway in time
    back, vis = ati_json_to_tracks(text, 17)
    assert torch.allclose(back, path, atol=1e-3) and vis.all()
    back33, _ = ati_json_to_tracks(text, 33)                        # other lengths: same line, finer in time
    assert torch.allclose(back33[::2], path, atol=1e-3)


def test_ati_invisible_frames_hold_last_visible():
    path = torch.tensor([[[1.0, 1.0]], [[2.0, 2.0]], [[9.0, 9.0]], [[4.0, 4.0]]])
    vis = torch.tensor([[False], [True], [False], [True]])
    data = json.loads(tracks_to_ati_json(path, vis, num_samples=4))[0]
    assert data == [{"x": 2, "y": 2}, {"x": 2, "y": 2}, {"x": 2, "y": 2}, {"x": 4, "y": 4}]


def test_ati_short_track_like_core_and_stretch():
    one = json.dumps([{"x": float(i), "y": 0.0} for i in range(61)])   # one track, 61 of 121 samples
    path, vis = ati_json_to_tracks(one, 121)
    assert path.shape == (121, 1, 2)
    assert vis[:61, 0].all() and not vis[61:, 0].any()                # core pads with invisible samples
    assert torch.allclose(path[:61, 0, 0], torch.arange(61.0))
    path_s, vis_s = ati_json_to_tracks(one, 121, stretch=True)
    assert vis_s.all() and torch.allclose(path_s[:, 0, 0], torch.arange(121.0) / 2, atol=1e-5)


def test_ati_accepts_kjnodes_coord_str_and_list_of_strings():
    coord = "[{'x': 5, 'y': 6}, {'x': 7, 'y': 8}]"
    path, vis = ati_json_to_tracks(coord, 3, stretch=True)
    assert torch.allclose(path[:, 0], torch.tensor([[5.0, 6.0], [6.0, 7.0], [7.0, 8.0]]))
    two = json.dumps([json.dumps([{"x": 1, "y": 1}] * 3), json.dumps([{"x": 2, "y": 2}] * 3)])
    p2, _ = ati_json_to_tracks(two, 3, stretch=True)
    assert p2.shape == (3, 2, 2)


@pytest.mark.parametrize("text", ["", "[]", "{", "[[1, 2]]", '[[{"x": 1}]]', "[[]]", '[{"x": "a", "y": 1}]'])
def test_ati_errors(text):
    with pytest.raises(ValueError, match="tracks"):
        ati_json_to_tracks(text, 5)


@pytest.mark.parametrize("writer, ext", [(save_tracks_npz, "npz"), (save_tracks_json, "json"),
                                         (save_tracks_csv, "csv")])
def test_file_round_trips_exactly(tmp_path, writer, ext):
    path, vis = _tracks()
    path[0, 0] = torch.tensor([1 / 3, 2 / 7])      # values that need full float32 precision
    query = torch.tensor([[0, 1.5, 2.5], [1, 3, 4], [2, 5, 6], [0, 7, 8], [6, 9.25, 10]])
    f = str(tmp_path / f"t.{ext}")
    writer(f, path, vis, query_points=query, frame_size=(48, 64))
    d = load_tracks(f)
    assert d["track_path"].dtype == torch.float32 and d["track_visibility"].dtype == torch.bool
    assert torch.equal(d["track_path"], path)
    assert torch.equal(d["track_visibility"], vis)
    assert torch.equal(d["query_points"], query)
    assert tuple(d["frame_size"]) == (48, 64)


def test_npz_is_tapvid_layout(tmp_path):
    path, vis = _tracks(t=4, n=3)
    query = torch.tensor([[0, 1.0, 2.0], [1, 3.0, 4.0], [2, 5.0, 6.0]])
    f = str(tmp_path / "t.npz")
    save_tracks_npz(f, path, vis, query_points=query, frame_size=(48, 64))
    z = np.load(f)
    assert z["tracks"].shape == (3, 4, 2) and z["tracks"].dtype == np.float32
    np.testing.assert_array_equal(z["tracks"][1, 2], path[2, 1].numpy())
    np.testing.assert_array_equal(z["occluded"], ~vis.numpy().T)
    np.testing.assert_array_equal(z["visibles"], vis.numpy().T)
    np.testing.assert_array_equal(z["query_points"][1], [1, 4.0, 3.0])   # (t, y, x)
    assert z["frame_size"].tolist() == [48, 64]


def test_csv_columns_and_without_extras(tmp_path):
    path, vis = _tracks(t=2, n=2)
    f = str(tmp_path / "t.csv")
    save_tracks_csv(f, path, vis)
    rows = [r for r in open(f).read().splitlines() if not r.startswith("#")]
    assert rows[0] == "frame,track,x,y,visible" and len(rows) == 5
    assert rows[2].split(",")[:2] == ["0", "1"]
    d = load_tracks(f)
    assert "query_points" not in d and "frame_size" not in d
    assert torch.equal(d["track_path"], path)


def test_save_tracks_by_extension_and_errors(tmp_path):
    path, vis = _tracks()
    tracks = {"track_path": path, "track_visibility": vis}
    for ext in ("npz", "json", "csv"):
        out = save_tracks(str(tmp_path / f"a.{ext}"), tracks)
        assert torch.equal(load_tracks(out)["track_path"], path)
    with pytest.raises(ValueError, match="format"):
        save_tracks(str(tmp_path / "a.txt"), tracks)
    with pytest.raises(ValueError, match="does not exist"):
        load_tracks(str(tmp_path / "missing.npz"))
    (tmp_path / "bad.json").write_text('[{"x": 1, "y": 2}]')
    with pytest.raises(ValueError, match="track_path"):
        load_tracks(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="query_points"):
        save_tracks_npz(str(tmp_path / "q.npz"), path, vis, query_points=torch.zeros(2, 3))


def test_track_sets_beyond_the_bound_are_refused_on_load_and_save(tmp_path):
    """A 1.2 MB npz unpacked to 2^27 positions (83 s and 4.5 GB to load and save, a 1.2 GB file): tracks are
    bounded by points x frames, refused with the counts and the file named; text formats by what loads back."""
    import io
    import zipfile
    from vdtrack.kernels.tracks_io import MAX_TEXT_POSITIONS, MAX_TRACK_POSITIONS

    shape = (MAX_TRACK_POSITIONS // 512 * 2, 512, 2)          # twice the bound, as uint8: 64 MiB of zeros
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(tmp_path / "big.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("tracks.npy", "w") as f:
            f.write(buf.getvalue())
            chunk = bytes(1 << 24)
            for _ in range(int(np.prod(shape)) >> 24):
                f.write(chunk)
    assert (tmp_path / "big.npz").stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=r"tracks file: big\.npz: .*more than a tracks file may hold"):
        load_tracks(str(tmp_path / "big.npz"))

    over = {"track_path": torch.zeros(1, MAX_TEXT_POSITIONS + 1, 2),
            "track_visibility": torch.ones(1, MAX_TEXT_POSITIONS + 1, dtype=torch.bool)}
    for name in ("big.csv", "big.json"):
        with pytest.raises(ValueError, match=rf"{name}: 1 frames x {MAX_TEXT_POSITIONS + 1:,} points"):
            save_tracks(str(tmp_path / name), over)
        assert not (tmp_path / name).exists()


def test_json_header_must_agree_with_the_data(tmp_path):
    doc = {"format": "vdtrack-tracks", "frames": 10 ** 12, "points": 10 ** 9, "track_path": [[[1.0, 2.0]]],
           "track_visibility": [[True]]}
    (tmp_path / "liar.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"liar\.json: the header says frames = 1,000,000,000,000 but "
                                         r"'track_path' holds 1"):
        load_tracks(str(tmp_path / "liar.json"))
    doc.update(frames=1, points=1)
    (tmp_path / "ok.json").write_text(json.dumps(doc))
    assert load_tracks(str(tmp_path / "ok.json"))["track_path"].shape == (1, 1, 2)
