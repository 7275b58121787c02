"""Temporal windows, latent-time -> frame mapping, mask pooling; windowed features vs direct runs."""
from __future__ import annotations

import pytest
import torch

from vdtrack.backbones import windows as Wn
from vdtrack.backbones.comfy_wan import ComfyWanBackbone
from vdtrack.backbones.protocol import FeatureSpec

from .conftest import synthetic_clip


@pytest.mark.parametrize("T,window,overlap", [(15, 5, 2), (100, 81, 8), (50, 25, 0), (7, 9, 0), (33, 13, 4)])
def test_plan_covers_each_frame_once(T, window, overlap):
    plan = Wn.plan_windows(T, window, overlap, quantum=4)
    kept = torch.zeros(T, dtype=torch.long)
    for w in plan:
        assert (w.length - 1) % 4 == 0
        assert w.start <= w.keep_start < w.keep_stop <= min(w.stop, T)
        kept[w.keep_start:w.keep_stop] += 1
    assert bool((kept == 1).all())
    if T > Wn.quantize_window(window, 4):
        assert plan[-1].stop == T and all(w.stop - w.start == w.length for w in plan)


def test_plan_hand_example_and_borrowing():
    # 15 frames, window 5, overlap 2: starts 0, 3, 6, 9 and a borrowed final window at 10
    plan = Wn.plan_windows(15, 5, 2, quantum=4)
    assert [w.start for w in plan] == [0, 3, 6, 9, 10]
    assert [(w.keep_start, w.keep_stop) for w in plan] == [(0, 4), (4, 7), (7, 10), (10, 13), (13, 15)]
    assert Wn.quantize_window(24, 4) == 21 and Wn.quantize_up(10, 4) == 13
    with pytest.raises(ValueError, match="overlap"):
        Wn.plan_windows(20, 5, 5, quantum=4)


def test_latent_to_frame_weights_hand_values():
    w = Wn.latent_to_frame_weights(9, 3, 4)           # centres 0, 2.5, 6.5
    assert torch.allclose(w[0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(w[1], torch.tensor([0.6, 0.4, 0]))
    assert torch.allclose(w[4], torch.tensor([0.0, 0.625, 0.375]))
    assert torch.allclose(w[8], torch.tensor([0.0, 0, 1]))
    assert torch.allclose(w.sum(1), torch.ones(9))
    x = torch.arange(3.0)[:, None] * torch.tensor([1.0, 2.0])
    y = Wn.latent_time_to_frames(x, 9, 4)
    assert y.shape == (9, 2) and y[1, 1].item() == pytest.approx(0.8)


def test_mask_to_latent_grid_max_pools_time_groups():
    m = torch.zeros(9, 16, 16)
    m[3, 9, 1] = 1.0            # frame 3 -> latent 1 (frames 1..4), cell (1, 0)
    m[8, 0, 15] = 0.5           # frame 8 -> latent 2 (frames 5..8), cell (0, 1)
    g = Wn.mask_to_latent_grid(m, 3, 4, 8)
    assert g.shape == (1, 1, 3, 2, 2)
    exp = torch.zeros(3, 2, 2)
    exp[1, 1, 0] = 1.0
    exp[2, 0, 1] = 0.5
    assert torch.equal(g[0, 0], exp)


def test_windowed_features_equal_direct_runs_of_each_window(wan_t2v, wan_vae):
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    clip = synthetic_clip(15, 32, 32, seed=3)          # 3x the window of 5 frames
    spec = FeatureSpec([1], kinds=("k", "block"), window=5, overlap=2)
    ticks = []
    full = bb.features(clip, 0.3, spec, seed=11, progress=lambda: ticks.append(1))
    plan = Wn.plan_windows(15, 5, 2, quantum=4)
    assert len(ticks) == len(plan) and full["k1"]["meta"]["windows"] == len(plan)
    for w in plan:
        direct = bb.features(clip[w.start:w.stop], 0.3, FeatureSpec([1], kinds=("k", "block")), seed=11)
        for key in ("k1", "block1"):
            a = full[key]["features"][w.keep_start:w.keep_stop]
            b = direct[key]["features"][w.keep_start - w.start:w.keep_stop - w.start]
            assert torch.allclose(a, b, atol=1e-5)
    assert full["k1"]["features"].shape == (15, 2, 128, 2, 2)
