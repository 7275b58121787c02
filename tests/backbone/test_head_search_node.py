"""VDT HeFT Head Search on the tiny Wan model: one feature pass for several layers, one table row per
(layer, head, band cut), CSV in the output folder, best setting out; errors name their input."""
from __future__ import annotations

import csv
import os

import folder_paths
import pytest
import torch

from vdtrack.nodes.tracking import VDT_HeFTHeadSearch, parse_layers

from .conftest import synthetic_clip

KW = dict(kind="k", noise_level=0.1, window=0, seed=0, freq_cuts="0, 0.5", rope_dims="44,42,42",
          layout="contiguous", argmax_radius=8.0, search_radius=20.0, vis_threshold=8.0, ema_alpha=0.05,
          heft_resolution="feature grid", fb_mode="no_feedback", rank_by="average_jaccard", max_feature_gib=1.0)


def rolled_tracks(frames, points):
    """synthetic_clip rolls its pattern by (t, 2t) px per frame: ground truth of points (x, y) at frame 0."""
    p = torch.tensor(points, dtype=torch.float32)
    path = p[None] + torch.tensor([2.0, 1.0]) * torch.arange(float(frames))[:, None, None]
    return {"track_path": path, "track_visibility": torch.ones(frames, len(points), dtype=torch.bool)}


def test_head_search_node(wan_t2v, wan_vae, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    clip = synthetic_clip(5, 32, 48)
    tracks = rolled_tracks(5, [(12.0, 10.0), (20.0, 14.0)])
    calls = []
    import vdtrack.backbones.comfy_wan as cw
    orig = cw.ComfyWanBackbone.features

    def counting(self, *a, **k):
        calls.append(a[2].layers)
        return orig(self, *a, **k)
    monkeypatch.setattr(cw.ComfyWanBackbone, "features", counting)
    out = VDT_HeFTHeadSearch.execute(clip, tracks, "0-1", model=wan_t2v, vae=wan_vae,
                                     filename_prefix="hs/test", **KW)
    text, layer, heads, cut = out.result
    assert calls == [[0, 1]]                       # one feature call captures both layers
    assert layer in (0, 1) and cut in (0.0, 0.5) and heads.isdigit()
    files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".csv")]
    assert len(files) == 1
    rows = list(csv.DictReader(open(files[0], encoding="utf-8")))
    n_heads = wan_t2v.model.diffusion_model.num_heads
    assert len(rows) == 2 * n_heads * 2
    assert (int(rows[0]["layer"]), rows[0]["head"], float(rows[0]["freq_low"])) == (layer, heads, cut)
    assert "best: layer" in text and "saved:" in text


def test_head_search_validation(wan_t2v, wan_vae, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    clip = synthetic_clip(5, 32, 48)
    tracks = rolled_tracks(5, [(12.0, 10.0)])
    with pytest.raises(ValueError, match="layers"):
        VDT_HeFTHeadSearch.execute(clip, tracks, "0-40", model=wan_t2v, vae=wan_vae, filename_prefix="hs/x", **KW)
    with pytest.raises(ValueError, match="model"):
        VDT_HeFTHeadSearch.execute(clip, tracks, "0", filename_prefix="hs/x", **KW)
    with pytest.raises(ValueError, match="tracks"):
        VDT_HeFTHeadSearch.execute(clip, rolled_tracks(4, [(1.0, 1.0)]), "0", model=wan_t2v, vae=wan_vae,
                                   filename_prefix="hs/x", **KW)
    with pytest.raises(ValueError, match="layers"):
        VDT_HeFTHeadSearch.execute(clip, tracks, "0-1", model=wan_t2v, vae=wan_vae, filename_prefix="hs/x",
                                   **{**KW, "max_feature_gib": 1e-6})
    assert parse_layers("3, 1-2", 8) == [1, 2, 3]
