"""A video file read in order, frame by frame, decoded ahead in its own thread.

Decode-ahead: a thread decodes the next DECODE_AHEAD_FRAMES frames while the pipeline scores the current
one, and waits when they are not taken (nothing is dropped: a file is read whole, at the consumer's pace).
Decoding on the pipeline's thread cost about 0.3-0.5 ms per 640x360 frame on our 2-core machine, in series
with a 4 ms coarse stage; in its own thread the pipeline kept 0.94 of the coarse stage's speed instead of
0.85 (docs/performance.md). FFmpeg decodes with DECODER_THREADS: its default, a frame-threaded decoder
per core, spent 0.41 ms of CPU per frame against 0.25 on one thread, on cores the backbone's pool wants,
and one thread decodes 640x360 H.264 at thousands of fps, far ahead of any backbone. The memory bound is
DECODE_AHEAD_FRAMES + 1 decoded frames (the one being handed over), about 2 MB at 640x360, 19 MB at 1080p.

Truncation: a file cut off while recording keeps the frame count of its header (MKV, AVI,
an MP4 written with its index first) but decoding stops early. When cv2 stops delivering
before the announced count (minus a small slack, since some containers only estimate it
from the duration) the frames decoded so far are kept, a warning is logged, the missing
frames are counted in `stats.frames_missing` and the source ENDS. An MP4 whose index (moov
atom) was at the end and got cut off has nothing decodable at all: that is an EdgeVadError
at open, as is any file with no frames.

Timestamps: each frame gets its OWN presentation time (CAP_PROP_POS_MSEC right after the read,
which OpenCV's FFmpeg backend sets from the decoded frame's pts), so a variable-frame-rate
recording (phones, many NVRs) keeps its real timing; index / fps is only the fallback where the
backend reports no position. A looped file continues from the end of the previous pass. For the
truncation check the time reached counts too: a variable-rate file's announced frame count is only
duration x average rate, so "fewer frames than announced" alone would call it damaged.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.sources.base import Frame, Source, SourceInfo, SourceState, fit_size, to_bgr, valid_fps

log = logging.getLogger("edge_vad.sources")

FALLBACK_VIDEO_FPS = 25.0  # only when the container reports no rate and fps= was not given (PAL rate)
TRUNCATION_SLACK_FRAMES = 1  # duration-derived frame counts (MKV, TS) can overshoot by one frame
TRUNCATION_SLACK_FRACTION = 0.01  # ... or by about 1 % on long files
DECODE_AHEAD_FRAMES = 2  # decoded frames waiting for the consumer (see module doc)
DECODER_THREADS = 1  # FFmpeg threads per file (see module doc)
DECODER_JOIN_S = 2.0  # close() waits this long for the decode thread (a cv2 call cannot be interrupted)
_HANDOFF_POLL_S = 0.1  # the decode thread re-checks close() this often while the consumer is not reading
_END = object()  # the decode thread's last item: the file ended (or its thread stopped)


def open_capture(path: Path) -> "cv2.VideoCapture":
    """cv2.VideoCapture of a file, with DECODER_THREADS FFmpeg threads where this OpenCV can set them (the
    open-time parameter list is OpenCV 4.5.2+, CAP_PROP_N_THREADS 4.6+); otherwise OpenCV's default."""
    backend = file_backend()
    threads_prop = getattr(cv2, "CAP_PROP_N_THREADS", None)
    if backend == cv2.CAP_FFMPEG and threads_prop is not None:
        try:
            cap = cv2.VideoCapture(str(path), backend, [threads_prop, DECODER_THREADS])
        except (TypeError, cv2.error):  # an OpenCV without the parameter list
            cap = None
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
    return cv2.VideoCapture(str(path), backend)


def file_backend() -> int:
    """FFmpeg where this OpenCV has it (PyPI wheels do); otherwise whatever OpenCV picks
    (JetPack's OpenCV reads files through GStreamer)."""
    try:
        if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
            return cv2.CAP_FFMPEG
    except AttributeError:  # very old OpenCV without the registry API
        pass
    return cv2.CAP_ANY


