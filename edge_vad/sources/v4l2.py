"""USB / V4L2 cameras: /dev/videoN (or any /dev path, e.g. /dev/v4l/by-id/...) via cv2.CAP_V4L2.

width/height/fps are REQUESTS (CAP_PROP_*); a camera picks its nearest mode. What it gave is
logged at open (the "opened ..." line, with what was asked), plus a warning on a mismatch.
Reading, latest-frame-only and reconnect come from LiveSource (edge_vad.sources.stream).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import cv2
import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.sources.base import Capture, SourceInfo, request_text, valid_fps
from edge_vad.sources.stream import Backoff, LiveSource

log = logging.getLogger("edge_vad.sources")


def device_path(device: str | int) -> str:
    """'0' or 0 -> '/dev/video0'; a path stays as it is."""
    text = str(device).strip()
    return f"/dev/video{text}" if text.isdigit() else text


class V4L2Source(LiveSource):
    """A V4L2 camera. `capture_factory(path, api)` is cv2.VideoCapture unless a test injects one."""

    kind = "v4l2"

    def __init__(
        self,
        device: str | int,
        *,
        name: Optional[str] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        fps: Optional[float] = None,
        backoff: Optional[Backoff] = None,
        threaded: bool = True,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], object]] = None,
        capture_factory: Optional[Callable[[str, int], Capture]] = None,
    ):
        self.device = device_path(device)
        super().__init__(name or os.path.basename(self.device), backoff=backoff, threaded=threaded,
                         clock=clock, sleep=sleep)
        self._request = (width, height, fps)
        self._factory = capture_factory or cv2.VideoCapture

    @property
    def display_uri(self) -> str:
        return self.device

    def _make_capture(self) -> Capture:
        if not os.path.exists(self.device):
            raise EdgeVadError(f"{self.device}: no such camera device; check `ls /dev/video*` or pass --source FILE")
        cap = self._factory(self.device, cv2.CAP_V4L2)
        if cap.isOpened():
            width, height, fps = self._request
            # Size before rate: a camera's list of rates depends on the size chosen.
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                                (cv2.CAP_PROP_FPS, fps)):
                if value:
                    cap.set(prop, float(value))
        return cap

    def _cannot_open(self) -> str:
        if not os.access(self.device, os.R_OK | os.W_OK):
            return (f"{self.device}: permission denied; add your user to the 'video' group "
                    f"(`sudo usermod -aG video $USER`, then log in again)")
        return (f"{self.device}: camera exists but cannot be opened (busy in another program, or not a capture "
                f"node); check `fuser {self.device}` and `v4l2-ctl --list-devices`")

    def _describe(self, cap: Capture, image: np.ndarray) -> SourceInfo:
        height, width = image.shape[:2]  # the frame, not CAP_PROP_*: some drivers report stale sizes
        fps = valid_fps(cap.get(cv2.CAP_PROP_FPS))
        want_w, want_h, want_fps = self._request
        size_differs = (want_w and want_w != width) or (want_h and want_h != height)
        rate_differs = want_fps and fps and abs(fps - want_fps) > 0.5
        if size_differs or rate_differs:
            log.warning("source '%s': %s gave %dx%d @ %s fps, not the requested %s", self.name, self.device,
                        width, height, f"{fps:g}" if fps else "?", request_text(*self._request))
        backend = cap.getBackendName() if hasattr(cap, "getBackendName") else "V4L2"
        return SourceInfo(kind=self.kind, uri=self.device, backend=backend, width=width, height=height, fps=fps,
                          requested=request_text(*self._request))
