"""TAP-Vid metrics: hand-computed cases for every edge case of docs/methods.md §9.1, and the vectorised
metric against a plain per-point loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vdtrack.kernels.metrics_tapvid import (METRIC_KEYS, THRESHOLDS, compute_tapvid_metrics, evaluate_tracks,
                                            nanmean_metrics, sample_queries_first, sample_queries_strided,
                                            to_eval_frame)


def one_track(gt_xy, gt_occ, pred_xy, pred_occ, q, mode="first"):
    """Metrics of a single video with a single track. gt_xy/pred_xy [T,2], occ [T], q = query frame."""
    qp = np.array([[[q, 0.0, 0.0]]])
    return compute_tapvid_metrics(qp, np.asarray(gt_occ)[None, None], np.asarray(gt_xy, float)[None, None],
                                  np.asarray(pred_occ)[None, None], np.asarray(pred_xy, float)[None, None], mode)


def line(t, x0=10.0, y0=20.0):
    return np.stack([x0 + np.arange(t), y0 + 2.0 * np.arange(t)], axis=-1)


def reference_metrics(qp, gt_occ, gt_xy, pred_occ, pred_xy, mode):
    """Plain loop over (video, track, frame): the spec's definitions read literally."""
    b, n, t = gt_occ.shape
    out = {k: np.zeros(b) for k in METRIC_KEYS}
    for v in range(b):
        e_cnt = oa = 0
        vis_cnt = 0
        tp = dict.fromkeys(THRESHOLDS, 0)
        fp = dict.fromkeys(THRESHOLDS, 0)
        corr = dict.fromkeys(THRESHOLDS, 0)
        for i in range(n):
            q = int(round(qp[v, i, 0]))
            for f in range(t):
                if (mode == "first" and f <= q) or (mode == "strided" and f == q):
                    continue
                e_cnt += 1
                oa += gt_occ[v, i, f] == pred_occ[v, i, f]
                vis = not gt_occ[v, i, f]
                pvis = not pred_occ[v, i, f]
                vis_cnt += vis
                d2 = (pred_xy[v, i, f, 0] - gt_xy[v, i, f, 0]) ** 2 + (pred_xy[v, i, f, 1] - gt_xy[v, i, f, 1]) ** 2
                for d in THRESHOLDS:
                    within = d2 < d * d
                    corr[d] += within and vis
                    tp[d] += within and vis and pvis
                    fp[d] += pvis and ((not vis) or (not within))
        out["occlusion_accuracy"][v] = oa / e_cnt if e_cnt else np.nan
        for d in THRESHOLDS:
            out[f"pts_within_{d}"][v] = corr[d] / vis_cnt if vis_cnt else np.nan
            out[f"jaccard_{d}"][v] = tp[d] / (vis_cnt + fp[d]) if vis_cnt + fp[d] else np.nan
        out["average_jaccard"][v] = np.mean([out[f"jaccard_{d}"][v] for d in THRESHOLDS])
        out["average_pts_within_thresh"][v] = np.mean([out[f"pts_within_{d}"][v] for d in THRESHOLDS])
    return out


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_vectorised_matches_plain_loop(mode):
    rng = np.random.default_rng(0)
    b, n, t = 3, 7, 9
    gt_xy = rng.uniform(0, 256, (b, n, t, 2))
    pred_xy = gt_xy + rng.normal(0, 5, (b, n, t, 2))
    gt_occ = rng.random((b, n, t)) < 0.3
    pred_occ = rng.random((b, n, t)) < 0.3
    qp = np.concatenate([rng.integers(0, t - 1, (b, n, 1)).astype(float), rng.uniform(0, 256, (b, n, 2))], -1)
    fast = compute_tapvid_metrics(qp, gt_occ, gt_xy, pred_occ, pred_xy, mode)
    ref = reference_metrics(qp, gt_occ, gt_xy, pred_occ, pred_xy, mode)
    for k in METRIC_KEYS:
        np.testing.assert_allclose(fast[k], ref[k], rtol=0, atol=1e-12, err_msg=k)


