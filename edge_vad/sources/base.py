"""What every frame source shares: the frame, the state, the stats, and the `Source` base class.

A source is opened by `open_source` (edge_vad.sources.uri), read with `read(timeout_s)` which
returns a `Frame` or None (no frame within the timeout), and closed with `close()` or a `with`
block. End of stream is `state == SourceState.ENDED`, never an exception.
"""

from __future__ import annotations

import copy
import enum
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Tuple

import cv2
import numpy as np

from edge_vad.errors import EdgeVadError

log = logging.getLogger("edge_vad.sources")


class SourceState(enum.Enum):
    OPEN = "open"  # delivering frames
    RECONNECTING = "reconnecting"  # a live source lost its stream and is reopening it
    ENDED = "ended"  # no more frames: end of file/folder, or closed
    FAILED = "failed"  # a live source gave up reconnecting; `Source.error` says why


@dataclass(frozen=True, eq=False)  # eq on numpy images would be ambiguous
class Frame:
    """One decoded frame.

    image: uint8 BGR, shape (H, W, 3).
    index: frames since the source was opened. Files and folders: position in the media
        (a looped file keeps counting; an unreadable image in a folder leaves its number
        unused so indices stay aligned with per-frame labels). Live sources: the grabber's
        capture sequence number, so frames captured but replaced before anybody read them
        (latest-frame-only) show up as jumps; frames lost while reconnecting are NOT counted
        here (the camera never delivered them) but estimated in `SourceStats.frames_missed`.
    timestamp_s: files and folders: media time = index / fps. Live sources: monotonic wall
        time (time.monotonic) when the frame was captured.
    source: the source's name.
    """

    image: np.ndarray
    index: int
    timestamp_s: float
    source: str


@dataclass(frozen=True)
class SourceInfo:
    """What was opened. `width`/`height`/`fps` are what the source actually delivers, not
    what was asked for (`requested` says that)."""

    kind: str  # "file", "images", "v4l2", "csi", "stream"
    uri: str  # credentials redacted
    backend: str  # OpenCV backend name ("FFMPEG", "V4L2", "GSTREAMER") or "imread"
    width: int
    height: int
    fps: Optional[float]  # None when neither the media nor the caller says
    frame_count: Optional[int] = None  # files and folders (as the container reports it)
    requested: str = ""  # e.g. "1920x1080 @ 30 fps" for cameras, "" when nothing was asked

    def describe(self) -> str:
        rate = f"{self.fps:g} fps" if self.fps else "unknown fps"
        count = f", {self.frame_count} frames" if self.frame_count else ""
        asked = f" (asked {self.requested})" if self.requested else ""
        return f"{self.kind} {self.uri} via {self.backend}: {self.width}x{self.height} @ {rate}{count}{asked}"


@dataclass
class SourceStats:
    """Counters of a source; `Source.stats` returns a copy."""

    frames_read: int = 0  # frames returned by read()
    frames_dropped: int = 0  # live: captured but replaced by a newer frame before read()
    reconnects: int = 0  # live: successful reopenings after the stream was lost
    reconnect_attempts: int = 0  # live: reopen attempts, successful or not
    gap_s: float = 0.0  # live: total time without frames while reconnecting
    frames_missed: int = 0  # live: estimate of frames lost in those gaps (gap_s * fps)
    decode_errors: int = 0  # frames or images that could not be decoded, truncations
    frames_missing: int = 0  # files: frames the container announced but that never decoded
    loops: int = 0  # files and folders: restarts with loop=True