class VideoFileSource(Source):
    """Frames of a video file. `fps` is used only when the container reports no frame rate;
    `width`/`height` resize the frames; `loop=True` restarts at the end (index and timestamp
    keep increasing, `stats.loops` counts restarts)."""

    kind = "file"

    def __init__(
        self,
        path: str | Path,
        *,
        name: Optional[str] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        fps: Optional[float] = None,
        loop: bool = False,
    ):
        self.path = Path(path)
        super().__init__(name or self.path.stem)
        self._size = (width, height)
        self._fps_option = fps
        self._loop = loop
        self._cap: Optional[cv2.VideoCapture] = None
        self._pending: Optional[np.ndarray] = None  # the frame open() decoded to prove the file works
        self._fps = FALLBACK_VIDEO_FPS
        self._frame_count: Optional[int] = None
        self._next_index = 0
        self._pass_frames = 0  # frames decoded in the current pass over the file
        self._damage_reported = False
        self._pending_t: Optional[float] = None  # media time of the pending frame within its pass
        self._pass_offset = 0.0  # media time at which the current pass starts (loops continue the clock)
        self._last_t = -math.inf  # timestamp of the last frame returned
        self._pass_last_t = 0.0  # media time of the last frame of the current pass, within the pass
        # Decode-ahead: once the thread runs, only it touches the capture and the decoding state above.
        self._ahead: "queue.Queue[object]" = queue.Queue(maxsize=DECODE_AHEAD_FRAMES)
        self._decoder: Optional[threading.Thread] = None
        self._halt = threading.Event()

    def open(self) -> "VideoFileSource":
        if not self.path.exists():
            raise EdgeVadError(f"{self.path}: no such video file; check the path (or pass a folder of images, "
                               f"/dev/videoN, csi://N or rtsp://...)")
        if self.path.is_dir():
            raise EdgeVadError(f"{self.path}: is a folder, not a video file; pass it as an image folder source")
        cap, first = self._start_pass()
        if first is None:
            raise EdgeVadError(f"{self.path}: no frame could be decoded (damaged, cut off before its index, or an "
                               f"unsupported codec); check it with `ffprobe {self.path}` or re-encode it to H.264 MP4")
        self._cap, self._pending = cap, first
        backend = cap.getBackendName() if hasattr(cap, "getBackendName") else "opencv"
        fps = valid_fps(cap.get(cv2.CAP_PROP_FPS))
        if fps is None:
            fps = self._fps_option or FALLBACK_VIDEO_FPS
            log.warning("source '%s': %s reports no frame rate; timestamps use %g fps (set fps to change)",
                        self.name, self.path, fps)
        elif self._fps_option and self._fps_option != fps:
            log.debug("source '%s': container says %g fps; fps=%g ignored for files", self.name, fps, self._fps_option)
        self._fps = fps
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._frame_count = count if count > 0 else None
        image = self._convert(first)
        self._opened(SourceInfo(kind=self.kind, uri=str(self.path), backend=backend, width=image.shape[1],
                                height=image.shape[0], fps=fps, frame_count=self._frame_count))
        return self

    def _start_pass(self):
        """Open the file and decode its first frame; (capture, None) if nothing decodes."""
        cap = open_capture(self.path)
        ok, image = cap.read() if cap.isOpened() else (False, None)
        if not ok or image is None:
            cap.release()
            return cap, None
        self._pass_frames = 0
        self._pending_t = _media_time(cap)
        return cap, image

    def _read(self, timeout_s: Optional[float]) -> Optional[Frame]:
        """The next decoded frame (the timeout is ignored: decoding is bounded); None once the file ended."""
        if self._state is not SourceState.OPEN:
            return None
        if self._decoder is None:
            self._decoder = threading.Thread(target=self._decode_ahead, name=f"edge-vad-decode-{self.name}",
                                             daemon=True)
            self._decoder.start()
        item = self._ahead.get()
        if item is _END:
            self._state = SourceState.ENDED
            return None
        if isinstance(item, BaseException):  # the decode thread failed: the consumer sees it, as in line
            self._state = SourceState.ENDED
            raise item
        return item  # type: ignore[return-value]

    def _decode_ahead(self) -> None:
        """The decode thread: frames into the queue until the file ends or close() halts it."""
        try:
            while not self._halt.is_set():
                frame = self._decode_next()
                if frame is None:
                    break
                self._hand_over(frame)
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it in its own thread
            self._hand_over(exc)
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            self._hand_over(_END)

    def _hand_over(self, item: object) -> None:
        while not self._halt.is_set():
            try:
                self._ahead.put(item, timeout=_HANDOFF_POLL_S)
                return
            except queue.Full:
                continue

    def _decode_next(self) -> Optional[Frame]:
        """Decode the next frame (the decode thread's work); None at the end of the file."""
        if self._cap is None:
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
            media_t = self._pending_t
        else:
            ok, image = self._cap.read()
            if ok and image is not None:
                media_t = _media_time(self._cap)
            else:
                image = self._end_of_pass()
                if image is None:
                    return None
                media_t = self._pending_t
        index = self._next_index
        self._next_index += 1
        self._pass_frames += 1
        return Frame(image=self._convert(image), index=index, timestamp_s=self._timestamp(index, media_t),
                     source=self.name)

    def _timestamp(self, index: int, media_t: Optional[float]) -> float:
        """The frame's own media time (plus the pass offset); index / fps where the backend gives none."""
        if media_t is None:
            t = index / self._fps
        else:
            t = self._pass_offset + media_t
            self._pass_last_t = media_t
        if t <= self._last_t:  # never backwards or repeated (B-frame reordering glitches, a broken pts)
            t = self._last_t + 1.0 / self._fps
        self._last_t = t
        return t

    def _end_of_pass(self) -> Optional[np.ndarray]:
        """Decoding stopped: note damage, then restart (loop) or end. Returns the first frame
        of the next pass, or None at the end (the reader ENDS the source once it has taken every frame)."""
        self._check_truncation()
        self._cap.release()
        if not self._loop or self._pass_frames == 0:
            self._cap = None
            log.info("source '%s': end of %s after %d frames", self.name, self.path, self._next_index)
            return None
        cap, first = self._start_pass()
        if first is None:  # the file vanished or changed under us
            log.warning("source '%s': %s could not be reopened to loop; ending", self.name, self.path)
            self._cap = None
            return None
        self._cap = cap
        self._pass_offset += self._pass_last_t + 1.0 / self._fps  # the next pass starts one frame after the last
        self._pass_last_t = 0.0
        self._bump(loops=1)
        log.debug("source '%s': looping %s", self.name, self.path)
        return first

    def _check_truncation(self) -> None:
        if self._frame_count is None or self._damage_reported:
            return
        missing = self._frame_count - self._pass_frames
        slack = max(TRUNCATION_SLACK_FRAMES, round(TRUNCATION_SLACK_FRACTION * self._frame_count))
        if missing > slack and self._pass_last_t > 0:
            # Judge by the time reached: the announced count of a variable-rate file is duration x average fps.
            reached = self._pass_last_t + 1.0 / self._fps
            missing = round((self._frame_count / self._fps - reached) * self._fps)
        if missing > slack:
            self._damage_reported = True  # once: later loops hit the same damage
            self._bump(decode_errors=1, frames_missing=missing)
            log.warning("source '%s': %s stopped decoding after %d of %d frames (truncated or damaged); "
                        "%d frames missing", self.name, self.path, self._pass_frames, self._frame_count, missing)

    def _convert(self, image: np.ndarray) -> np.ndarray:
        return fit_size(to_bgr(image), *self._size)

    def _close(self) -> None:
        self._halt.set()
        decoder = self._decoder
        if decoder is None:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            self._pending = None
        elif decoder is not threading.current_thread():
            decoder.join(DECODER_JOIN_S)  # it releases the capture on its way out
            if decoder.is_alive():
                log.warning("source '%s': decoder still inside a cv2 call after %.0f s; leaving it to finish",
                            self.name, DECODER_JOIN_S)


def _media_time(cap) -> Optional[float]:
    """Seconds of the frame just read (CAP_PROP_POS_MSEC), or None where the backend does not say."""
    try:
        msec = float(cap.get(cv2.CAP_PROP_POS_MSEC))
    except cv2.error:
        return None
    return msec / 1000.0 if math.isfinite(msec) and msec >= 0 else None