def test_perfect_prediction_scores_one_everywhere():
    t = 6
    occ = np.array([False, False, True, False, True, False])
    m = one_track(line(t), occ, line(t), occ, q=0)
    for k in METRIC_KEYS:
        assert m[k][0] == 1.0, k


def test_off_by_exactly_one_pixel_fails_delta_1_passes_delta_2():
    # T=4, query frame 0, always visible, pred = gt + (1, 0): squared distance 1 is not < 1.
    # Evaluated frames 1..3 (3 visible points).
    # pts_within_1 = 0/3; pts_within_2..16 = 3/3 -> delta_avg = 4/5.
    # jaccard_1: TP 0, FP 3 (predicted visible but too far) -> 0/(3+3) = 0; others 3/(3+0) = 1 -> AJ = 4/5.
    gt = line(4)
    vis = np.zeros(4, bool)
    m = one_track(gt, vis, gt + np.array([1.0, 0.0]), vis, q=0)
    assert m["pts_within_1"][0] == 0.0 and m["jaccard_1"][0] == 0.0
    for d in (2, 4, 8, 16):
        assert m[f"pts_within_{d}"][0] == 1.0 and m[f"jaccard_{d}"][0] == 1.0
    assert m["average_pts_within_thresh"][0] == pytest.approx(0.8)
    assert m["average_jaccard"][0] == pytest.approx(0.8)
    # Diagonal (0.7, 0.7): squared distance 0.98 < 1 passes delta 1.
    m2 = one_track(gt, vis, gt + 0.7, vis, q=0)
    assert m2["pts_within_1"][0] == 1.0


def test_gt_occluded_predicted_visible_is_fp_in_jaccard_not_in_pts_within():
    # T=5, query 0. GT occluded at frames 3 and 4; prediction exact and always visible.
    # Evaluated frames 1..4; GT-visible among them: 1, 2.
    # pts_within = 2/2 = 1 (occluded frames are ignored).
    # TP = 2, FP = 2 (frames 3, 4: predicted visible, GT occluded) -> jaccard = 2/(2+2) = 0.5.
    # OA: agree on frames 1, 2 only -> 2/4 = 0.5 = the visible fraction (the "always visible" predictor).
    gt_occ = np.array([False, False, False, True, True])
    m = one_track(line(5), gt_occ, line(5), np.zeros(5, bool), q=0)
    for d in THRESHOLDS:
        assert m[f"pts_within_{d}"][0] == 1.0
        assert m[f"jaccard_{d}"][0] == 0.5
    assert m["occlusion_accuracy"][0] == 0.5
    assert m["average_jaccard"][0] == 0.5


def test_always_visible_predictor_occlusion_accuracy_is_visible_fraction():
    rng = np.random.default_rng(3)
    b, n, t = 1, 20, 12
    gt_occ = rng.random((b, n, t)) < 0.4
    gt_occ[..., 0] = False
    qp = np.zeros((b, n, 3))
    gt_xy = rng.uniform(0, 256, (b, n, t, 2))
    m = compute_tapvid_metrics(qp, gt_occ, gt_xy, np.zeros_like(gt_occ), gt_xy, "first")
    visible_fraction = (~gt_occ[..., 1:]).mean()
    assert m["occlusion_accuracy"][0] == pytest.approx(visible_fraction)


