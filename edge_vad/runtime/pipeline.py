"""One source's cascade: frames -> coarse score -> gate -> fine stage -> events, clips, snapshots, report.

    pipe = Pipeline(source, coarse, fine, cfg, emit=sinks_emit, events_dir=Path("events"), stop=stop_event)
    result = pipe.run()            # until the source ENDS or `stop` is set; always closes what it opened

Per frame read: the clip recorder gets it (ring buffer + open clips); every `stride`-th frame is SCORED:
coarse step (explicit CoarseState) -> gate (explicit GateState inside Gate) -> while the gate is open the
frame's fine record is collected; every `snippet_frames` open frames, `frames_per_update` of them (evenly
sampled) go to the fine worker as one job; the opening's first job is the pre-roll (scored frames of the
last `pre_roll_s` before the opening); the closing sends the rest as the final job.

Events follow the gate: "start" when it confirms an opening (min_open_s), an "update" after each fine
result while the event is open, "end" when it closes. The end record is HELD until the event's clip is on
disk (post-roll written, renamed from .partial) and the fine worker has reported (or dropped) every job of
the opening, at most FINE_RESULT_WAIT_S, so the end record names files that exist and carries the final
fine result. The heatmap snapshot is the coarse heatmap of the opening's highest-scoring frame, blended
over that frame, written when the event ends; its file name says how the F_A channels were combined
(`<event id>.channel-mean.jpg`), since the event schema has no field for it.

Stop (SIGTERM, end of stream): the gate is finished (an open event gets its end), the fine worker drained
(SHUTDOWN_FINE_WAIT_S), the clips flushed (SHUTDOWN_CLIP_WAIT_S), and every held end record emitted.

Outputs degrade, detection goes on: a clip that could not be written completely (disk full, folder gone)
or a snapshot that could not be saved is an ERROR line and a count in the OutputLedger (exit code 4 at
the end, /metrics edge_vad_outputs_lost_total), and the end record says `clip: null` with `clip_error`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

import numpy as np

from edge_vad.config import Config
from edge_vad.constants import SNIPPET_FRAMES
from edge_vad.errors import EdgeVadError
from edge_vad.review.live import LiveState
from edge_vad.runtime.clips import ClipRecorder, FinishedClip
from edge_vad.runtime.coarse import CoarseOutput, CoarseStage
from edge_vad.runtime.events import END_GATE_CLOSED, END_STOPPED, Event, EventBuilder, FineSummary, utc_now
from edge_vad.runtime.fine_model import FineFrame, FineModel
from edge_vad.runtime.fine_worker import DROP_REASON, FineJob, FineResult, FineWorker, InlineFine
from edge_vad.runtime.gate import Gate, GateDecision
from edge_vad.runtime.heatmap import top_region
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.outputs import OutputLedger
from edge_vad.runtime.report import ScoreLog
from edge_vad.runtime.snapshot import write_snapshot
from edge_vad.sources.base import Frame, Source, SourceState

log = logging.getLogger("edge_vad.pipeline")

READ_TIMEOUT_S = 0.5  # a live source's read waits at most this long, so stop requests are seen promptly
DEFAULT_FPS = 15.0  # gate / clip rate when the source reports none (typical edge camera setting)
FINE_RESULT_WAIT_S = 10.0  # an end record waits at most this long for the fine worker's last result
SHUTDOWN_FINE_WAIT_S = 1.5  # at stop: time for the fine worker to finish queued jobs
SHUTDOWN_CLIP_WAIT_S = 2.0  # at stop: time for the clip writer (the whole stop must fit systemd's 5 s budget)


def sample_evenly(items: Sequence[Any], n: int) -> List[Any]:
    """n items evenly spread over `items` (first and last included); all of them when there are <= n."""
    if len(items) <= n:
        return list(items)
    picks = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in picks]


@dataclass
class _Opening:
    """One gate opening: its fine episode, its event (once confirmed), and what its end waits for."""

    episode: int
    open_frame: int
    open_t: float
    scores: List[float] = field(default_factory=list)  # while open and not yet confirmed
    pending: List[FineFrame] = field(default_factory=list)  # open frames not yet sent to the fine stage
    peak_score: float = -math.inf
    peak_frame: Optional[int] = None
    peak_image: Optional[np.ndarray] = None
    peak_heat: Optional[np.ndarray] = None
    peak_hw: Optional[tuple] = None  # the peak frame's (height, width), for the region box
    builder: Optional[EventBuilder] = None
    summary: Optional[FineSummary] = None
    outstanding: int = 0  # fine jobs submitted and neither reported nor dropped
    clip_path: Optional[Path] = None  # final path, known at start
    clip_done: bool = False
    clip_file: Optional[Path] = None  # what the recorder reported (None: no file)
    clip_error: str = ""  # why there is no clip file
    end_reason: str = END_GATE_CLOSED
    end: Optional[tuple] = None  # (end_frame, end_t, ended_at) once the gate closed a confirmed event
    closed_at: float = 0.0  # time.monotonic() of the closing


@dataclass
class PipelineResult:
    source: str
    frames_read: int = 0
    frames_scored: int = 0
    events: Dict[str, int] = field(default_factory=lambda: {"start": 0, "update": 0, "end": 0})
    fine_frames: int = 0
    fine_dropped_frames: int = 0
    seconds: float = 0.0
    stopped: bool = False  # stop was requested (signal), rather than the source ending
    error: Optional[EdgeVadError] = None
    frames_missing: int = 0  # a damaged / truncated file: frames announced that never decoded

    @property
    def fps(self) -> float:
        return self.frames_scored / self.seconds if self.seconds > 0 else 0.0


class Pipeline:
    """The cascade for one source (see module doc). Runs in the caller's thread; models may be shared."""

    def __init__(self, source: Source, coarse: CoarseStage, fine: Optional[FineModel], cfg: Config, *,
                 emit: Optional[Callable[[Event], Any]] = None, metrics: Optional[Metrics] = None,
                 events_dir: Optional[Path] = None, stride: int = 1, score_log: Optional[ScoreLog] = None,
                 stop: Optional[threading.Event] = None, fine_inline: bool = False,
                 snippet_frames: int = SNIPPET_FRAMES, on_frame: Optional[Callable[[Frame], Any]] = None,
                 ledger: Optional[OutputLedger] = None, live: Optional[LiveState] = None):
        if stride < 1:
            raise EdgeVadError(f"--stride must be >= 1, got {stride}")
        self.source, self.coarse, self.cfg = source, coarse, cfg
        self.name = source.name
        self.fine_model = fine if cfg.fine.enabled else None
        self._emit_sink = emit
        self.metrics = metrics
        self.ledger = ledger if ledger is not None else OutputLedger(metrics)
        self.stride = stride
        self.log = score_log
        self.stop = stop or threading.Event()
        self.events: List[Dict[str, Any]] = []
        self.snippet_frames = max(1, int(snippet_frames))
        self.heartbeat = time.monotonic()
        info = source.info
        self.fps = info.fps or DEFAULT_FPS
        self.gate = Gate(cfg.gate, self.fps)
        self.state = coarse.initial_state()
        self.result = PipelineResult(self.name)
        self._fine_inline = fine_inline
        self._on_frame = on_frame
        self._state_seen = ""
        self.live = live  # the review page's live view (newest frame, smoothed scores); cheap per frame
        if live is not None:
            live.add_camera(self.name, cfg.gate.on_threshold, cfg.gate.off_threshold)
        # Pre-roll of SCORED frames for the fine stage (its clock is the frames' own time).
        ring_len = math.ceil(cfg.fine.pre_roll_s * self.fps / stride) + 1 if self.fine_model else 0
        self._ring: Deque[FineFrame] = deque(maxlen=max(ring_len, 1))
        self._episodes = 0
        self._jobs = 0
        self._current: Optional[_Opening] = None
        self._by_episode: Dict[int, _Opening] = {}
        self._closing: List[_Opening] = []
        self.events_dir = Path(events_dir) if events_dir is not None else None
        self.worker: Any = None
        self.clips: Optional[ClipRecorder] = None
        self.snapshot_dir: Optional[Path] = None
        if self.events_dir is not None and cfg.events.snapshots:
            self.snapshot_dir = self.events_dir / "snapshots"

    # -- lifecycle ---------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        if self.fine_model is not None:
            self.worker = (InlineFine(self.fine_model) if self._fine_inline else
                           FineWorker(self.fine_model, self.cfg.fine.queue_size, on_drop=self._dropped, name=self.name))
        if self.events_dir is not None and self.cfg.events.clips:
            ev = self.cfg.events
            self.clips = ClipRecorder(ev.clip_pre_roll_s, ev.clip_post_roll_s, self.fps, self.events_dir / "clips",
                                      pre_roll_mb=ev.clip_pre_roll_mb,
                                      lookback_s=self.cfg.gate.min_open_s)

    def run(self) -> PipelineResult:
        """Process frames until the source ends or stop is set; then close everything (never raises for a
        source problem: it lands in result.error)."""
        started = time.monotonic()
        self._start_workers()
        self._note_state()
        try:
            self._loop()
        except EdgeVadError as exc:
            self.result.error = exc
            log.error("source '%s': %s", self.name, exc)
        except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback in the log, end cleanly, exit non-zero
            log.exception("source '%s': pipeline failed", self.name)
            self.result.error = EdgeVadError(f"source '{self.name}': internal error ({type(exc).__name__}: {exc}); "
                                             "the log has the details, please report it")
        finally:
            try:
                self._shutdown()
            finally:
                self.result.seconds = time.monotonic() - started
                stats = self.source.stats
                self.result.frames_missing = stats.frames_missing
                if self.metrics is not None:
                    self.metrics.source_state(self.name, self.source.state.value)
                log.info("source '%s': %d frames read, %d scored in %.1f s (%.1f scored fps); events %s; fine: %d "
                         "frames, %d dropped", self.name, self.result.frames_read, self.result.frames_scored,
                         self.result.seconds, self.result.fps, self.result.events, self.result.fine_frames,
                         self.result.fine_dropped_frames)
        return self.result

    def _loop(self) -> None:
        read = 0
        while not self.stop.is_set():
            frame = self.source.read(READ_TIMEOUT_S)
            self.heartbeat = time.monotonic()
            self._note_state()
            if frame is None:
                state = self.source.state
                if state is SourceState.ENDED:
                    return
                if state is SourceState.FAILED:
                    raise self.source.error or EdgeVadError(f"source '{self.name}' failed")
                self._service()
                continue
            self.result.frames_read += 1
            finished = self.clips.push(frame) if self.clips is not None else []
            self._clips_finished(finished)
            if read % self.stride == 0:
                self._score(frame)
            read += 1
            self._service()
            if self._on_frame is not None:
                self._on_frame(frame)
        self.result.stopped = True

    def _note_state(self) -> None:
        """Tell /healthz when the source changes state (open, reconnecting, ended, failed)."""
        state = self.source.state.value
        if state != self._state_seen and self.metrics is not None:
            self.metrics.source_state(self.name, state)
            self.metrics.reconnects(self.name, self.source.stats.reconnects)
        self._state_seen = state

    def _shutdown(self) -> None:
        decision = self.gate.finish()
        if decision.transition == "close":
            self._close(decision, END_STOPPED)
        if self.worker is not None:
            if not self.worker.drain(SHUTDOWN_FINE_WAIT_S):
                log.warning("source '%s': fine worker still busy after %.1f s; events end with what it reported",
                            self.name, SHUTDOWN_FINE_WAIT_S)
            self._fine_results(self.worker.poll())
            self.worker.close(0.5)
        if self.clips is not None:
            self._clips_finished(self.clips.flush(SHUTDOWN_CLIP_WAIT_S))
        self._emit_ends(force=True)
        if self.clips is not None:
            self.clips.close(0.5)

    # -- per frame ---------------------------------------------------------------------------------
    def _score(self, frame: Frame) -> None:
        self.state, out = self.coarse.step(self.state, frame.image)
        score = out.score
        d = self.gate.update(score, frame.index, frame.timestamp_s)
        self.result.frames_scored += 1
        record = (self.fine_model.frame_record(frame.index, frame.timestamp_s, frame.image, out)
                  if self.fine_model is not None else None)
        if d.transition == "open":
            self._open(d, record)
        op = self._current
        if d.open and op is not None:
            self._track(op, frame, out, record)
            if d.event == "start":
                self._start_event(op, d)
        if d.transition == "close":
            self._close(d)
        if record is not None:
            self._ring.append(record)
        if self.worker is not None:
            self._fine_results(self.worker.poll())  # inline mode: this frame's result is in already
        if self.log is not None:
            cls = op.summary.class_name if (d.open and op is not None and op.summary is not None) else ""
            self.log.add(frame.index, frame.timestamp_s, score, d.open, cls, d.smoothed)
        if self.metrics is not None:
            self.metrics.frame(self.name, gate_open=d.open)
        if self.live is not None:
            self.live.update(self.name, frame.image, d.smoothed, d.open)

    def _open(self, d: GateDecision, record: Optional[FineFrame]) -> None:
        self._episodes += 1
        op = _Opening(self._episodes, int(d.start_frame), float(d.start_t))  # type: ignore[arg-type]
        self._current = op
        self._by_episode[op.episode] = op
        if self.fine_model is not None and self.cfg.fine.pre_roll_s > 0:
            since = op.open_t - self.cfg.fine.pre_roll_s - 1e-9
            pre = [r for r in self._ring if r.t >= since]
            if pre:
                self._submit(op, sample_evenly(pre, self.cfg.fine.frames_per_update), final=False)

    def _track(self, op: _Opening, frame: Frame, out: CoarseOutput, record: Optional[FineFrame]) -> None:
        if op.builder is None:
            op.scores.append(out.score)
        else:
            op.builder.add_score(out.score)
        if out.score > op.peak_score:
            op.peak_score, op.peak_frame = out.score, frame.index
            op.peak_heat, op.peak_hw = out.heatmap, frame.image.shape[:2]
            if self.snapshot_dir is not None:
                op.peak_image = frame.image.copy()
        if record is not None:
            op.pending.append(record)
            if len(op.pending) >= self.snippet_frames:
                chunk, op.pending = op.pending, []
                self._submit(op, sample_evenly(chunk, self.cfg.fine.frames_per_update), final=False)

    def _start_event(self, op: _Opening, d: GateDecision) -> None:
        op.builder = EventBuilder(self.name, int(d.start_frame), float(d.start_t))  # type: ignore[arg-type]
        op.builder.add_scores(op.scores)
        op.scores = []
        self._emit(op.builder.start())
        if self.clips is not None:
            op.clip_path = self.clips.start(op.builder.id, op.open_t)
        if op.summary is not None:
            self._emit(op.builder.update(fine=op.summary))

    def _close(self, d: GateDecision, reason: str = END_GATE_CLOSED) -> None:
        op = self._current
        self._current = None
        if op is None:
            return
        if self.fine_model is not None:
            self._submit(op, sample_evenly(op.pending, self.cfg.fine.frames_per_update), final=True)
            op.pending = []
        if d.event == "end" and op.builder is not None:
            op.end = (int(d.end_frame), float(d.end_t), utc_now())  # type: ignore[arg-type]
            op.end_reason = reason
            op.closed_at = time.monotonic()
            if self.clips is not None and op.clip_path is not None:
                self.clips.stop(op.builder.id, float(d.end_t))  # type: ignore[arg-type]
            self._closing.append(op)
        else:
            # An opening shorter than min_open_s: no event. Its fine results still reach the score log.
            self._by_episode.pop(op.episode, None)

    # -- fine stage --------------------------------------------------------------------------------
    def _submit(self, op: _Opening, frames: List[FineFrame], final: bool) -> None:
        if self.worker is None:
            return
        self._jobs += 1
        op.outstanding += 1
        self.result.fine_frames += len(frames)
        self.worker.submit(FineJob(op.episode, tuple(frames), final=final, seq=self._jobs))

    def _dropped(self, job: FineJob) -> None:
        """FineWorker's on_drop (called in this pipeline's thread, from submit)."""
        self.result.fine_dropped_frames += len(job.frames)
        self.result.fine_frames -= len(job.frames)
        if self.metrics is not None:
            self.metrics.dropped(self.name, DROP_REASON, len(job.frames))
        op = self._by_episode.get(job.episode)
        if op is not None:
            op.outstanding -= 1
        log.debug("source '%s': fine queue full; dropped job %d (%d frames)", self.name, job.seq, len(job.frames))

    def _fine_results(self, results: List[FineResult]) -> None:
        for r in results:
            if self.log is not None:
                for index, probs in r.frame_probs:
                    self.log.add_probs(index, probs)
            op = self._by_episode.get(r.episode)
            if op is None:
                continue
            op.outstanding -= 1
            if r.summary is None:
                continue
            op.summary = r.summary
            if op.builder is not None and op.end is None:
                self._emit(op.builder.update(fine=r.summary))

    # -- clips and held end records ------------------------------------------------------------------
    def _clips_finished(self, finished: List[FinishedClip]) -> None:
        for clip in finished:
            for op in self._closing:
                if op.builder is not None and op.builder.id == clip.name:
                    op.clip_done, op.clip_file = True, clip.path
                    if clip.path is None:
                        op.clip_error = clip.error or "no clip was written"
                        self.ledger.failed("clip", f"source '{self.name}': clip of event {clip.name} lost: "
                                                   f"{op.clip_error}")
                    elif clip.error:
                        log.warning("source '%s': clip of event %s: %s", self.name, clip.name, clip.error)

    def _service(self) -> None:
        """Between frames: collect fine results, emit the end records whose clip and fine results are in."""
        if self.worker is not None:
            self._fine_results(self.worker.poll())
        if self._closing:
            self._emit_ends(force=False)

    def _emit_ends(self, force: bool) -> None:
        now = time.monotonic()
        still: List[_Opening] = []
        for op in self._closing:
            clip_ready = op.clip_path is None or op.clip_done
            fine_ready = op.outstanding <= 0 or now - op.closed_at > FINE_RESULT_WAIT_S
            if not force and not (clip_ready and fine_ready):
                still.append(op)
                continue
            assert op.builder is not None and op.end is not None
            end_frame, end_t, ended_at = op.end
            snapshot = self._snapshot(op)
            clip = op.clip_file if op.clip_done else None
            region = top_region(op.peak_heat, op.peak_hw) if op.peak_heat is not None else None
            clip_error = op.clip_error
            if op.clip_path is not None and not op.clip_done:
                clip_error = ("the clip was not finished before exit (writer still busy); its .partial.mp4 is "
                              "finished or removed at the next start")
                self.ledger.failed("clip", f"source '{self.name}': clip of event {op.builder.id}: {clip_error}")
            self._emit(op.builder.end(end_frame, end_t, fine=op.summary, clip=clip, snapshot=snapshot,
                                      ended_at=ended_at, region=region, clip_error=clip_error or None,
                                      end_reason=op.end_reason))
            self._by_episode.pop(op.episode, None)
        self._closing = still

    def _snapshot(self, op: _Opening) -> Optional[Path]:
        if self.snapshot_dir is None or op.peak_image is None or op.peak_heat is None or op.builder is None:
            return None
        path = self.snapshot_dir / f"{op.builder.id}.{self.coarse.heatmap_method}.jpg"
        try:
            return write_snapshot(path, op.peak_image, op.peak_heat)
        except (OSError, ValueError) as exc:
            self.ledger.failed("snapshot", f"source '{self.name}': snapshot of event {op.builder.id} not written: "
                                           f"{exc}")
            return None

    def _emit(self, event: Event) -> None:
        self.events.append(event.to_dict())
        self.result.events[event.type] += 1
        if self.metrics is not None:
            self.metrics.event(self.name, event.type)
        if self._emit_sink is not None:
            self._emit_sink(event)
