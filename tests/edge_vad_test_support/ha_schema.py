"""Home Assistant's MQTT discovery rules, as a checker for the configs a subscriber saw.

From Home Assistant's documentation (integrations/mqtt "MQTT Discovery"; binary_sensor.mqtt, sensor.mqtt,
image.mqtt, camera.mqtt) and the voluptuous schemas of homeassistant/components/mqtt (config.py
MQTT_RO_SCHEMA: `state_topic` required for read-only platforms; image.py validate_topic_required: one of
`image_topic` / `url_topic`, `content_type` not with `url_topic`; camera: `topic` required; schemas.py: a
device needs at least one of `identifiers` / `connections`, `availability` and `availability_topic` are
exclusive, each `availability` entry needs a `topic`), and the discovery topic format
<discovery_prefix>/<component>/[<node_id>/]<object_id>/config with ids from [a-zA-Z0-9_-].
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

COMPONENT_REQUIRED = {"binary_sensor": ("state_topic",), "sensor": ("state_topic",), "camera": ("topic",)}
BINARY_SENSOR_CLASSES = {"battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
                         "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
                         "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
                         "tamper", "update", "vibration", "window"}
STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}
_ID = r"[A-Za-z0-9_-]+"


def discovery_topic(prefix: str = "homeassistant") -> "re.Pattern[str]":
    return re.compile(rf"^{re.escape(prefix)}/(?P<component>{_ID})/(?:(?P<node>{_ID})/)?(?P<object>{_ID})/config$")


def publish_topic_ok(topic: Any) -> bool:
    """A concrete topic we publish to: non-empty text, no wildcards, no NUL, not a $SYS-style topic."""
    return isinstance(topic, str) and bool(topic) and not any(c in topic for c in "+#\0") and not topic.startswith("$")


def referenced_topics(config: Dict[str, Any]) -> List[str]:
    topics = [v for k, v in config.items() if k.endswith("_topic") or k == "topic"]
    topics += [a.get("topic") for a in config.get("availability", []) if isinstance(a, dict)]
    return topics


def problems(component: str, config: Dict[str, Any]) -> List[str]:
    """Every rule this config breaks (empty when Home Assistant would accept it)."""
    out = []
    for key in COMPONENT_REQUIRED.get(component, ()):
        if not config.get(key):
            out.append(f"{component}: missing required `{key}`")
    if component == "image":
        has = [k for k in ("image_topic", "url_topic") if k in config]
        if len(has) != 1:
            out.append(f"image: needs exactly one of image_topic / url_topic, has {has}")
        if "content_type" in config and "url_topic" in config:
            out.append("image: content_type cannot be used with url_topic")
    if component == "binary_sensor" and config.get("device_class") not in (None, *BINARY_SENSOR_CLASSES):
        out.append(f"binary_sensor: unknown device_class {config.get('device_class')!r}")
    if component == "sensor" and config.get("state_class") not in (None, *STATE_CLASSES):
        out.append(f"sensor: unknown state_class {config.get('state_class')!r}")
    if not isinstance(config.get("unique_id"), str) or not config["unique_id"]:
        out.append("unique_id missing (needed for a device context)")
    device = config.get("device")
    if not isinstance(device, dict) or not (device.get("identifiers") or device.get("connections")):
        out.append("device block needs identifiers or connections")
    if "availability" in config and "availability_topic" in config:
        out.append("availability and availability_topic are exclusive")
    for entry in config.get("availability", []):
        if not isinstance(entry, dict) or "topic" not in entry:
            out.append(f"availability entry without topic: {entry!r}")
    if not isinstance(config.get("origin"), dict) or not config["origin"].get("name"):
        out.append("origin.name missing (recommended by the docs; required for device discovery)")
    for topic in referenced_topics(config):
        if not publish_topic_ok(topic):
            out.append(f"bad topic {topic!r}")
    return out
