"""Gate thresholds from normal-video scores: the gate's own smoothing, quantiles, and error paths."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.training.gate_calibration import smoothed, suggest_gate  # noqa: E402


def test_smoothing_is_the_gates_causal_moving_average():
    s = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(smoothed(s, 2), [1.0, 0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(smoothed(s, 1), s)


def test_thresholds_are_quantiles_of_the_smoothed_scores():
    rng = np.random.default_rng(0)
    videos = [rng.uniform(0.0, 0.5, 300) for _ in range(4)]
    g = suggest_gate(videos, smoothing_frames=1)
    pooled = np.concatenate(videos)
    assert g["on_threshold"] == pytest.approx(np.quantile(pooled, 0.99), abs=1e-4)
    assert g["off_threshold"] == pytest.approx(np.quantile(pooled, 0.95), abs=1e-4)
    assert 0 < g["off_threshold"] <= g["on_threshold"] < 1 and g["n_frames"] == 1200
    # smoothing shrinks the spread, so the opening level drops
    assert suggest_gate(videos, smoothing_frames=8)["on_threshold"] < g["on_threshold"]


def test_no_normal_video_is_an_error():
    with pytest.raises(EdgeVadError, match="normal video"):
        suggest_gate([], 8)
