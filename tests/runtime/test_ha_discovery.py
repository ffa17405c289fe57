"""Home Assistant MQTT discovery and Frigate-style event messages against a REAL Mosquitto broker."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vad.config import MqttConfig
from edge_vad.review.live import LiveState
from edge_vad.runtime.events import EventBuilder
from edge_vad.runtime.frigate_events import FrigateEnvelopes
from edge_vad_test_support import ha_schema
from edge_vad_test_support.mosquitto import MOSQUITTO, NO_MOSQUITTO, Subscriber, last_by_topic, publish, running_broker

pytest.importorskip("paho.mqtt.client", reason="needs the mqtt extra (pip install 'paho-mqtt>=2')")

PREFIX = "vad-test"


def test_frigate_envelope_types_and_before_after():
    env = FrigateEnvelopes()
    b = EventBuilder("cam", 0, 0.0, event_id="e1")
    start = b.start()
    update = b.update(fine={"class": "riot", "probs": {"riot": 1.0}})
    end = b.end(5, 1.0)
    assert env.wrap(start) == {"type": "new", "before": start.to_dict(), "after": start.to_dict()}
    assert env.wrap(update) == {"type": "update", "before": start.to_dict(), "after": update.to_dict()}
    assert env.wrap(end) == {"type": "end", "before": update.to_dict(), "after": end.to_dict()}
    assert env._last == {}  # ended events are forgotten
    with pytest.raises(ValueError, match="type"):
        env.wrap({"id": "x", "type": "begin"})


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip(NO_MOSQUITTO)
    with running_broker(tmp_path) as port:
        yield port


def _snapshot(path: Path, value: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((36, 64, 3), value, np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


def _sink(port: int, cameras, live, state_file: Path):
    from edge_vad.runtime.ha_discovery import HomeAssistantSink
    from edge_vad.runtime.mqtt_sink import MqttSink

    cfg = MqttConfig(enabled=True, port=port, prefix=PREFIX, keepalive_s=5, home_assistant=True,
                     state_interval_s=0.2)
    sink = HomeAssistantSink(MqttSink(cfg), cfg, cameras, live, state_file)
    assert sink.mqtt.wait_connected(10)
    return sink


def _settle(sink) -> None:
    """Everything the sink published so far has reached the broker: one client's QoS 1 messages are
    handled in order, so once a marker is acknowledged, all before it were too."""
    assert sink.announced.wait(10)
    sink.mqtt.publish(f"{PREFIX}/test-marker", b"x").wait_for_publish(5)


def _configs(port: int) -> dict:
    """The discovery configs the broker holds (a late subscriber gets them as retained messages)."""
    late = Subscriber(port, "homeassistant/#")
    seen = late.drain(quiet_s=0.7)
    late.close()
    assert all(retain for _, _, retain in seen), "discovery configs must be retained"
    return {t: json.loads(p) for t, (p, _) in last_by_topic(seen).items() if p}


def test_entities_are_announced_retained_valid_and_fed(broker, tmp_path: Path):
    cameras = ["front-door", "yard.cam"]
    early = Subscriber(broker, "#")  # sees everything published from now on
    live = LiveState()
    for cam in cameras:
        live.add_camera(cam, 0.6, 0.4)
        live.update(cam, None, 0.25, False)
    sink = _sink(broker, cameras, live, tmp_path / "ha-discovery.json")
    jpegs = {}
    try:
        for i, cam in enumerate(cameras):
            b = EventBuilder(cam, 10, 1.0)
            b.add_score(0.9)
            sink.emit(b.start())
            sink.emit(b.update(fine={"class": ["fighting", "riot"][i], "probs": {"x": 1.0}}))
            snap = tmp_path / "snapshots" / f"{b.id}.jpg"
            jpegs[cam] = _snapshot(snap, 60 + 100 * i)
            sink.emit(b.end(20, 2.0, snapshot=snap))
        early.wait_for(f"{PREFIX}/front-door/score", lambda p: float(p) == pytest.approx(0.25))
        live.update("front-door", None, 0.75, True)  # the next publish carries the new score
        early.wait_for(f"{PREFIX}/front-door/score", lambda p: float(p) == pytest.approx(0.75))
        _settle(sink)
        configs = _configs(broker)
        # --- what Home Assistant needs in each config
        pattern = ha_schema.discovery_topic()
        kinds = {}
        for topic, config in configs.items():
            m = pattern.match(topic)
            assert m, topic
            assert ha_schema.problems(m["component"], config) == [], (topic, config)
            kinds.setdefault(config["device"]["name"], []).append(m["component"])
            assert config["availability"] == [{"topic": f"{PREFIX}/available", "payload_available": "online",
                                               "payload_not_available": "offline"}]
        assert {k: sorted(v) for k, v in kinds.items()} == {
            cam: ["binary_sensor", "image", "sensor", "sensor"] for cam in cameras}
        assert len({c["unique_id"] for c in configs.values()}) == 8  # unique
        # --- every topic a config names receives data
        seen = early.drain(quiet_s=1.0)
        data = last_by_topic(seen)
        referenced = {t for c in configs.values() for t in ha_schema.referenced_topics(c)}
        assert referenced <= set(data), sorted(referenced - set(data))
        assert data[f"{PREFIX}/available"][0] == b"online"
        assert data[f"{PREFIX}/front-door/anomaly"][0] == b"OFF"  # ON at start, OFF at the end
        assert (f"{PREFIX}/front-door/anomaly", b"ON", False) in seen
        assert data[f"{PREFIX}/yard.cam/last_class"][0] == b"riot"
        assert data[f"{PREFIX}/front-door/snapshot"][0] == jpegs["front-door"]
        scores = [float(p) for t, p, _ in seen if t == f"{PREFIX}/front-door/score"]
        assert scores == pytest.approx([0.25, 0.75])  # published on change only
        events = [json.loads(p) for t, p, _ in seen if t == f"{PREFIX}/events"]
        assert [e["type"] for e in events] == ["new", "update", "end"] * 2
        # --- retained states for a Home Assistant that starts later
        late = Subscriber(broker, f"{PREFIX}/#")
        kept = last_by_topic(late.drain(quiet_s=0.7))
        late.close()
        assert kept[f"{PREFIX}/front-door/snapshot"] == (jpegs["front-door"], True)
        assert kept[f"{PREFIX}/yard.cam/anomaly"] == (b"OFF", True)
        assert f"{PREFIX}/front-door/score" not in kept  # a stale score is not kept
        # --- Home Assistant restarted (its birth message): everything is announced again
        early.seen.clear()
        publish(broker, "homeassistant/status", b"online")
        again = {t for t, p, _ in early.drain(quiet_s=1.0) if t.startswith("homeassistant/") and t.endswith("/config")}
        assert again == set(configs)
        (tmp_path / "entities.txt").write_text("\n".join(sorted(configs)))
    finally:
        sink.close()
        early.close()
    assert Subscriber(broker, f"{PREFIX}/available").drain(quiet_s=0.5)[-1][1] == b"offline"


def test_a_camera_that_leaves_the_config_is_removed(broker, tmp_path: Path):
    state = tmp_path / "ha-discovery.json"
    sink = _sink(broker, ["a", "b"], None, state)
    b = EventBuilder("b", 0, 0.0)
    sink.emit(b.start())
    sink.emit(b.end(3, 1.0, fine={"class": "riot", "probs": {"riot": 1.0}}))
    _settle(sink)
    sink.close()
    before = _configs(broker)
    assert {c["device"]["name"] for c in before.values()} == {"a", "b"}
    recorded = set(json.loads(state.read_text())["topics"])
    assert set(before) <= recorded and f"{PREFIX}/b/last_class" in recorded
    sink = _sink(broker, ["a"], None, state)  # "b" left the config
    try:
        _settle(sink)
        after = _configs(broker)
        assert set(after) == {t for t, c in before.items() if c["device"]["name"] == "a"}
        late = Subscriber(broker, f"{PREFIX}/#")
        kept = last_by_topic(late.drain(quiet_s=0.7))
        late.close()
        assert f"{PREFIX}/a/anomaly" in kept
        assert not [t for t in kept if t.startswith(f"{PREFIX}/b/")]  # its retained states are gone too
        assert set(json.loads(state.read_text())["topics"]) == set(after) | {f"{PREFIX}/a/anomaly",
                                                                             f"{PREFIX}/a/snapshot",
                                                                             f"{PREFIX}/a/last_class"}
    finally:
        sink.close()
