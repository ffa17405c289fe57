"""Runtime metrics (Prometheus) and per-source health, in one thread-safe object.

    m = Metrics()                                  # its own CollectorRegistry, never the global one
    m.source_state("front-door", "open")           # open / reconnecting / ended / failed
    m.frame("front-door", gate_open=d.open)        # every processed frame
    m.dropped("front-door", "queue_full")          # frames or snippets not processed, by reason
    m.event("front-door", "start")                 # every event record sent
    with m.stage("coarse"): ...                    # stage latency (or m.observe_stage(...))
    m.health()  -> {"status": "ok"|"degraded", "sources": {...}}   (served on /healthz)
    m.exposition() -> Prometheus text                                (served on /metrics)

Exported series (prefix edge_vad_): frames_total{source}, dropped_frames_total{source,reason},
events_total{source,type}, fps{source}, gate_open_ratio{source},
stage_latency_seconds{stage} (histogram; stages in STAGES).
fps and gate_open_ratio are computed over the last RATE_WINDOW_FRAMES frames of each source.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterator, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

STAGES = ("preprocess", "coarse", "qacm", "fine_encoder", "fine_head")
NAMESPACE = "edge_vad"
# Per-frame work on Jetson / Coral is 1-100 ms; buckets resolve that range, the tail catches stalls.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
RATE_WINDOW_FRAMES = 120  # fps / gate-open ratio over the last 120 frames (8 s at 15 fps)
STALE_AFTER_S = 5.0  # a source without a frame for this long makes /healthz degraded
HEALTHY_STATES = ("open",)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class _SourceHealth:
    state: str = "starting"
    frames: int = 0
    last_frame_at: Optional[float] = None  # clock() time
    recent: Deque[Tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW_FRAMES))

    def fps(self) -> Optional[float]:
        if len(self.recent) < 2:
            return None
        span = self.recent[-1][0] - self.recent[0][0]
        return (len(self.recent) - 1) / span if span > 0 else None

    def open_ratio(self) -> Optional[float]:
        if not self.recent:
            return None
        return sum(1 for _, is_open in self.recent if is_open) / len(self.recent)


class Metrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None, clock: Callable[[], float] = time.monotonic,
                 stale_after_s: float = STALE_AFTER_S):
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self.stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._sources: Dict[str, _SourceHealth] = {}
        r = self.registry
        self.frames_total = Counter("frames", "Frames processed by the coarse stage", ["source"], namespace=NAMESPACE, registry=r)
        self.dropped_frames_total = Counter("dropped_frames", "Frames or snippets not processed, by reason",
                                            ["source", "reason"], namespace=NAMESPACE, registry=r)
        self.events_total = Counter("events", "Event records emitted, by type", ["source", "type"],
                                    namespace=NAMESPACE, registry=r)
        self.fps_gauge = Gauge("fps", f"Processed frames per second over the last {RATE_WINDOW_FRAMES} frames",
                               ["source"], namespace=NAMESPACE, registry=r)
        self.gate_open_ratio = Gauge("gate_open_ratio", f"Fraction of the last {RATE_WINDOW_FRAMES} frames with the gate open",
                                     ["source"], namespace=NAMESPACE, registry=r)
        self.stage_latency = Histogram("stage_latency_seconds", "Wall time per stage call", ["stage"],
                                       namespace=NAMESPACE, registry=r, buckets=LATENCY_BUCKETS)
        for stage in STAGES:
            self.stage_latency.labels(stage=stage)  # expose every stage from the start, even at zero

    # -- sources -----------------------------------------------------------------------
    def add_source(self, source: str, state: str = "starting") -> None:
        with self._lock:
            self._sources.setdefault(source, _SourceHealth(state=state))
        self.frames_total.labels(source=source)
        self.fps_gauge.labels(source=source)
        self.gate_open_ratio.labels(source=source)

    def source_state(self, source: str, state: str) -> None:
        """Record a source's state (SourceState.value: open, reconnecting, ended, failed)."""
        self.add_source(source)
        with self._lock:
            self._sources[source].state = getattr(state, "value", state)

    def frame(self, source: str, gate_open: bool = False) -> None:
        now = self._clock()
        with self._lock:
            health = self._sources.get(source)
            if health is None:
                health = self._sources[source] = _SourceHealth(state="open")
            health.frames += 1
            health.last_frame_at = now
            health.recent.append((now, bool(gate_open)))
            fps, ratio = health.fps(), health.open_ratio()
        self.frames_total.labels(source=source).inc()
        if fps is not None:
            self.fps_gauge.labels(source=source).set(fps)
        self.gate_open_ratio.labels(source=source).set(ratio)

    def dropped(self, source: str, reason: str, n: int = 1) -> None:
        self.dropped_frames_total.labels(source=source, reason=reason).inc(n)

    def event(self, source: str, event_type: str) -> None:
        self.events_total.labels(source=source, type=event_type).inc()

    # -- latency -----------------------------------------------------------------------
    def observe_stage(self, stage: str, seconds: float) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        self.stage_latency.labels(stage=stage).observe(seconds)

    @contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_latency.labels(stage=stage).observe(time.perf_counter() - start)

    # -- reports -----------------------------------------------------------------------
    def health(self) -> dict:
        """ok when every source is open and delivered a frame within stale_after_s; else degraded
        (also with no source at all: nothing is being watched)."""
        now = self._clock()
        sources = {}
        healthy = bool(self._sources)
        with self._lock:
            for name, h in self._sources.items():
                age = None if h.last_frame_at is None else now - h.last_frame_at
                fresh = age is not None and age <= self.stale_after_s
                ok = h.state in HEALTHY_STATES and fresh
                healthy &= ok
                fps, ratio = h.fps(), h.open_ratio()
                sources[name] = {
                    "state": h.state, "ok": ok, "frames": h.frames,
                    "fps": None if fps is None else round(fps, 3),
                    "last_frame_age_s": None if age is None else round(age, 3),
                    "gate_open_ratio": None if ratio is None else round(ratio, 4),
                }
        return {"status": "ok" if healthy else "degraded", "sources": sources}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
