"""Metrics of weakly supervised video anomaly detection.

Frame level (:func:`frame_metrics`), all frames of all videos pooled:

- ``ap``        ``sklearn.metrics.average_precision_score`` (step-wise, no interpolation): what
                XD-Violence papers (RTFM, VadCLIP, TCVADS) report as AP.
- ``ap_pr_auc`` area under the precision-recall curve by trapezoids
                (``precision_recall_curve`` + ``auc``), what some other repositories call AP. The two
                differ, usually by a little; never compare one with the other.
- ``auc``       ``roc_auc_score`` over all frames.
- ``ano_auc``   ``roc_auc_score`` over the frames of videos that contain an anomaly only.
- ``far``       false-alarm rate: fraction of the frames of normal videos (no anomalous frame)
                scored >= ``FAR_THRESHOLD``.
A metric that is undefined on the data (e.g. ``far`` without normal videos, ``auc`` with one
label only) is ``None``, never a made-up number.

Temporal detection (:func:`detection_map`), mAP@IoU as XD-Violence / UCF-Crime papers report it:

1. Proposals, per video and per anomaly class c, from the frame scores p = class_scores[:, c]:
   the maximal runs of frames with p >= min(p) + ``relative_threshold`` * (max(p) - min(p))
   (0.5: the mid-range threshold of W-TALC-style evaluation, used by VadCLIP). A video whose p is
   constant gives one proposal covering it. A proposal's score is max(p) over its frames.
2. Matching, per class and IoU threshold t: proposals of all videos in descending score order
   (ties: video order, then start); each is a true positive when its best-IoU ground-truth
   segment of that class in the same video has IoU >= t and is not yet matched (it then becomes
   matched), otherwise a false positive (VOC rule). IoU of half-open frame ranges [s, e).
3. AP per class: VOC all-point interpolation (area under the monotone precision envelope),
   over the class's ground-truth segment count.
4. mAP at t: mean AP over the anomaly classes (not ``normal``) that have at least one
   ground-truth segment; ``map_avg`` is the mean over thresholds.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from edge_vad.errors import EdgeVadError
from edge_vad.eval.ground_truth import class_key, is_normal_class, mask_intervals

FAR_THRESHOLD = 0.5  # score at or above which a normal frame is a false alarm (the field's FAR, e.g. RTFM, S3R)
IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)  # mAP@IoU thresholds reported for XD-Violence / UCF-Crime (VadCLIP; TCVADS Table)
PROPOSAL_RELATIVE_THRESHOLD = 0.5  # mid-range proposal threshold (W-TALC-style evaluation, as VadCLIP uses)
FRAME_METRIC_KEYS = ("ap", "ap_pr_auc", "auc", "ano_auc", "far")

Segment = Tuple[int, int, Optional[str]]


def _pooled(masks: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray], videos: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    if not videos:
        return np.zeros(0, dtype=np.uint8), np.zeros(0)
    return (np.concatenate([np.asarray(masks[v]) > 0 for v in videos]).astype(np.uint8),
            np.concatenate([np.asarray(scores[v], dtype=np.float64) for v in videos]))


def _both_labels(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


def frame_metrics(masks: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]) -> Dict[str, Optional[float]]:
    """Frame-level ap, ap_pr_auc, auc, ano_auc, far of aligned masks and scores (same videos, same lengths)."""
    if set(masks) != set(scores):
        raise EdgeVadError("frame_metrics: masks and scores name different videos; align them first (see run_eval)")
    videos = sorted(masks)
    for v in videos:
        if len(masks[v]) != len(scores[v]):
            raise EdgeVadError(f"frame_metrics: video {v!r} has {len(masks[v])} labels but {len(scores[v])} scores; align them first")
    y, s = _pooled(masks, scores, videos)
    out: Dict[str, Optional[float]] = dict.fromkeys(FRAME_METRIC_KEYS)
    if y.size and y.any():
        out["ap"] = float(average_precision_score(y, s))
        precision, recall, _ = precision_recall_curve(y, s)
        out["ap_pr_auc"] = float(sk_auc(recall, precision))
    if _both_labels(y):
        out["auc"] = float(roc_auc_score(y, s))
    anomalous = [v for v in videos if np.any(np.asarray(masks[v]) > 0)]
    ya, sa = _pooled(masks, scores, anomalous)
    if _both_labels(ya):
        out["ano_auc"] = float(roc_auc_score(ya, sa))
    anomalous_set = set(anomalous)
    normal = [v for v in videos if v not in anomalous_set]
    _, sn = _pooled(masks, scores, normal)
    if sn.size:
        out["far"] = float(np.mean(sn >= FAR_THRESHOLD))
    return out


def extract_proposals(class_score: np.ndarray, relative_threshold: float = PROPOSAL_RELATIVE_THRESHOLD) -> List[Tuple[int, int, float]]:
    """(start, end, score) runs of frames at or above the video's mid-range threshold (see module doc)."""
    p = np.asarray(class_score, dtype=np.float64)
    if p.size == 0:
        return []
    lo, hi = float(p.min()), float(p.max())
    runs = mask_intervals(p >= lo + relative_threshold * (hi - lo))
    return [(s, e, float(p[s:e].max())) for s, e in runs]


