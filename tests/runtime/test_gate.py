"""The gate: smoothing, hysteresis, minimum length, cool-down; examples plus property tests."""

from __future__ import annotations

import math

import pytest

from edge_vad.config import GateConfig
from edge_vad.runtime.gate import Gate, GateState, finish, step

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (pip install hypothesis)")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FPS = 10.0


def run(cfg: GateConfig, scores, fps: float = FPS):
    gate = Gate(cfg, fps)
    return [gate.update(s, i) for i, s in enumerate(scores)], gate


def test_smoothing_is_the_moving_average_of_the_last_frames():
    cfg = GateConfig(smoothing_frames=3, on_threshold=0.99, off_threshold=0.5)
    decisions, _ = run(cfg, [0.3, 0.6, 0.9, 0.0, 0.0])
    assert [round(d.smoothed, 6) for d in decisions] == [0.3, 0.45, 0.6, 0.5, 0.3]


def test_hysteresis_opens_at_on_and_closes_below_off():
    cfg = GateConfig(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=0, cooldown_s=0)
    scores = [0.1, 0.59, 0.6, 0.5, 0.41, 0.4, 0.39, 0.5, 0.6]
    decisions, _ = run(cfg, scores)
    assert [d.open for d in decisions] == [False, False, True, True, True, True, False, False, True]
    assert [d.transition for d in decisions] == [None, None, "open", None, None, None, "close", None, "open"]
    # Between the thresholds the state holds: 0.5 does not open (frame 7) nor close (frame 3).


def test_short_opening_is_not_an_event_but_a_long_one_starts_at_the_opening_frame():
    cfg = GateConfig(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=1.0, cooldown_s=0)
    # 5 frames (0.5 s at 10 fps) high: gate opens and closes, no event.
    blip = [0.0] * 3 + [0.9] * 5 + [0.0] * 3
    decisions, _ = run(cfg, blip)
    assert any(d.transition == "open" for d in decisions) and any(d.transition == "close" for d in decisions)
    assert all(d.event is None for d in decisions)
    # 20 frames high from frame 3: event start confirmed at frame 13 (t 1.3 - 0.3 = 1.0 s) but
    # dated from frame 3; the end names the last open frame (22).
    decisions, _ = run(cfg, [0.0] * 3 + [0.9] * 20 + [0.0] * 3)
    marks = [(i, d.event) for i, d in enumerate(decisions) if d.event]
    assert marks == [(13, "start"), (23, "end")]
    start, end = decisions[13], decisions[23]
    assert (start.start_frame, start.start_t) == (3, pytest.approx(0.3))
    assert (end.start_frame, end.end_frame, end.end_t) == (3, 22, pytest.approx(2.2))


def test_min_open_zero_starts_on_the_opening_frame():
    cfg = GateConfig(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=0, cooldown_s=0)
    decisions, _ = run(cfg, [0.0, 0.9, 0.0])
    assert [(d.transition, d.event) for d in decisions] == [(None, None), ("open", "start"), ("close", "end")]
    assert decisions[2].end_frame == 1


def test_cooldown_blocks_reopening_then_allows_it():
    cfg = GateConfig(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=0, cooldown_s=1.0)
    # open at 0, close at frame 2 (t=0.2): closed until t=1.2 even though scores are high from frame 3.
    decisions, _ = run(cfg, [0.9, 0.9, 0.0] + [0.9] * 12)
    opens = [i for i, d in enumerate(decisions) if d.transition == "open"]
    assert opens == [0, 12]
    assert all(d.cooling_down and not d.open for d in decisions[3:12])


def test_finish_ends_an_open_event_and_is_a_noop_when_closed():
    cfg = GateConfig(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=0.2, cooldown_s=0)
    gate = Gate(cfg, FPS)
    for i in range(6):
        gate.update(0.9, i)
    d = gate.finish()
    assert (d.transition, d.event, d.start_frame, d.end_frame) == ("close", "end", 0, 5)
    assert not gate.is_open
    assert gate.finish().transition is None
    # An opening younger than min_open_s closes silently.
    gate.update(0.9, 100)
    assert gate.finish().event is None


