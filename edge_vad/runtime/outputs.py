"""Output failures of a run (clips, snapshots, event lines, MQTT, reports): logged, counted, exported.

    ledger = OutputLedger(metrics)
    ledger.failed("clip", "clip of event 1a2b not written: disk full", lost=1)   # ERROR line + metrics
    ledger.failed("events_jsonl", "write failed, will retry", lost=0)            # a failure that may recover
    ledger.lost_total() -> 1      # the runner turns a non-zero total into exit code 4 (OutputsLost)

`failed` counts every failed attempt (edge_vad_output_failures_total{kind}); `lost` counts outputs that
are gone for good (edge_vad_outputs_lost_total{kind}). Detection never stops for either: sinks and
writers report here and carry on.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, Optional

from edge_vad.errors import OutputsLost

log = logging.getLogger("edge_vad.outputs")

KINDS = ("clip", "snapshot", "events_jsonl", "mqtt", "stdout", "report")  # the ones the runtime reports
_NOUNS = {"clip": "clip(s)", "snapshot": "snapshot(s)", "events_jsonl": "events.jsonl line(s)",
          "mqtt": "MQTT event(s)", "stdout": "stdout event line(s)", "report": "report file(s)"}


class OutputLedger:
    """Thread-safe: pipelines, the clip writer, paho's thread and the runner all report here."""

    def __init__(self, metrics: Optional[object] = None):
        self._metrics = metrics
        self._lock = threading.Lock()
        self.failures: Dict[str, int] = {}
        self.lost: Dict[str, int] = {}

    def failed(self, kind: str, message: str, *, lost: int = 1, level: int = logging.ERROR) -> None:
        """One failed write of `kind` (an ERROR line unless `level` says otherwise); `lost` outputs of that kind
        are gone for good."""
        with self._lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            if lost:
                self.lost[kind] = self.lost.get(kind, 0) + lost
        log.log(level, "%s", message)
        if self._metrics is not None:
            self._metrics.output_failure(kind, lost)

    def lose(self, kind: str, n: int, message: str, level: int = logging.ERROR) -> None:
        """`n` outputs found lost without a new failed write (e.g. lines still unwritten at exit)."""
        if n <= 0:
            return
        self.failed(kind, message, lost=n, level=level)

    def lost_total(self) -> int:
        with self._lock:
            return sum(self.lost.values())

    def summary(self) -> str:
        with self._lock:
            return ", ".join(f"{n} {_NOUNS.get(k, k)}" for k, n in sorted(self.lost.items()) if n)

    def raise_if_lost(self, fail: bool = True) -> None:
        """OutputsLost (exit 4) when anything was lost and `fail`; otherwise one WARNING line."""
        if not self.lost_total():
            return
        text = (f"this run lost outputs: {self.summary()} (the ERROR lines above say which and why); free disk "
                "space or fix the folder")
        if fail:
            raise OutputsLost(text + "; set [events] fail_on_lost_outputs = false to exit 0 anyway")
        log.warning("%s; exiting 0 because [events] fail_on_lost_outputs = false", text)
