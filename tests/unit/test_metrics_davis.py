"""DAVIS J&F: hand-computed J, boundary maps, F degenerate cases, statistics and frame dropping."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from vdtrack.kernels.metrics_davis import (_dilate, bound_pixels, boundary_precision_recall, db_eval_iou,
                                           db_statistics, disk, evaluate_davis, f_measure, seg2bmap)


def square(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_identical_disjoint_empty_and_partial():
    a = square(10, 10, 2, 5, 2, 5)
    assert db_eval_iou(a, a) == 1.0
    assert db_eval_iou(a, square(10, 10, 6, 8, 6, 8)) == 0.0
    empty = np.zeros((10, 10), bool)
    assert db_eval_iou(empty, empty) == 1.0                 # empty union -> 1
    assert db_eval_iou(empty, a) == 0.0
    # pred 2x2 inside gt 2x3: |inter| = 4, |union| = 6
    assert db_eval_iou(square(10, 10, 0, 2, 0, 2), square(10, 10, 0, 2, 0, 3)) == pytest.approx(4 / 6)
    per_frame = db_eval_iou(np.stack([a, empty]), np.stack([a, a]))
    np.testing.assert_array_equal(per_frame, [1.0, 0.0])
    assert db_eval_iou(torch.tensor(a, dtype=torch.float32), torch.tensor(a)) == 1.0
    with pytest.raises(ValueError, match="predicted mask"):
        db_eval_iou(np.zeros((5, 5)), np.zeros((5, 6)))


def test_seg2bmap_hand_case():
    # A pixel is boundary when it differs from E, S or SE (outside neighbours ignored):
    # seg            boundary
    # 0 0 0 0        1 1 1 0     (0,0): SE is 1; (0,1),(0,2): S is 1; (0,3): last column, S = 0
    # 0 1 1 0        1 0 1 0     (1,0): E is 1; (1,2): E is 0
    # 0 1 1 0        1 1 1 0     (2,1): S is 0; (2,2): E is 0
    # 0 0 0 0        0 0 0 0     last row: only E counts, all equal
    seg = square(4, 4, 1, 3, 1, 3)
    expected = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def reference_bmap(seg):
    h, w = seg.shape
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (1, 0), (1, 1)):
                if i + di < h and j + dj < w and seg[i, j] != seg[i + di, j + dj]:
                    out[i, j] = True
    return out


def test_seg2bmap_matches_plain_loop():
    rng = np.random.default_rng(0)
    for _ in range(5):
        seg = rng.random((9, 13)) < 0.5
        np.testing.assert_array_equal(seg2bmap(seg), reference_bmap(seg))


def test_disk_and_dilation():
    # radius 2: dy^2 + dx^2 <= 4
    expected = np.array([[0, 0, 1, 0, 0],
                         [0, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1],
                         [0, 1, 1, 1, 0],
                         [0, 0, 1, 0, 0]], np.uint8)
    np.testing.assert_array_equal(disk(2), expected)
    rng = np.random.default_rng(1)
    b = rng.random((40, 50)) < 0.02
    for r in (1, 3, 8):
        ref = ndimage.binary_dilation(b, structure=disk(r).astype(bool))
        np.testing.assert_array_equal(_dilate(b, disk(r)), ref)


def test_bound_pixels():
    assert bound_pixels((480, 854)) == 8         # ceil(0.008 * 979.7) = ceil(7.84)
    assert bound_pixels((256, 256)) == 3         # ceil(2.896)
    assert bound_pixels((10, 10)) == 1           # ceil(0.113)
    assert bound_pixels((480, 854), bound_th=5) == 5


def test_f_degenerate_cases():
    empty = np.zeros((20, 20), bool)
    obj = square(20, 20, 5, 10, 5, 10)
    assert boundary_precision_recall(empty, obj) == (1.0, 0.0)
    assert f_measure(empty, obj) == 0.0
    assert boundary_precision_recall(obj, empty) == (0.0, 1.0)
    assert f_measure(obj, empty) == 0.0
    assert boundary_precision_recall(empty, empty) == (1.0, 1.0)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(obj, obj) == 1.0
    # full-frame masks have no boundary either
    full = np.ones((20, 20), bool)
    assert f_measure(full, full) == 1.0


def test_f_hand_case_and_tolerance():
    # 10x10, radius ceil(0.008*14.1) = 1 (4-neighbour plus).
    # gt: columns 0..4 -> boundary = column 4 (10 px).
    gt = square(10, 10, 0, 10, 0, 5)
    # pred boundary at column 2: 2 px from the gt boundary, outside the tolerance -> P = R = 0 -> F = 0
    assert f_measure(square(10, 10, 0, 10, 0, 3), gt) == 0.0
    # pred boundary at column 3: 1 px away -> all matched
    assert f_measure(square(10, 10, 0, 10, 0, 4), gt) == 1.0
    # step: rows 0..4 cols 0..3, rows 5..9 cols 0..1.
    # pred boundary: (0..4, 3) [5 px], (4, 2), (4, 1) [S or SE differ], (5..9, 1) [5 px] = 12 px.
    # dil(gt boundary) = columns 3..5 -> 5 pred px matched -> P = 5/12.
    # gt (r,4) matched iff a pred boundary pixel is at (r,3) or (r+-1,4) or (r,5): r = 0..4 -> R = 5/10.
    # F = 2 * (5/12) * (1/2) / (5/12 + 1/2) = 5/11.
    pred = square(10, 10, 0, 5, 0, 4) | square(10, 10, 5, 10, 0, 2)
    p, r = boundary_precision_recall(pred, gt)
    assert p == pytest.approx(5 / 12) and r == pytest.approx(0.5)
    assert f_measure(pred, gt) == pytest.approx(5 / 11)
    np.testing.assert_allclose(f_measure(np.stack([pred, gt]), np.stack([gt, gt])), [5 / 11, 1.0])


def test_f_shift_within_tolerance_at_davis_resolution():
    gt = square(480, 854, 100, 300, 200, 500)
    assert f_measure(np.roll(gt, 8, axis=1), gt) == 1.0       # 8 px = bound_pix at 480x854
    assert f_measure(np.roll(gt, 9, axis=1), gt) < 1.0


def test_db_statistics_hand_case():
    # n = 8: bin edges round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7];
    # bins v[0:3], v[2:5], v[4:6], v[5:8]; decay = mean(1, .8, .6) - mean(0, 0, 0) = 0.8.
    v = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0, 0.0]
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(3.0 / 8)
    assert recall == pytest.approx(3 / 8)           # 1, .8, .6 are > 0.5
    assert decay == pytest.approx(0.8)
    m2, _, _ = db_statistics([1.0, np.nan, 0.0])     # nan-mean over frames
    assert m2 == 0.5


def test_evaluate_davis_drops_first_and_last_frame():
    # 4 frames, GT object everywhere; the prediction is empty on frames 0 and 3, exact on 1 and 2.
    g = square(32, 32, 8, 20, 8, 20).astype(np.int64)
    gt = np.stack([g] * 4)
    pred = gt.copy()
    pred[0] = 0
    pred[3] = 0
    res = evaluate_davis(pred, gt)
    assert res["num_frames"] == 2 and res["num_objects"] == 1
    assert res["J-Mean"] == 1.0 and res["F-Mean"] == 1.0 and res["J&F-Mean"] == 1.0
    full = evaluate_davis(pred, gt, drop_first_last=False)
    assert full["J-Mean"] == 0.5 and full["F-Mean"] == 0.5 and full["J&F-Mean"] == 0.5
    assert full["J-Recall"] == 0.5
    with pytest.raises(ValueError, match="at least 3"):
        evaluate_davis(pred[:2], gt[:2])


def test_evaluate_davis_multi_object_missing_and_invalid():
    a = square(24, 24, 2, 8, 2, 8)
    b = square(24, 24, 12, 20, 12, 20)
    gt = np.stack([a * 1 + b * 2] * 5).astype(np.int64)
    pred = np.stack([a * 1] * 5).astype(np.int64)             # object 2 missing -> empty -> J = F = 0
    calls = []
    res = evaluate_davis(pred, gt, progress=lambda: calls.append(1))
    assert res["num_objects"] == 2 and len(calls) == 2
    assert [o["J_mean"] for o in res["objects"]] == [1.0, 0.0]
    assert res["J-Mean"] == 0.5 and res["F-Mean"] == 0.5
    assert res["J_per_frame"].shape == (2, 3)
    with pytest.raises(ValueError, match="predicted labels: object id 3"):
        evaluate_davis(np.where(gt == 2, 3, gt), gt)
    with pytest.raises(ValueError, match="first frame has no object"):
        evaluate_davis(pred, np.zeros_like(gt))
    with pytest.raises(ValueError, match="predicted labels: 4 frames"):
        evaluate_davis(pred[:4], gt)
    with pytest.raises(ValueError, match="predicted labels: frames are"):
        evaluate_davis(pred[:, :20], gt)
    with pytest.raises(ValueError, match="integer"):
        evaluate_davis(pred.astype(float) + 0.5, gt)


def test_evaluate_davis_void_is_background():
    # DAVIS palette index 255 marks void pixels; the official semi-supervised evaluation sets them to background
    # (it neither counts them as an object nor excludes them from J or F)
    t, h, w = 3, 20, 20
    obj = square(h, w, 5, 11, 5, 11)                       # 36 px
    band = square(h, w, 3, 13, 3, 13) & ~obj               # 64 px of void around the object
    gt = np.zeros((t, h, w), np.int64)
    gt[:, band] = 255
    gt[:, obj] = 1
    exact = evaluate_davis(obj[None].repeat(t, 0).astype(np.int64), gt)
    assert exact["num_objects"] == 1 and exact["J-Mean"] == 1.0 and exact["F-Mean"] == 1.0
    # a prediction covering the void band too: the band counts as false positives, J = 36 / 100
    over = (obj | band)[None].repeat(t, 0).astype(np.int64)
    res = evaluate_davis(over, gt)
    assert res["num_objects"] == 1 and abs(res["J-Mean"] - 0.36) < 1e-12
    # the boundary of a 10x10 square against a 6x6 one, 2 px apart: within the 1 px tolerance at 20x20 nowhere
    assert bound_pixels((h, w)) == 1 and res["F-Mean"] == 0.0
