"""Anomaly events: their lifecycle (start -> updates -> end), their JSON form, and the sinks.

    b = EventBuilder(source="front-door", start_frame=d.start_frame, start_s=d.start_t)
    sinks.emit(b.start())                      # when the gate reports event "start"
    b.add_score(score)                         # every frame while open
    sinks.emit(b.update(fine=FineSummary(...)))  # after each fine-stage result
    sinks.emit(b.end(d.end_frame, d.end_t, clip=..., snapshot=...))

One JSON object per line (schema `EVENT_SCHEMA_VERSION`):
    id, type (start|update|end), seq (0, 1, ... per event), source,
    start_frame, end_frame (null until end), start_s, end_s (media / stream seconds),
    start_time, end_time (ISO 8601 UTC wall clock; end null until end), emitted_at,
    frames (scores seen), peak_score, mean_score,
    fine (null or {class, probs{name: p}, description, top_snippets}), clip, snapshot
    (paths once written, else null), clip_error (why an end record's clip is null, else null),
    end_reason (end records: "gate_closed", "stopped" (SIGTERM or end of the source), or
    "crash_recovered" (closed at the next start after a crash, edge_vad.runtime.recovery)).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections import deque
from typing import Any, Callable, Deque, Dict, IO, Iterable, List, Literal, Mapping, Optional, Protocol, Sequence, Union

log = logging.getLogger("edge_vad.events")

EVENT_SCHEMA_VERSION = 1
EventType = Literal["start", "update", "end"]
END_GATE_CLOSED, END_STOPPED, END_CRASH_RECOVERED = "gate_closed", "stopped", "crash_recovered"
MAX_UNWRITTEN_LINES = 10_000  # events.jsonl lines held in memory while the disk refuses them (about 10 MB)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(when: datetime) -> str:
    """ISO 8601 with an explicit UTC offset, millisecond precision: 2024-05-01T12:00:00.123+00:00."""
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class FineSummary:
    """What the fine stage says about an event: the class, the probabilities, and the evidence."""

    class_name: str
    probs: Mapping[str, float]
    description: str = ""
    top_snippets: Sequence[int] = ()  # snippet (or frame) indices with the highest evidence

    def to_dict(self) -> Dict[str, Any]:
        return {"class": self.class_name, "probs": {k: float(v) for k, v in self.probs.items()},
                "description": self.description, "top_snippets": [int(i) for i in self.top_snippets]}


@dataclass(frozen=True)
class Event:
    id: str
    type: EventType
    seq: int
    source: str
    start_frame: int
    start_s: float
    start_time: str
    emitted_at: str
    frames: int
    peak_score: Optional[float]
    mean_score: Optional[float]
    end_frame: Optional[int] = None
    end_s: Optional[float] = None
    end_time: Optional[str] = None
    fine: Optional[Dict[str, Any]] = None
    clip: Optional[str] = None
    snapshot: Optional[str] = None
    clip_error: Optional[str] = None
    end_reason: Optional[str] = None
    schema: int = EVENT_SCHEMA_VERSION

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        # allow_nan=False: a NaN would make the line unreadable for strict JSON parsers downstream.
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class EventBuilder:
    """Tracks one event while the gate is open and makes its start / update / end records."""

    def __init__(self, source: str, start_frame: int, start_s: float, *, event_id: Optional[str] = None,
                 clock: Clock = utc_now, started_at: Optional[datetime] = None):
        self.id = event_id or str(uuid.uuid4())
        self.source = source
        self.start_frame = int(start_frame)
        self.start_s = float(start_s)
        self._clock = clock
        self.started_at = started_at or clock()
        self._seq = 0
        self._n = 0
        self._sum = 0.0
        self._peak = -math.inf
        self.fine: Optional[Dict[str, Any]] = None
        self.clip: Optional[str] = None
        self.snapshot: Optional[str] = None
        self.ended = False

    def add_score(self, score: float) -> None:
        score = float(score)
        if not math.isfinite(score):
            return  # the gate rejects these anyway; never let one poison mean/peak
        self._n += 1
        self._sum += score
        self._peak = max(self._peak, score)

    def add_scores(self, scores: Iterable[float]) -> None:
        for s in scores:
            self.add_score(s)

    @property
    def peak_score(self) -> Optional[float]:
        return self._peak if self._n else None

    @property
    def mean_score(self) -> Optional[float]:
        return self._sum / self._n if self._n else None

    def start(self) -> Event:
        return self._record("start")

    def update(self, fine: Union[FineSummary, Mapping[str, Any], None] = None, *, clip: Union[str, Path, None] = None,
               snapshot: Union[str, Path, None] = None) -> Event:
        """A record with what is known now; given fields replace the previous ones."""
        self._absorb(fine, clip, snapshot)
        return self._record("update")

    def end(self, end_frame: int, end_s: float, fine: Union[FineSummary, Mapping[str, Any], None] = None, *,
            clip: Union[str, Path, None] = None, snapshot: Union[str, Path, None] = None,
            ended_at: Optional[datetime] = None, clip_error: Optional[str] = None,
            end_reason: str = END_GATE_CLOSED) -> Event:
        """The end record. `ended_at`: wall clock when the gate closed, if the record is sent
        later (e.g. held until the clip's post-roll is written); default now. `clip_error`: why
        there is no clip (the clip field is then null)."""
        if self.ended:
            raise RuntimeError(f"event {self.id} already ended")
        self._absorb(fine, clip, snapshot)
        if clip_error:
            self.clip = None  # a record never points at a clip that is not whole
        self.ended = True
        return self._record("end", end_frame=int(end_frame), end_s=float(end_s),
                            end_time=iso_utc(ended_at or self._clock()), clip_error=clip_error or None,
                            end_reason=end_reason)

    def _absorb(self, fine, clip, snapshot) -> None:
        if fine is not None:
            self.fine = fine.to_dict() if isinstance(fine, FineSummary) else _check_fine(fine)
        if clip is not None:
            self.clip = str(clip)
        if snapshot is not None:
            self.snapshot = str(snapshot)

    def _record(self, kind: EventType, **end_fields) -> Event:
        event = Event(
            id=self.id, type=kind, seq=self._seq, source=self.source, start_frame=self.start_frame,
            start_s=self.start_s, start_time=iso_utc(self.started_at), emitted_at=iso_utc(self._clock()),
            frames=self._n, peak_score=self.peak_score, mean_score=self.mean_score,
            fine=self.fine, clip=self.clip, snapshot=self.snapshot, **end_fields,
        )
        self._seq += 1
        return event


def _check_fine(fine: Mapping[str, Any]) -> Dict[str, Any]:
    missing = {"class", "probs"} - set(fine)
    if missing:
        raise ValueError(f"fine result lacks {sorted(missing)}; give a FineSummary or a dict with class and probs")
    out = dict(fine)
    out.setdefault("description", "")
    out.setdefault("top_snippets", [])
    return out


# --------------------------------------------------------------------------- sinks
class EventSink(Protocol):
    name: str

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class JsonlEventWriter:
    """Appends events to a JSON-lines file, one durable, never-interleaved line per event.

    Why one os.write on an O_APPEND descriptor: with O_APPEND the kernel finds the end and
    writes in one step, so two writers (threads or processes) never interleave inside a
    line; and with the whole line in ONE write call nothing sits in a Python buffer, so an
    exception, SIGKILL or OOM kill of this process between events loses nothing and never
    leaves a fragment. fsync then makes the line survive a power loss before the event is
    announced anywhere else (MQTT).

    A full disk (ENOSPC, or a short write: part of the line fits) must not leave a fragment
    either: the part that made it is cut off again (ftruncate back to the size before the
    write, when nobody else appended meanwhile), the line is kept in memory (up to
    MAX_UNWRITTEN_LINES, oldest dropped and counted in `lost`) and written, in order, before
    the next event and once more at close; emit() raises OSError meanwhile so EventSinks
    counts the failure. What can still tear a line is dying INSIDE the write (a power cut, a
    SIGKILL while the kernel copies a line that crosses a page boundary): the reader skips a
    torn line, and on opening the writer ends an unterminated last line with a newline so the
    next event starts on a line of its own.
    """

    kind = "events_jsonl"
    retries = True  # a failed line is kept and written later (EventSinks counts no loss for it)

    def __init__(self, path: Union[str, Path], fsync: bool = True, ledger: Optional[Any] = None):
        self.path = Path(path)
        self.name = f"jsonl:{self.path}"
        self._fsync = fsync
        self._ledger = ledger
        self._lock = threading.Lock()
        self._unwritten: Deque[bytes] = deque()
        self.lost = 0  # lines dropped for good (backlog overflow, or still unwritten at close)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._terminate_torn_line()

    def _terminate_torn_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                log.warning("%s: last line was torn (crash during a write); it will be skipped by readers", self.path)
                self._write_all(b"\n")

    def _write_all(self, data: bytes) -> None:
        """One line, whole or not at all (see the class doc)."""
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, data)
        except OSError:
            self._cut_back(size, 0)
            raise
        if written != len(data):  # a regular file only writes short when the disk is full
            self._cut_back(size, written)
            raise OSError(errno.ENOSPC, f"{self.path}: short write ({written} of {len(data)} bytes; part taken back); "
                                        "is the disk full?")
        if self._fsync:
            os.fsync(self._fd)

    def _cut_back(self, size: int, written: int) -> None:
        """Remove the `written` bytes of a failed line, unless another writer appended after them."""
        try:
            if os.fstat(self._fd).st_size == size + written:
                os.ftruncate(self._fd, size)
            elif written:
                log.error("%s: another writer appended after a failed line; its fragment stays (readers skip it)",
                          self.path)
        except OSError as exc:
            log.error("%s: could not take back a failed line (%s); readers skip the fragment", self.path, exc)

    def emit(self, event: Union[Event, Mapping[str, Any]]) -> None:
        line = event.to_json() if isinstance(event, Event) else json.dumps(event, allow_nan=False)
        data = (line + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"{self.path}: writer is closed")
            self._unwritten.append(data)
            if len(self._unwritten) > MAX_UNWRITTEN_LINES:
                self._unwritten.popleft()
                self._count_lost(1, f"{self.path}: more than {MAX_UNWRITTEN_LINES} event lines waiting for disk "
                                    "space; the oldest was dropped")
            self._write_unwritten()

    def _write_unwritten(self) -> None:
        """Write the waiting lines in order; raise OSError (lines kept) at the first that fails."""
        while self._unwritten:
            try:
                self._write_all(self._unwritten[0])
            except OSError as exc:
                waiting = len(self._unwritten)
                raise OSError(exc.errno, f"{exc.strerror or exc}; {waiting} event line(s) kept in memory and "
                                         "retried with the next event") from None
            self._unwritten.popleft()

    def _count_lost(self, n: int, message: str) -> None:
        self.lost += n
        if self._ledger is not None:
            self._ledger.lose(self.kind, n, message)
        else:
            log.error("%s", message)

    @property
    def unwritten(self) -> int:
        return len(self._unwritten)

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                self._write_unwritten()
            except OSError as exc:
                self._count_lost(len(self._unwritten), f"{self.path}: {len(self._unwritten)} event line(s) could not "
                                                       f"be written before exit and are lost ({exc.strerror or exc})")
                self._unwritten.clear()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JsonlEventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_events(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """All events of a JSON-lines file. A torn line (from a crash inside a write: the last line
    without its newline, or an unparseable line the writer later terminated) is skipped with a
    warning; blank lines are ignored."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else the torn final line
    if tail.strip():
        log.warning("%s: skipping a torn final line (%d bytes)", path, len(tail))
    events = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            events.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s:%d: skipping a torn line", path, number)
    return events


class StdoutEventSink:
    """One JSON line per event on stdout (or any text stream), flushed at once."""

    kind = "stdout"

    def __init__(self, stream: Optional[IO[str]] = None):
        self._stream = stream
        self.name = "stdout"
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(event.to_json() + "\n")
            stream.flush()

    def close(self) -> None:
        pass


@dataclass
class SinkFailure:
    count: int = 0
    last_error: str = ""


class EventSinks:
    """Fan-out: each event goes to every sink; a failing sink is logged and counted, and never
    stops the others (a dead MQTT broker must not lose the JSONL record)."""

    def __init__(self, sinks: Sequence[EventSink] = (), on_emit: Optional[Callable[[Event], None]] = None,
                 ledger: Optional[Any] = None):
        self.sinks: List[EventSink] = list(sinks)
        self.failures: Dict[str, SinkFailure] = {s.name: SinkFailure() for s in self.sinks}
        self.emitted = 0
        self._on_emit = on_emit
        self._ledger = ledger  # edge_vad.runtime.outputs.OutputLedger: ERROR line + metrics per failure

    def add(self, sink: EventSink) -> None:
        self.sinks.append(sink)
        self.failures.setdefault(sink.name, SinkFailure())

    def emit(self, event: Event) -> int:
        """Send to every sink; returns how many failed."""
        failed = 0
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:  # noqa: BLE001 - one sink's failure must not stop the rest
                failed += 1
                entry = self.failures.setdefault(sink.name, SinkFailure())
                entry.count += 1
                entry.last_error = f"{type(exc).__name__}: {exc}"
                message = f"event sink {sink.name} failed on event {event.id} ({event.type}): {entry.last_error}"
                if self._ledger is not None:  # a sink that keeps the record for a retry reports its losses itself
                    self._ledger.failed(getattr(sink, "kind", sink.name), message,
                                        lost=0 if getattr(sink, "retries", False) else 1)
                else:
                    log.warning("%s", message)
        self.emitted += 1
        if self._on_emit is not None:
            self._on_emit(event)
        return failed

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing event sink %s failed: %s", sink.name, exc)

    def __enter__(self) -> "EventSinks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
