"""Head search: on per-head features with one informative head (and band) among noise heads, the search ranks
that head (and that frequency cut) first; table text / CSV; HeFT presets."""
import csv
import io
import math

import pytest
import torch

from vdtrack.kernels.head_search import parse_float_list, search_heads, table_csv, table_text
from vdtrack.kernels.heft_presets import PRESETS, get_preset, presets_markdown

VELOCITY = (3.7, -2.2)


def moving_field(frames, c, h, w, stride, seed):
    """[T,c,h,w]: cells sample a smooth random field moving by VELOCITY px per frame."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(c, 2, generator=g) * (2 * math.pi / 90)
    phase = torch.rand(c, generator=g) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.arange(h) * stride + (stride - 1) / 2, torch.arange(w) * stride + (stride - 1) / 2,
                            indexing="ij")
    return torch.stack([torch.cos(k[:, 0, None, None] * (xs - VELOCITY[0] * t) + k[:, 1, None, None] *
                                  (ys - VELOCITY[1] * t) + phase[:, None, None]) for t in range(frames)])


def planted(frames=4, heads=4, c=16, h=6, w=8, stride=16, good_head=2, seed=0):
    """Per-head features: every head is fresh noise per frame except `good_head`, whose channels kept by a 0.5
    frequency cut (rope dims 4,6,6, contiguous) carry the moving field and whose dropped channels are strong
    noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, heads, c, h, w, generator=g)
    keep = torch.tensor([2, 3, 7, 8, 9, 13, 14, 15])
    x[:, good_head] = 3 * torch.randn(frames, c, h, w, generator=g)
    x[:, good_head, keep] = moving_field(frames, len(keep), h, w, stride, seed + 1)
    return x


def ground_truth(frames, n=10, seed=5):
    g = torch.Generator().manual_seed(seed)
    q = torch.stack([torch.zeros(n), 30 + 60 * torch.rand(n, generator=g), 30 + 30 * torch.rand(n, generator=g)], 1)
    path = q[None, :, 1:] + torch.tensor(VELOCITY) * torch.arange(float(frames))[:, None, None]
    return q, path, torch.ones(frames, n, dtype=torch.bool)


def test_search_finds_the_planted_head_and_band():
    feats = {10: planted(frames=3, good_head=3, seed=1), 12: planted(frames=3, good_head=2, seed=2)}
    q, path, vis = ground_truth(3, n=6)
    calls = []
    rows = search_heads(feats, 16, (96, 128), path, vis, q, freq_lows=[0.0, 0.5], rope_dims=(4, 6, 6),
                        head_ids={12: [0, 5, 9, 11]}, heft_kwargs=dict(fb_mode="no_feedback"),
                        progress=lambda: calls.append(1))
    assert len(rows) == len(calls) == 2 * 4 * 2
    best = rows[0]
    # both layers plant a head; the search must pick one of the planted (head, cut) pairs and the model's head id
    assert (best["layer"], best["head"], best["freq_low"]) in {(10, 3, 0.5), (12, 9, 0.5)}
    second = rows[1]
    assert (second["layer"], second["head"], second["freq_low"]) in {(10, 3, 0.5), (12, 9, 0.5)}
    assert best["average_pts_within_thresh"] > 0.5
    noise = [r for r in rows if (r["layer"], r["head"]) not in {(10, 3), (12, 9)}]
    assert max(r["average_jaccard"] for r in noise) < rows[1]["average_jaccard"]


def test_table_text_and_csv():
    rows = [{"layer": 18, "head": 1, "freq_low": 0.15, "average_jaccard": 0.5, "average_pts_within_thresh": 0.6,
             "occlusion_accuracy": float("nan")}]
    text = table_text(rows)
    assert "18" in text and "50.0" in text and "60.0" in text
    back = list(csv.DictReader(io.StringIO(table_csv(rows))))
    assert back[0]["layer"] == "18" and float(back[0]["average_jaccard"]) == 0.5


def test_bad_inputs():
    q, path, vis = ground_truth(4)
    with pytest.raises(ValueError, match="rank_by"):
        search_heads({1: planted()}, 16, (96, 128), path, vis, q, rank_by="speed")
    with pytest.raises(ValueError, match="rope_dims"):
        search_heads({1: planted()}, 16, (96, 128), path, vis, q, freq_lows=[0.1])
    with pytest.raises(ValueError, match="features"):
        search_heads({1: planted()[:, 0]}, 16, (96, 128), path, vis, q)
    with pytest.raises(ValueError, match="freq_cuts"):
        parse_float_list("freq_cuts", "0, 1.5")
    assert parse_float_list("freq_cuts", "0.15, 0 ,0.1") == [0.0, 0.1, 0.15]


def test_presets_match_the_published_configs():
    # values of the official configs/{wan,cosmos,cogvideox}_config.sh, typed from them by hand
    wan = get_preset("Wan2.1-1.3B")
    assert (wan.layer, wan.heads, wan.freq_low, wan.argmax_radius, wan.search_radius, wan.vis_threshold,
            wan.ema_alpha) == (18, "1", 0.15, 17, 42, 18, 0.05)
    cosmos = get_preset("Cosmos-Predict2-2B")
    assert (cosmos.layer, cosmos.heads, cosmos.freq_low, cosmos.argmax_radius, cosmos.search_radius,
            cosmos.vis_threshold, cosmos.ema_alpha, cosmos.rope_dims) == (18, "6", 0.1, 18, 42, 26, 0.05, (44, 42, 42))
    assert abs(cosmos.noise_level - 1 / 35) < 1e-12          # only the last of 35 steps
    cog = get_preset("CogVideoX-2B")
    assert (cog.layer, cog.heads, cog.freq_low, cog.argmax_radius, cog.search_radius, cog.vis_threshold,
            cog.ema_alpha, cog.rope_dims) == (15, "19", 0.0, 13, 43, 27, 0.1, (16, 24, 24))
    assert set(PRESETS) == {"Wan2.1-1.3B", "Wan2.1-14B", "Cosmos-Predict2-2B", "CogVideoX-2B", "CogVideoX-5B"}
    assert not PRESETS["Wan2.1-14B"].published and not PRESETS["CogVideoX-5B"].published
    assert all(p.window == 25 and sum(p.rope_dims) in (128, 64) for p in PRESETS.values())
    with pytest.raises(ValueError, match="preset"):
        get_preset("Wan9")
    assert presets_markdown().count("\n") == 2 + len(PRESETS)


def test_preset_node_outputs_and_docs_table():
    from vdtrack.nodes.tracking import VDT_HeFTPreset
    out = VDT_HeFTPreset.execute("Cosmos-Predict2-2B").result
    assert out[:5] == (18, "6", "44,42,42", 0.1, 1.0)
    assert out[6:11] == (25, 18.0, 42.0, 26.0, 0.05) and "configs/cosmos_config.sh" in out[11]
    with pytest.raises(ValueError, match="preset"):
        VDT_HeFTPreset.execute("nope")
    # the docs carry the table the code holds
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "presets.md"), encoding="utf-8") as fh:
        assert presets_markdown() in fh.read()
