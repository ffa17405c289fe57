"""What the review page shows live per camera, kept by the pipelines in one small thread-safe object.

    live = LiveState()
    live.add_camera("front-door", on_threshold=0.6, off_threshold=0.4)   # Pipeline.__init__
    live.update("front-door", frame.image, decision.smoothed, decision.open)   # each scored frame
    live.cameras()            -> [{name, on_threshold, off_threshold, gate_open, score, history, ...}]
    live.frame_jpeg("front-door") -> (seq, JPEG bytes) or None          # the HTTP thread

Cost in the pipeline thread, per scored frame: one lock, a few comparisons and, at most
FRAME_EVERY_S apart, one copy of the frame (the source hands out a fresh array per frame; the copy
keeps a later in-place change from reaching the page). No JPEG encoding happens there: the HTTP
thread encodes the newest kept frame when the page asks, at most once per kept frame.

History: the smoothed score, one point per HISTORY_STEP_S (the step's maximum, so a short peak still
shows), for the last HISTORY_S seconds of wall-clock time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from edge_vad.runtime.snapshot import encode_jpeg

FRAME_EVERY_S = 0.25  # the page refreshes a camera a few times a second, not as a video stream
HISTORY_S = 300.0  # the sparkline covers the last five minutes
HISTORY_STEP_S = 0.5
LIVE_JPEG_QUALITY = 75  # a preview: a third of the bytes of quality 90


@dataclass
class _Camera:
    on_threshold: float
    off_threshold: float
    history: Deque[Tuple[float, float]] = field(default_factory=deque)  # (wall time, max smoothed score)
    step_start: float = -math.inf  # monotonic start of the history step being filled
    step_max: float = -math.inf
    step_wall: float = 0.0
    score: Optional[float] = None
    gate_open: bool = False
    updated_at: Optional[float] = None  # monotonic time of the last update
    frame: Optional[np.ndarray] = None
    frame_seq: int = 0
    frame_at: float = -math.inf
    jpeg: Optional[Tuple[int, bytes]] = None  # the encoded frame and its seq


class LiveState:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 frame_every_s: float = FRAME_EVERY_S, history_s: float = HISTORY_S,
                 history_step_s: float = HISTORY_STEP_S):
        self._clock, self._wall = clock, wall
        self.frame_every_s = frame_every_s
        self.history_step_s = history_step_s
        self._max_points = max(1, int(math.ceil(history_s / history_step_s)))
        self._cams: Dict[str, _Camera] = {}
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def add_camera(self, name: str, on_threshold: float, off_threshold: float) -> None:
        with self._lock:
            self._cams[name] = _Camera(float(on_threshold), float(off_threshold))

    @property
    def names(self) -> List[str]:
        with self._lock:
            return list(self._cams)

    def update(self, name: str, image: Optional[np.ndarray], smoothed: float, gate_open: bool) -> None:
        now = self._clock()
        with self._lock:
            cam = self._cams.get(name)
            if cam is None:
                return
            cam.gate_open = bool(gate_open)
            cam.updated_at = now
            if math.isfinite(smoothed):
                cam.score = float(smoothed)
                if now - cam.step_start >= self.history_step_s:
                    self._close_step(cam)
                    cam.step_start, cam.step_wall, cam.step_max = now, self._wall(), float(smoothed)
                else:
                    cam.step_max = max(cam.step_max, float(smoothed))
            if image is not None and now - cam.frame_at >= self.frame_every_s:
                cam.frame, cam.frame_at = image.copy(), now
                cam.frame_seq += 1

    def _close_step(self, cam: _Camera) -> None:
        if math.isfinite(cam.step_max):
            cam.history.append((cam.step_wall, cam.step_max))
            while len(cam.history) > self._max_points:
                cam.history.popleft()

    def cameras(self) -> List[Dict[str, Any]]:
        """Per camera: thresholds, current smoothed score and gate, history [[unix time, score], ...]."""
        now = self._clock()
        out = []
        with self._lock:
            for name, cam in self._cams.items():
                points = list(cam.history)
                if math.isfinite(cam.step_max):
                    points.append((cam.step_wall, cam.step_max))  # the step being filled
                out.append({
                    "name": name, "on_threshold": cam.on_threshold, "off_threshold": cam.off_threshold,
                    "score": cam.score, "gate_open": cam.gate_open, "frame_seq": cam.frame_seq,
                    "age_s": None if cam.updated_at is None else round(now - cam.updated_at, 3),
                    "history": [[round(t, 3), round(s, 4)] for t, s in points],
                })
        return out

    def latest(self, name: str) -> Optional[Tuple[float, bool]]:
        """(smoothed score, gate open) of a camera, None before its first finite score."""
        with self._lock:
            cam = self._cams.get(name)
            if cam is None or cam.score is None:
                return None
            return cam.score, cam.gate_open

    def frame_jpeg(self, name: str) -> Optional[Tuple[int, bytes]]:
        """(seq, JPEG) of the newest kept frame; encoded here, once per kept frame, never in the pipeline."""
        with self._lock:
            cam = self._cams.get(name)
            if cam is None or cam.frame is None:
                return None
            if cam.jpeg is not None and cam.jpeg[0] == cam.frame_seq:
                return cam.jpeg
            seq, image = cam.frame_seq, cam.frame
        with self._encode_lock:  # two viewers: one encode
            with self._lock:
                if cam.jpeg is not None and cam.jpeg[0] == seq:
                    return cam.jpeg
            jpeg = (seq, encode_jpeg(image, LIVE_JPEG_QUALITY))
            with self._lock:
                if cam.jpeg is None or cam.jpeg[0] < seq:
                    cam.jpeg = jpeg
            return jpeg