def test_first_mode_ignores_frames_up_to_and_including_the_query():
    # T=6, query at frame 2. Frames 0..2: prediction 100 px off and predicted visible; frames 3..5 exact.
    # first: only 3..5 are scored -> everything 1.
    # strided: frames 0, 1, 3, 4, 5 are scored (not the query frame 2):
    #   pts_within = 3/5; TP = 3, FP = 2 (frames 0, 1 too far) -> jaccard = 3/(5+2) = 3/7; OA = 5/5.
    gt = line(6)
    pred = gt.copy()
    pred[:3] += 100.0
    vis = np.zeros(6, bool)
    first = one_track(gt, vis, pred, vis, q=2, mode="first")
    for k in METRIC_KEYS:
        assert first[k][0] == 1.0, k
    strided = one_track(gt, vis, pred, vis, q=2, mode="strided")
    assert strided["pts_within_16"][0] == pytest.approx(3 / 5)
    assert strided["jaccard_16"][0] == pytest.approx(3 / 7)
    assert strided["occlusion_accuracy"][0] == 1.0
    # The query frame alone being wrong changes nothing in either mode.
    pred_q = gt.copy()
    pred_q[2] += 50.0
    assert one_track(gt, vis, pred_q, ~vis, q=2, mode="strided")["pts_within_1"][0] == 1.0


def test_zero_denominators_give_nan():
    # First mode, the only visible frame is the last one and it is the query: nothing is evaluated.
    t = 4
    occ = np.array([True, True, True, False])
    m = one_track(line(t), occ, line(t), occ, q=3)
    for k in METRIC_KEYS:
        assert math.isnan(m[k][0]), k
    # Query at 0, GT occluded afterwards, predicted visible: no visible point (pts_within NaN) but
    # FP = 3 so jaccard = 0/(0+3) = 0 (tapnet's arithmetic), OA = 0/3.
    occ2 = np.array([False, True, True, True])
    m2 = one_track(line(t), occ2, line(t), np.zeros(t, bool), q=0)
    assert math.isnan(m2["pts_within_1"][0]) and math.isnan(m2["average_pts_within_thresh"][0])
    assert m2["jaccard_1"][0] == 0.0 and m2["average_jaccard"][0] == 0.0
    assert m2["occlusion_accuracy"][0] == 0.0


def test_trackwise_metrics_shape_and_values():
    # Two tracks, T=3, query 0. Track 0 exact; track 1 off by 3 px (within 4, not within 2).
    gt = np.stack([line(3), line(3, 50, 60)])[None]
    pred = gt.copy()
    pred[0, 1] += np.array([3.0, 0.0])
    occ = np.zeros((1, 2, 3), bool)
    m = compute_tapvid_metrics(np.zeros((1, 2, 3)), occ, gt, occ, pred, "first", get_trackwise_metrics=True)
    assert m["pts_within_2"].shape == (1, 2)
    np.testing.assert_array_equal(m["pts_within_2"][0], [1.0, 0.0])
    np.testing.assert_array_equal(m["pts_within_4"][0], [1.0, 1.0])
    # per video: 2 + 0 correct out of 4 at delta 2
    mv = compute_tapvid_metrics(np.zeros((1, 2, 3)), occ, gt, occ, pred, "first")
    assert mv["pts_within_2"][0] == 0.5


def test_query_frame_is_rounded_and_validated():
    t = 5
    gt = line(t)
    pred = gt.copy()
    pred[2] += 100.0                     # frame 2 wrong: ignored iff the query rounds to 2
    vis = np.zeros(t, bool)
    assert one_track(gt, vis, pred, vis, q=2.4)["pts_within_1"][0] == 1.0
    assert one_track(gt, vis, pred, vis, q=1.6)["pts_within_1"][0] == 1.0
    assert one_track(gt, vis, pred, vis, q=1.4)["pts_within_1"][0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="query_points"):
        one_track(gt, vis, pred, vis, q=5)
    with pytest.raises(ValueError, match="query_mode"):
        one_track(gt, vis, pred, vis, q=0, mode="last")
    with pytest.raises(ValueError, match="pred_tracks"):
        one_track(gt, vis, pred * np.nan, vis, q=0)


