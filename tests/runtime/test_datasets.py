"""The real-data split and the stitched streams used for validation and benchmarks."""

from __future__ import annotations

import cv2

from edge_vad.datasets import fight_surv_clips, ped2_videos, split_by_group, split_ped2, stitch_clips


def test_fight_surv_split_keeps_source_videos_apart(shared_data):
    clips = fight_surv_clips(shared_data)
    assert len(clips) == 240 and sum(c.label for c in clips) == 120
    train, val = split_by_group(clips)
    assert {c.group for c in train}.isdisjoint({c.group for c in val})
    assert len(train) + len(val) == 240
    for label in (0, 1):
        share = sum(c.label == label for c in val) / 120
        assert 0.2 <= share <= 0.35, share
    again = split_by_group(clips)[1]
    assert [c.name for c in again] == [c.name for c in val]  # seeded


def test_ped2_split(shared_data):
    train, test = ped2_videos(shared_data)
    assert len(train) == 16 and all(c.label == 0 for c in train)
    bags, val = split_ped2(test)
    assert [c.name for c in val] == ["ped2_test_07", "ped2_test_08"]
    assert all(c.frame_labels is not None and c.frame_labels.any() for c in test)


def test_stitched_stream_frame_labels(shared_data, tmp_path):
    clips = fight_surv_clips(shared_data)
    chosen = [next(c for c in clips if c.label == 0), next(c for c in clips if c.label == 1)]
    stream = stitch_clips(chosen, tmp_path / "s.mp4", size=(320, 180), fps=10)
    cap = cv2.VideoCapture(str(stream.path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(stream.frame_labels)
    (_, a0, a1, l0), (_, b0, b1, l1) = stream.segments
    assert (l0, l1) == (0, 1) and a1 == b0 and b1 == n
    assert not stream.frame_labels[a0:a1].any() and stream.frame_labels[b0:b1].all()
    assert not list(tmp_path.glob("*.partial*"))
