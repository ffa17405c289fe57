"""Gate thresholds for a target false-alarm rate, fitted on normal footage by running the real gate over it.

Used by `edge-vad calibrate` (per camera: at most TARGET_PER_HOUR false events per hour of its footage) and by
the training recipe (the bundle's default thresholds, from out-of-fold scores of normal training clips).

Rule: off_threshold = the OFF_QUANTILE quantile of the smoothed scores of the footage (hysteresis: the gate
closes once the score is back among the footage's usual values); on_threshold = the smallest candidate at or
above the ON_FLOOR_QUANTILE quantile for which the gate (edge_vad.runtime.gate: smoothing, minimum length,
cool-down, exactly as it runs) opens at most floor(target x hours x MARGIN) confirmed events on the footage.
Candidates are the footage's own smoothed values (so the result is the tightest threshold the footage
supports) plus a last one above its maximum. With less than an hour of footage the allowance is 0 events:
the threshold then sits just above the footage's highest confirmed excursion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from edge_vad.config import GateConfig
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.gate import GateState, step

TARGET_PER_HOUR = 1.0  # issue 15: at most one false event per hour of the camera's normal footage
OFF_QUANTILE = 0.95
ON_FLOOR_QUANTILE = 0.99
MARGIN = 0.5  # allow half the target on the footage itself: new footage is never quite as calm
THRESHOLD_RANGE = (0.001, 0.999)  # GateConfig needs 0 < threshold < 1
CANDIDATES = 200  # on-threshold candidates tried (quantiles of the footage's smoothed scores)


@dataclass(frozen=True)
class Stream:
    """One continuous run of scores with each frame's time in seconds (media time)."""

    scores: np.ndarray
    times: np.ndarray

    @property
    def seconds(self) -> float:
        if len(self.times) < 2:
            return 0.0
        return float(self.times[-1] - self.times[0]) + float(np.median(np.diff(self.times)))


def smoothed(scores: np.ndarray, frames: int) -> np.ndarray:
    """The gate's moving average (mean of the last `frames` scores, fewer at the start)."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(s)])
    idx = np.arange(1, len(s) + 1)
    lo = np.maximum(0, idx - frames)
    return (c[idx] - c[lo]) / (idx - lo)


def count_events(cfg: GateConfig, streams: Sequence[Stream]) -> int:
    """Confirmed events (event == "start") the gate reports over the streams (state reset per stream)."""
    events = 0
    for s in streams:
        state = GateState()
        fps = 1.0 / float(np.median(np.diff(s.times))) if len(s.times) > 1 else 1.0
        for i, (score, t) in enumerate(zip(s.scores, s.times)):
            state, d = step(cfg, fps, state, float(score), i, float(t))
            events += d.event == "start"
    return events


def _candidate_events(cfg: GateConfig, streams: Sequence[Stream], on: float, off: float) -> int:
    return count_events(GateConfig(**{**cfg.model_dump(), "on_threshold": on, "off_threshold": min(off, on)}), streams)


def fit_gate(streams: Sequence[Stream], cfg: GateConfig = GateConfig(), target_per_hour: float = TARGET_PER_HOUR,
             margin: float = MARGIN) -> dict:
    """{on_threshold, off_threshold, events, hours, allowed, rule} for the footage (module doc)."""
    streams = [s for s in streams if len(s.scores)]
    if not streams:
        raise EdgeVadError("gate fitting needs the scores of some normal footage")
    hours = sum(s.seconds for s in streams) / 3600.0
    allowed = int(math.floor(target_per_hour * hours * margin))
    pooled = np.concatenate([smoothed(s.scores, cfg.smoothing_frames) for s in streams])
    lo, hi = THRESHOLD_RANGE
    off = float(np.clip(np.quantile(pooled, OFF_QUANTILE), lo, hi))
    floor = float(np.quantile(pooled, ON_FLOOR_QUANTILE))
    above = np.unique(pooled[pooled >= floor])
    grid = np.quantile(above, np.linspace(0, 1, min(CANDIDATES, len(above)))) if len(above) else np.array([floor])
    ceiling = float(pooled.max()) + 1e-6
    candidates: List[float] = sorted({float(np.clip(v, lo, hi)) for v in np.append(grid, ceiling)})
    # events fall as the threshold rises: bisect for the first candidate within the allowance
    left, right = 0, len(candidates) - 1
    if _candidate_events(cfg, streams, candidates[right], off) > allowed:
        on = candidates[right]
    else:
        while left < right:
            mid = (left + right) // 2
            if _candidate_events(cfg, streams, candidates[mid], off) <= allowed:
                right = mid
            else:
                left = mid + 1
        on = candidates[left]
    events = _candidate_events(cfg, streams, on, off)
    return {"on_threshold": round(on, 6), "off_threshold": round(min(off, on), 6), "events": int(events),
            "hours": round(hours, 4), "allowed_events": allowed, "target_per_hour": target_per_hour,
            "rule": (f"smallest on-threshold >= the {ON_FLOOR_QUANTILE} quantile with at most {allowed} confirmed "
                     f"events (target {target_per_hour:g}/h x {hours:.3f} h x margin {margin:g}) on the footage through "
                     f"the gate ({cfg.smoothing_frames}-frame average, min_open_s {cfg.min_open_s:g}, cooldown_s "
                     f"{cfg.cooldown_s:g}); off = its {OFF_QUANTILE} quantile")}


def stream_from_frames(scores: Sequence[float], fps: float) -> Stream:
    s = np.asarray(scores, dtype=np.float64)
    return Stream(s, np.arange(len(s)) / float(fps))

