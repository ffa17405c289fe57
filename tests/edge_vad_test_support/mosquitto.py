"""A REAL Mosquitto broker on a free loopback port, and a plain paho subscriber, for the MQTT tests
(test_mqtt.py, test_ha_discovery.py, test_review_e2e.py). Skip where mosquitto or paho is absent."""

from __future__ import annotations

import getpass
import os
import queue
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import pytest

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)
NO_MOSQUITTO = "mosquitto broker binary not installed (apt-get install mosquitto)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Broker:
    """A real Mosquitto on a loopback port that a test can stop and start again (same port)."""

    def __init__(self, folder: Path):
        if MOSQUITTO is None:
            pytest.skip(NO_MOSQUITTO)
        self.port = free_port()
        self.conf = Path(folder) / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # as root, mosquitto would switch to a `mosquitto` user
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextmanager
def running_broker(folder: Path) -> Iterator[int]:
    """Start mosquitto (anonymous, no persistence) on a free loopback port; yields the port."""
    broker = Broker(folder).start()
    try:
        yield broker.port
    finally:
        broker.stop()


class Subscriber:
    """A plain paho client collecting (topic, payload bytes, retain) of everything under `topic`."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.messages: "queue.Queue[Tuple[str, bytes, bool]]" = queue.Queue()
        self.seen: List[Tuple[str, bytes, bool]] = []  # everything taken off the queue, in order
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"sub-{os.getpid()}-{time.time_ns()}")
        subscribed: "queue.Queue[bool]" = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def wait_for(self, topic: str, predicate: Callable[[str], bool] = lambda payload: True,
                 timeout_s: float = 10.0) -> Tuple[str, bool]:
        """(payload as text, retain) of the next message on `topic` that matches."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                item = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(item)
            t, payload, retain = item
            text = payload.decode("utf-8", errors="replace")
            if t == topic and predicate(text):
                return text, retain
        raise AssertionError(f"no matching message on {topic} within {timeout_s} s")

    def drain(self, quiet_s: float = 0.5, timeout_s: float = 10.0) -> List[Tuple[str, bytes, bool]]:
        """Take every message until none arrives for `quiet_s`; returns all seen so far."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.messages.get(timeout=quiet_s))
            except queue.Empty:
                break
        return list(self.seen)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    """One message from a throw-away client (e.g. Home Assistant's birth message)."""
    import paho.mqtt.publish as single

    single.single(topic, payload, qos=1, retain=retain, hostname="127.0.0.1", port=port)


def last_by_topic(messages: List[Tuple[str, bytes, bool]], prefix: Optional[str] = None) -> dict:
    """topic -> (payload, retain) of the last message seen on it."""
    out = {}
    for topic, payload, retain in messages:
        if prefix is None or topic.startswith(prefix):
            out[topic] = (payload, retain)
    return out