class Capture(Protocol):
    """The part of cv2.VideoCapture the sources use (tests inject fakes)."""

    def isOpened(self) -> bool: ...

    def read(self) -> Tuple[bool, Optional[np.ndarray]]: ...

    def get(self, prop_id: int) -> float: ...

    def set(self, prop_id: int, value: float) -> bool: ...

    def release(self) -> None: ...


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image -> uint8 BGR (H, W, 3)."""
    if image.dtype != np.uint8:
        # 16-bit images (some PNG/TIFF) scale down; everything downstream expects 8 bits.
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def fit_size(image: np.ndarray, width: Optional[int], height: Optional[int]) -> np.ndarray:
    """Resize to width x height; with only one given, keep the aspect ratio."""
    if width is None and height is None:
        return image
    h, w = image.shape[:2]
    if width is None:
        width = max(1, round(w * height / h))
    if height is None:
        height = max(1, round(h * width / w))
    if (w, h) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def valid_fps(value: float) -> Optional[float]:
    """A container/camera fps, or None where OpenCV reports 0, NaN or nonsense."""
    if value is None or not np.isfinite(value) or value <= 0 or value > 1000:
        return None
    return float(value)


class Source(ABC):
    """Base of all sources. Subclasses implement `open`, `_read` and `_close`."""

    kind = "source"

    def __init__(self, name: str):
        self.name = name
        self._state = SourceState.ENDED  # until open() succeeds
        self._info: Optional[SourceInfo] = None
        self._stats = SourceStats()
        self._stats_lock = threading.Lock()
        self.error: Optional[EdgeVadError] = None  # set when state is FAILED

    # -- lifecycle -------------------------------------------------------------------
    @abstractmethod
    def open(self) -> "Source":
        """Open the media; raise EdgeVadError (one line) if it cannot be opened. Returns self."""

    @abstractmethod
    def _read(self, timeout_s: Optional[float]) -> Optional[Frame]:
        """Next frame, or None (timeout or end; the subclass updates the state)."""

    @abstractmethod
    def _close(self) -> None:
        """Release what open() acquired; must be safe to call twice."""

    def read(self, timeout_s: Optional[float] = None) -> Optional[Frame]:
        """Next frame, or None if none arrived within `timeout_s` (None = wait until a frame
        arrives or the source ends or fails). Files ignore the timeout: decoding is bounded."""
        frame = self._read(timeout_s)  # subclasses return None once ENDED/FAILED (after any frame still unread)
        if frame is not None:
            self._bump(frames_read=1)
        return frame

    def close(self) -> None:
        self._close()
        if self._state is not SourceState.FAILED:
            self._state = SourceState.ENDED

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(self, timeout_s: float = 1.0) -> Iterator[Frame]:
        """Yield frames until the source ENDS. Timeouts (e.g. while a live source reconnects)
        just wait again. A live source that gave up (FAILED) raises its EdgeVadError: end of
        stream is not an error, a dead camera is."""
        while True:
            frame = self.read(timeout_s)
            if frame is not None:
                yield frame
            elif self._state is SourceState.ENDED:
                return
            elif self._state is SourceState.FAILED:
                raise self.error or EdgeVadError(f"{self.name}: source failed")

    # -- what callers inspect --------------------------------------------------------
    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def info(self) -> SourceInfo:
        if self._info is None:
            raise EdgeVadError(f"source '{self.name}' is not open; call open() or use open_source()")
        return self._info

    @property
    def stats(self) -> SourceStats:
        with self._stats_lock:
            return copy.copy(self._stats)

    # -- helpers for subclasses ------------------------------------------------------
    def _bump(self, **deltas) -> None:
        with self._stats_lock:
            for key, delta in deltas.items():
                setattr(self._stats, key, getattr(self._stats, key) + delta)

    def _opened(self, info: SourceInfo) -> None:
        self._info = info
        self._state = SourceState.OPEN
        log.info("source '%s': opened %s", self.name, info.describe())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._state.value}>"


def request_text(width: Optional[int], height: Optional[int], fps: Optional[float]) -> str:
    """'1280x720 @ 30 fps' from what a caller asked of a camera ('' when nothing)."""
    parts = []
    if width or height:
        parts.append(f"{width or '?'}x{height or '?'}")
    if fps:
        parts.append(f"{fps:g} fps")
    return " @ ".join(parts)
