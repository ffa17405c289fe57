"""The gate between the coarse and the fine stage: smoothing, hysteresis, minimum length, cool-down.

    gate = Gate(cfg.gate, fps=15)
    for each scored frame:
        d = gate.update(score, frame.index, frame.timestamp_s)
        d.open        -> run / feed the fine stage while True
        d.event       -> "start" / "end": open or close the reported event (EventBuilder)

Rules (all times in the frame's own seconds, `t`; media time for files, monotonic time for
live sources, so a stride or dropped frames do not distort them):

- smoothed = mean of the last `smoothing_frames` scores (fewer at the very start).
- The gate OPENS on the first frame with smoothed >= on_threshold, unless it is cooling down;
  it CLOSES on the first frame with smoothed < off_threshold (hysteresis: off <= on).
  `transition` reports these raw openings and closings; `open` is True from the opening
  frame up to, not including, the closing frame. The fine stage follows `open`.
- Minimum length: an opening becomes a reported EVENT only once it has stayed open for
  min_open_s (`event == "start"` on the first frame with t - t_open >= min_open_s; the event's
  start_frame / start_t are those of the OPENING frame, not of the confirming frame).
  Openings that close earlier never produce an event (no start, no end), so flicker never
  reaches MQTT. With min_open_s = 0 the start comes on the opening frame itself.
- `event == "end"` comes with the closing transition of a confirmed opening; end_frame /
  end_t are those of the LAST OPEN frame, so an event covers [start_frame, end_frame].
- Cool-down: after ANY closing (reported or not) the gate stays closed for cooldown_s
  (no opening while t < t_close + cooldown_s); smoothing keeps running meanwhile.
- finish() closes an open gate at end of stream / shutdown so the last event gets its end.

The state is explicit (`GateState`, frozen) and `step()` is a pure function of
(config, fps, state, score, frame, t); `Gate` is a thin holder around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Optional, Tuple

from edge_vad.config import GateConfig

Transition = Optional[Literal["open", "close"]]
EventMark = Optional[Literal["start", "end"]]


@dataclass(frozen=True)
class GateState:
    """Everything the gate carries from one frame to the next."""

    recent: Tuple[float, ...] = ()  # last <= smoothing_frames raw scores, oldest first
    is_open: bool = False
    confirmed: bool = False  # the current opening has lasted min_open_s (its event started)
    open_frame: Optional[int] = None  # opening frame of the current opening
    open_t: Optional[float] = None
    last_open_frame: Optional[int] = None  # newest frame seen while open
    last_open_t: Optional[float] = None
    cooldown_until: float = -math.inf  # no opening while t < this


@dataclass(frozen=True)
class GateDecision:
    open: bool  # the gate is open on this frame (run the fine stage)
    transition: Transition  # raw gate opening / closing on this frame
    smoothed: float  # smoothed score (nan only from finish())
    event: EventMark = None  # reported event boundary on this frame
    start_frame: Optional[int] = None  # of the current / just-ended opening (None when closed)
    start_t: Optional[float] = None
    end_frame: Optional[int] = None  # set with event == "end": the last open frame
    end_t: Optional[float] = None
    cooling_down: bool = False  # closed and not allowed to open yet


def step(cfg: GateConfig, fps: float, state: GateState, score: float, frame_index: int,
         t: Optional[float] = None) -> Tuple[GateState, GateDecision]:
    """One frame through the gate: (new state, decision). Pure: same inputs, same outputs."""
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"coarse score of frame {frame_index} is {score}; the gate needs finite scores")
    if t is None:
        t = frame_index / fps
    recent = (state.recent + (score,))[-cfg.smoothing_frames:]
    smoothed = math.fsum(recent) / len(recent)
    state = replace(state, recent=recent)

    if state.is_open:
        if smoothed < cfg.off_threshold:
            was_confirmed = state.confirmed
            decision = GateDecision(
                open=False, transition="close", smoothed=smoothed,
                event="end" if was_confirmed else None,
                start_frame=state.open_frame, start_t=state.open_t,
                end_frame=state.last_open_frame if was_confirmed else None,
                end_t=state.last_open_t if was_confirmed else None,
                cooling_down=cfg.cooldown_s > 0,
            )
            return _closed(state, t + cfg.cooldown_s), decision
        state = replace(state, last_open_frame=frame_index, last_open_t=t)
        return _maybe_confirm(cfg, state, smoothed, transition=None, t=t)

    cooling = t < state.cooldown_until - 1e-9  # tolerance: t = k / fps sums are off by an ulp
    if smoothed >= cfg.on_threshold and not cooling:
        state = replace(state, is_open=True, confirmed=False, open_frame=frame_index, open_t=t,
                        last_open_frame=frame_index, last_open_t=t)
        return _maybe_confirm(cfg, state, smoothed, transition="open", t=t)
    return state, GateDecision(open=False, transition=None, smoothed=smoothed, cooling_down=cooling)


def finish(cfg: GateConfig, state: GateState, t: Optional[float] = None) -> Tuple[GateState, GateDecision]:
    """Close an open gate now (end of stream, shutdown). A confirmed opening ends its event at
    its last open frame; an unconfirmed one closes silently. No-op decision when closed."""
    if not state.is_open:
        return state, GateDecision(open=False, transition=None, smoothed=math.nan)
    end_t = state.last_open_t if t is None else t
    decision = GateDecision(
        open=False, transition="close", smoothed=math.nan,
        event="end" if state.confirmed else None,
        start_frame=state.open_frame, start_t=state.open_t,
        end_frame=state.last_open_frame if state.confirmed else None,
        end_t=state.last_open_t if state.confirmed else None,
    )
    return _closed(state, end_t + cfg.cooldown_s), decision


def _closed(state: GateState, cooldown_until: float) -> GateState:
    return replace(state, is_open=False, confirmed=False, open_frame=None, open_t=None,
                   last_open_frame=None, last_open_t=None, cooldown_until=cooldown_until)


def _maybe_confirm(cfg: GateConfig, state: GateState, smoothed: float, transition: Transition,
                   t: float) -> Tuple[GateState, GateDecision]:
    event: EventMark = None
    # The small tolerance keeps "open for exactly min_open_s" (t = k / fps sums) from missing by 1 ulp.
    if not state.confirmed and t - state.open_t >= cfg.min_open_s - 1e-9:
        state = replace(state, confirmed=True)
        event = "start"
    return state, GateDecision(open=True, transition=transition, smoothed=smoothed, event=event,
                               start_frame=state.open_frame, start_t=state.open_t)


class Gate:
    """Holds a GateState and steps it. `state` is inspectable and may be saved and restored."""

    def __init__(self, cfg: GateConfig, fps: float, state: Optional[GateState] = None):
        if not fps or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"gate fps must be a positive number, got {fps!r}")
        self.cfg = cfg
        self.fps = float(fps)
        self.state = state if state is not None else GateState()

    def update(self, score: float, frame_index: int, t: Optional[float] = None) -> GateDecision:
        """Feed one coarse score. `t` defaults to frame_index / fps (media time)."""
        self.state, decision = step(self.cfg, self.fps, self.state, score, frame_index, t)
        return decision

    def finish(self, t: Optional[float] = None) -> GateDecision:
        self.state, decision = finish(self.cfg, self.state, t)
        return decision

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    def reset(self) -> None:
        self.state = GateState()
