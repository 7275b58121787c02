"""Feature and tracking nodes called directly (execute): a coloured square moving over a textured video."""
import pytest
import torch

from vdtrack.nodes.features import VDT_FuseFeatures, VDT_PixelFeatures, VDT_SelectHeadsFrequencies
from vdtrack.nodes.tracking import VDT_TrackDiffTrack, VDT_TrackHeFT, VDT_TrackNearestNeighbour, VDT_TrackPoints

P = 4                                                   # patch size = stride
MOVES = [(2, 2), (3, 2), (4, 3), (5, 3), (6, 4)]        # cell (x, y) of the square per frame


def square_video():
    g = torch.Generator().manual_seed(0)
    bg = torch.rand(1, 32, 40, 3, generator=g) * 0.5
    video = bg.repeat(len(MOVES), 1, 1, 1)
    for t, (x, y) in enumerate(MOVES):
        video[t, y * P:(y + 1) * P, x * P:(x + 1) * P] = torch.tensor([1.0, 0.0, 0.0])
    return video


def centre(x, y):
    return (x + 0.5) * P - 0.5, (y + 0.5) * P - 0.5


TRACK_DEFAULTS = dict(nn_threshold=0.6, nn_refine_radius=0, nn_refine_temperature=0.05, argmax_radius=3.0,
                      search_radius=12.0, vis_threshold=4.0, ema_alpha=0.05, temperature=0.02,
                      heft_resolution="feature grid", fb_mode="sequential", difftrack_scale="heads")


def run_track(features, points, method, **kw):
    args = dict(TRACK_DEFAULTS, **kw)
    return VDT_TrackPoints.execute(features, points, method, **args).result[0]


def pixel_features():
    return VDT_PixelFeatures.execute(square_video(), P, 0, 0, True, 0.0).result[0]


def test_pixel_features_node():
    f = pixel_features()
    assert f["features"].shape == (5, 3 * P * P, 8, 10) and f["stride"] == (4, 4) and f["frame_size"] == (32, 40)
    g = VDT_PixelFeatures.execute(square_video(), P, 16, 3, True, 0.0).result[0]
    assert g["features"].shape[1] == 16


@pytest.mark.parametrize("method", ["nearest_neighbour", "heft_soft_argmax", "difftrack"])
def test_track_points_follows_square(method):
    f = pixel_features()
    x0, y0 = centre(*MOVES[0])
    tracks = run_track(f, f'[{{"x": {x0}, "y": {y0}}}]', method)
    expect = torch.tensor([centre(x, y) for x, y in MOVES])
    assert tracks["track_path"].shape == (5, 1, 2) and tracks["track_path"].dtype == torch.float32
    assert torch.allclose(tracks["track_path"][:, 0], expect, atol=1e-3)
    assert tracks["track_visibility"].all()
    assert tracks["frame_size"] == (32, 40) and tracks["query_points"].tolist() == [[0.0, x0, y0]]


def test_track_points_line_format_and_query_frame():
    f = pixel_features()
    x2, y2 = centre(*MOVES[2])
    tracks = run_track(f, f"{x2},{y2},2\n", "heft_soft_argmax", fb_mode="batched", heft_resolution="pixels")
    expect = torch.tensor([centre(x, y) for x, y in MOVES])
    # pixel resolution with an even stride: the cell centre falls between pixels, so sub-pixel accuracy only
    assert torch.allclose(tracks["track_path"][:, 0], expect, atol=0.5)
    assert tracks["track_visibility"].all() and tracks["query_points"][0, 0] == 2


def test_select_fuse_nodes():
    t, nh, c, h, w = 3, 2, 16, 4, 5
    x = (100 * torch.arange(nh)[:, None] + torch.arange(c)[None]).float()[None, :, :, None, None]
    feats = {"features": x.expand(t, nh, c, h, w).contiguous(), "stride": (8, 8), "frame_size": (32, 40), "meta": {}}
    out = VDT_SelectHeadsFrequencies.execute(feats, "1", "4,6,6", 0.25, 1.0, "contiguous", 1.0).result[0]
    assert out["features"][0, :, 0, 0].tolist() == [100 + i for i in [1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15]]
    assert out["stride"] == (8, 8) and out["meta"]["heads"] == [1]
    full = VDT_SelectHeadsFrequencies.execute(feats, "all", "44,42,42", 0.0, 1.0, "interleaved", 0.5).result[0]
    assert full["features"].shape == (t, nh * c, h, w)      # full band range: any head size is fine
    with pytest.raises(ValueError, match="rope_dims"):
        VDT_SelectHeadsFrequencies.execute(feats, "0", "44,42,42", 0.1, 1.0, "contiguous", 1.0)
    with pytest.raises(ValueError, match="features"):
        VDT_SelectHeadsFrequencies.execute(out, "0", "4,6,6", 0.1, 1.0, "contiguous", 1.0)
    pix = pixel_features()
    pix = dict(pix, features=pix["features"][:t])
    fused = VDT_FuseFeatures.execute(out, pix, 0.4).result[0]
    assert fused["features"].shape == (t, 13 + 48, h, w) and fused["stride"] == (8, 8)
    assert torch.allclose(fused["features"][:, :13].norm(dim=1), torch.full((t, h, w), 0.4))
    with pytest.raises(ValueError, match="features_b"):
        VDT_FuseFeatures.execute(out, pixel_features(), 0.4)