def test_explicit_time_overrides_frame_over_fps():
    # A stride of 5 at 10 fps: frames 0, 5, 10, ... are 0.5 s apart; min_open_s counts seconds.
    cfg = GateConfig(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=1.0, cooldown_s=0)
    gate = Gate(cfg, FPS)
    events = [gate.update(0.9, i * 5, t=100.0 + i * 0.5).event for i in range(4)]
    assert events == [None, None, "start", None]


def test_rejects_non_finite_scores_and_bad_fps():
    gate = Gate(GateConfig(), FPS)
    with pytest.raises(ValueError, match="finite"):
        gate.update(math.nan, 0)
    with pytest.raises(ValueError, match="fps"):
        Gate(GateConfig(), 0)


# ------------------------------------------------------------------ properties
@st.composite
def gate_configs(draw):
    on = draw(st.floats(0.05, 0.95))
    off = draw(st.floats(0.01, on))
    return GateConfig(
        smoothing_frames=draw(st.integers(1, 6)), on_threshold=on, off_threshold=off,
        min_open_s=draw(st.sampled_from([0.0, 0.1, 0.3, 1.0])), cooldown_s=draw(st.sampled_from([0.0, 0.2, 0.5])),
    )


scores_st = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=120)


@settings(max_examples=200, deadline=None)
@given(cfg=gate_configs(), scores=scores_st)
def test_properties_of_any_stream(cfg, scores):
    decisions, gate = run(cfg, scores)
    final = gate.finish()
    k = cfg.smoothing_frames
    was_open = False
    event_open = False
    last_close_t = -math.inf
    open_t = None
    for i, d in enumerate(decisions):
        t = i / FPS
        window = scores[max(0, i - k + 1): i + 1]
        assert d.smoothed == pytest.approx(sum(window) / len(window), abs=1e-12)
        # transitions are exactly the changes of `open`
        assert d.transition == ("open" if d.open and not was_open else "close" if was_open and not d.open else None)
        if d.transition == "open":
            assert d.smoothed >= cfg.on_threshold
            assert t - last_close_t >= cfg.cooldown_s - 1e-9, "opened during the cool-down"
            open_t = t
        if d.open and not d.transition:
            assert d.smoothed >= cfg.off_threshold, "stayed open below off_threshold"
        if d.transition == "close":
            assert d.smoothed < cfg.off_threshold
            last_close_t = t
        # events nest inside openings, alternate, and last at least min_open_s
        if d.event == "start":
            assert not event_open and d.open and d.start_t == pytest.approx(open_t)
            assert t - open_t >= cfg.min_open_s - 1e-9
            event_open = True
        if d.event == "end":
            assert event_open and d.transition == "close"
            assert d.end_t - d.start_t >= cfg.min_open_s - 1e-9
            assert d.end_frame == i - 1
            event_open = False
        was_open = d.open
    # finish() ends whatever event is still open
    assert (final.event == "end") == event_open


@settings(max_examples=100, deadline=None)
@given(cfg=gate_configs(), scores=scores_st, cut=st.integers(0, 120))
def test_state_is_explicit_replay_from_saved_state_matches(cfg, scores, cut):
    cut = min(cut, len(scores))
    full, _ = run(cfg, scores)
    state = GateState()
    resumed = []
    for i, s in enumerate(scores[:cut]):
        state, d = step(cfg, FPS, state, s, i)
        resumed.append(d)
    saved = state  # frozen: nothing else can change it
    gate = Gate(cfg, FPS, state=saved)
    resumed += [gate.update(s, i) for i, s in enumerate(scores[cut:], start=cut)]
    assert resumed == full
    # and finishing is pure too
    assert finish(cfg, gate.state)[1] == Gate(cfg, FPS, state=gate.state).finish()
