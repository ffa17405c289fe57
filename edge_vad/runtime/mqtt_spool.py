"""A bounded FIFO of MQTT event payloads the broker has not acknowledged yet, kept on disk.

    spool = MqttSpool(Path("/var/lib/edge-vad/events/mqtt-spool"), max_bytes=16 << 20, on_drop=warn)
    entry = spool.add(payload)       # durable (written atomically, fsynced) before it is published
    for entry in spool.entries(): client.publish(topic, spool.read(entry), qos=1)
    spool.remove(entry)              # once the broker's PUBACK arrived (paho's on_publish)

One file per event, `<sequence>.json`, so an acknowledgement is one unlink and a crash can never leave a
half-removed entry; the sequence continues from the highest file found, so order survives restarts and
what a run could not deliver goes out after the next start. Past `max_bytes` the OLDEST entries are
dropped (the newest events are the ones an operator still acts on) and `on_drop(n, why)` is told, so the
caller can log a WARNING with the count. An entry that cannot be written to disk (full disk, read-only
folder) is kept in memory instead (`on_disk` False): still published, but lost if the process exits
before the broker acknowledges it. With `folder=None` every entry is in memory (no spool configured).
Thread-safe.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from edge_vad.fileio import atomic_write_bytes

log = logging.getLogger("edge_vad.mqtt")

SUFFIX = ".json"


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    size: int
    payload: Optional[bytes] = None  # only for entries kept in memory

    @property
    def on_disk(self) -> bool:
        return self.payload is None


class MqttSpool:
    def __init__(self, folder: Optional[Path], max_bytes: int,
                 on_drop: Optional[Callable[[int, str], None]] = None,
                 on_disk_error: Optional[Callable[[str], None]] = None):
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, got {max_bytes}")
        self.folder = Path(folder) if folder is not None else None
        self.max_bytes = int(max_bytes)
        self._on_drop = on_drop
        self._on_disk_error = on_disk_error
        self._lock = threading.Lock()
        self._entries: "OrderedDict[int, SpoolEntry]" = OrderedDict()
        self._bytes = 0
        self._next = 0
        if self.folder is not None:
            self._load()

    def _load(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        found = []
        for path in self.folder.iterdir():
            if path.name.startswith("."):  # a temporary file of an interrupted atomic write
                path.unlink(missing_ok=True)
            elif path.suffix == SUFFIX and path.stem.isdigit():
                found.append((int(path.stem), path.stat().st_size))
        for seq, size in sorted(found):
            self._entries[seq] = SpoolEntry(seq, size)
            self._bytes += size
        self._next = (found and max(seq for seq, _ in found) + 1) or 0
        self._enforce_cap()

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:012d}{SUFFIX}"

    def add(self, payload: bytes) -> SpoolEntry:
        with self._lock:
            seq = self._next
            self._next += 1
            entry = SpoolEntry(seq, len(payload), payload)
            if self.folder is not None:
                try:
                    atomic_write_bytes(self._path(seq), payload)
                    entry = SpoolEntry(seq, len(payload))
                except OSError as exc:
                    if self._on_disk_error is not None:
                        self._on_disk_error(f"mqtt: event not saved in the spool {self.folder} ({exc.strerror or exc}); "
                                            "it is kept in memory only until the broker acknowledges it")
            self._entries[seq] = entry
            self._bytes += entry.size
            self._enforce_cap(keep=seq)
            return entry

    def _enforce_cap(self, keep: Optional[int] = None) -> None:
        dropped = 0
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            seq = next(iter(self._entries))
            if seq == keep:
                break
            self._drop(seq)
            dropped += 1
        if dropped and self._on_drop is not None:
            self._on_drop(dropped, f"the spool is full ({self.max_bytes / 1e6:.1f} MB)")

    def _drop(self, seq: int) -> None:
        entry = self._entries.pop(seq)
        self._bytes -= entry.size
        if entry.on_disk:
            try:
                os.unlink(self._path(seq))
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("mqtt: could not remove %s from the spool (%s)", self._path(seq), exc)

    def remove(self, entry: SpoolEntry) -> None:
        with self._lock:
            if entry.seq in self._entries:
                self._drop(entry.seq)

    def read(self, entry: SpoolEntry) -> Optional[bytes]:
        """The payload; None when the entry is gone (dropped, or its file removed by someone else)."""
        if entry.payload is not None:
            return entry.payload
        try:
            return self._path(entry.seq).read_bytes()
        except OSError as exc:
            log.error("mqtt: spooled event %s cannot be read (%s); skipped", self._path(entry.seq), exc)
            self.remove(entry)
            return None

    def entries(self) -> List[SpoolEntry]:
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def in_memory_only(self) -> int:
        with self._lock:
            return sum(1 for e in self._entries.values() if not e.on_disk)
