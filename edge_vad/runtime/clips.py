"""Event clips with pre- and post-roll, written atomically by a background thread.

    rec = ClipRecorder(pre_roll_s=3, post_roll_s=3, fps=15, out_dir=events_dir / "clips",
                       lookback_s=cfg.gate.min_open_s)
    for frame in source.frames():
        done = rec.push(frame)                 # EVERY frame: feeds the ring buffer and open clips
        ...
        if decision.event == "start":
            final = rec.start(builder.id, decision.start_t)   # pre-roll comes from the ring
        if decision.event == "end":
            rec.stop(builder.id, decision.end_t)              # keeps going for post_roll_s
        for clip in done: ...                  # FinishedClip(name, path, ...): now on disk
    rec.flush()                                # SIGTERM / end of stream: finish, wait, report

A clip holds the frames with start_t - pre_roll_s <= t <= end_t + post_roll_s. It is written to
`<name>.partial.mp4` and renamed to `<name>.mp4` (after fsync) only when complete, so a file
with the final name is always whole; a crash leaves only a `.partial.mp4` behind (the next
start finishes or removes it: edge_vad.runtime.recovery).

Write safety: cv2.VideoWriter does not raise when the disk fills up (FFmpeg logs "Failed to
write frame" and the MP4 index, the moov atom written at release(), is lost). So before the
rename the partial file is opened again and must report every frame that was written; if it
does not (disk full, folder gone, read-only), the partial is removed and the FinishedClip has
path None and an `error` that says why. A clips folder that cannot be created fails the clip
the same way, never the caller: clips degrade, detection goes on. Whether
push() for a frame comes before or after start() for that frame, each frame is written once.
The final path is known at start() but exists only once the clip is reported in a
FinishedClip (post_roll_s after the end, plus the writer's lag): hold the event's "end"
record until then, or send an "update" with the clip path.

Threads: the caller's thread only copies each frame into the pre-roll ring (edge_vad.runtime.preroll:
raw I420, downscaled by an integer factor to fit the memory bound; nothing is encoded while no event is
open) and decides which frames belong to which clip; one writer thread converts and encodes the video.
(Writing the pre-roll inline took 0.7 s at 640x360 and 2.3 s at 1280x720 for 4 s of 30 fps video on
the development x86 CPU: a stall a live camera would turn into dropped frames.) Cost in the caller's
thread: about 0.5 ms per 1280x720 frame on that CPU (`edge-vad bench` measures it: preroll_ms); start()
hands the pre-roll frames to the writer without copying them.

Memory: the ring spans ceil((pre_roll_s + lookback_s) * fps) + 2 frames in at most `pre_roll_mb` MiB
of pixels (events.clip_pre_roll_mb; 640x360 is 338 KiB a frame: with the default 24 MiB, 4 s of it at
25 or 30 fps are kept at every second frame, which the clip shows twice; see edge_vad.runtime.preroll);
`lookback_s` is how late start() may come after the event's start_t (the gate confirms an event
min_open_s after it opened). Clips have the ring's frame size. The writer's queue carries the same
frames (lent, not copied) and is bounded (MAX_BACKLOG_S of video beyond the ring, so at most about
twice the ring's memory more while a stalled writer catches up): if the writer cannot keep up, frames
are dropped from the clip and counted in `frames_dropped`, never from detection. `max_side` caps the
frame size further.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2

from edge_vad.fileio import fsync_dir
from edge_vad.runtime.preroll import ClipFrame, PreRollRing
from edge_vad.sources.base import Frame

log = logging.getLogger("edge_vad.clips")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PARTIAL_SUFFIX = ".partial.mp4"
FINAL_SUFFIX = ".mp4"
DEFAULT_PRE_ROLL_MB = 24.0  # events.clip_pre_roll_mb: 4 s of 640x360 at 30 fps, every second frame (21 MiB)
MAX_BACKLOG_S = 4.0  # seconds of video the writer may lag behind before frames are dropped (raw frames: memory)


@dataclass(frozen=True)
class FinishedClip:
    name: str
    path: Optional[Path]  # the final `<name>.mp4`; None when nothing could be written (no file)
    frames: int
    first_t: float
    last_t: float
    complete: bool  # False when flush() cut it short, or frames were lost
    error: str = ""  # why a clip is missing or incomplete, "" when all went well


@dataclass
class _Clip:
    """Main-thread bookkeeping of a clip being recorded."""

    name: str
    start_t: float
    stop_t: Optional[float] = None  # write frames with t <= stop_t (end_t + post_roll_s)
    last_index: int = -1
    error: str = ""  # set when the clip cannot be written at all (its folder cannot be created)


@dataclass
class _Written:
    """Writer-thread state of a clip."""

    writer: Optional[cv2.VideoWriter] = None
    size: Optional[Tuple[int, int]] = None  # (width, height)
    frames: int = 0
    first_t: float = math.nan
    last_t: float = math.nan
    error: str = ""


class ClipRecorder:
    def __init__(self, pre_roll_s: float, post_roll_s: float, fps: float, out_dir: Union[str, Path], *,
                 lookback_s: float = 0.0, max_side: Optional[int] = None,
                 pre_roll_mb: float = DEFAULT_PRE_ROLL_MB, fourcc: str = "mp4v"):
        if not fps or fps <= 0:
            raise ValueError(f"clip fps must be positive, got {fps!r}")
        if pre_roll_s < 0 or post_roll_s < 0 or lookback_s < 0:
            raise ValueError("pre_roll_s, post_roll_s and lookback_s must be >= 0")
        self.pre_roll_s = float(pre_roll_s)
        self.post_roll_s = float(post_roll_s)
        self.fps = float(fps)
        self.out_dir = Path(out_dir)
        self.max_side = max_side
        # mp4v (MPEG-4 Part 2) is the MP4 encoder every OpenCV build has; H.264 needs an
        # encoder that pip's OpenCV lacks.
        self.fourcc = fourcc
        self.capacity = math.ceil((self.pre_roll_s + lookback_s) * self.fps) + 2
        self._ring = PreRollRing(self.capacity, int(pre_roll_mb * 2**20), max_side)  # spans `capacity` frames
        self._clips: Dict[str, _Clip] = {}
        self.frames_dropped = 0
        self._dropped_by_clip: Dict[str, int] = {}
        self._jobs: "queue.Queue[tuple]" = queue.Queue(maxsize=self.capacity + math.ceil(MAX_BACKLOG_S * self.fps))
        self._done: "queue.Queue[FinishedClip]" = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="edge-vad-clips", daemon=True)
        self._thread.start()

    # -- paths -------------------------------------------------------------------------
    def final_path(self, name: str) -> Path:
        return self.out_dir / f"{name}{FINAL_SUFFIX}"

    def partial_path(self, name: str) -> Path:
        return self.out_dir / f"{name}{PARTIAL_SUFFIX}"

    @property
    def active(self) -> List[str]:
        return list(self._clips)

    @property
    def buffered_frames(self) -> int:
        return len(self._ring)

    @property
    def buffered_bytes(self) -> int:
        return self._ring.nbytes

    @property
    def frame_size(self) -> Optional[Tuple[int, int]]:
        """(width, height) of the ring's and the clips' frames; None before the first frame."""
        return self._ring.size

    # -- caller's thread ---------------------------------------------------------------
    def push(self, frame: Frame) -> List[FinishedClip]:
        """Buffer a frame and hand it to every open clip; returns the clips finished (on disk)
        since the previous call."""
        t = float(frame.timestamp_s)
        stored = self._ring.push(frame.index, t, frame.image, keep_all=bool(self._clips))
        for clip in list(self._clips.values()):
            if clip.stop_t is not None and t > clip.stop_t:
                self._close_clip(clip, complete=True)
            elif stored is not None:
                self._send(clip, stored)
        return self._drain()

    def start(self, name: str, start_t: float) -> Path:
        """Begin a clip for an event that started at `start_t`, from the buffered pre-roll.
        Returns the final path the clip will have once finished."""
        if not _NAME.match(name):
            raise ValueError(f"clip name {name!r} must be letters, digits, '_', '.', '-' (it becomes a file name)")
        if name in self._clips:
            raise ValueError(f"clip {name!r} is already recording")
        clip = self._clips[name] = _Clip(name=name, start_t=float(start_t))
        self._dropped_by_clip[name] = 0
        self._jobs.put(("open", name))
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. a FILE named like the folder, a read-only mount, a full disk
            clip.error = (f"the clips folder {self.out_dir} cannot be created ({exc.strerror or exc}); "
                          "remove what is in the way or fix its permissions")
            return self.final_path(name)
        for stored in self._ring.since(start_t - self.pre_roll_s - 1e-9):
            self._send(clip, stored, repeat=self._ring.stride)  # a kept frame stands for `stride` frames
        return self.final_path(name)

    def stop(self, name: str, end_t: float) -> None:
        """The event ended at `end_t`: the clip continues until end_t + post_roll_s."""
        clip = self._clips.get(name)
        if clip is None:
            raise ValueError(f"no clip {name!r} is recording (active: {', '.join(self._clips) or 'none'})")
        clip.stop_t = float(end_t) + self.post_roll_s

    def flush(self, timeout_s: Optional[float] = None) -> List[FinishedClip]:
        """Finish every open clip now with what it has (SIGTERM, end of stream), wait until the
        writer is done, and return every clip finished since the last push()."""
        for clip in list(self._clips.values()):
            self._close_clip(clip, complete=False)
        self._wait_idle(timeout_s)
        return self._drain()

    def close(self, timeout_s: Optional[float] = None) -> List[FinishedClip]:
        done = self.flush(timeout_s)
        self._jobs.put(("quit",))
        self._thread.join(timeout_s)
        self._ring.clear()
        return done

    def __enter__(self) -> "ClipRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, clip: _Clip, stored: ClipFrame, repeat: int = 1) -> None:
        if clip.error:
            return
        if stored.index <= clip.last_index:
            return  # already sent (pre-roll overlapping the frame being pushed)
        clip.last_index = stored.index
        try:
            self._jobs.put_nowait(("frame", clip.name, stored.t, self._ring.lend(stored), repeat))
        except queue.Full:
            self.frames_dropped += 1
            self._dropped_by_clip[clip.name] += 1
            if self._dropped_by_clip[clip.name] == 1:
                log.warning("clip %s: the clip writer is %.0f s behind; dropping clip frames", clip.name, MAX_BACKLOG_S)

    def _close_clip(self, clip: _Clip, complete: bool) -> None:
        del self._clips[clip.name]
        dropped = self._dropped_by_clip.pop(clip.name, 0)
        note = clip.error or (f"{dropped} frames dropped (writer too slow)" if dropped else "")
        self._jobs.put(("finish", clip.name, complete and dropped == 0 and not clip.error, note))

    def _drain(self) -> List[FinishedClip]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def _wait_idle(self, timeout_s: Optional[float]) -> None:
        if timeout_s is None:
            self._jobs.join()
            return
        # Queue.join has no timeout: poll its counter instead.
        deadline = threading.Event()
        waiter = threading.Thread(target=lambda: (self._jobs.join(), deadline.set()), daemon=True)
        waiter.start()
        if not deadline.wait(timeout_s):
            log.warning("clips: writer still busy after %.1f s; unfinished clips stay .partial.mp4", timeout_s)

    # -- writer thread -----------------------------------------------------------------
    def _work(self) -> None:
        written: Dict[str, _Written] = {}
        while True:
            job = self._jobs.get()
            try:
                kind = job[0]
                if kind == "quit":
                    return
                if kind == "open":
                    written[job[1]] = _Written()
                elif kind == "frame":
                    self._write(job[1], written[job[1]], job[2], job[3], job[4])
                elif kind == "finish":
                    _, name, complete, note = job
                    self._done.put(self._finish(name, written.pop(name), complete, note))
            except Exception:  # noqa: BLE001 - the writer thread must survive a bad clip
                log.exception("clips: writer failed on %s", job[:2])
            finally:
                self._jobs.task_done()

    def _write(self, name: str, w: _Written, t: float, frame: ClipFrame, repeat: int = 1) -> None:
        if w.error:
            return
        image = frame.bgr()
        if w.writer is None:
            w.size = (image.shape[1], image.shape[0])
            path = self.partial_path(name)
            w.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, w.size)
            if not w.writer.isOpened():
                w.error = f"could not open a {self.fourcc} video writer for {path}; check the folder is writable"
                log.error("clip %s: %s", name, w.error)
                w.writer = None
                return
        if (image.shape[1], image.shape[0]) != w.size:
            image = cv2.resize(image, w.size, interpolation=cv2.INTER_AREA)  # a camera changed mode mid-event
        for _ in range(repeat):
            w.writer.write(image)
        w.frames += repeat
        if w.frames == repeat:
            w.first_t = t
        w.last_t = t

    def _finish(self, name: str, w: _Written, complete: bool, note: str) -> FinishedClip:
        if w.writer is None:
            error = w.error or note or "no frames were recorded"
            log.warning("clip %s: %s; no file written", name, error)
            return FinishedClip(name, None, 0, w.first_t, w.last_t, complete=False, error=error)
        w.writer.release()
        partial = self.partial_path(name)
        final = self.final_path(name)
        try:
            on_disk = playable_frames(partial)
            if on_disk < w.frames:
                raise OSError(f"only {on_disk} of {w.frames} frames are readable back from {partial.name}"
                              + ("" if on_disk else " (no MP4 index: the write was cut short)"))
            fd = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(fd)  # the bytes must be on disk before the name says "complete"
            finally:
                os.close(fd)
            os.replace(partial, final)
            fsync_dir(self.out_dir)
        except OSError as exc:
            error = f"not written completely: {exc}; {_free_space(self.out_dir)}"
            log.error("clip %s: %s; the partial file is removed and the event gets clip: null", name, error)
            _remove(partial)
            return FinishedClip(name, None, 0, w.first_t, w.last_t, complete=False, error=error)
        log.info("clip %s: %d frames, %.2f s -> %s", name, w.frames, w.last_t - w.first_t, final)
        return FinishedClip(name, final, w.frames, w.first_t, w.last_t, complete, note)


def playable_frames(path: Union[str, Path]) -> int:
    """Frames an MP4 says it holds when opened as a reader would (0: it does not open, e.g. no moov atom).
    Reads the container's index only, no decoding: milliseconds for a clip."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        cap.release()


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"the folder is not usable ({exc.strerror or exc})"
    return f"{free / 1e6:.1f} MB free on its file system" + ("; the disk is full" if free < 1_000_000 else "")


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("clip: could not remove %s (%s)", path, exc)
