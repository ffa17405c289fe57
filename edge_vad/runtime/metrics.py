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
stage_latency_seconds{stage} (histogram; stages in STAGES),
source_up{source} (1 while open and delivering, else 0), source_reconnects_total{source},
source_last_frame_age_seconds{source}, output_failures_total{kind}, outputs_lost_total{kind}
(edge_vad.runtime.outputs), mqtt_spooled_events (events waiting for the broker's acknowledgement).
fps and gate_open_ratio are computed over the last RATE_WINDOW_FRAMES frames of each source; fps, up
and the frame age are refreshed whenever they are read, so fps drops to 0 as soon as a source is down
or stalled (no frame for stale_after_s) instead of repeating the rate it had before.
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
STALE_AFTER_S = 5.0  # a source without a frame for this long is stalled: /healthz degraded ([http] stalled_after_s)
HEALTHY_STATES = ("open",)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class _SourceHealth:
    state: str = "starting"
    frames: int = 0
    last_frame_at: Optional[float] = None  # clock() time
    reconnects: int = 0
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
        self.source_up = Gauge("source_up", "1 while the source is open and delivered a frame within the stall "
                               "age, else 0", ["source"], namespace=NAMESPACE, registry=r)
        self.source_reconnects = Counter("source_reconnects", "Successful reopenings of a lost live source",
                                         ["source"], namespace=NAMESPACE, registry=r)
        self.last_frame_age = Gauge("source_last_frame_age_seconds", "Seconds since the source's last processed frame "
                                    "(since start-up while it has none)", ["source"], namespace=NAMESPACE, registry=r)
        self.output_failures = Counter("output_failures", "Failed writes of outputs, by kind", ["kind"],
                                       namespace=NAMESPACE, registry=r)
        self.outputs_lost = Counter("outputs_lost", "Outputs lost for good, by kind", ["kind"], namespace=NAMESPACE,
                                    registry=r)
        self.mqtt_spooled = Gauge("mqtt_spooled_events", "Events in the MQTT spool, not yet acknowledged by the broker",
                                  namespace=NAMESPACE, registry=r)
        self._started_at = clock()
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
        self.source_up.labels(source=source)
        self.source_reconnects.labels(source=source)
        self.last_frame_age.labels(source=source)

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
            elif health.state == "starting":
                health.state = "open"  # a frame proves it delivers
            health.frames += 1
            health.last_frame_at = now
            health.recent.append((now, bool(gate_open)))
            fps, ratio = health.fps(), health.open_ratio()
        self.frames_total.labels(source=source).inc()
        if fps is not None:
            self.fps_gauge.labels(source=source).set(fps)
        self.gate_open_ratio.labels(source=source).set(ratio)

    def reconnects(self, source: str, total: int) -> None:
        """The source's own count of successful reconnects (SourceStats.reconnects); the counter follows it."""
        with self._lock:
            health = self._sources.setdefault(source, _SourceHealth())
            delta = total - health.reconnects
            health.reconnects = max(health.reconnects, total)
        if delta > 0:
            self.source_reconnects.labels(source=source).inc(delta)

    def output_failure(self, kind: str, lost: int = 0) -> None:
        self.output_failures.labels(kind=kind).inc()
        if lost:
            self.outputs_lost.labels(kind=kind).inc(lost)

    def mqtt_spool(self, events: int) -> None:
        self.mqtt_spooled.set(events)

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
        (also with no source at all: nothing is being watched). Also refreshes the per-source gauges."""
        now = self._clock()
        sources = {}
        healthy = bool(self._sources)
        with self._lock:
            for name, h in self._sources.items():
                age = None if h.last_frame_at is None else now - h.last_frame_at
                stalled = age is None or age > self.stale_after_s
                ok = h.state in HEALTHY_STATES and not stalled
                healthy &= ok
                fps = h.fps() if ok else 0.0  # a stream that is down or stalled has no rate: never a stale one
                ratio = h.open_ratio()
                sources[name] = {
                    "state": h.state, "ok": ok, "stalled": h.state in HEALTHY_STATES and stalled, "frames": h.frames,
                    "fps": None if fps is None else round(fps, 3),
                    "last_frame_age_s": None if age is None else round(age, 3),
                    "reconnects": h.reconnects,
                    "gate_open_ratio": None if ratio is None else round(ratio, 4),
                }
                self.source_up.labels(source=name).set(1 if ok else 0)
                self.last_frame_age.labels(source=name).set(now - (h.last_frame_at or self._started_at))
                if fps is not None:
                    self.fps_gauge.labels(source=name).set(fps)
        return {"status": "ok" if healthy else "degraded", "stalled_after_s": self.stale_after_s, "sources": sources}

    def exposition(self) -> bytes:
        self.health()  # up / frame age / fps as of now, not as of the last frame
        return generate_latest(self.registry)
