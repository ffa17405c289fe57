"""Case 5 of issue 14 with a real Mosquitto that is stopped and started again: events the broker has not
acknowledged wait in the on-disk spool, survive the process, and are delivered once the broker is back."""

from __future__ import annotations

import json
import logging
import queue
import time
from pathlib import Path

import pytest

from edge_vad.config import MqttConfig
from edge_vad.runtime.events import EventBuilder
from edge_vad.runtime.outputs import OutputLedger
from edge_vad_test_support.faults import Broker, wait_for

mqtt = pytest.importorskip("paho.mqtt.client", reason="needs the mqtt extra (pip install 'paho-mqtt>=2')")

from edge_vad.runtime.frigate_events import FrigateEnvelopes  # noqa: E402
from edge_vad.runtime.mqtt_sink import MqttSink  # noqa: E402


class Subscriber:
    def __init__(self, port: int, topic: str):
        self.messages: "queue.Queue[str]" = queue.Queue()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"sub-{time.time_ns()}")
        subscribed: "queue.Queue[bool]" = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m.payload.decode())
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def ids(self, n: int, timeout_s: float = 30.0) -> list:
        got = []
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            try:
                got.append(json.loads(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))["after"]["id"])
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _events(n: int):
    return [EventBuilder("cam", i, float(i)).start() for i in range(n)]


def _cfg(port: int, **kw) -> MqttConfig:
    return MqttConfig(enabled=True, port=port, prefix="spool-test", keepalive_s=5, **kw)


def test_broker_down_for_a_whole_run_then_the_next_run_delivers(tmp_path: Path, caplog) -> None:
    broker = Broker(tmp_path)  # not started: down for the whole first run
    spool = tmp_path / "spool"
    events = _events(3)
    with caplog.at_level(logging.WARNING, logger="edge_vad.mqtt"):
        sink = MqttSink(_cfg(broker.port), spool_dir=spool)
        for e in events:
            sink.emit(e)
        sink.close()
    assert len(list(spool.glob("*.json"))) == 3  # nothing lost silently: on disk, in order
    assert any("3 event(s) not acknowledged by the broker stay in the spool" in r.getMessage() for r in caplog.records)
    broker.start()
    try:
        sub = Subscriber(broker.port, "spool-test/events")
        sink = MqttSink(_cfg(broker.port), spool_dir=spool)  # the next run
        try:
            assert sub.ids(3) == [e.id for e in events]
            wait_for(lambda: sink.unacknowledged == 0, 10, "the PUBACKs to empty the spool")
        finally:
            sink.close()
            sub.close()
        assert not list(spool.glob("*.json"))
    finally:
        broker.stop()


def test_broker_stopped_and_restarted_mid_run(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    try:
        sink = MqttSink(_cfg(broker.port), spool_dir=tmp_path / "spool")
        try:
            assert sink.wait_connected(10)
            sub = Subscriber(broker.port, "spool-test/events")
            before, during = _events(2), _events(3)
            for e in before:
                sink.emit(e)
            assert sub.ids(2) == [e.id for e in before]
            sub.close()
            broker.stop()
            wait_for(lambda: not sink.connected, 15, "the sink to notice the broker is gone")
            for e in during:
                sink.emit(e)
            assert sink.unacknowledged == 3
            broker.start()  # same port
            sub = Subscriber(broker.port, "spool-test/events")
            assert sink.wait_connected(60), "no reconnect"
            assert sorted(sub.ids(3, timeout_s=30)) == sorted(e.id for e in during)
            wait_for(lambda: sink.unacknowledged == 0, 10, "the spool to empty")
            sub.close()
        finally:
            sink.close()
    finally:
        broker.stop()


def test_a_full_spool_drops_the_oldest_with_a_counted_warning(tmp_path: Path, caplog) -> None:
    broker = Broker(tmp_path)  # never started
    ledger = OutputLedger()
    events = _events(10)
    # what the sink spools per event: Frigate's envelope (a new event's `before` is the event itself)
    size = len(json.dumps(FrigateEnvelopes().wrap(events[0]), separators=(",", ":")).encode())
    with caplog.at_level(logging.WARNING, logger="edge_vad"):
        sink = MqttSink(_cfg(broker.port, spool_max_mb=4.5 * size / 1e6), spool_dir=tmp_path / "spool",
                        ledger=ledger)
        for e in events:
            sink.emit(e)
        sink.close()
    kept = sorted((tmp_path / "spool").glob("*.json"))
    assert [json.loads(p.read_text())["after"]["id"] for p in kept] == [e.id for e in events[-4:]]  # the newest stay
    assert ledger.lost == {"mqtt": 6}
    assert any("dropped the" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
