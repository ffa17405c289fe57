"""Live sources: network streams here, and the machinery every live source shares.

Latest frame only (as Frigate and jetson-utils do): with `threaded=True` (the default) a
grabber thread reads the capture as fast as it delivers and keeps only the newest frame;
`read()` returns the newest frame not yet returned. Frames replaced before anybody read them
are counted in `stats.frames_dropped` and show as jumps in `Frame.index`, so a slow
detector never works on stale frames and memory never piles up. With `threaded=False`
every `read()` reads the capture itself (no drops; the camera's own buffer fills instead).

Reconnect: when a read fails, the capture is released and reopened after delays of
`Backoff.initial_s`, doubling each attempt up to `Backoff.max_s` (0.5, 1, 2, ... 30, 30 s by
default), forever unless `Backoff.max_attempts` is set (then the source goes FAILED with
an EdgeVadError in `Source.error`). Each attempt is logged; a success counts in
`stats.reconnects`, the time without frames in `stats.gap_s` and an estimate of the frames
lost in `stats.frames_missed` (gap x fps). The clock and the sleep are injectable so tests
run the whole sequence without waiting. `open()` itself is not retried: a source that does not
open is an immediate EdgeVadError; `edge-vad run` retries a config's live sources at start-up with
this same Backoff (edge_vad.runtime.source_worker).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Callable, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.sources.base import Capture, Frame, Source, SourceInfo, SourceState, fit_size, to_bgr, valid_fps

log = logging.getLogger("edge_vad.sources")

RECONNECT_INITIAL_S = 0.5  # first reconnect delay (Frigate-like: retry soon, then back off)
RECONNECT_FACTOR = 2.0  # exponential backoff
RECONNECT_MAX_S = 30.0  # cap: a camera that comes back is picked up within 30 s
STREAM_OPEN_TIMEOUT_S = 10.0  # FFmpeg connect timeout for network streams
STREAM_READ_TIMEOUT_S = 5.0  # FFmpeg read timeout: a stalled stream counts as lost after this
GRABBER_JOIN_S = STREAM_READ_TIMEOUT_S + 1.0  # close() waits this long for a blocked read
FINITE_STREAM_SLACK = 1  # a remote file's announced frame count may overshoot by one

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: initial_s * factor**attempt, capped at max_s."""

    initial_s: float = RECONNECT_INITIAL_S
    factor: float = RECONNECT_FACTOR
    max_s: float = RECONNECT_MAX_S
    max_attempts: Optional[int] = None  # None: keep trying (an edge camera should come back)

    def __post_init__(self):
        if self.initial_s <= 0 or self.factor < 1 or self.max_s < self.initial_s:
            raise EdgeVadError(f"bad reconnect backoff {self}: need initial_s > 0, factor >= 1, max_s >= initial_s")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise EdgeVadError(f"bad reconnect backoff: max_attempts must be >= 1 or None, got {self.max_attempts}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0-based)."""
        return min(self.initial_s * self.factor ** attempt, self.max_s)


def redact(uri: str) -> str:
    """The URI with any password replaced by '***' (for logs and error messages)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class LiveSource(Source):
    """Base of cameras and network streams: grabber thread, latest frame, reconnect.

    Subclasses implement `_make_capture` (open one capture; may raise EdgeVadError),
    `_cannot_open` (message when it does not open) and `_describe` (the SourceInfo)."""

    def __init__(
        self,
        name: str,
        *,
        backoff: Optional[Backoff] = None,
        threaded: bool = True,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], object]] = None,
        resize: Optional[tuple] = None,
    ):
        super().__init__(name)
        self.backoff = backoff or Backoff()
        self._threaded = threaded
        self._clock = clock or time.monotonic
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # close() interrupts a real backoff wait
        self._resize = resize
        self._cond = threading.Condition()
        self._cap: Optional[Capture] = None
        self._thread: Optional[threading.Thread] = None
        self._latest: Optional[Frame] = None
        self._seq = -1  # index of the newest captured frame
        self._delivered = -1  # index of the newest frame read() returned
        self._last_frame_at = 0.0

    # -- subclass hooks ----------------------------------------------------------------
    @property
    @abstractmethod
    def display_uri(self) -> str:
        """The URI for messages (no password)."""

    @abstractmethod
    def _make_capture(self) -> Capture:
        """Create one capture (opened or not); raise EdgeVadError when it cannot even be tried."""

    @abstractmethod
    def _cannot_open(self) -> str:
        """One-line message for a capture that did not open."""

    @abstractmethod
    def _describe(self, cap: Capture, image: np.ndarray) -> SourceInfo:
        """What was opened, from the capture and its first frame."""

    def _no_frame(self) -> str:
        return f"{self.display_uri}: opened but delivered no frame; check that it works in another player"

    def _stream_finished(self) -> bool:
        """True when a failed read is the normal end of a finite stream (no reconnect)."""
        return False

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> "LiveSource":
        cap = self._make_capture()
        if not cap.isOpened():
            cap.release()
            raise EdgeVadError(self._cannot_open())
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise EdgeVadError(self._no_frame())
        info = self._describe(cap, image)
        self._cap = cap
        self._publish(image)
        self._opened(info)
        if self._threaded:
            self._thread = threading.Thread(target=self._run, name=f"edge-vad-grab-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _close(self) -> None:
        self._stop.set()
        with self._cond:
            if self._state is not SourceState.FAILED:
                self._state = SourceState.ENDED
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(GRABBER_JOIN_S)
            if thread.is_alive():  # blocked inside cv2; it releases the capture when it returns
                log.warning("source '%s': grabber still blocked after %.0f s; leaving it to finish",
                            self.name, GRABBER_JOIN_S)
        elif thread is None:
            self._release()

    # -- reading -------------------------------------------------------------------------
    def _read(self, timeout_s: Optional[float]) -> Optional[Frame]:
        if self._threaded:
            with self._cond:
                self._cond.wait_for(lambda: self._has_new() or self._stop.is_set()
                                    or self._state in (SourceState.ENDED, SourceState.FAILED), timeout_s)
                frame = self._take()
        else:
            with self._cond:
                frame = self._take()  # the frame open() or a reconnect already decoded
            if frame is None and self._state is SourceState.OPEN and not self._stop.is_set():
                self._grab_once()
                with self._cond:
                    frame = self._take()
        if frame is not None and self._resize is not None:
            frame = dataclasses.replace(frame, image=fit_size(frame.image, *self._resize))
        return frame

    def _has_new(self) -> bool:
        return self._latest is not None and self._latest.index > self._delivered

    def _take(self) -> Optional[Frame]:
        """Newest unread frame (caller holds the lock); counts the frames it skips."""
        if not self._has_new():
            return None
        frame = self._latest
        skipped = frame.index - self._delivered - 1
        self._delivered = frame.index
        if skipped:
            self._bump(frames_dropped=skipped)
        return frame

    def _publish(self, image: np.ndarray) -> None:
        now = self._clock()
        with self._cond:
            self._seq += 1
            self._latest = Frame(image=to_bgr(image), index=self._seq, timestamp_s=now, source=self.name)
            self._last_frame_at = now
            self._cond.notify_all()

    def _set_state(self, state: SourceState) -> None:
        with self._cond:
            self._state = state
            self._cond.notify_all()

    # -- grabbing and reconnecting -------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self._state is SourceState.OPEN:
                self._grab_once()
        except Exception as exc:  # noqa: BLE001 - a crash here must surface, not kill the thread silently
            log.exception("source '%s': frame grabber crashed", self.name)
            self.error = EdgeVadError(f"{self.display_uri}: frame grabber crashed ({exc}); please report this")
            self._set_state(SourceState.FAILED)
        finally:
            self._release()

    def _grab_once(self) -> None:
        """One capture read; on failure, the end of a finite stream or a reconnect."""
        ok, image = self._cap.read()
        if ok and image is not None:
            self._publish(image)
            return
        if self._stop.is_set():
            return
        if self._stream_finished():
            log.info("source '%s': stream ended after %d frames", self.name, self._seq + 1)
            self._set_state(SourceState.ENDED)
            return
        self._reconnect()

    def _reconnect(self) -> None:
        lost_at = self._last_frame_at
        self._release()
        self._set_state(SourceState.RECONNECTING)
        log.warning("source '%s': %s stopped delivering frames; reconnecting", self.name, self.display_uri)
        attempt = 0
        while not self._stop.is_set():
            limit = self.backoff.max_attempts
            if limit is not None and attempt >= limit:
                self.error = EdgeVadError(f"{self.display_uri}: stream lost and {attempt} reconnect attempts "
                                          f"failed; check the camera, its cable or network, then restart")
                log.error("source '%s': giving up after %d reconnect attempts", self.name, attempt)
                self._set_state(SourceState.FAILED)
                return
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.warning("source '%s': reconnect attempt %d in %.1f s", self.name, attempt, delay)
            self._sleep(delay)
            if self._stop.is_set():
                return
            self._bump(reconnect_attempts=1)
            cap = self._try_capture(attempt)
            if cap is None:
                continue
            ok, image = cap.read()
            if not ok or image is None:
                cap.release()
                log.warning("source '%s': reconnect attempt %d opened but got no frame", self.name, attempt)
                continue
            self._cap = cap
            gap = max(0.0, self._clock() - lost_at)
            fps = self._info.fps if self._info is not None else None
            missed = max(0, round(gap * fps) - 1) if fps else 0  # minus the one interval a healthy stream has
            self._bump(reconnects=1, gap_s=gap, frames_missed=missed)
            self._publish(image)
            self._set_state(SourceState.OPEN)
            log.info("source '%s': reconnected on attempt %d after %.1f s without frames (~%d frames missed)",
                     self.name, attempt, gap, missed)
            return

    def _try_capture(self, attempt: int) -> Optional[Capture]:
        try:
            cap = self._make_capture()
        except EdgeVadError as exc:  # e.g. the USB camera is unplugged right now
            log.warning("source '%s': reconnect attempt %d failed: %s", self.name, attempt, exc)
            return None
        if not cap.isOpened():
            cap.release()
            log.warning("source '%s': reconnect attempt %d failed: %s", self.name, attempt, self._cannot_open())
            return None
        return cap

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


CaptureFactory = Callable[[str, int, Sequence[int]], Capture]


def _cv2_capture(uri: str, api: int, params: Sequence[int]) -> Capture:
    return cv2.VideoCapture(uri, api, list(params))


class NetworkSource(LiveSource):
    """rtsp://, rtsps://, http(s):// through OpenCV's FFmpeg backend. RTSP goes over TCP unless
    OPENCV_FFMPEG_CAPTURE_OPTIONS is already set (UDP loses packets on busy links and smears
    frames; Frigate defaults to TCP too). `width`/`height` resize the delivered frames. A
    remote file (the server reports a frame count) ENDS at its last frame instead of
    reconnecting."""

    kind = "stream"

    def __init__(
        self,
        url: str,
        *,
        name: Optional[str] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        backoff: Optional[Backoff] = None,
        threaded: bool = True,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], object]] = None,
        open_timeout_s: float = STREAM_OPEN_TIMEOUT_S,
        read_timeout_s: float = STREAM_READ_TIMEOUT_S,
        capture_factory: Optional[CaptureFactory] = None,
    ):
        self.url = url
        super().__init__(name or (urlsplit(url).hostname or "stream"), backoff=backoff, threaded=threaded,
                         clock=clock, sleep=sleep, resize=(width, height) if (width or height) else None)
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._factory = capture_factory or _cv2_capture

    @property
    def display_uri(self) -> str:
        return redact(self.url)

    def _make_capture(self) -> Capture:
        if self.url.lower().startswith(("rtsp://", "rtsps://")):
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self._open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self._read_timeout_s * 1000)]
        return self._factory(self.url, cv2.CAP_FFMPEG, params)

    def _cannot_open(self) -> str:
        return (f"{self.display_uri}: cannot open the stream (unreachable, wrong path or credentials, or no answer "
                f"within {self._open_timeout_s:g} s); check that `ffprobe '{self.display_uri}'` plays it")

    def _no_frame(self) -> str:
        return (f"{self.display_uri}: stream opened but delivered no frame; check its codec (H.264, H.265, MJPEG) "
                f"and that `ffprobe '{self.display_uri}'` plays it")

    def _describe(self, cap: Capture, image: np.ndarray) -> SourceInfo:
        if self._resize is not None:
            image = fit_size(image, *self._resize)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        backend = cap.getBackendName() if hasattr(cap, "getBackendName") else "FFMPEG"
        return SourceInfo(kind=self.kind, uri=self.display_uri, backend=backend, width=image.shape[1],
                          height=image.shape[0], fps=valid_fps(cap.get(cv2.CAP_PROP_FPS)),
                          frame_count=count if count > 0 else None)

    def _stream_finished(self) -> bool:
        count = self._info.frame_count if self._info is not None else None
        return bool(count) and self._seq + 1 >= count - FINITE_STREAM_SLACK