def test_track_points_bad_inputs():
    f = pixel_features()
    with pytest.raises(ValueError, match="points"):
        run_track(f, '[{"x": 100, "y": 5}]', "nearest_neighbour")
    with pytest.raises(ValueError, match="points"):
        run_track(f, "3,4,9", "nearest_neighbour")
    with pytest.raises(ValueError, match="features"):
        run_track({"stride": (4, 4)}, "3,4", "nearest_neighbour")
    per_head = dict(f, features=f["features"][:, None])
    with pytest.raises(ValueError, match="Select Heads"):
        run_track(per_head, "3,4", "heft_soft_argmax")
    with pytest.raises(ValueError, match="search_radius"):
        run_track(f, "3,4", "heft_soft_argmax", search_radius=1.0)
    with pytest.raises(ValueError, match="key_features"):
        VDT_TrackPoints.execute(f, "3,4", "difftrack", **TRACK_DEFAULTS,
                                key_features=dict(f, features=f["features"][:, :5]))


def test_node_schemas():
    from vdtrack.nodes import all_nodes
    from vdtrack.nodes.features import NODES as FEATURE_NODES
    from vdtrack.nodes.tracking import NODES as TRACKING_NODES
    ids = {n.define_schema().node_id for n in all_nodes()}
    for node in FEATURE_NODES + TRACKING_NODES:
        schema = node.GET_SCHEMA()
        assert schema.node_id in ids and schema.node_id.startswith("VDT_")
        assert schema.display_name.startswith("VDT ") and schema.category.startswith("vdtrack/")
        assert all(inp.tooltip for inp in schema.inputs), schema.node_id


@pytest.mark.parametrize("method", ["nearest_neighbour", "heft_soft_argmax", "difftrack"])
def test_per_method_nodes_match_the_deprecated_node(method):
    f = pixel_features()
    pts = '[{"x": 9.5, "y": 9.5}, {"x": 20, "y": 12, "t": 2}]'
    old = VDT_TrackPoints.execute(f, pts, method, **TRACK_DEFAULTS).result[0]
    d = TRACK_DEFAULTS
    if method == "nearest_neighbour":
        new = VDT_TrackNearestNeighbour.execute(f, pts, d["nn_threshold"], d["nn_refine_radius"],
                                                d["nn_refine_temperature"])
    elif method == "heft_soft_argmax":
        new = VDT_TrackHeFT.execute(f, pts, d["argmax_radius"], d["search_radius"], d["vis_threshold"],
                                    d["ema_alpha"], d["temperature"], d["heft_resolution"], d["fb_mode"])
    else:
        new = VDT_TrackDiffTrack.execute(f, pts, d["difftrack_scale"])
    new = new.result[0]
    assert set(new) == set(old)
    for k in set(new) - {"seconds"}:                      # seconds: each run's own wall-clock time
        assert (torch.equal(new[k], old[k]) if isinstance(new[k], torch.Tensor) else new[k] == old[k]), k


def test_parse_layers_checks_range_ends_before_expanding():
    """Issue 11: '0-100000000' was expanded into a list before the check (GBs, server stalled) and the error
    listed every bad value; now the ends are checked first and the message stays short."""
    import tracemalloc

    from vdtrack.nodes.tracking import parse_layers
    assert parse_layers("3, 1-2", 8) == [1, 2, 3]
    assert parse_layers("2-4;3-5, 7", 8) == [2, 3, 4, 5, 7]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="layers") as err:
            parse_layers("0-3000000", 40)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert peak < 1 << 20, peak                          # nothing the size of the range was built
    assert len(msg) < 200 and "2,999,961" in msg and "40, 41, 42" in msg, msg
    with pytest.raises(ValueError, match=r"layers: 2 value\(s\) outside 0\.\.7 \(-?8, 9\)|layers: 2 value"):
        parse_layers("6-9", 8)
    with pytest.raises(ValueError, match="layers") as err:
        parse_layers("x" * 100000, 8)
    assert len(str(err.value)) < 200
    with pytest.raises(ValueError, match="at most"):
        parse_layers("0-99", 100)


def test_pixel_features_refuses_beyond_the_memory_bound():
    """Issue 11: patch 1 with projection_dim 4096 on 4 frames of 256x256 tried to allocate 4.3 GB; refused up front
    with the estimate and the input to change. Ordinary settings still run, and the estimate covers the output."""
    from vdtrack.kernels.checks import MAX_WORK_BYTES
    from vdtrack.kernels.pixel_features import patch_features_bytes
    video = torch.rand(4, 256, 256, 3)
    with pytest.raises(ValueError, match=r"projection_dim: .*GiB.*projection_dim") as err:
        VDT_PixelFeatures.execute(video, 1, 4096, 0, True, 0.0)
    assert len(str(err.value)) < 300
    assert patch_features_bytes(16, (512, 512), 3, 1, 4096) > 60 * 2 ** 30
    small = square_video()
    out = VDT_PixelFeatures.execute(small, P, 16, 0, True, 0.5).result[0]["features"]
    need = patch_features_bytes(small.shape[0], small.shape[1:3], 3, P, 16, 0.5)
    assert out.numel() * 4 <= need < MAX_WORK_BYTES
