"""The fine stage off the coarse loop: a worker thread with a bounded queue of jobs, one per update.

    worker = FineWorker(fine_model, queue_size=cfg.fine.queue_size, on_drop=count)
    worker.submit(FineJob(episode=3, frames=(...), reset=True))   # never blocks
    for result in worker.poll(): ...                               # FineResult per finished job
    worker.close(timeout_s=2)

A job is the frames of one update of one gate opening ("episode"): the pre-roll at the opening, then
`frames_per_update` frames sampled from each `snippet_frames` frames while open, then whatever is left at
the closing (`final=True`). The worker keeps ONE episode: its RWKV state (reset when a job of a new episode
arrives, i.e. at each opening) and every frame's class logits so far; after each job it reports the
event-level summary of everything seen in the episode, plus each processed frame's own class probabilities.

Drop policy: DROP OLDEST. When the queue is full, submit() removes the oldest waiting job to make room,
and reports it through `on_drop(job)` (the pipeline counts its frames in dropped_frames{reason=
"fine_queue_full"}). Why oldest: the coarse loop must never wait, and of the evidence that cannot all be
processed the newest says most about what is happening now; a dropped job leaves a gap in the recurrent
sequence, which the RWKV head tolerates as a jump in time. A dropped `final` job is not lost to the
pipeline: it still learns that the job will never report (on_drop) and closes the event with what it has.

`InlineFine` runs the same jobs synchronously, with nothing dropped (offline scoring).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from edge_vad.runtime.events import FineSummary
from edge_vad.runtime.fine_model import FineFrame, FineModel, softmax

log = logging.getLogger("edge_vad.fine")

DROP_REASON = "fine_queue_full"


@dataclass(frozen=True, eq=False)
class FineJob:
    episode: int  # gate opening this job belongs to (increasing per pipeline)
    frames: Tuple[FineFrame, ...]
    final: bool = False  # the gate closed: this is the episode's last job
    seq: int = 0  # job number within the pipeline (for logs and bookkeeping)


@dataclass(frozen=True, eq=False)
class FineResult:
    episode: int
    seq: int
    final: bool
    summary: Optional[FineSummary]  # event-level, over every frame of the episode so far (None: no frame yet)
    frame_probs: Tuple[Tuple[int, np.ndarray], ...] = ()  # (frame index, class probabilities) of this job
    frames_total: int = 0  # frames of the episode processed so far
    error: str = ""


@dataclass
class _Episode:
    id: int
    state: np.ndarray
    frames: List[int] = field(default_factory=list)
    logits: List[np.ndarray] = field(default_factory=list)
    rows: List[int] = field(default_factory=list)
    description_ids: List[int] = field(default_factory=list)


class FineProcessor:
    """Runs jobs in order, holding the current episode (the explicit state lives in `_Episode`)."""

    def __init__(self, model: FineModel):
        self.model = model
        self.episode: Optional[_Episode] = None

    def run(self, job: FineJob) -> FineResult:
        model = self.model
        ep = self.episode
        if ep is None or ep.id != job.episode:  # a new gate opening: fresh recurrent state
            ep = self.episode = _Episode(job.episode, model.initial_state())
        probs = []
        for frame in job.frames:
            feature, description_id = model.encode(frame)
            row = model.row_of(description_id)
            logits, ep.state = model.step(feature, row, ep.state)
            ep.frames.append(frame.index)
            ep.logits.append(logits)
            ep.rows.append(row)
            ep.description_ids.append(description_id)
            probs.append((frame.index, softmax(logits).astype(np.float32)))
        summary = None
        if ep.frames:
            summary = model.summarise(ep.frames, np.stack(ep.logits), ep.rows, ep.description_ids)
        if job.final:
            self.episode = None
        return FineResult(job.episode, job.seq, job.final, summary, tuple(probs), len(ep.frames))


class InlineFine:
    """Same interface as FineWorker, run in the caller's thread (nothing is ever dropped)."""

    def __init__(self, model: FineModel):
        self._proc = FineProcessor(model)
        self._done: List[FineResult] = []

    def submit(self, job: FineJob) -> None:
        self._done.append(self._proc.run(job))

    def poll(self) -> List[FineResult]:
        out, self._done = self._done, []
        return out

    def drain(self, timeout_s: Optional[float] = None) -> bool:
        return True

    def close(self, timeout_s: Optional[float] = None) -> None:
        pass


class FineWorker:
    """A daemon thread running FineJobs from a bounded queue (drop oldest; see module doc)."""

    def __init__(self, model: FineModel, queue_size: int, on_drop: Optional[Callable[[FineJob], None]] = None,
                 name: str = "fine"):
        if queue_size < 1:
            raise ValueError(f"fine queue_size must be >= 1, got {queue_size}")
        self._proc = FineProcessor(model)
        self._jobs: "queue.Queue[Optional[FineJob]]" = queue.Queue(maxsize=queue_size)
        self._results: "queue.Queue[FineResult]" = queue.Queue()
        self._on_drop = on_drop
        self._submit_lock = threading.Lock()  # one producer per worker, but close() may race a submit
        self.dropped_jobs = 0
        self.dropped_frames = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"edge-vad-fine-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: FineJob) -> None:
        """Queue a job without ever blocking; a full queue drops its OLDEST job."""
        with self._submit_lock:
            if self._closed:
                raise RuntimeError("fine worker is closed")
            while True:
                try:
                    self._jobs.put_nowait(job)
                    return
                except queue.Full:
                    try:
                        old = self._jobs.get_nowait()
                    except queue.Empty:
                        continue  # the worker took one meanwhile: there is room now
                    self._jobs.task_done()
                    if old is not None:
                        self.dropped_jobs += 1
                        self.dropped_frames += len(old.frames)
                        if self._on_drop is not None:
                            self._on_drop(old)

    def poll(self) -> List[FineResult]:
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def drain(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until every queued job is processed; False if `timeout_s` passed first."""
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (self._jobs.join(), done.set()), daemon=True)
        waiter.start()
        return done.wait(timeout_s)

    def close(self, timeout_s: Optional[float] = None) -> None:
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._jobs.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("fine worker still busy at shutdown; leaving it (daemon thread)")
            return
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                try:
                    result = self._proc.run(job)
                except Exception as exc:  # noqa: BLE001 - a failing job must not kill the worker
                    log.exception("fine stage failed on episode %d job %d", job.episode, job.seq)
                    result = FineResult(job.episode, job.seq, job.final, None, error=f"{type(exc).__name__}: {exc}")
                self._results.put(result)
            finally:
                self._jobs.task_done()
