"""Which files an event may serve, and clips a browser can play.

    path = recorded_file(events_dir, event["snapshot"], "snapshots")   # None: not servable
    clips = BrowserClips(cache_dir)
    webm = clips.playable(event_id, path, timeout_s=120)                 # the clip, or a WebM copy of it

Serving rule: a route names an EVENT (its id), never a path. The file served is the one the event
recorded, looked up by its file name only in the folder the pipeline writes that kind of file to
(<events_dir>/snapshots, <events_dir>/clips), so a recorded path with `..`, an absolute path elsewhere or
a copied events folder all resolve there or nowhere. The file must be a regular file, not a symlink,
whose real path lies inside the events folder, and it is opened with O_NOFOLLOW.

Clips: the pipeline writes MP4 with the 'mp4v' codec (MPEG-4 Part 2), the one MP4 encoder every
OpenCV build has. Chromium does not decode MPEG-4 Part 2 (a <video> with such a file ends in
MEDIA_ERR_SRC_NOT_SUPPORTED; checked with Debian's chromium 156), and PyPI's OpenCV has no H.264
encoder. It does have libvpx: a clip that is not WebM is transcoded once to VP8 in WebM, which every
Chromium and Firefox plays, and cached (<cache_dir>/<event id>.webm, written atomically). Transcoding is
done on first request, by one worker thread whose scheduling priority is lowered (Linux nice is per
thread, see setpriority(2)) so a review never starves detection; about 20 ms per 640x360 frame on a
loaded x86 core. The recorded clip itself is never changed. OpenCV's FFmpeg writer prints one harmless
line per copy on stderr ("tag 0x30385056/'VP80' is not supported with codec id 139 and format 'webm /
WebM'"): WebM stores no codec tag, and the writer falls back to none, which is right.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import stat
import threading
from concurrent.futures import Future
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Dict, Optional, Tuple

import cv2

from edge_vad.fileio import atomic_target

log = logging.getLogger("edge_vad.review")

SNAPSHOTS = "snapshots"
CLIPS = "clips"
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
BROWSER_SUFFIXES = {".webm": "video/webm"}
WEBM_FOURCC = "VP80"
FALLBACK_CLIP_FPS = 15.0
TRANSCODE_NICE = 10  # added to the worker thread's nice value (Linux); 19 is the lowest priority


class ClipError(Exception):
    """A clip could not be made playable; the message says why."""


def recorded_file(events_dir: Path, recorded: Optional[str], folder: str) -> Optional[Path]:
    """The file an event recorded, if it may be served (see the module docstring); else None."""
    if not isinstance(recorded, str) or not recorded:
        return None
    # The recorded path's last component, whichever separator wrote it.
    name = PureWindowsPath(PurePosixPath(recorded).name).name
    if not _FILE_NAME.match(name):
        return None
    base = Path(events_dir)
    candidate = base / folder / name
    try:
        info = os.lstat(candidate)
        real_base = base.resolve(strict=True)
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        return None
    if real.parent != real_base / folder:  # the folder itself must not lead elsewhere (a symlinked clips/)
        return None
    return candidate


def open_no_follow(path: Path) -> int:
    """os.open for reading that refuses a symlink in the last component (swapped in after the check)."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))


def transcode_to_webm(source: Path, target: Path) -> int:
    """Decode `source` with OpenCV and write it as VP8 WebM to `target` (atomically); returns frames."""
    cap = cv2.VideoCapture(str(source))
    try:
        if not cap.isOpened():
            raise ClipError(f"{source.name}: OpenCV cannot open it")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and 0 < fps <= 240 else FALLBACK_CLIP_FPS
        frames = 0
        with atomic_target(target) as tmp:
            writer: Optional[cv2.VideoWriter] = None
            try:
                while True:
                    ok, image = cap.read()
                    if not ok or image is None:
                        break
                    if writer is None:
                        size = (image.shape[1], image.shape[0])
                        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*WEBM_FOURCC), fps, size)
                        if not writer.isOpened():
                            raise ClipError("this OpenCV build has no VP8 (libvpx) encoder; install "
                                            "opencv-python-headless from PyPI, which has one")
                    writer.write(image)
                    frames += 1
            finally:
                if writer is not None:
                    writer.release()
            if frames == 0:
                raise ClipError(f"{source.name}: no frame could be decoded")
        return frames
    finally:
        cap.release()


class BrowserClips:
    """Browser-playable versions of recorded clips: the clip itself when it is WebM, else a cached VP8
    WebM copy made by one low-priority worker thread (concurrent requests for a clip share one job)."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self._jobs: "queue.Queue[Optional[Tuple[str, Path, Future]]]" = queue.Queue()
        self._pending: Dict[str, Future] = {}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def playable(self, event_id: str, clip: Path, timeout_s: float) -> Tuple[Path, str]:
        """(path, content type) of a version of `clip` a browser plays; raises ClipError or TimeoutError."""
        content_type = BROWSER_SUFFIXES.get(clip.suffix.lower())
        if content_type:
            return clip, content_type
        cached = self.cache_dir / f"{event_id}.webm"
        if cached.is_file():
            return cached, BROWSER_SUFFIXES[".webm"]
        with self._lock:
            future = self._pending.get(event_id)
            if future is None:
                future = self._pending[event_id] = Future()
                self._start()
                self._jobs.put((event_id, clip, future))
        future.result(timeout=timeout_s)  # raises the job's ClipError, or TimeoutError (the job goes on)
        return cached, BROWSER_SUFFIXES[".webm"]

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="edge-vad-clip-transcoder", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        _lower_thread_priority()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            event_id, clip, future = job
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                frames = transcode_to_webm(clip, self.cache_dir / f"{event_id}.webm")
                log.info("review: clip of event %s transcoded to VP8 WebM (%d frames)", event_id, frames)
                future.set_result(True)
            except ClipError as exc:
                future.set_exception(exc)
            except OSError as exc:
                future.set_exception(ClipError(f"cannot write the browser copy in {self.cache_dir}: {exc.strerror}"))
            except Exception as exc:  # noqa: BLE001 - a bad clip must not kill the worker
                log.exception("review: transcoding the clip of event %s failed", event_id)
                future.set_exception(ClipError(f"transcoding failed: {type(exc).__name__}: {exc}"))
            finally:
                with self._lock:
                    self._pending.pop(event_id, None)

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None


def _lower_thread_priority() -> None:
    """Linux gives each thread its own nice value: setpriority(PRIO_PROCESS, <thread id>) renices only it."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + TRANSCODE_NICE))
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass
