"""PCK@alpha on a hand-computed case (JHMDB protocol, docs/methods.md §9.3)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vdtrack.kernels.metrics_pck import pck


def hand_case():
    # 3 frames, 3 joints.
    # frame 0: excluded (predictions there are garbage on purpose).
    # frame 1: GT (0,0), (30,0), (0,40), all visible -> box 30x40, diag 50, normaliser 0.6*50 = 30.
    #   alpha 0.1 -> 3 px, alpha 0.2 -> 6 px.
    #   joint 0 pred (2,0): dist 2 -> correct at both; joint 1 pred (30,5): dist 5 -> only at 0.2;
    #   joint 2 pred (-1,-1): missing -> wrong.
    # frame 2: GT (10,10), (20,10) visible, joint 2 invisible -> box 10x0, normaliser 6 -> 0.6 / 1.2 px.
    #   joint 0 exact -> correct; joint 1 pred (21,10): dist 1 -> only at 0.2; joint 2 not counted.
    # per joint @0.1: j0 2/2, j1 0/2, j2 0/1 -> mean 1/3; @0.2: j0 2/2, j1 2/2, j2 0/1 -> mean 2/3.
    gt = np.array([[[0, 0], [30, 0], [0, 40]],
                   [[0, 0], [30, 0], [0, 40]],
                   [[10, 10], [20, 10], [99, 99]]], float)
    vis = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)
    pred = np.array([[[500, 500], [500, 500], [500, 500]],
                     [[2, 0], [30, 5], [-1, -1]],
                     [[10, 10], [21, 10], [99, 99]]], float)
    return pred, gt, vis


def test_pck_hand_case():
    pred, gt, vis = hand_case()
    out = pck(pred, gt, vis)
    assert out["pck@0.1"] == pytest.approx(1 / 3)
    assert out["pck@0.2"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(out["per_joint"][0.1], [1, 0, 0])
    np.testing.assert_allclose(out["per_joint"][0.2], [1, 1, 0])
    assert out["num_instances"] == 5
    np.testing.assert_allclose(out["normaliser"][1:], [30.0, 6.0])
    # torch inputs give the same answer
    assert pck(torch.tensor(pred), torch.tensor(gt), torch.tensor(vis))["pck@0.2"] == pytest.approx(2 / 3)


def test_pck_frame_zero_and_threshold_inclusive():
    pred, gt, vis = hand_case()
    # including frame 0 (all 3 joints wrong there): @0.2 per joint j0 2/3, j1 2/3, j2 0/2 -> 4/9
    assert pck(pred, gt, vis, skip_first=False)["pck@0.2"] == pytest.approx(4 / 9)
    # dist exactly alpha * normaliser is correct (<=): 0.25 * 30 = 7.5
    p = gt.copy()
    p[1, 0] = [7.5, 0.0]
    out = pck(p, gt, vis, alphas=(0.25,))
    assert out["per_joint"][0.25][0] == 1.0


def test_pck_joint_never_counted_is_nan_and_validation():
    pred, gt, vis = hand_case()
    vis2 = vis.copy()
    vis2[1:, 2] = False
    out = pck(pred, gt, vis2)
    assert math.isnan(out["per_joint"][0.1][2])
    # joint 2 no longer counts and no longer widens frame 1's box: box 30x0, normaliser 18.
    # @0.1 (1.8 px): j0 frame 1 dist 2 wrong, frame 2 right -> 1/2; j1 0/2 -> mean over j0, j1 = 0.25.
    # @0.2 (3.6 px in frame 1, 1.2 in frame 2): j0 2/2; j1 frame 1 dist 5 wrong, frame 2 right -> 1/2 -> 0.75.
    assert out["pck@0.1"] == pytest.approx(0.25)
    assert out["pck@0.2"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="predicted joints"):
        pck(pred[:, :2], gt, vis)
    with pytest.raises(ValueError, match="ground-truth visibility"):
        pck(pred, gt, vis[:, :2])
