"""Frame metrics against scikit-learn and independent re-computations; mAP@IoU on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from edge_vad.errors import EdgeVadError
from edge_vad.eval.metrics import (
    detection_map,
    extract_proposals,
    frame_metrics,
    temporal_iou,
    voc_average_precision,
)


def _random_set(seed: int = 0):
    """Eight videos: five with anomalies (scores shifted up inside them), three normal."""
    rng = np.random.default_rng(seed)
    masks, scores = {}, {}
    for i in range(8):
        n = int(rng.integers(80, 300))
        mask = np.zeros(n, dtype=np.uint8)
        if i < 5:
            s = int(rng.integers(0, n // 2))
            mask[s : s + int(rng.integers(10, n // 2))] = 1
        masks[f"v{i}"] = mask
        scores[f"v{i}"] = np.clip(rng.normal(0.35, 0.2, n) + 0.3 * mask, 0, 1).round(2)  # rounding makes ties
    return masks, scores


def _pr_auc_by_hand(y: np.ndarray, s: np.ndarray) -> float:
    """Trapezoid area under the PR curve with one point per distinct threshold, plus (recall 0, precision 1)."""
    positives = y.sum()
    recall, precision = [0.0], [1.0]
    for thr in np.unique(s)[::-1]:
        picked = s >= thr
        tp = y[picked].sum()
        recall.append(tp / positives)
        precision.append(tp / picked.sum())
        if tp == positives:  # sklearn's curve stops at full recall
            break
    r, p = np.array(recall), np.array(precision)
    return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))


def _auc_by_pairs(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_frame_metrics_agree_with_sklearn_and_independent_formulas():
    masks, scores = _random_set()
    out = frame_metrics(masks, scores)
    assert set(out) == {"ap", "ap_pr_auc", "auc", "ano_auc", "far"}
    y = np.concatenate([masks[k] for k in sorted(masks)])
    s = np.concatenate([scores[k] for k in sorted(masks)])
    assert out["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert out["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert out["auc"] == pytest.approx(_auc_by_pairs(y, s), abs=1e-12)
    assert out["ap_pr_auc"] == pytest.approx(_pr_auc_by_hand(y, s), abs=1e-12)
    assert abs(out["ap"] - out["ap_pr_auc"]) > 1e-6  # two different quantities: never interchange them
    ano = [k for k in masks if masks[k].any()]
    ya = np.concatenate([masks[k] for k in ano])
    sa = np.concatenate([scores[k] for k in ano])
    assert out["ano_auc"] == pytest.approx(_auc_by_pairs(ya, sa), abs=1e-12)
    normal = np.concatenate([scores[k] for k in masks if not masks[k].any()])
    assert out["far"] == pytest.approx(np.count_nonzero(normal >= 0.5) / normal.size)
    assert 0.5 < out["auc"] < 1.0 and 0.0 < out["far"] < 1.0  # the shift makes the data informative, not perfect


def test_far_counts_frames_at_or_above_one_half():
    masks = {"normal": np.zeros(4, np.uint8), "anomaly": np.array([0, 1, 1, 0], np.uint8)}
    scores = {"normal": np.array([0.49, 0.5, 0.51, 0.2]), "anomaly": np.array([0.9, 0.9, 0.9, 0.9])}
    out = frame_metrics(masks, scores)
    assert out["far"] == pytest.approx(0.5)
    assert out["ano_auc"] == pytest.approx(0.5)  # constant scores inside the anomalous video: chance


def test_undefined_metrics_are_none():
    only_normal = frame_metrics({"a": np.zeros(5, np.uint8)}, {"a": np.linspace(0, 1, 5)})
    assert only_normal["ap"] is None and only_normal["auc"] is None and only_normal["ano_auc"] is None
    assert only_normal["far"] == pytest.approx(3 / 5)
    only_anomalous = frame_metrics({"a": np.array([0, 1, 1], np.uint8)}, {"a": np.array([0.1, 0.8, 0.9])})
    assert only_anomalous["far"] is None
    assert only_anomalous["auc"] == pytest.approx(1.0) and only_anomalous["ano_auc"] == pytest.approx(1.0)


def test_frame_metrics_rejects_misaligned_input():
    with pytest.raises(EdgeVadError, match="different videos"):
        frame_metrics({"a": np.zeros(3)}, {"b": np.zeros(3)})
    with pytest.raises(EdgeVadError, match="3 labels but 4 scores"):
        frame_metrics({"a": np.zeros(3)}, {"a": np.zeros(4)})


def test_voc_ap_and_iou_by_hand():
    # TP, FP, TP over 2 segments: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3.
    assert voc_average_precision([1, 0, 1], 2) == pytest.approx(5 / 6)
    assert voc_average_precision([0, 1], 1) == pytest.approx(0.5)
    assert voc_average_precision([], 3) == 0.0
    assert voc_average_precision([1, 0, 0], 2) == pytest.approx(0.5)
    assert temporal_iou((0, 4), (2, 6)) == pytest.approx(2 / 6)
    assert temporal_iou((0, 2), (2, 4)) == 0.0


def test_proposals_use_the_mid_range_threshold():
    p = np.array([0.1, 0.9, 0.7, 0.2, 0.6, 0.4, 0.55])  # threshold 0.1 + 0.5 * 0.8 = 0.5
    assert extract_proposals(p) == [(1, 3, 0.9), (4, 5, 0.6), (6, 7, 0.55)]
    assert extract_proposals(np.full(5, 0.3)) == [(0, 5, 0.3)]  # constant scores: one proposal over the video


def _golden_case():
    """Two videos, classes [normal, fighting, riot, shooting] (see the test for the hand computation)."""
    names = ["normal", "fighting", "riot", "shooting"]
    a = np.zeros((10, 4))
    a[:4, 1] = 0.9  # fighting: proposal [0,4) score 0.9
    a[6:8, 1] = 0.85  # fighting: proposal [6,8) score 0.85
    a[8:, 2] = 1.0  # riot: proposal [8,10) score 1.0
    a[:, 3] = np.linspace(0, 1, 10)  # shooting: no ground truth anywhere, must not count
    a[:, 0] = 1.0
    b = np.zeros((12, 4))
    b[9:, 1] = 0.8  # fighting: proposal [9,12) score 0.8; riot stays constant 0 -> proposal [0,12) score 0
    gt = {"a": [(0, 4, "fighting")], "b": [(3, 12, "B1"), (0, 3, "riot")]}  # XD code B1 = fighting
    return gt, {"a": a, "b": b}, names


def test_detection_map_golden():
    gt, scores, names = _golden_case()
    out = detection_map(gt, scores, names)
    # fighting, by score: a[0,4) 0.9 IoU 1 (TP) | a[6,8) 0.85 IoU 0 (FP) | b[9,12) 0.8 IoU 3/9 with b[3,12).
    #   t <= 0.3: TP FP TP -> AP 5/6;  t >= 0.4: TP FP FP -> AP 1/2.
    # riot: a[8,10) 1.0 (FP, no riot in a) | b[0,12) 0.0 IoU 3/12 with b[0,3).
    #   t <= 0.2: FP TP -> AP 1/2;  t >= 0.3: AP 0.
    fighting = {"0.1": 5 / 6, "0.2": 5 / 6, "0.3": 5 / 6, "0.4": 0.5, "0.5": 0.5}
    riot = {"0.1": 0.5, "0.2": 0.5, "0.3": 0.0, "0.4": 0.0, "0.5": 0.0}
    assert list(out["map"]) == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    for t in fighting:
        assert out["ap"][t]["fighting"] == pytest.approx(fighting[t])
        assert out["ap"][t]["riot"] == pytest.approx(riot[t])
        assert out["map"][t] == pytest.approx((fighting[t] + riot[t]) / 2)
    assert out["map_avg"] == pytest.approx(27 / 60)  # (2/3 + 2/3 + 5/12 + 1/4 + 1/4) / 5
    assert out["classes"] == ["fighting", "riot"]
    assert out["classes_without_gt"] == ["shooting"]


def test_detection_map_matches_each_segment_once():
    # One segment [0,10); proposals [5,10) score 1.0 (IoU 0.5, TP) then [0,3) score 0.9 (segment taken: FP).
    p = np.zeros((10, 2))
    p[:3, 1], p[5:, 1] = 0.9, 1.0
    out = detection_map({"v": [(0, 10, "fighting")]}, {"v": p}, ["normal", "fighting"], iou_thresholds=(0.3, 0.5, 0.6))
    assert out["map"]["0.3"] == pytest.approx(1.0) and out["map"]["0.5"] == pytest.approx(1.0)
    assert out["map"]["0.6"] == pytest.approx(0.0)  # [5,10) IoU 0.5 < 0.6, [0,3) IoU 0.3


def test_detection_map_errors_and_undefined():
    p = np.zeros((4, 2))
    with pytest.raises(EdgeVadError, match="without a class"):
        detection_map({"v": [(0, 2, None)]}, {"v": p}, ["normal", "fighting"])
    with pytest.raises(EdgeVadError, match="not among the score classes"):
        detection_map({"v": [(0, 2, "riot")]}, {"v": p}, ["normal", "fighting"])
    out = detection_map({"v": []}, {"v": p}, ["normal", "fighting"])
    assert out["map"]["0.1"] is None and out["map_avg"] is None
