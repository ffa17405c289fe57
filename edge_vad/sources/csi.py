"""Jetson MIPI-CSI cameras (csi://N) through a GStreamer pipeline opened with cv2.CAP_GSTREAMER.

nvarguscamerasrc debayers on the ISP into NVMM memory, nvvidconv converts to BGRx on the VIC,
videoconvert drops the padding byte, and appsink keeps one buffer and drops older ones (latest
frame only, on top of LiveSource's grabber). The pipeline string is logged at debug level.
PyPI's opencv-python(-headless) has no GStreamer; on a Jetson use JetPack's OpenCV.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Callable, Optional

import cv2
import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.sources.base import Capture, SourceInfo, request_text, valid_fps
from edge_vad.sources.stream import Backoff, LiveSource

log = logging.getLogger("edge_vad.sources")

CSI_DEFAULT_WIDTH = 1280  # jetson-utils videoSource's default size for MIPI-CSI cameras
CSI_DEFAULT_HEIGHT = 720
CSI_DEFAULT_FPS = 30.0  # ... and rate


def opencv_has_gstreamer() -> bool:
    """Whether this cv2 can open GStreamer pipelines."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except AttributeError:  # OpenCV without the registry API: read the build summary
        for line in cv2.getBuildInformation().splitlines():
            if line.strip().startswith("GStreamer:"):
                return "YES" in line
        return False


def csi_pipeline(sensor_id: int, width: int, height: int, fps: float) -> str:
    """The GStreamer pipeline for one CSI sensor; a fractional rate becomes a fraction (29.97 -> 2997/100)."""
    rate = Fraction(fps).limit_denominator(1001)
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={rate.numerator}/{rate.denominator},"
            f"format=NV12 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            f"appsink drop=true max-buffers=1")


class CsiSource(LiveSource):
    """A CSI camera on a Jetson. `capture_factory(pipeline, api)` defaults to cv2.VideoCapture."""

    kind = "csi"

    def __init__(
        self,
        sensor_id: int,
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
        self.sensor_id = int(sensor_id)
        super().__init__(name or f"csi{self.sensor_id}", backoff=backoff, threaded=threaded, clock=clock, sleep=sleep)
        self._request = (width or CSI_DEFAULT_WIDTH, height or CSI_DEFAULT_HEIGHT, fps or CSI_DEFAULT_FPS)
        self.pipeline = csi_pipeline(self.sensor_id, *self._request)
        self._factory = capture_factory or cv2.VideoCapture

    @property
    def display_uri(self) -> str:
        return f"csi://{self.sensor_id}"

    def _make_capture(self) -> Capture:
        log.debug("source '%s': GStreamer pipeline: %s", self.name, self.pipeline)
        if self._factory is cv2.VideoCapture and not opencv_has_gstreamer():
            raise EdgeVadError(f"{self.display_uri}: this OpenCV ({cv2.__version__}) was built without GStreamer "
                               f"(PyPI's opencv-python wheels have none); on the Jetson use JetPack's OpenCV: `sudo apt install "
                               f"python3-opencv` and `pip uninstall opencv-python-headless`")
        return self._factory(self.pipeline, cv2.CAP_GSTREAMER)

    def _cannot_open(self) -> str:
        return (f"{self.display_uri}: nvarguscamerasrc could not open sensor {self.sensor_id} at "
                f"{request_text(*self._request)}; check the ribbon cable, the sensor id and the mode, then "
                f"`sudo systemctl restart nvargus-daemon`")

    def _describe(self, cap: Capture, image: np.ndarray) -> SourceInfo:
        height, width = image.shape[:2]
        fps = valid_fps(cap.get(cv2.CAP_PROP_FPS)) or self._request[2]
        backend = cap.getBackendName() if hasattr(cap, "getBackendName") else "GSTREAMER"
        return SourceInfo(kind=self.kind, uri=self.display_uri, backend=backend, width=width, height=height,
                          fps=fps, requested=request_text(*self._request))
