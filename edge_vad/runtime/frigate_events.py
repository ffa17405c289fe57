"""Event messages in the envelope Frigate's `frigate/events` topic uses, so automations written for
Frigate can be adapted (Frigate docs, "MQTT": frigate/events):

    {"type": "new" | "update" | "end", "before": {...}, "after": {...}}

`after` is the event record as written to events.jsonl (edge_vad.runtime.events); `before` is the
previous record of the same event, i.e. its state before this change. For "new" there is no earlier
record and `before` equals `after`. Our record types map start -> new, update -> update, end -> end.
Only open events are remembered (a few KB each), and forgotten at their end.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Mapping, Union

FRIGATE_TYPES = {"start": "new", "update": "update", "end": "end"}


class FrigateEnvelopes:
    def __init__(self) -> None:
        self._last: Dict[str, Dict[str, Any]] = {}
        self._lock = threading.Lock()

    def wrap(self, event: Union[Mapping[str, Any], Any]) -> Dict[str, Any]:
        after = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        kind = after.get("type")
        if kind not in FRIGATE_TYPES:
            raise ValueError(f"event record type must be one of {sorted(FRIGATE_TYPES)}, got {kind!r}")
        with self._lock:
            before = self._last.get(after["id"], after)
            if kind == "end":
                self._last.pop(after["id"], None)
            else:
                self._last[after["id"]] = after
        return {"type": FRIGATE_TYPES[kind], "before": before, "after": after}
