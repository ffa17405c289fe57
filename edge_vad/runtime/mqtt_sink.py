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
Delivery (edge_vad.runtime.mqtt_spool): every event goes into a bounded spool first (on disk when a
spool folder is given, `[mqtt] spool_dir`, size `spool_max_mb`), and leaves it only when the broker's
PUBACK arrives (QoS 1; paho's on_publish). A pump thread publishes from the spool, at most MAX_INFLIGHT
at a time, whenever the sink is connected: on every (re)connect the spool is flushed, and what a run
could not deliver stays on disk and goes out after the next start. paho itself re-sends the messages
that were in flight when a connection dropped. A full spool drops its oldest events with a WARNING that
counts them; at close, the events still unacknowledged stay in the spool (the log says how many).
emit() never blocks on the network and never raises because the broker is away. Delivery is
at-least-once: an event acknowledged just before a crash may be sent again (its id and seq identify it).
Only the pump thread and close() call publish for events, never a paho callback: paho calls on_publish
while holding its own message lock, so publishing under ours from there could deadlock.
Home Assistant discovery (edge_vad.runtime.ha_discovery) publishes through this client (add_connect_hook,
publish, client); its retained configs are re-sent on every connect, not spooled.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Union

from edge_vad.config import MqttConfig
from edge_vad.errors import ConfigError, require_module
from edge_vad.runtime.frigate_events import FrigateEnvelopes
from edge_vad.runtime.mqtt_spool import MqttSpool, SpoolEntry

log = logging.getLogger("edge_vad.mqtt")

ONLINE = "online"
OFFLINE = "offline"
MAX_INFLIGHT = 20  # events published and not yet acknowledged (paho's own default window)
PUMP_IDLE_S = 1.0  # the pump thread also looks at the spool this often without being woken
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
    kind = "mqtt"
    retries = True  # an event the broker did not take waits in the spool (EventSinks counts no loss)

    def __init__(self, cfg: MqttConfig, client_id: Optional[str] = None, spool_dir: Optional[Path] = None,
                 ledger: Optional[Any] = None, metrics: Optional[Any] = None):
        mqtt = _paho()
        self.cfg = cfg
        self.events_topic = f"{cfg.prefix}/events"
        self.available_topic = f"{cfg.prefix}/available"
        self._connected = threading.Event()
        self._closed = False
        self.published = 0
        self.dropped = 0
        self._ledger = ledger
        self._metrics = metrics
        self._envelopes = FrigateEnvelopes()
        self._connect_hooks: List[Callable[[], None]] = []
        self.client_id = client_id or cfg.client_id or default_client_id()
        folder = spool_dir if spool_dir is not None else cfg.spool_dir
        self.spool = MqttSpool(folder, int(cfg.spool_max_mb * 1e6), on_drop=self._spool_dropped,
                               on_disk_error=self._spool_disk_error)
        self._inflight: Dict[int, SpoolEntry] = {}  # mid -> entry; touched by the pump thread and close() only
        self._acked: Deque[int] = deque()  # mids from on_publish (deque.append is atomic)
        self._wake = threading.Event()
        waiting = len(self.spool)
        if waiting:
            log.warning("mqtt: %d event(s) from an earlier run wait in the spool %s; they are sent once the broker "
                        "answers", waiting, folder)
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
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._mqtt = mqtt
        self._update_gauge()
        self._pump_thread = threading.Thread(target=self._pump_loop, name="edge-vad-mqtt-pump", daemon=True)
        self._pump_thread.start()
        # connect_async + loop_start: a broker that is down at start-up is retried in the
        # background instead of failing the service; events wait in the spool meanwhile.
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()
        log.info("mqtt: connecting to %s:%d as %s (events on %s)", cfg.host, cfg.port, self.client_id, self.events_topic)

    # paho callbacks run on paho's network thread: they only set flags and wake the pump.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt: broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        # Re-announce on every connect: while we were away the broker published our will.
        client.publish(self.available_topic, ONLINE, qos=1, retain=True)
        self._connected.set()
        self._wake.set()
        log.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        for hook in self._connect_hooks:
            hook()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._closed:
            log.warning("mqtt: disconnected from %s:%d (%s); reconnecting; events wait in the spool (%d now)",
                        self.cfg.host, self.cfg.port, reason_code, len(self.spool))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acked.append(mid)
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def unacknowledged(self) -> int:
        return len(self.spool)

    def emit(self, event) -> None:
        message = self._envelopes.wrap(event)  # Frigate's {type, before, after}
        payload = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self.spool.add(payload.encode("utf-8"))
        self._update_gauge()
        self._wake.set()

    # -- the pump ------------------------------------------------------------------------------
    def _pump_loop(self) -> None:
        while not self._closed:
            self._wake.wait(PUMP_IDLE_S)
            self._wake.clear()
            try:
                self._take_acks()
                if self.connected:
                    self._publish_waiting()
            except Exception:  # noqa: BLE001 - the pump must survive; the spool keeps the events
                log.exception("mqtt: publishing from the spool failed; retrying")

    def _take_acks(self) -> None:
        while self._acked:
            entry = self._inflight.pop(self._acked.popleft(), None)
            if entry is not None:  # not the `online` / `offline` message
                self.spool.remove(entry)
                self.published += 1
        self._update_gauge()

    def _publish_waiting(self) -> None:
        busy = {e.seq for e in self._inflight.values()}
        for entry in self.spool.entries():
            if len(self._inflight) >= MAX_INFLIGHT:
                return
            if entry.seq in busy:
                continue
            payload = self.spool.read(entry)
            if payload is None:
                continue
            info = self._client.publish(self.events_topic, payload, qos=1, retain=False)
            # NO_CONN: the connection dropped just now; paho keeps the QoS 1 message and sends it on reconnect.
            if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
                log.warning("mqtt: publish to %s failed (%s); the event stays in the spool", self.events_topic,
                            self._mqtt.error_string(info.rc))
                return
            self._inflight[info.mid] = entry

    def _spool_dropped(self, n: int, why: str) -> None:
        self.dropped += n
        message = (f"mqtt: {why}: dropped the {n} oldest event(s) the broker never acknowledged "
                   f"({self.dropped} dropped in this run); JSONL still has them")
        if self._ledger is not None:
            self._ledger.lose(self.kind, n, message, level=logging.WARNING)
        else:
            log.warning("%s", message)

    def _spool_disk_error(self, message: str) -> None:
        if self._ledger is not None:
            self._ledger.failed(self.kind, message, lost=0)
        else:
            log.error("%s", message)

    def _update_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_spool(len(self.spool))

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

    def close(self) -> None:
        """Give the events in flight up to CLOSE_TIMEOUT_S to be acknowledged, announce `offline` (retained),
        then disconnect cleanly (a clean DISCONNECT means the broker does NOT publish the will, hence the
        explicit message). What is still unacknowledged stays in the spool; the log says how many."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._pump_thread.join(CLOSE_TIMEOUT_S)
        try:
            if self.connected:
                deadline = time.monotonic() + CLOSE_TIMEOUT_S
                self._take_acks()
                while self._inflight and time.monotonic() < deadline and self.connected:
                    self._wake.wait(0.05)
                    self._wake.clear()
                    self._take_acks()
                info = self._client.publish(self.available_topic, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=CLOSE_TIMEOUT_S)
            self._client.disconnect()
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("mqtt: could not announce offline cleanly: %s", exc)
        finally:
            self._client.loop_stop()
        self._take_acks()
        self._report_leftovers()

    def _report_leftovers(self) -> None:
        waiting, memory_only = len(self.spool), self.spool.in_memory_only
        on_disk = waiting - memory_only
        if on_disk:
            log.warning("mqtt: %d event(s) not acknowledged by the broker stay in the spool %s; they are sent "
                        "after the next start", on_disk, self.spool.folder)
        if memory_only:
            message = (f"mqtt: {memory_only} event(s) not acknowledged by the broker are lost at exit (not in an "
                       "on-disk spool); JSONL still has them")
            if self._ledger is not None:
                self._ledger.lose(self.kind, memory_only, message, level=logging.WARNING)
            else:
                log.warning("%s", message)

    def __enter__(self) -> "MqttSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
