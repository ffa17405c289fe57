"""/healthz and /metrics served by the real HTTP server (ephemeral port), read with urllib."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.http_server import HttpServer
from edge_vad.runtime.metrics import STAGES, Metrics

prometheus_parser = pytest.importorskip("prometheus_client.parser")


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


@pytest.fixture
def served():
    clock = FakeClock()
    metrics = Metrics(clock=clock, stale_after_s=5.0)
    with HttpServer(metrics, port=0) as server:
        yield metrics, server, clock


def samples(text: str) -> dict:
    out = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_ok_then_degraded(served):
    metrics, server, clock = served
    status, ctype, body = get(server.url + "/healthz")
    assert status == 503 and json.loads(body)["status"] == "degraded"  # nothing watched yet
    metrics.source_state("cam", "open")
    for i in range(11):  # 10 frames per second
        metrics.frame("cam", gate_open=i >= 8)
        clock.t += 0.1
    status, ctype, body = get(server.url + "/healthz")
    health = json.loads(body)
    assert status == 200 and ctype == "application/json" and health["status"] == "ok"
    cam = health["sources"]["cam"]
    assert cam["state"] == "open" and cam["frames"] == 11
    assert cam["fps"] == pytest.approx(10.0, rel=1e-6)
    assert cam["last_frame_age_s"] == pytest.approx(0.1)
    assert cam["gate_open_ratio"] == pytest.approx(3 / 11, abs=1e-4)
    clock.t += 10  # no frame for 10 s: stale
    status, _, body = get(server.url + "/healthz")
    assert status == 503 and json.loads(body)["sources"]["cam"]["ok"] is False
    metrics.frame("cam")
    assert get(server.url + "/healthz")[0] == 200
    metrics.source_state("cam", "reconnecting")
    assert get(server.url + "/healthz")[0] == 503


def test_metrics_exposition(served):
    metrics, server, clock = served
    metrics.add_source("cam")
    for _ in range(5):
        metrics.frame("cam", gate_open=True)
        clock.t += 0.5
    metrics.dropped("cam", "queue_full", 2)
    metrics.event("cam", "start")
    metrics.event("cam", "end")
    metrics.observe_stage("coarse", 0.004)
    with metrics.stage("fine_head"):
        pass
    status, ctype, body = get(server.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    got = samples(body.decode())
    assert got[("edge_vad_frames_total", (("source", "cam"),))] == 5
    assert got[("edge_vad_dropped_frames_total", (("reason", "queue_full"), ("source", "cam")))] == 2
    assert got[("edge_vad_events_total", (("source", "cam"), ("type", "start")))] == 1
    assert got[("edge_vad_fps", (("source", "cam"),))] == pytest.approx(2.0)
    assert got[("edge_vad_gate_open_ratio", (("source", "cam"),))] == 1.0
    assert got[("edge_vad_stage_latency_seconds_count", (("stage", "coarse"),))] == 1
    assert got[("edge_vad_stage_latency_seconds_bucket", (("le", "0.005"), ("stage", "coarse")))] == 1
    assert got[("edge_vad_stage_latency_seconds_bucket", (("le", "0.002"), ("stage", "coarse")))] == 0
    assert got[("edge_vad_stage_latency_seconds_count", (("stage", "fine_head"),))] == 1
    for stage in STAGES:  # every stage exposed from the start
        assert ("edge_vad_stage_latency_seconds_count", (("stage", stage),)) in got
    with pytest.raises(ValueError, match="unknown stage"):
        metrics.observe_stage("decode", 0.1)


def test_registries_are_isolated():
    a, b = Metrics(), Metrics()  # two instances in one process: no "duplicated timeseries" error
    a.frame("cam")
    assert 'source="cam"' in a.exposition().decode() and 'source="cam"' not in b.exposition().decode()
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("edge_vad_frames_total", {"source": "cam"}) is None


def test_unknown_path_is_404_and_busy_port_is_one_line_error(served):
    _, server, _ = served
    assert get(server.url + "/nope")[0] == 404
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(EdgeVadError, match="choose another"):
            HttpServer(Metrics(), port=s.getsockname()[1]).start()


def test_stop_frees_the_port():
    server = HttpServer(Metrics(), port=0).start()
    port = server.port
    server.stop()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


# ----------------------------------------------------------------------------- issue 14, case 6
def head(url: str):
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_head_answers_like_get_without_a_body(served):
    metrics, server, clock = served
    status, headers, body = head(server.url + "/healthz")
    assert status == 503 and body == b"" and int(headers["Content-Length"]) > 0  # nothing watched yet
    metrics.source_state("cam", "open")
    metrics.frame("cam")
    status, headers, body = head(server.url + "/healthz")
    assert status == 200 and body == b"" and headers["Content-Type"] == "application/json"
    assert head(server.url + "/metrics")[0] == 200


def test_a_source_that_is_down_shows_fps_zero_up_zero_age_and_reconnects(served):
    metrics, server, clock = served
    metrics.source_state("cam", "open")
    for _ in range(20):  # 10 fps
        metrics.frame("cam")
        clock.t += 0.1
    got = samples(get(server.url + "/metrics")[2].decode())
    assert got[("edge_vad_fps", (("source", "cam"),))] == pytest.approx(10.0)
    assert got[("edge_vad_source_up", (("source", "cam"),))] == 1
    metrics.source_state("cam", "reconnecting")
    clock.t += 16.0
    got = samples(get(server.url + "/metrics")[2].decode())
    assert got[("edge_vad_fps", (("source", "cam"),))] == 0.0  # not the 10 fps it had before the outage
    assert got[("edge_vad_source_up", (("source", "cam"),))] == 0
    assert got[("edge_vad_source_last_frame_age_seconds", (("source", "cam"),))] == pytest.approx(16.1)
    metrics.reconnects("cam", 1)
    metrics.source_state("cam", "open")
    metrics.frame("cam")
    got = samples(get(server.url + "/metrics")[2].decode())
    assert got[("edge_vad_source_reconnects_total", (("source", "cam"),))] == 1
    assert got[("edge_vad_source_up", (("source", "cam"),))] == 1


def test_open_but_stalled_source_is_503_after_the_configured_age(served):
    metrics, server, clock = served
    metrics.source_state("cam", "open")
    metrics.frame("cam")
    clock.t += 4.9
    assert get(server.url + "/healthz")[0] == 200
    clock.t += 0.2  # past stale_after_s = 5 with the state still "open" (a frozen stream)
    status, _, body = get(server.url + "/healthz")
    cam = json.loads(body)["sources"]["cam"]
    assert status == 503 and cam["stalled"] is True and cam["ok"] is False and cam["fps"] == 0.0


def test_output_failures_are_counted_by_kind(served):
    metrics, server, _ = served
    metrics.output_failure("clip", lost=1)
    metrics.output_failure("events_jsonl", lost=0)
    got = samples(get(server.url + "/metrics")[2].decode())
    assert got[("edge_vad_output_failures_total", (("kind", "clip"),))] == 1
    assert got[("edge_vad_outputs_lost_total", (("kind", "clip"),))] == 1
    assert got[("edge_vad_output_failures_total", (("kind", "events_jsonl"),))] == 1
