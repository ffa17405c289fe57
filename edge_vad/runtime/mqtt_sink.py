"""MQTT event sink (paho-mqtt >= 2; the `mqtt` extra).

    sink = MqttSink(cfg.mqtt)          # connects in the background, reconnects forever
    sink.wait_connected(5.0)           # optional: True once the broker accepted us
    sinks.add(sink)                    # EventSinks -> sink.emit(event)
    sink.close()                       # publishes `offline`, disconnects

Topics (prefix from the config, default "edge-vad"):
    <prefix>/events      each event record in Frigate's envelope {"type": new|update|end, "before", "after"}
                         (edge_vad.runtime.frigate_events), QoS 1, not retained
    <prefix>/available   "online" (retained) on every (re)connect; "offline" (retained) on a
                         clean close, and as the last will the BROKER publishes when we vanish
                         (crash, SIGKILL, network loss past the keep-alive).
While disconnected, events are queued in memory (QoS 1) up to MAX_QUEUED_EVENTS and sent on
reconnect; beyond that emit() raises, so EventSinks counts the loss.
Home Assistant discovery (edge_vad.runtime.ha_discovery) publishes through this client: add_connect_hook,
publish, client.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any, Callable, List, Optional, Union

from edge_vad.config import MqttConfig
from edge_vad.errors import ConfigError, require_module
from edge_vad.runtime.frigate_events import FrigateEnvelopes

log = logging.getLogger("edge_vad.mqtt")

ONLINE = "online"
OFFLINE = "offline"
MAX_QUEUED_EVENTS = 1000  # events held while the broker is away (about 1 MB of JSON)
RECONNECT_MIN_S = 1  # paho doubles the delay after each failed attempt up to the max
RECONNECT_MAX_S = 60
CLOSE_TIMEOUT_S = 2.0  # how long close() waits for `offline` to reach the broker


def _paho() -> Any:
    return require_module("paho.mqtt.client", "pip install 'edge-vad[mqtt]'  (paho-mqtt>=2)")


def default_client_id() -> str:
    # Unique per process: two clients with one id keep kicking each other off the broker.
    return f"edge-vad-{socket.gethostname()}-{os.getpid()}"


def read_password(cfg: MqttConfig) -> Optional[str]:
    if cfg.password_file is None:
        return None
    try:
        return cfg.password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"mqtt.password_file = '{cfg.password_file}': cannot read it ({exc.strerror}); "
            "create it (one line, the password) readable by the edge-vad user"
        ) from None


class MqttSink:
    name = "mqtt"

    def __init__(self, cfg: MqttConfig, client_id: Optional[str] = None):
        mqtt = _paho()
        self.cfg = cfg
        self.events_topic = f"{cfg.prefix}/events"
        self.available_topic = f"{cfg.prefix}/available"
        self._connected = threading.Event()
        self._closed = False
        self.published = 0
        self._envelopes = FrigateEnvelopes()
        self._connect_hooks: List[Callable[[], None]] = []
        self.client_id = client_id or cfg.client_id or default_client_id()
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, read_password(cfg))
        # Set before connecting: the broker stores the will with the session.
        client.will_set(self.available_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.max_queued_messages_set(MAX_QUEUED_EVENTS)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._mqtt = mqtt
        # connect_async + loop_start: a broker that is down at start-up is retried in the
        # background instead of failing the service; events queue meanwhile.
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()
        log.info("mqtt: connecting to %s:%d as %s (events on %s)", cfg.host, cfg.port, self.client_id, self.events_topic)

    # paho callbacks run on paho's network thread.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt: broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        # Re-announce on every connect: while we were away the broker published our will.
        client.publish(self.available_topic, ONLINE, qos=1, retain=True)
        self._connected.set()
        log.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        for hook in self._connect_hooks:
            hook()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._closed:
            log.warning("mqtt: disconnected from %s:%d (%s); reconnecting", self.cfg.host, self.cfg.port, reason_code)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def client(self) -> Any:
        return self._client

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` (on paho's network thread: keep it short) after every (re)connect."""
        self._connect_hooks.append(hook)

    def publish(self, topic: str, payload: Union[str, bytes], retain: bool = False, qos: int = 1) -> Any:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        # NO_CONN: paho keeps QoS 1 messages and sends them after reconnecting; anything else is a loss.
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            raise OSError(f"mqtt publish to {topic} failed: {self._mqtt.error_string(info.rc)}")
        return info

    def emit(self, event) -> None:
        message = self._envelopes.wrap(event)
        self.publish(self.events_topic, json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
        self.published += 1

    def close(self) -> None:
        """Announce `offline` (retained), then disconnect cleanly (a clean DISCONNECT means the
        broker does NOT publish the will, hence the explicit message)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.connected:
                info = self._client.publish(self.available_topic, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=CLOSE_TIMEOUT_S)
            self._client.disconnect()
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("mqtt: could not announce offline cleanly: %s", exc)
        finally:
            self._client.loop_stop()

    def __enter__(self) -> "MqttSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
