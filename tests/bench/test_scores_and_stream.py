"""The cascade's frame-score rule, AUC alignment, the projection, timing summaries, labels and dilution."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_vad.bench.cascade import bound_figures, frame_auc, gating_bound, system_scores
from edge_vad.bench.stream import MAX_ANOMALOUS_FRACTION, dilute, read_labels, repeats_needed
from edge_vad.bench.timing import summarise, time_calls
from edge_vad.errors import EdgeVadError

NAN = np.nan


def test_score_rule_ranks_fine_scored_frames_above_coarse_only():
    coarse = np.array([0.9, 0.2, 0.3, 0.8])
    probs = np.array([[NAN, NAN], [0.9, 0.1], [0.2, 0.8], [NAN, NAN]], np.float32)
    s = system_scores(coarse, probs, normal_class=0)
    assert s[0] == pytest.approx(0.9) and s[3] == pytest.approx(0.8)  # coarse only: s_t
    assert s[1] == pytest.approx(1.1) and s[2] == pytest.approx(1.8)  # 1 + (1 - p_normal)
    assert min(s[1], s[2]) > max(s[0], s[3])


def test_score_rule_without_fine_stage_is_coarse():
    coarse = np.array([0.1, 0.7])
    assert np.array_equal(system_scores(coarse, np.zeros((2, 0), np.float32), -1), coarse)


def test_frame_auc_aligns_by_frame_index():
    labels = np.array([0, 0, 1, 1], np.uint8)
    frames = np.array([0, 1, 2, 3, 4])  # frame 4 has no label: ignored
    assert frame_auc(labels, frames, np.array([0.1, 0.2, 0.8, 0.9, 0.0])) == pytest.approx(1.0)
    assert frame_auc(labels, frames, np.array([0.9, 0.8, 0.2, 0.1, 0.0])) == pytest.approx(0.0)
    assert frame_auc(np.zeros(4, np.uint8), frames, np.arange(5.0)) is None  # one class: undefined


def test_gating_bound_formula():
    assert gating_bound(10.0, 90.0, 1.0) == pytest.approx(1.0)
    assert gating_bound(10.0, 90.0, 0.0) == pytest.approx(10.0)
    assert gating_bound(20.0, 700.0, 0.1) == pytest.approx(720.0 / 90.0)


def test_bound_from_the_runs_stage_costs():
    """C_coarse: mean of both runs' coarse stages per scored frame; C_fine: always-on's fine stages; duty: fine
    frames of the cascade over those of always-on."""
    cascade = {"frames_scored": 100, "fine_frames": 25,
               "stage_cpu_s": {"preprocess": 0.2, "coarse": 1.0, "qacm": 0.0, "fine_encoder": 1.0, "fine_head": 0.1}}
    always = {"frames_scored": 100, "fine_frames": 100,
              "stage_cpu_s": {"preprocess": 0.2, "coarse": 1.2, "qacm": 0.0, "fine_encoder": 4.0, "fine_head": 0.4}}
    out = bound_figures(cascade, always, speedup=2.0)
    assert out["c_coarse_ms"] == pytest.approx(13.0) and out["c_fine_ms"] == pytest.approx(44.0)
    assert out["duty"] == pytest.approx(0.25)
    assert out["bound"] == pytest.approx((13.0 + 44.0) / (13.0 + 0.25 * 44.0), abs=1e-4)
    assert out["speedup_over_bound"] == pytest.approx(2.0 / out["bound"], abs=1e-4)
    assert bound_figures({**cascade, "stage_cpu_s": {}}, {**always, "stage_cpu_s": {}}, 2.0)["bound"] is None


def test_summarise_percentiles():
    s = summarise(list(range(1, 101)))
    assert s["p50_ms"] == pytest.approx(50.5) and s["p99_ms"] == pytest.approx(99.01)
    assert s["iterations"] == 100 and s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]
    with pytest.raises(ValueError):
        summarise([])


def test_time_calls_warms_up_then_times():
    calls = []
    samples = time_calls(calls.append, iterations=5, warmup=3)
    assert len(samples) == 5 and calls == [0, 1, 2, 0, 1, 2, 3, 4] and all(t >= 0 for t in samples)


def _video(path, labels_per_frame, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (32, 24))
    for i, _ in enumerate(labels_per_frame):
        writer.write(np.full((24, 32, 3), (i * 7) % 255, np.uint8))
    writer.release()
    segs, start = [], 0
    for i in range(1, len(labels_per_frame) + 1):
        if i == len(labels_per_frame) or labels_per_frame[i] != labels_per_frame[start]:
            segs.append({"clip": f"c{start}", "start": start, "end": i, "label": int(labels_per_frame[start])})
            start = i
    path.with_suffix(".json").write_text(json.dumps({"fps": fps, "frames": len(labels_per_frame), "segments": segs}))


def test_labels_and_dilution(tmp_path):
    per_frame = [0] * 10 + [1] * 5 + [0] * 5  # 25 % anomalous
    src = tmp_path / "s.mp4"
    _video(src, per_frame)
    labels = read_labels(src)
    assert labels is not None and labels.frames.tolist() == per_frame
    r = repeats_needed(labels)
    assert r == 3  # 5 / (15 * 3 + 5) = 10 %
    out = dilute(src, labels, tmp_path / "d.mp4", r)
    assert out.frames.size == 15 * 3 + 5 and out.anomalous_fraction <= MAX_ANOMALOUS_FRACTION
    cap = cv2.VideoCapture(str(tmp_path / "d.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == out.frames.size
    cap.release()
    again = read_labels(tmp_path / "d.mp4")
    assert again is not None and np.array_equal(again.frames, out.frames)
    # normal segments repeat in place: the anomalous run sits after the first normal segment's 3 plays
    assert out.frames[:30].sum() == 0 and out.frames[30:35].all()


def test_no_dilution_when_already_sparse(tmp_path):
    src = tmp_path / "s.mp4"
    _video(src, [0] * 18 + [1] * 2)  # 10 %: at the cap
    assert repeats_needed(read_labels(src)) == 1


def test_missing_and_bad_labels(tmp_path):
    assert read_labels(tmp_path / "none.mp4") is None
    (tmp_path / "bad.json").write_text(json.dumps({"frames": 5, "segments": [{"start": 3, "end": 9, "label": 1}]}))
    with pytest.raises(EdgeVadError) as err:
        read_labels(tmp_path / "bad.mp4")
    assert err.value.exit_code == 2 and "outside" in str(err.value)
