"""Ground-truth parsers: the real benchmark files give their known totals; the formats' rules on tiny files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.eval.ground_truth import canonical_name, classes_from_name, detect_format, load_ground_truth


def _totals(gt) -> tuple:
    return len(gt.masks), sum(len(m) for m in gt.masks.values()), sum(int(m.sum()) for m in gt.masks.values())


# --- real files ----------------------------------------------------------------------------------


def test_ucf_annotation_totals_and_reference_masks(shared_data: Path):
    gt = load_ground_truth(shared_data / "gt" / "UCF_Annotation.txt")
    assert gt.format == "ucf_annotation"
    assert _totals(gt) == (290, 1_111_808, 84_182)
    assert sum(gt.classes[v] == ("Normal",) for v in gt.videos) == 150
    ref = load_ground_truth(shared_data / "gt" / "ucf_test_frame_gt.npz")
    assert sum(np.array_equal(gt.masks[v], ref.masks[v]) for v in ref.masks) == 290


def test_ucf_temporal_annotation_sized_from_lengths(shared_data: Path):
    ref = load_ground_truth(shared_data / "gt" / "ucf_test_frame_gt.npz")
    gt = load_ground_truth(shared_data / "gt" / "Temporal_Anomaly_Annotation.txt", {v: len(m) for v, m in ref.masks.items()})
    assert gt.format == "ucf_temporal"
    assert _totals(gt) == (290, 1_111_808, 84_182)
    assert sum(np.array_equal(gt.masks[v], ref.masks[v]) for v in ref.masks) == 290
    assert gt.classes["Abuse028_x264"] == ("Abuse",) and gt.intervals["Abuse028_x264"] == ((165, 240),)
    anomaly_classes = {c for v in gt.videos for c in gt.classes[v]} - {"Normal"}
    assert len(anomaly_classes) == 13


def test_xd_npz_totals(shared_data: Path):
    gt = load_ground_truth(shared_data / "gt" / "xd_test_frame_gt_pel4vad.npz")
    assert gt.format == "npz_masks"
    assert _totals(gt) == (800, 2_330_384, 537_805)
    normal = [v for v in gt.videos if gt.classes[v] == ("normal",)]
    assert len(normal) == 300 and not any(gt.masks[v].any() for v in normal)


def test_xd_annotations_agree_with_npz(shared_data: Path):
    ref = load_ground_truth(shared_data / "gt" / "xd_test_frame_gt_pel4vad.npz")
    lengths = {v: len(m) for v, m in ref.masks.items()}
    gt = load_ground_truth(shared_data / "gt" / "annotations.txt", lengths)
    assert gt.format == "xd_annotations"
    assert len(gt.masks) == 800  # 500 listed (14 spelt with .mp4) + 300 `label_A` normal videos from the lengths
    agree = sum(np.array_equal(gt.masks[v], ref.masks[v]) for v in ref.masks if v in gt.masks)
    assert agree >= 786, agree  # measured: 800 of 800 with mask[s:e] = 1 (end exclusive)


def test_xd_multiclass_segment_classes(shared_data: Path):
    ref = load_ground_truth(shared_data / "gt" / "xd_test_frame_gt_pel4vad.npz")
    gt = load_ground_truth(shared_data / "gt" / "annotations_multiclasses.txt", {v: len(m) for v, m in ref.masks.items()})
    assert gt.format == "xd_multiclass"
    # measured 795: the file splits a segment where its class changes, leaving one unlabelled frame
    # between the halves, and lists one segment past the end of the reference mask.
    agree = sum(np.array_equal(gt.masks[v], ref.masks[v]) for v in ref.masks)
    assert agree >= 790, agree
    name = "The.Fast.and.the.Furious.2001__#00-29-00_00-29-52_label_B2-G-0"
    assert gt.intervals[name] == ((310, 515), (790, 1045))
    assert gt.segment_classes[name] == ("shooting", "explosion")
    labels = {c for v in gt.videos for c in gt.segment_classes[v]}
    assert labels == {"fighting", "shooting", "riot", "abuse", "car accident", "explosion"}


def test_non_annotation_files_are_rejected(shared_data: Path):
    for name in ("Anomaly_Test.txt", "xd_CLIP_rgbtest.csv"):
        with pytest.raises(EdgeVadError, match="unrecognised ground-truth format"):
            load_ground_truth(shared_data / "gt" / name)


# --- synthetic files -----------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_detects_each_text_format(tmp_path: Path):
    cases = {
        "ucf_temporal": "Abuse001_x264  Abuse  5  8  -1  -1\nNormal_Videos_001_x264  Normal  -1  -1  -1  -1\n",
        "ucf_annotation": "Abuse/Abuse001_x264.mp4 12 Abuse 5 8 -1 -1\nTesting_Normal_Videos_Anomaly/Normal_Videos_001_x264.mp4 9 Normal -1 -1 -1 -1\n",
        "xd_annotations": "v=x__#1_label_B1-0-0 2 4 6 9\nv=y__#1_label_G-0-0.mp4 0 3\n",
        "xd_multiclass": "v=x__#1_label_B1-G-0 B1 2 4 G 6 9\nv=y__#1_label_G-0-0 G 0 3\n",
    }
    for fmt, text in cases.items():
        assert detect_format(_write(tmp_path, f"{fmt}.txt", text)) == fmt


def test_ucf_annotation_clips_to_length_and_skips_placeholders(tmp_path: Path):
    path = _write(tmp_path, "u.txt", "Abuse/Abuse001_x264.mp4 10 Abuse 2 4 7 15\nShooting/Shooting002_x264.mp4 6 Shooting -1 -1 -1 -1\n")
    gt = load_ground_truth(path, lengths={"Abuse001_x264": 999})  # the file's length wins
    assert gt.masks["Abuse001_x264"].tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]
    assert gt.intervals["Abuse001_x264"] == ((2, 4), (7, 15))
    assert gt.segments("Abuse001_x264") == [(2, 4, "Abuse"), (7, 10, "Abuse")]
    assert gt.masks["Shooting002_x264"].tolist() == [0] * 6 and gt.intervals["Shooting002_x264"] == ()


def test_xd_annotations_need_lengths_and_take_normals_from_them(tmp_path: Path):
    path = _write(tmp_path, "a.txt", "v=x__#1_label_B1-0-0 2 4\nv=z__#1_label_B2-G-0.mp4 0 2 5 6\n")
    with pytest.raises(EdgeVadError, match="gives no video lengths"):
        load_ground_truth(path)
    lengths = {"v=x__#1_label_B1-0-0__0": 6, "v=z__#1_label_B2-G-0.mp4": 8, "v=n__#1_label_A__0": 5, "v=other__#1_label_B4-0-0": 4}
    gt = load_ground_truth(path, lengths)
    assert gt.masks["v=x__#1_label_B1-0-0"].tolist() == [0, 0, 1, 1, 0, 0]
    assert gt.masks["v=z__#1_label_B2-G-0"].tolist() == [1, 1, 0, 0, 0, 1, 0, 0]
    assert gt.masks["v=n__#1_label_A"].tolist() == [0] * 5 and gt.classes["v=n__#1_label_A"] == ("normal",)
    assert "v=other__#1_label_B4-0-0" not in gt.masks  # not normal and not listed: not invented as ground truth
    assert gt.segment_classes["v=x__#1_label_B1-0-0"] == ("fighting",)
    assert gt.segment_classes["v=z__#1_label_B2-G-0"] == (None, None)  # two classes, intervals unattributed
    assert gt.classes["v=z__#1_label_B2-G-0"] == ("shooting", "explosion")


def test_listed_video_without_length_has_intervals_but_no_mask(tmp_path: Path):
    path = _write(tmp_path, "t.txt", "Abuse001_x264 Abuse 1 3 -1 -1\nArson002_x264 Arson 0 2 -1 -1\n")
    gt = load_ground_truth(path, {"Abuse/Abuse001_x264.mp4": 4})
    assert list(gt.masks) == ["Abuse001_x264"] and gt.videos == ["Abuse001_x264", "Arson002_x264"]


def test_npz_masks_threshold_floats_and_reject_bad_entries(tmp_path: Path):
    np.savez(tmp_path / "m.npz", **{"v=a__#1_label_B6-0-0": np.array([0.0, 0.7, 1.0, 0.2]), "b": np.zeros(3)})
    gt = load_ground_truth(tmp_path / "m.npz")
    assert gt.masks["v=a__#1_label_B6-0-0"].tolist() == [0, 1, 1, 0]
    assert gt.segments("v=a__#1_label_B6-0-0") == [(1, 3, "car accident")]
    np.savez(tmp_path / "bad.npz", a=np.zeros((3, 2)))
    with pytest.raises(EdgeVadError, match="1-D"):
        load_ground_truth(tmp_path / "bad.npz")


def test_bad_text_files(tmp_path: Path):
    with pytest.raises(EdgeVadError, match="not found"):
        load_ground_truth(tmp_path / "missing.txt")
    with pytest.raises(EdgeVadError, match="empty"):
        load_ground_truth(_write(tmp_path, "e.txt", "\n\n"))
    with pytest.raises(EdgeVadError, match="unrecognised"):  # one malformed line spoils the file
        load_ground_truth(_write(tmp_path, "m.txt", "v=x 2 4\nv=y 2 4 9\n"))
    with pytest.raises(EdgeVadError, match="listed twice"):
        load_ground_truth(_write(tmp_path, "d.txt", "v=x 2 4\nv=x 5 6\n"), {"v=x": 9})


def test_name_helpers():
    assert canonical_name("Abuse/Abuse028_x264.mp4") == canonical_name("Abuse028_x264__5.npy") == "abuse028_x264"
    assert canonical_name("v=S-7rRLrxnVQ__#1_label_B4-0-0__0") == canonical_name("v=S-7rRLrxnVQ__#1_label_B4-0-0.mp4")
    assert canonical_name("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6") == "bad.boys.1995__#01-11-55_01-12-40_label_g-b2-b6"
    assert classes_from_name("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6__3") == ("explosion", "shooting", "car accident")
    assert classes_from_name("x__#1_label_A") == ("normal",)
    assert classes_from_name("RoadAccidents021_x264") == ("RoadAccidents",)
    assert classes_from_name("Normal_Videos_872_x264") == ("Normal",)
    assert classes_from_name("01_0015") == ()
