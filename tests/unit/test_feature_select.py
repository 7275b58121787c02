"""Head / RoPE-band selection (indices checked by hand), spatial low-pass, and model-free patch features."""
import math

import pytest
import torch

from vdtrack.kernels.feature_select import (head_positions, parse_head_ids, parse_heads, rope_band_indices,
                                            select_heads_frequencies, spatial_lowpass)
from vdtrack.kernels.pixel_features import patch_features
from vdtrack.references.pixel_features import patch_features_ref


def test_contiguous_bands_by_hand():
    # groups T=[0,4), H=[4,10), W=[10,16); keep [int(D*.25), D) of each: T 1..3, H 4+1..9, W 10+1..15
    idx = rope_band_indices(16, (4, 6, 6), (0.25, 1.0), "contiguous")
    assert idx.tolist() == [1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15]
    # upper bound: (0, 0.5) keeps T 0..1, H 4..6, W 10..12
    assert rope_band_indices(16, (4, 6, 6), (0.0, 0.5)).tolist() == [0, 1, 4, 5, 6, 10, 11, 12]


def test_interleaved_bands_by_hand():
    # pairs (2i, 2i+1) share frequency i; F = (2, 3, 3); keep frequencies [int(F*.34), F): T {0,1}, H {1,2}, W {1,2}
    idx = rope_band_indices(16, (4, 6, 6), (0.34, 1.0), "interleaved")
    assert idx.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15]
    # Wan head_dim 128, HeFT's (0.15, 1): 22 - 3 + 2 * (21 - 3) pairs = 55 pairs
    assert rope_band_indices(128, (44, 42, 42), (0.15, 1.0), "interleaved").numel() == 110


def test_half_split_bands_by_hand():
    # halves of 8: T freqs ch 0..1, H 2..4, W 5..7 (and +8); keep [int(F*.5), F): T {1}, H {1,2}, W {1,2}
    idx = rope_band_indices(16, (4, 6, 6), (0.5, 1.0), "half_split")
    assert idx.tolist() == [1, 3, 4, 6, 7, 9, 11, 12, 14, 15]


def test_select_heads_picks_exact_channels():
    t, nh, c, h, w = 2, 4, 16, 3, 5
    # value = 100 * head + channel, so every output channel says where it came from
    f = (100 * torch.arange(nh)[:, None] + torch.arange(c)[None]).float()[None, :, :, None, None]
    f = f.expand(t, nh, c, h, w).contiguous()
    one = select_heads_frequencies(f, "2")
    assert one.shape == (t, c, h, w) and one[0, :, 0, 0].tolist() == [200 + i for i in range(c)]
    two = select_heads_frequencies(f, "3,1", (4, 6, 6), (0.25, 1.0))
    keep = [1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15]
    assert two[1, :, 2, 4].tolist() == [300 + i for i in keep] + [100 + i for i in keep]
    every = select_heads_frequencies(f, "all")
    assert every.shape == (t, nh * c, h, w) and every[0, c, 0, 0] == 100
    assert parse_heads(-1, 3) == [0, 1, 2] and parse_heads("1, 2", 3) == [1, 2]
    # one parser of head-id text for the extraction and the selection nodes: empty = every head, ids in order
    assert parse_head_ids("") is None and parse_head_ids(" all ") is None and parse_head_ids("-1") is None
    assert parse_head_ids("6; 1 3") == [6, 1, 3] and parse_head_ids(4) == [4]
    for bad in ("1,x", "1,1", "1,-2", ",", 1.5):
        with pytest.raises(ValueError, match="^heads: "):
            parse_head_ids(bad)


def test_selection_errors():
    with pytest.raises(ValueError, match="rope_dims"):
        rope_band_indices(16, (4, 6, 5), (0.0, 1.0))
    with pytest.raises(ValueError, match="rope_dims"):
        rope_band_indices(16, (5, 5, 6), (0.0, 1.0), "interleaved")
    with pytest.raises(ValueError, match="layout"):
        rope_band_indices(16, (4, 6, 6), (0.0, 1.0), "zigzag")
    with pytest.raises(ValueError, match="freq_range"):
        rope_band_indices(16, (4, 6, 6), (0.6, 0.5))
    with pytest.raises(ValueError, match="keeps no channel"):
        rope_band_indices(16, (4, 6, 6), (0.9, 0.95))
    f = torch.zeros(2, 3, 16, 2, 2)
    with pytest.raises(ValueError, match="heads"):
        select_heads_frequencies(f, "3")
    with pytest.raises(ValueError, match="heads"):
        select_heads_frequencies(f, "one")
    with pytest.raises(ValueError, match="features"):
        select_heads_frequencies(f[:, 0], "0")
    with pytest.raises(ValueError, match="spatial_lowpass"):
        spatial_lowpass(f[:, 0], 0.0)


def test_spatial_lowpass():
    h, w = 8, 12
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    low = torch.cos(2 * math.pi * xx / w) + 0.5 * torch.cos(2 * math.pi * yy / h)     # 1 cycle per map
    checker = (-1.0) ** (xx + yy)                                                     # Nyquist in x and y
    x = (2.0 + low + checker).double()[None, None]
    out = spatial_lowpass(x, 0.5)
    assert torch.allclose(out[0, 0], (2.0 + low).double(), atol=1e-9)
    assert spatial_lowpass(x, 1.0) is x
    only_dc = spatial_lowpass(x, 0.01)
    assert torch.allclose(only_dc, torch.full_like(x, 2.0), atol=1e-9)


@pytest.mark.parametrize("dim,coords", [(0, 0.0), (16, 0.5)])
def test_patch_features_equal_reference(dim, coords):
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 18, 21, 3, generator=g)
    out = patch_features(frames, patch=4, dim=dim, seed=7, coords=coords)
    ref = patch_features_ref(frames, patch=4, dim=dim, seed=7, coords=coords)
    assert out["features"].shape == ref.shape == (3, (dim or 48) + (2 if coords else 0), 4, 5)
    assert torch.allclose(out["features"], ref, atol=1e-5)
    assert out["stride"] == (4, 4) and out["frame_size"] == (18, 21)
    again = patch_features(frames, patch=4, dim=dim, seed=7, coords=coords)["features"]
    assert torch.equal(again, out["features"])


def test_patch_features_by_hand_and_errors():
    frames = torch.zeros(1, 4, 4, 3)
    frames[0, 2:, :2, 0] = 1.0                                       # red bottom-left 2x2 patch
    f = patch_features(frames, patch=2, center=False)["features"]
    assert f.shape == (1, 12, 2, 2)
    assert f[0, :4, 1, 0].tolist() == [1.0] * 4 and f[0, 4:, 1, 0].abs().sum() == 0 and f[0, :, 0, 0].abs().sum() == 0
    with pytest.raises(ValueError, match="patch_size"):
        patch_features(frames, patch=8)
    with pytest.raises(ValueError, match="images"):
        patch_features(torch.zeros(4, 4, 3))


def test_head_positions_map_original_ids():
    # features holding the model's heads 3, 7 and 1 (in that order along the heads axis)
    assert head_positions("7", [3, 7, 1]) == [1]
    assert head_positions("1,3", [3, 7, 1]) == [2, 0]
    assert head_positions("all", [3, 7, 1]) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"heads: \[0\] not among"):
        head_positions("0", [3, 7, 1])
    with pytest.raises(ValueError, match="repeated"):
        head_positions("3,3", [3, 7, 1])
