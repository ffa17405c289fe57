"""What happens after the coarse score: gate -> event -> delivery (JSONL, stdout, MQTT, clips,
heatmap snapshots), plus /healthz + /metrics and systemd integration.

One module, one job:
    gate        Gate / GateState / GateDecision: smoothing, hysteresis, min length, cool-down
    events      EventBuilder, Event, FineSummary, JsonlEventWriter, StdoutEventSink, EventSinks
    clips       ClipRecorder: ring buffer, pre/post roll, atomic .partial.mp4 -> .mp4
    snapshot    overlay() and write_snapshot(): heatmap JPEG
    mqtt_sink   MqttSink (paho-mqtt, the `mqtt` extra): events, availability, last will
    metrics     Metrics: Prometheus registry + per-source health
    http_server HttpServer: GET /healthz, GET /metrics
    sdnotify    ready(), stopping(), status(), Watchdog: systemd Type=notify
"""

from edge_vad.runtime.clips import ClipRecorder, FinishedClip
from edge_vad.runtime.events import (
    Event, EventBuilder, EventSinks, FineSummary, JsonlEventWriter, StdoutEventSink, read_events,
)
from edge_vad.runtime.gate import Gate, GateDecision, GateState
from edge_vad.runtime.http_server import HttpServer
from edge_vad.runtime.metrics import STAGES, Metrics
from edge_vad.runtime.snapshot import overlay, write_snapshot

__all__ = [
    "ClipRecorder", "Event", "EventBuilder", "EventSinks", "FineSummary", "FinishedClip", "Gate", "GateDecision",
    "GateState", "HttpServer", "JsonlEventWriter", "Metrics", "STAGES", "StdoutEventSink", "overlay",
    "read_events", "write_snapshot",
]
