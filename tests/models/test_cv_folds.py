"""Cross-validation folds never leak a source video (issue 15: figures must predict footage nobody has seen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the folds use scikit-learn's StratifiedGroupKFold")

from edge_vad.datasets import Clip  # noqa: E402
from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.training.cv_folds import Fold, check_no_leak, default_folds, make_folds  # noqa: E402


def synthetic():
    rng = np.random.default_rng(0)
    fight = [Clip(f"c{i:03d}", Path(f"c{i}.mp4"), int(rng.random() < 0.5), f"src{i % 17}") for i in range(120)]
    ped2_train = [Clip(f"ped2_train_{i:02d}", Path("t"), 0, f"ped2_train_{i:02d}") for i in range(1, 17)]
    ped2_test = [Clip(f"ped2_test_{i:02d}", Path("x"), 1, f"ped2_test_{i:02d}", np.ones(5, np.uint8)) for i in range(1, 9)]
    return fight, ped2_train, ped2_test


def assert_folds_are_clean(folds, n_fight, n_ped2_test):
    held = [c.name for f in folds for c in f.held_out]
    assert len(held) == len(set(held)) == n_fight + n_ped2_test  # every clip held out exactly once
    for f in folds:
        train_groups = {c.group for c in f.train}
        assert not any(c.group in train_groups for c in f.held_out)
        assert not {c.name for c in f.train} & {c.name for c in f.held_out}
        assert {c.label for c in f.fight} == {0, 1}  # both classes in every fold (stratified)


def test_synthetic_folds_group_by_source_video():
    fight, ped2_train, ped2_test = synthetic()
    folds = make_folds(fight, ped2_train, ped2_test)
    assert len(folds) == 5
    assert_folds_are_clean(folds, len(fight), len(ped2_test))
    assert [len(f.ped2) for f in folds] == [2, 2, 2, 2, 0]
    assert make_folds(fight, ped2_train, ped2_test)[3].fight == folds[3].fight  # seeded


def test_a_leak_is_refused():
    fight, _, _ = synthetic()
    same_source = [c for c in fight if c.group == "src3"]
    with pytest.raises(EdgeVadError, match="also in training"):
        check_no_leak([Fold(0, (same_source[0],), (same_source[1],), ())])


def test_the_shared_data_folds_never_split_a_source_video(shared_data: Path):
    folds = default_folds(shared_data)
    assert_folds_are_clean(folds, 240, 8)
