"""Gate thresholds for a false-alarm target, fitted by running the real gate over normal footage."""

from __future__ import annotations

import numpy as np
import pytest

from edge_vad.config import GateConfig
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.gate import Gate
from edge_vad.runtime.gate_fit import Stream, count_events, fit_gate, smoothed, stream_from_frames


def bursty(seed: int, frames: int = 3000, fps: float = 10.0) -> Stream:
    """Normal footage: low scores with a few short bursts (the kind of excursion a threshold must ride over)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.0, 0.2, frames)
    for start in rng.choice(frames - 40, 6, replace=False):
        s[start:start + 30] = rng.uniform(0.3, 0.7)
    return stream_from_frames(s, fps)


def test_smoothing_is_the_gates_own_moving_average():
    cfg = GateConfig(smoothing_frames=4)
    scores = np.random.default_rng(0).random(30)
    gate = Gate(cfg, fps=10.0)
    np.testing.assert_allclose(smoothed(scores, 4), [gate.update(s, i).smoothed for i, s in enumerate(scores)])


def test_count_events_matches_the_gate():
    cfg = GateConfig(on_threshold=0.5, off_threshold=0.4, min_open_s=0.5, cooldown_s=0.0)
    s = np.zeros(100)
    s[10:30] = 0.9  # 2 s: one event
    s[50:52] = 0.9  # 0.2 s: too short to confirm
    assert count_events(cfg, [stream_from_frames(s, 10.0)]) == 1


def test_fitted_thresholds_keep_the_footage_within_the_target():
    streams = [bursty(1), bursty(2)]  # 10 min in all: the allowance at 1 / h (margin 0.5) is 0 events
    cfg = GateConfig()
    fit = fit_gate(streams, cfg, target_per_hour=1.0)
    assert fit["allowed_events"] == 0 and fit["events"] == 0
    assert 0 < fit["off_threshold"] <= fit["on_threshold"] < 1
    used = GateConfig(on_threshold=fit["on_threshold"], off_threshold=fit["off_threshold"])
    assert count_events(used, streams) == 0
    # the tightest such threshold: a little lower, the bursts open the gate
    lower = GateConfig(on_threshold=fit["on_threshold"] * 0.9, off_threshold=fit["off_threshold"] * 0.9)
    assert count_events(lower, streams) > 0


def test_a_generous_target_allows_events_and_a_lower_threshold():
    streams = [bursty(3, frames=7200, fps=2.0)]  # one hour
    strict = fit_gate(streams, GateConfig(), target_per_hour=1.0)
    loose = fit_gate(streams, GateConfig(), target_per_hour=12.0)
    assert loose["allowed_events"] == 6 and loose["events"] <= 6
    assert loose["on_threshold"] <= strict["on_threshold"]


def test_no_footage_is_an_error():
    with pytest.raises(EdgeVadError, match="normal footage"):
        fit_gate([Stream(np.zeros(0), np.zeros(0))])
