"""MQTT sink against a REAL Mosquitto broker started by the test on a free loopback port."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from edge_vad.config import MqttConfig
from edge_vad.errors import ConfigError
from edge_vad.runtime.events import EventBuilder
from edge_vad_test_support.mosquitto import MOSQUITTO, NO_MOSQUITTO, Subscriber, running_broker
from edge_vad_test_support.mosquitto import free_port as _free_port

mqtt = pytest.importorskip("paho.mqtt.client", reason="needs the mqtt extra (pip install 'paho-mqtt>=2')")
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason=NO_MOSQUITTO)

from edge_vad.runtime.mqtt_sink import MqttSink  # noqa: E402


@pytest.fixture
def broker(tmp_path):
    with running_broker(tmp_path) as port:
        yield port


def test_events_and_availability_reach_a_subscriber(broker):
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker, prefix="test-vad", keepalive_s=5)
    sink = MqttSink(cfg)
    try:
        assert sink.wait_connected(10), "sink never connected"
        b = EventBuilder("cam-1", 10, 1.0)
        b.add_score(0.9)
        event = b.start()
        # subscribing after the sink connected: `online` must arrive as a RETAINED message
        sub = Subscriber(broker, "test-vad/#")
        payload, retain = sub.wait_for("test-vad/available")
        assert (payload, retain) == ("online", True)
        sink.emit(event)
        payload, retain = sub.wait_for("test-vad/events")
        # Frigate's envelope: a new event's `before` is the event itself
        assert json.loads(payload) == {"type": "new", "before": event.to_dict(), "after": event.to_dict()}
        assert retain is False
        b.add_score(0.5)
        update = b.update(fine={"class": "fighting", "probs": {"fighting": 1.0}})
        sink.emit(update)
        message = json.loads(sub.wait_for("test-vad/events")[0])
        assert message["type"] == "update" and message["before"] == event.to_dict()
        assert message["after"] == update.to_dict()
        end = b.end(20, 2.0)
        sink.emit(end)
        message = json.loads(sub.wait_for("test-vad/events")[0])
        assert message == {"type": "end", "before": update.to_dict(), "after": end.to_dict()}
    finally:
        sink.close()
    # a clean close announces `offline` (retained)
    payload, _ = sub.wait_for("test-vad/available", lambda p: p == "offline")
    sub.close()
    late = Subscriber(broker, "test-vad/available")
    assert late.wait_for("test-vad/available") == ("offline", True)
    late.close()


def test_sigkilled_client_makes_the_broker_publish_the_last_will(broker, tmp_path):
    code = textwrap.dedent(f"""
        import time
        from edge_vad.config import MqttConfig
        from edge_vad.runtime.mqtt_sink import MqttSink
        sink = MqttSink(MqttConfig(enabled=True, port={broker}, prefix="will-test", keepalive_s=5))
        assert sink.wait_connected(10)
        print("connected", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "connected"
        sub = Subscriber(broker, "will-test/available")
        # live or retained, depending on whether the broker had `online` before this subscription...
        assert sub.wait_for("will-test/available")[0] == "online"
        late = Subscriber(broker, "will-test/available")  # ...but it is retained: a later subscriber gets it too
        assert late.wait_for("will-test/available") == ("online", True)
        late.close()
        proc.send_signal(signal.SIGKILL)  # no DISCONNECT, no `offline` from the client itself
        proc.wait(timeout=10)
        payload, _ = sub.wait_for("will-test/available", lambda p: p == "offline", timeout_s=15)
        assert payload == "offline"
        sub.close()
    finally:
        if proc.poll() is None:
            proc.kill()


class _Proxy:
    """A TCP forwarder to the broker that can be started late: until then the sink finds nothing
    listening, as if the broker were down, while the subscriber is already connected directly."""

    def __init__(self, port: int, target: int):
        self.port, self.target = port, target
        self.server = None

    def start(self):
        import threading

        self.server = socket.create_server(("127.0.0.1", self.port))

        def pump(a, b):
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def accept():
            while True:
                try:
                    client, _ = self.server.accept()
                except OSError:
                    return
                upstream = socket.create_connection(("127.0.0.1", self.target))
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def close(self):
        if self.server is not None:
            self.server.close()


def test_events_emitted_while_the_broker_is_away_are_delivered_later(broker):
    sub = Subscriber(broker, "late/events")
    proxy = _Proxy(_free_port(), broker)
    sink = MqttSink(MqttConfig(enabled=True, port=proxy.port, prefix="late", keepalive_s=5))
    try:
        assert not sink.wait_connected(0.5)  # nothing listening: no exception, retries in the background
        event = EventBuilder("cam", 0, 0.0).start()
        sink.emit(event)  # queued (QoS 1) while disconnected
        proxy.start()
        assert sink.wait_connected(15), "sink did not reconnect"
        payload, _ = sub.wait_for("late/events", timeout_s=10)
        assert json.loads(payload)["after"]["id"] == event.id
    finally:
        sink.close()
        proxy.close()
        sub.close()


def test_unreadable_password_file_is_a_config_error(tmp_path):
    cfg = MqttConfig(enabled=True, username="u", password_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="password_file"):
        MqttSink(cfg)
