"""Home Assistant MQTT discovery: per camera, entities that appear in Home Assistant by themselves.

    sink = HomeAssistantSink(MqttSink(cfg.mqtt), cfg.mqtt, cameras=["front-door"], live=live,
                             state_file=events_dir / "ha-discovery.json")
    sinks.add(sink)        # emit(event): the event on <prefix>/events, then the entities' states

What Home Assistant's MQTT discovery documentation asks for (integrations/mqtt, "MQTT Discovery", and
the per-platform pages binary_sensor.mqtt, sensor.mqtt, image.mqtt; the schemas in homeassistant/
components/mqtt: a `state_topic` is required for binary_sensor and sensor, an image needs `image_topic`
or `url_topic`, a device needs at least one identifier, a device context needs a `unique_id`):

- one config per entity, RETAINED, on <discovery_prefix>/<component>/<node_id>/<object_id>/config,
  node_id and object_id from [a-zA-Z0-9_-]; a retained empty payload on that topic removes the entity;
- each config: name, unique_id (stable: node, camera, entity), the `device` block (one device per camera),
  `origin`, and `availability` on <prefix>/available (the sink's retained online/offline with last will).

Entities per camera (state topics under <prefix>/<camera>/):
    binary_sensor  <camera>_anomaly     anomaly      ON while an event is open, OFF after (retained)
    sensor         <camera>_score       score        the gate's smoothed coarse score, every
                                                     state_interval_s when it changed by >= 0.01 (not retained)
    image          <camera>_snapshot    snapshot     the last event's heatmap snapshot, JPEG bytes (retained)
    sensor         <camera>_last_class  last_class   the fine stage's class of the last event (retained)

Configs are announced on every connect and again when Home Assistant says it (re)started (its birth
message, "online" on <discovery_prefix>/status). What was announced is recorded in `state_file`; on the
first connect, topics announced before but not now (a camera left the config) get a retained empty
payload: Home Assistant removes those entities and the broker forgets the retained states.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Set, Tuple

from edge_vad import __version__
from edge_vad.config import MqttConfig
from edge_vad.fileio import write_json_atomic
from edge_vad.review.live import LiveState

log = logging.getLogger("edge_vad.ha")

STATE_SCHEMA_VERSION = 1
ON, OFF = "ON", "OFF"
SCORE_STEP = 0.01  # publish the score sensor when it moved at least this much ...
SCORE_REFRESH_S = 30.0  # ... or this long after the last publish
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024  # an image message stays well under brokers' usual limits
REMOVAL_WAIT_S = 5.0  # first connect: how long removals may take to reach the broker before we record them
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def topic_id(text: str) -> str:
    """A discovery node_id / object_id: only [A-Za-z0-9_-] (Home Assistant's rule), others become '_'."""
    return _ID_CHARS.sub("_", text) or "_"


def camera_entities(camera: str, prefix: str, discovery_prefix: str, node_id: str,
                    version: str = __version__) -> Dict[str, Tuple[Dict[str, Any], Optional[str], bool]]:
    """config topic -> (config payload, state topic, state retained) for one camera's four entities."""
    cam = topic_id(camera)
    base = f"{prefix}/{camera}"
    device = {"identifiers": [f"{node_id}_{cam}"], "name": camera, "manufacturer": "edge-vad",
              "model": "TCVADS video anomaly detector", "sw_version": version}
    common = {
        "availability": [{"topic": f"{prefix}/available", "payload_available": "online",
                          "payload_not_available": "offline"}],
        "device": device, "origin": {"name": "edge-vad", "sw_version": version}, "qos": 1,
    }
    specs = [
        ("binary_sensor", "anomaly", {"name": "Anomaly", "state_topic": f"{base}/anomaly", "payload_on": ON,
                                      "payload_off": OFF, "device_class": "problem"}, True),
        ("sensor", "score", {"name": "Anomaly score", "state_topic": f"{base}/score", "state_class": "measurement",
                             "suggested_display_precision": 2}, False),
        ("image", "snapshot", {"name": "Last event snapshot", "image_topic": f"{base}/snapshot",
                               "content_type": "image/jpeg"}, True),
        ("sensor", "last_class", {"name": "Last event class", "state_topic": f"{base}/last_class",
                                  "icon": "mdi:tag"}, True),
    ]
    out = {}
    for component, key, fields, retained in specs:
        config = {**fields, **common, "unique_id": f"{node_id}_{cam}_{key}"}
        state = fields.get("state_topic") or fields.get("image_topic")
        out[f"{discovery_prefix}/{component}/{node_id}/{cam}_{key}/config"] = (config, state, retained)
    return out


def read_state_file(path: Path) -> Set[str]:
    """Topics recorded as announced (configs and retained states); empty when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {t for t in data.get("topics", []) if isinstance(t, str)}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("%s: unreadable (%s); entities of cameras removed from the config may stay in Home Assistant "
                    "until deleted there", path, exc)
        return set()


class HomeAssistantSink:
    """An event sink around the MqttSink: events go to <prefix>/events (Frigate's envelope), and the
    cameras' entities are announced and kept up to date (module docstring)."""

    name = "mqtt"

    def __init__(self, mqtt: Any, cfg: MqttConfig, cameras: Sequence[str], live: Optional[LiveState],
                 state_file: Path, clock=time.monotonic):
        self.mqtt, self.cfg, self.live, self.state_file = mqtt, cfg, live, Path(state_file)
        self.node_id = topic_id(cfg.prefix)
        self.cameras = list(cameras)
        self.entities: Dict[str, Tuple[Dict[str, Any], Optional[str], bool]] = {}
        self.state_topics: Dict[str, Dict[str, str]] = {}
        for camera in self.cameras:
            ents = camera_entities(camera, cfg.prefix, cfg.discovery_prefix, self.node_id)
            self.entities.update(ents)
            self.state_topics[camera] = {t.rsplit("/", 1)[-1]: t for _, t, _ in ents.values() if t}
        self.status_topic = f"{cfg.discovery_prefix}/status"
        self._clock = clock
        self._open: Dict[str, Set[str]] = {c: set() for c in self.cameras}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: Optional[str] = None  # "connect" | "birth": what the worker must announce for
        self._cleaned = False
        self._scores: Dict[str, Tuple[float, float]] = {}  # camera -> (value, monotonic time) last published
        self.announced = threading.Event()  # set after each announcement was handed to the client
        mqtt.client.message_callback_add(self.status_topic, self._on_ha_status)
        mqtt.add_connect_hook(self._on_connect)
        self._thread = threading.Thread(target=self._work, name="edge-vad-ha", daemon=True)
        self._thread.start()
        if mqtt.connected:
            self._on_connect()
        log.info("home assistant: %d entities for %d camera(s) under %s/.../%s/", len(self.entities),
                 len(self.cameras), cfg.discovery_prefix, self.node_id)

    # What EventSinks may ask of a sink, answered by the wrapped MqttSink: the events themselves go there.
    @property
    def kind(self) -> str:
        return getattr(self.mqtt, "kind", "mqtt")

    @property
    def retries(self) -> bool:
        return bool(getattr(self.mqtt, "retries", False))

    # -- paho's network thread: only flags, the worker does the publishing ---------------------------
    def _on_connect(self) -> None:
        self._request("connect")

    def _on_ha_status(self, client, userdata, message) -> None:
        # Home Assistant's birth message; a RETAINED "online" is the stored one every new subscription
        # gets, not a restart (acting on it would loop: announce -> subscribe -> retained -> announce).
        if message.payload == b"online" and not message.retain:
            self._request("birth")

    def _request(self, why: str) -> None:
        with self._lock:
            self._pending = "connect" if "connect" in (why, self._pending) else why
        self._wake.set()

    # -- the worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        interval = self.cfg.state_interval_s
        next_scores = 0.0
        while not self._stop.is_set():
            with self._lock:
                why, self._pending = self._pending, None
            try:
                if why is not None:
                    self._announce(subscribe=why == "connect")
                if self._clock() >= next_scores:
                    next_scores = self._clock() + interval
                    self._publish_scores()
            except Exception:  # noqa: BLE001 - a publishing bug must not end discovery for good
                log.exception("home assistant: publishing failed")
            self._wake.wait(max(0.0, next_scores - self._clock()))
            self._wake.clear()

    def _announce(self, subscribe: bool) -> None:
        if not self._cleaned:
            self._remove_stale()
        for topic, (config, _, _) in self.entities.items():
            self.mqtt.publish(topic, json.dumps(config, separators=(",", ":")), retain=True)
        with self._lock:
            opened = {c: bool(ids) for c, ids in self._open.items()}
        for camera, is_open in opened.items():
            self.mqtt.publish(self.state_topics[camera]["anomaly"], ON if is_open else OFF, retain=True)
        if subscribe:
            self.mqtt.client.subscribe(self.status_topic, qos=1)
        self._scores.clear()  # publish every score again after a (re)announce
        self.announced.set()
        log.info("home assistant: announced %d entities", len(self.entities))

    def _remove_stale(self) -> None:
        current = self._recorded_topics()
        stale = sorted(read_state_file(self.state_file) - current)
        infos = [self.mqtt.publish(topic, b"", retain=True) for topic in stale]
        for info in infos:  # a drop here raises: the worker logs it and the next connect tries again
            info.wait_for_publish(timeout=REMOVAL_WAIT_S / max(1, len(infos)))
        if stale:
            log.info("home assistant: removed %d retained topics of cameras no longer configured", len(stale))
        try:
            write_json_atomic(self.state_file, {"schema": STATE_SCHEMA_VERSION, "topics": sorted(current)})
        except OSError as exc:
            log.warning("home assistant: cannot record the announced entities in %s (%s); removing a camera "
                        "later will not remove its entities", self.state_file, exc.strerror)
        self._cleaned = True

    def _recorded_topics(self) -> Set[str]:
        topics = set(self.entities)
        topics.update(state for _, state, retained in self.entities.values() if state and retained)
        return topics

    def _publish_scores(self) -> None:
        if self.live is None or not self.mqtt.connected:
            return
        now = self._clock()
        for camera in self.cameras:
            latest = self.live.latest(camera)
            if latest is None:
                continue
            value = round(latest[0], 4)
            last = self._scores.get(camera)
            if last is not None and abs(value - last[0]) < SCORE_STEP and now - last[1] < SCORE_REFRESH_S:
                continue
            # QoS 0: a score that could not be sent is stale by the next one; never queue it.
            self.mqtt.publish(self.state_topics[camera]["score"], f"{value:.4f}", retain=False, qos=0)
            self._scores[camera] = (value, now)

    # -- the event sink --------------------------------------------------------------------------------
    def emit(self, event: Any) -> None:
        self.mqtt.emit(event)
        record = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        camera = record.get("source")
        topics = self.state_topics.get(camera)
        if topics is None:
            return
        kind = record.get("type")
        with self._lock:
            ids = self._open[camera]
            if kind == "end":
                ids.discard(record["id"])
            else:
                ids.add(record["id"])
            is_open = bool(ids)
        if kind in ("start", "end"):
            self.mqtt.publish(topics["anomaly"], ON if is_open else OFF, retain=True)
        fine = record.get("fine")
        if isinstance(fine, dict) and fine.get("class"):
            self.mqtt.publish(topics["last_class"], str(fine["class"]), retain=True)
        if kind == "end" and record.get("snapshot"):
            self._publish_snapshot(topics["snapshot"], Path(record["snapshot"]))

    def _publish_snapshot(self, topic: str, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("home assistant: snapshot %s not published: %s", path, exc.strerror)
            return
        if len(data) > MAX_SNAPSHOT_BYTES:
            log.warning("home assistant: snapshot %s is %d bytes; not published", path, len(data))
            return
        self.mqtt.publish(topic, data, retain=True)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        self.mqtt.close()

    def __enter__(self) -> "HomeAssistantSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

