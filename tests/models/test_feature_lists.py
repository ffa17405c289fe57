"""The field's `path,label` feature lists (VadCLIP format), parsed from the real published files."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad_models.feature_lists import load_features, parse_label, read_feature_list


def test_label_parsing():
    assert parse_label("Normal") == (0, "normal")
    assert parse_label("A") == (0, "normal")
    assert parse_label("B2-0-0") == (1, "shooting")
    assert parse_label("B1-B2-0") == (1, "fighting")
    assert parse_label("Abuse") == (1, "abuse")


def test_real_xd_and_ucf_lists(shared_data):
    xd = read_feature_list(shared_data / "gt" / "xd_CLIP_rgbtest.csv")
    assert len(xd) == 800
    assert sum(e.label == 0 for e in xd) == 300  # XD-Violence test: 300 normal videos
    ucf = read_feature_list(shared_data / "gt" / "ucf_CLIP_rgbtest.csv")
    counts = collections.Counter(e.class_name for e in ucf)
    assert len(ucf) == 290 and counts["normal"] == 150  # UCF-Crime test: 150 normal of 290


def test_reroot_and_errors(tmp_path):
    np.save(tmp_path / "v__0.npy", np.zeros((5, 8), np.float32))
    csv = tmp_path / "l.csv"
    csv.write_text("path,label\n/home/somebody/feats/v__0.npy,B1-0-0\n")
    entry = read_feature_list(csv, root=tmp_path)[0]
    assert entry.path == tmp_path / "v__0.npy" and load_features(entry).shape == (5, 8)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx,y\n")
    with pytest.raises(EdgeVadError, match="path,label"):
        read_feature_list(bad)
    with pytest.raises(EdgeVadError, match="not found"):
        load_features(read_feature_list(csv)[0])
