"""The pack's types (kernels/datatypes.py): TRACKS, VDT_FEATURES, points and the coordinate convention."""
import numpy as np
import pytest
import torch

from vdtrack.kernels.datatypes import (FEATURE_META_KEYS, cell_to_pixel, check_feature_tensor, check_features,
                                       check_points, check_tracks, inside_frame, make_feature_meta, make_features,
                                       make_points, make_tracks, pixel_to_cell)


def test_inside_frame_border_included_torch_and_numpy():
    # a 4x6 (H x W) frame spans x in [-0.5, 5.5], y in [-0.5, 3.5]
    xy = [[-0.5, -0.5], [5.5, 3.5], [5.51, 0.0], [0.0, -0.51], [2.0, 2.0]]
    expected = [True, True, False, False, True]
    assert inside_frame(torch.tensor(xy), (4, 6)).tolist() == expected
    assert inside_frame(np.array(xy), (4, 6)).tolist() == expected


def test_pixel_cell_round_trip_and_centres():
    # stride (sy, sx) = (4, 8): cell (i=0, j=0) is centred on pixel (x=3.5, y=1.5)
    assert pixel_to_cell(torch.tensor([3.5, 1.5]), (4, 8)).tolist() == [0.0, 0.0]
    assert cell_to_pixel(torch.tensor([1.0, 2.0]), (4, 8)).tolist() == [11.5, 9.5]
    p = torch.tensor([[-0.5, -0.5], [10.25, 7.0]])
    assert torch.allclose(cell_to_pixel(pixel_to_cell(p, 6), 6), p)
    with pytest.raises(ValueError, match="stride"):
        pixel_to_cell(p, (0, 4))


def test_points_make_and_check():
    q = make_points([[1.0, 2.0], [3.0, 4.0]], t=torch.tensor([0.0, 2.0]))
    assert q.tolist() == [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]
    assert check_points("points", q, (5, 5), frames=3) is not None
    with pytest.raises(ValueError, match="points: point 1 .* outside the 3x5 frame"):
        check_points("points", q, (5, 3))
    with pytest.raises(ValueError, match="query frame 2"):
        check_points("points", q, (5, 5), frames=2)


def test_tracks_accept_core_per_frame_visibility():
    # core's WanMoveTracksFromCoords with a track mask: visibility [T,1], one flag per frame for every track
    path = torch.zeros(3, 4, 2)
    vis = torch.tensor([[True], [False], [True]])
    p, v = check_tracks("tracks", {"track_path": path, "track_visibility": vis})
    assert v.shape == (3, 4) and v[1].tolist() == [False] * 4 and bool(v[0].all())
    p, v = check_tracks("tracks", {"track_path": path[None], "track_visibility": vis[None]})   # batch axis
    assert p.shape == (3, 4, 2) and v.shape == (3, 4)
    with pytest.raises(ValueError, match="tracks: track_visibility"):
        check_tracks("tracks", {"track_path": path, "track_visibility": torch.ones(3, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="pred: tracks have 3 frames but the video has 5"):
        check_tracks("pred", {"track_path": path}, frames=5)


def test_make_tracks_keys_and_types():
    t = make_tracks(torch.zeros(2, 3, 2, dtype=torch.float64), torch.ones(2, 3), query_points=torch.zeros(3, 3),
                    frame_size=torch.tensor([8, 9]), confidence=torch.ones(2, 3), fb_error=None)
    assert set(t) == {"track_path", "track_visibility", "query_points", "frame_size", "confidence"}
    assert t["track_path"].dtype == torch.float32 and t["track_visibility"].dtype == torch.bool
    assert t["frame_size"] == (8, 9)
    with pytest.raises(ValueError, match="query_points"):
        make_tracks(torch.zeros(2, 3, 2), torch.ones(2, 3), query_points=torch.zeros(2, 3))


def test_features_one_meta_schema_and_head_ids():
    x = torch.randn(2, 3, 4, 5, 6)
    meta = make_feature_meta("tiny", "k", family="wan", layer=1, heads=[2, 5, 7], noise_level=0.1, seed=3)
    f = make_features(x, (8, 8), (40, 48), meta)
    assert set(FEATURE_META_KEYS) <= set(f["meta"]) and f["meta"]["seed"] == 3
    assert f["stride"] == (8.0, 8.0) and f["frame_size"] == (40, 48)
    with pytest.raises(ValueError, match="meta: 2 head ids for 3 heads"):
        make_features(x, 8, (40, 48), dict(meta, heads=[0, 1]))
    # a hand-built dict from elsewhere: missing meta keys become None, per-head features get ids 0..n-1
    g = check_features("features", {"features": x, "stride": [8, 8], "frame_size": [40, 48]})
    assert g["meta"]["heads"] == [0, 1, 2] and g["meta"]["backbone"] is None
    assert check_features("features", f)["meta"]["heads"] == [2, 5, 7]


def test_feature_heads_policies():
    x = torch.randn(2, 3, 4, 5, 6)
    feats = {"features": x, "stride": (8, 8), "frame_size": (40, 48)}
    with pytest.raises(ValueError, match="f: has a heads axis"):
        check_features("f", feats, heads="forbid")
    with pytest.raises(ValueError, match="f: expected per-head features"):
        check_features("f", dict(feats, features=x[:, 0]), heads="require")
    flat = check_features("f", feats, heads="flatten")["features"]
    assert flat.shape == (2, 12, 5, 6)
    # per-head L2 normalisation: each head's block of channels has unit norm at every cell
    assert torch.allclose(flat[:, 4:8].norm(dim=1), torch.ones(2, 5, 6), atol=1e-5)
    with pytest.raises(ValueError, match="f: contains NaN"):
        check_feature_tensor("f", torch.full((1, 1, 1, 1), float("nan")))
    with pytest.raises(ValueError, match="floating point"):
        check_feature_tensor("f", torch.ones(1, 1, 1, 1, dtype=torch.long))
    assert check_feature_tensor("f", torch.ones(1, 1, 1, 1, dtype=torch.long), cast_float=True).dtype == torch.float32
    with pytest.raises(ValueError, match="f: needs 'stride'"):
        check_features("f", {"features": x})