def temporal_iou(a: Tuple[int, int], b: Tuple[int, int]) -> float:
    """IoU of half-open frame ranges [s, e)."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def voc_average_precision(is_tp: Sequence[int], n_positive: int) -> float:
    """VOC all-point interpolated AP of detections sorted by descending score (1 = true positive)."""
    if n_positive <= 0:
        raise ValueError("AP needs at least one ground-truth segment")
    tp = np.asarray(is_tp, dtype=np.float64)
    if tp.size == 0:
        return 0.0
    tp_c, fp_c = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = np.concatenate([[0.0], tp_c / n_positive, [1.0]])
    precision = np.concatenate([[0.0], tp_c / (tp_c + fp_c), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    step = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[step + 1] - recall[step]) * precision[step + 1]))


def _class_ap(proposals: List[Tuple[str, int, int, float]], gt: Mapping[str, List[Tuple[int, int]]], iou_threshold: float) -> float:
    order = sorted(range(len(proposals)), key=lambda i: -proposals[i][3])  # stable: ties keep video/start order
    used = {v: [False] * len(segs) for v, segs in gt.items()}
    is_tp = []
    for i in order:
        video, s, e, _ = proposals[i]
        segs = gt.get(video, [])
        ious = [temporal_iou((s, e), g) for g in segs]
        best = int(np.argmax(ious)) if ious else -1
        hit = best >= 0 and ious[best] >= iou_threshold and not used[video][best]
        if hit:
            used[video][best] = True
        is_tp.append(int(hit))
    return voc_average_precision(is_tp, sum(len(s) for s in gt.values()))


def _threshold_key(t: float) -> str:
    return format(float(t), "g")


def detection_map(
    gt_segments: Mapping[str, Sequence[Segment]],
    class_scores: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    relative_threshold: float = PROPOSAL_RELATIVE_THRESHOLD,
) -> Dict[str, object]:
    """mAP@IoU of temporal detection (rule in the module docstring).

    gt_segments: video -> (start, end, class name) half-open frame segments; class_scores: video ->
    [frames, C] per-frame class scores, columns named by class_names. Both over the same videos.
    Returns {"map": {"0.1": mAP, ...}, "map_avg": float, "ap": {"0.1": {class: AP}}, "classes": [...],
    "classes_without_gt": [...]}; mAP values are None when no anomaly class has a segment.
    """
    if set(gt_segments) != set(class_scores):
        raise EdgeVadError("detection_map: ground truth and class scores name different videos; align them first")
    column = {class_key(n): i for i, n in enumerate(class_names)}
    gt_by_class: Dict[int, Dict[str, List[Tuple[int, int]]]] = {}
    for video, segs in gt_segments.items():
        for s, e, cls in segs:
            if cls is None:
                raise EdgeVadError(
                    f"video {video!r} has an anomalous segment without a class; for mAP use a ground truth with "
                    "per-segment classes (annotations_multiclasses.txt, UCF annotations) or drop the '::classes' scores"
                )
            if class_key(cls) not in column:
                raise EdgeVadError(f"ground-truth class {cls!r} is not among the score classes {list(class_names)}; add its column or rename it")
            gt_by_class.setdefault(column[class_key(cls)], {}).setdefault(video, []).append((s, e))
    anomaly_cols = [i for i, n in enumerate(class_names) if not is_normal_class(n)]
    evaluated = [i for i in anomaly_cols if i in gt_by_class]
    proposals = {
        i: [(v, s, e, sc) for v in class_scores for s, e, sc in extract_proposals(np.asarray(class_scores[v])[:, i], relative_threshold)]
        for i in evaluated
    }
    per_class: Dict[str, Dict[str, float]] = {}
    maps: Dict[str, Optional[float]] = {}
    for t in iou_thresholds:
        key = _threshold_key(t)
        per_class[key] = {class_names[i]: _class_ap(proposals[i], gt_by_class[i], float(t)) for i in evaluated}
        maps[key] = float(np.mean(list(per_class[key].values()))) if evaluated else None
    values = [m for m in maps.values() if m is not None]
    return {
        "map": maps,
        "map_avg": float(np.mean(values)) if values and len(values) == len(maps) else None,
        "ap": per_class,
        "classes": [class_names[i] for i in evaluated],
        "classes_without_gt": [class_names[i] for i in anomaly_cols if i not in gt_by_class],
    }