def test_sample_queries_first_drops_never_visible_and_uses_first_visible_frame():
    occ = np.array([[False, False, True, False],     # track 0: first visible at 0
                    [True, True, True, True],        # track 1: never visible -> dropped
                    [True, True, False, False]])     # track 2: first visible at 2
    xy = np.arange(3 * 4 * 2, dtype=float).reshape(3, 4, 2)
    s = sample_queries_first(occ, xy)
    np.testing.assert_array_equal(s["track_index"], [0, 2])
    # (t, y, x): track 0 at frame 0 -> xy[0,0] = (0,1); track 2 at frame 2 -> xy[2,2] = (20,21)
    np.testing.assert_array_equal(s["query_points"], [[0, 1, 0], [2, 21, 20]])
    np.testing.assert_array_equal(s["occluded"], occ[[0, 2]])
    np.testing.assert_array_equal(s["target_points"], xy[[0, 2]])


def test_sample_queries_strided_yields_one_query_per_visible_strided_frame():
    # stride 2, T=5 -> strided frames 0, 2, 4. Track 0 visible at 0, 2, 4; track 1 only at 2.
    occ = np.array([[False, True, False, True, False],
                    [True, False, False, True, True]])
    xy = np.arange(2 * 5 * 2, dtype=float).reshape(2, 5, 2)
    s = sample_queries_strided(occ, xy, stride=2)
    np.testing.assert_array_equal(s["trackgroup"], [0, 0, 1, 0])
    np.testing.assert_array_equal(s["query_points"][:, 0], [0, 2, 2, 4])
    np.testing.assert_array_equal(s["query_points"][2], [2, xy[1, 2, 1], xy[1, 2, 0]])
    np.testing.assert_array_equal(s["occluded"], occ[[0, 0, 1, 0]])
    # default stride 5, T=5: frame 0 only, where only track 0 is visible
    np.testing.assert_array_equal(sample_queries_strided(occ, xy)["trackgroup"], [0])
    with pytest.raises(ValueError, match="stride"):
        sample_queries_strided(occ, xy, stride=0)


def test_to_eval_frame_scales_by_256_over_width_and_height():
    # 480x854 (H x W): x 427 -> 427*256/854 = 128, y 240 -> 240*256/480 = 128; x 854 -> 256 (not 255).
    pts = np.array([[[427.0, 240.0], [0.0, 0.0], [854.0, 480.0]]])
    out = to_eval_frame(pts, (480, 854))
    np.testing.assert_allclose(out[0], [[128, 128], [0, 0], [256, 256]])
    np.testing.assert_allclose(to_eval_frame(torch.tensor([[[3.0, 5.0]]]), (256, 256)), [[[3.0, 5.0]]])
    with pytest.raises(ValueError, match="frame_size"):
        to_eval_frame(pts, (0, 10))


def _tracks(t, n, seed=0, w=512, h=256):
    rng = np.random.default_rng(seed)
    path = np.stack([rng.uniform(0, w, (t, n)), rng.uniform(0, h, (t, n))], -1)
    return (np.round(path * 4) / 4).astype(np.float32)   # quarter pixels: offsets stay exact in float32


def test_evaluate_tracks_converts_to_eval_frame():
    # 256x512 frame: a prediction 2 px off in x is 1 px off at 256 wide -> fails delta 1, passes delta 2.
    t, n = 5, 3
    gt = _tracks(t, n)
    vis = np.ones((t, n), bool)
    res = evaluate_tracks(gt + np.array([2.0, 0.0], np.float32), vis, gt, vis, (256, 512), percent=True)
    assert res["pts_within_1"] == 0.0 and res["pts_within_2"] == 100.0
    assert res["average_pts_within_thresh"] == pytest.approx(80.0)
    assert res["num_tracks"] == 3 and res["num_queries"] == 3 and res["num_frames"] == 5
    assert res["num_evaluated_points"] == 3 * 4 and res["nan_reasons"] == {}
    # same error in y is 2 px at height 256 -> fails delta 2 (4 < 4 is false), passes delta 4
    res_y = evaluate_tracks(gt + np.array([0.0, 2.0], np.float32), vis, gt, vis, (256, 512))
    assert res_y["pts_within_2"] == 0.0 and res_y["pts_within_4"] == 1.0


