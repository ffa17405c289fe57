"""MQTT sink against a REAL Mosquitto broker started by the test on a free loopback port."""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from edge_vad.config import MqttConfig
from edge_vad.errors import ConfigError
from edge_vad.runtime.events import EventBuilder

mqtt = pytest.importorskip("paho.mqtt.client", reason="needs the mqtt extra (pip install 'paho-mqtt>=2')")
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto broker binary not installed (apt-get install mosquitto)")

from edge_vad.runtime.mqtt_sink import MqttSink  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"mosquitto did not listen on {port}")


@pytest.fixture
def broker(tmp_path):
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    if os.geteuid() == 0:
        lines.append(f"user {getpass.getuser()}")  # as root, mosquitto would switch to a `mosquitto` user
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_port(port)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


class Subscriber:
    """A plain paho client collecting (topic, payload, retain) in a queue."""

    def __init__(self, port: int, topic: str):
        self.messages: "queue.Queue[tuple]" = queue.Queue()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"sub-{os.getpid()}-{time.time_ns()}")
        subscribed = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload.decode(), m.retain))
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def wait_for(self, topic: str, predicate=lambda payload: True, timeout_s: float = 10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                t, payload, retain = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if t == topic and predicate(payload):
                return payload, retain
        raise AssertionError(f"no matching message on {topic} within {timeout_s} s")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


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
        assert json.loads(payload) == event.to_dict() and retain is False
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
        assert sub.wait_for("will-test/available") == ("online", True)
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
        assert json.loads(payload)["id"] == event.id
    finally:
        sink.close()
        proxy.close()
        sub.close()


def test_unreadable_password_file_is_a_config_error(tmp_path):
    cfg = MqttConfig(enabled=True, username="u", password_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="password_file"):
        MqttSink(cfg)
