"""Opening the sources of a run, and one worker thread per source.

    opened = open_at_start(specs, stop, retry_live=True)      # all at once, in threads; Ctrl-C stays prompt
    worker = SourceWorker(spec, opened[i], make_pipeline, stop, metrics)
    threading.Thread(target=worker.run).start()               # opens late if needed, then runs its Pipeline

Sources are independent. At start-up every source is opened at the same time (a camera that takes its
10 s open timeout does not hold up the others), each in its own thread, while the caller waits on the
stop flag, so SIGINT / SIGTERM during a slow RTSP open is handled at once. A file or image folder that
does not open is an error (it will not appear by waiting). A live source (camera, CSI, rtsp://, http://)
that does not open is an error too when it was given on the command line (a person at a terminal wants to
know now), but with `retry_live` (the config's [[sources]], i.e. the service) it is retried by its worker
with the same capped backoff as a lost stream (edge_vad.sources.stream.Backoff: 0.5, 1, 2 ... 30 s), while
the other sources run; /healthz shows it as "connecting" (not ok) until it opens.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.pipeline import Pipeline, PipelineResult
from edge_vad.sources import Source, open_source, parse_uri
from edge_vad.sources.stream import STREAM_OPEN_TIMEOUT_S, Backoff, redact
from edge_vad.sources.uri import safe_name

log = logging.getLogger("edge_vad.run")

LIVE_KINDS = ("v4l2", "csi", "stream")
OPEN_POLL_S = 0.1  # how often the main thread looks at the stop flag while sources open
OPEN_GRACE_S = STREAM_OPEN_TIMEOUT_S + 5.0  # a worker inside one open attempt is busy, not hung (watchdog)
CONNECTING = "connecting"  # /healthz state of a source that has not opened yet


class StartInterrupted(Exception):
    """SIGINT / SIGTERM arrived while the sources were opening."""


@dataclass(frozen=True)
class SourceSpec:
    uri: str
    name: Optional[str] = None  # None: derived from the URI
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    loop: bool = False
    stride: int = 1

    def open(self) -> Source:
        return open_source(self.uri, width=self.width, height=self.height, fps=self.fps, loop=self.loop,
                           name=self.name)

    @property
    def live(self) -> bool:
        try:
            return parse_uri(self.uri).kind in LIVE_KINDS
        except EdgeVadError:
            return False

    @property
    def label(self) -> str:
        return self.name or safe_name(redact(self.uri))


def open_at_start(specs: Sequence[SourceSpec], stop: threading.Event, retry_live: bool) -> List[Optional[Source]]:
    """Open every source at once. Returns the opened sources in order, None for a live source left to its
    worker to retry (`retry_live`). Raises EdgeVadError (one line per source that failed for good) after
    closing what did open, or StartInterrupted when `stop` is set meanwhile."""
    results: List[Optional[Source]] = [None] * len(specs)
    errors: List[Optional[EdgeVadError]] = [None] * len(specs)

    def opener(i: int) -> None:
        try:
            results[i] = specs[i].open()
        except EdgeVadError as exc:
            errors[i] = exc
        except Exception as exc:  # noqa: BLE001 - surfaces as one line below, not as a dead thread
            errors[i] = EdgeVadError(f"{redact(specs[i].uri)}: cannot be opened ({type(exc).__name__}: {exc})")

    threads = [threading.Thread(target=opener, args=(i,), name=f"edge-vad-open-{i}", daemon=True)
               for i in range(len(specs))]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if stop.wait(OPEN_POLL_S):
            _close_all(results)  # the ones still opening are abandoned: daemon threads, the process is exiting
            raise StartInterrupted()
    fatal = []
    for spec, error in zip(specs, errors):
        if error is None:
            continue
        if retry_live and spec.live:
            log.warning("source '%s': cannot be opened at start-up (%s); retrying in the background with backoff "
                        "while the other sources run", spec.label, error)
        else:
            fatal.append(str(error))
    if fatal:
        _close_all(results)
        raise EdgeVadError("\n".join(fatal))
    names = [s.name for s in results if s is not None] + [spec.label for spec, s in zip(specs, results) if s is None]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        _close_all(results)
        raise EdgeVadError(f"several sources are named {dupes}; give each [[sources]] entry its own name")
    return results


def _close_all(sources: Sequence[Optional[Source]]) -> None:
    for src in sources:
        if src is not None:
            src.close()


class SourceWorker:
    """One source's thread: open it (retrying with backoff if it was not open at start-up), then run its
    Pipeline. `result`, `heartbeat` and `source` are read by the supervising main thread."""

    def __init__(self, spec: SourceSpec, source: Optional[Source], make_pipeline: Callable[[Source], Pipeline],
                 stop: threading.Event, metrics=None, backoff: Optional[Backoff] = None):
        self.spec = spec
        self.source = source
        self.name = source.name if source is not None else spec.label
        self._make_pipeline = make_pipeline
        self.stop = stop
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.pipeline: Optional[Pipeline] = None
        self.result = PipelineResult(self.name)
        self._heartbeat = time.monotonic()
        self.opening = source is None  # still trying to open (holds nothing to flush)
        if metrics is not None:
            metrics.source_state(self.name, "starting" if source is not None else CONNECTING)

    @property
    def heartbeat(self) -> float:
        return self.pipeline.heartbeat if self.pipeline is not None else self._heartbeat

    def run(self) -> None:
        if self.source is None:
            self.source = self._open_with_retry()
            self.opening = False
            if self.source is None:
                self.result.stopped = True
                return
            if self.stop.is_set():  # it opened just as the run was stopping
                self.source.close()
                self.result.stopped = True
                return
        self.pipeline = self._make_pipeline(self.source)
        self.result = self.pipeline.run()

    def _open_with_retry(self) -> Optional[Source]:
        attempt = 0
        started = time.monotonic()
        while not self.stop.is_set():
            limit = self.backoff.max_attempts
            if limit is not None and attempt >= limit:
                self.result.error = EdgeVadError(f"source '{self.name}': {redact(self.spec.uri)} did not open in "
                                                 f"{attempt} attempts; check the camera, its cable or network")
                log.error("%s", self.result.error)
                if self.metrics is not None:
                    self.metrics.source_state(self.name, "failed")
                return None
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.warning("source '%s': start-up open attempt %d in %.1f s", self.name, attempt, delay)
            self._heartbeat = time.monotonic()
            if self.stop.wait(delay):
                return None
            self._heartbeat = time.monotonic() + OPEN_GRACE_S  # one open may block for its whole timeout
            try:
                source = self.spec.open()
            except EdgeVadError as exc:
                log.warning("source '%s': start-up open attempt %d failed: %s", self.name, attempt, exc)
                continue
            finally:
                self._heartbeat = time.monotonic()
            log.info("source '%s': opened on start-up attempt %d, %.1f s after start", self.name, attempt,
                     time.monotonic() - started)
            return source
        return None