def test_evaluate_tracks_first_mode_drops_never_visible_gt_and_uses_first_visible():
    t, n = 6, 3
    gt = _tracks(t, n, seed=1)
    gvis = np.ones((t, n), bool)
    gvis[:, 1] = False          # never visible: dropped
    gvis[:3, 2] = False         # first visible at 3 -> frames 4, 5 scored
    pred = gt.copy()
    pred[:4, 2] += 50.0         # wrong up to and including its query frame: ignored
    res = evaluate_tracks(pred, np.ones((t, n), bool), gt, gvis, (256, 512))
    assert res["num_queries"] == 2
    assert res["num_evaluated_points"] == 5 + 2
    assert res["pts_within_1"] == 1.0 and res["jaccard_1"] == 1.0
    assert res["query_source"].startswith("first visible")


def test_evaluate_tracks_strided_and_given_queries():
    t, n = 11, 2
    gt = _tracks(t, n, seed=2)
    vis = np.ones((t, n), bool)
    pred = gt.copy()
    pred[0, 0] += 40.0          # frame 0 of track 0 is wrong
    # strided (stride 5): queries at 0, 5, 10 for both tracks = 6 queries, 10 scored frames each.
    # Track 0's wrong frame 0 counts for its queries at 5 and 10: 2 misses out of 60.
    res = evaluate_tracks(pred, vis, gt, vis, (256, 512), query_mode="strided")
    assert res["num_queries"] == 6 and res["num_evaluated_points"] == 60
    assert res["pts_within_16"] == pytest.approx(58 / 60)
    # given query points (t,x,y): track 0 queried at 0 -> its wrong frame is ignored in 'first'
    qp = np.array([[0, 1.0, 1.0], [3, 1.0, 1.0]])
    res_q = evaluate_tracks(pred, vis, gt, vis, (256, 512), query_points=qp)
    assert res_q["num_evaluated_points"] == 10 + 7 and res_q["pts_within_1"] == 1.0
    assert res_q["query_source"] == "given"
    with pytest.raises(ValueError, match="query_points"):
        evaluate_tracks(pred, vis, gt, vis, (256, 512), query_points=qp[:1])


def test_evaluate_tracks_validation_and_nan_report():
    t, n = 4, 2
    gt = _tracks(t, n)
    vis = np.ones((t, n), bool)
    with pytest.raises(ValueError, match="predicted tracks"):
        evaluate_tracks(gt[:3], vis[:3], gt, vis, (256, 512))
    with pytest.raises(ValueError, match="predicted tracks"):
        evaluate_tracks(gt[:, :1], vis[:, :1], gt, vis, (256, 512))
    with pytest.raises(ValueError, match="query_mode"):
        evaluate_tracks(gt, vis, gt, vis, (256, 512), query_mode="x")
    # every GT track is visible only at the last frame -> nothing after the query: all NaN, reasons given
    gvis = np.zeros((t, n), bool)
    gvis[-1] = True
    res = evaluate_tracks(gt, vis, gt, gvis, (256, 512))
    assert all(math.isnan(res[k]) for k in METRIC_KEYS)
    assert set(res["nan_reasons"]) == set(METRIC_KEYS)
    assert "no evaluated point" in res["nan_reasons"]["average_jaccard"]


def test_nanmean_metrics_averages_videos_and_skips_nan():
    a = dict.fromkeys(METRIC_KEYS, 0.5)
    b = dict.fromkeys(METRIC_KEYS, 1.0)
    c = dict.fromkeys(METRIC_KEYS, float("nan"))
    agg = nanmean_metrics([a, b, c])
    assert agg["average_jaccard"] == 0.75 and agg["num_videos"] == 3
    assert agg["num_nan_videos"]["average_jaccard"] == 1
    assert math.isnan(nanmean_metrics([c])["occlusion_accuracy"])
    with pytest.raises(ValueError):
        nanmean_metrics([])
