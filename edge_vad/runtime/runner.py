"""`edge-vad run`: everything around the pipelines. Config, bundle, backends, sources, sinks, HTTP, systemd,
signals; one pipeline thread per source, models loaded once and shared.

    summary = run(RunOptions(source="clip.mp4", report=Path("out")))

Start-up order (cheap checks first, so a bad input fails fast with one line): config -> sources to open ->
preflight (extras the config needs, every output folder writable: edge_vad.runtime.preflight) -> bundle
verified (every sha256, before anything loads it) -> backend plan (a missing backend is named with what to
install) -> sources opened, all at once (edge_vad.runtime.source_worker; a config's live source that does
not open is retried in the background) -> models loaded (once) -> sinks (MQTT, Home Assistant discovery),
crash leftovers cleaned up (edge_vad.runtime.recovery), the HTTP server (/healthz, /metrics, the review page
with the pipelines' live state) -> READY=1. SIGINT while the sources open: exit 130.

Stop: SIGTERM or SIGINT sets one stop flag; each pipeline stops reading, ends its open event, drains its
fine worker and flushes its clips (pipeline.SHUTDOWN_* budgets), then the sinks are flushed and closed,
STOPPING=1 is sent, and the process exits 0 well within systemd's stop timeout (5 s budget).

Watchdog: the main thread pings WATCHDOG=1 (half of WatchdogSec) only while every running pipeline's loop
has turned within the watchdog interval, so a hung pipeline stops the pings and systemd restarts us.

Reports: `--report DIR` writes DIR/scores.csv, events.jsonl, curve.png for one source; with several
sources, DIR/<source name>/... each. With --report and no events folder given (--events-dir or the
config's events.dir), events, clips and snapshots go to DIR/events/, not to the current directory.

Outputs that could not be written (edge_vad.runtime.outputs) never stop detection; at the end they make
the run exit 4 (OutputsLost) unless `[events] fail_on_lost_outputs = false`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_vad.backends.edgetpu_runtime import release_probed
from edge_vad.bundle import resolve_bundle_dir, verify_bundle
from edge_vad.config import Config, HttpConfig, load_config, with_precision
from edge_vad.errors import EXIT_INTERRUPTED, EdgeVadError
from edge_vad.review.live import LiveState
from edge_vad.review.routes import ReviewApp
from edge_vad.review.web import AccessGuard, read_token
from edge_vad.runtime import sdnotify
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.bundle_defaults import config_for_bundle
from edge_vad.runtime.coarse import CoarseStage
from edge_vad.runtime.events import EventSinks, JsonlEventWriter, StdoutEventSink
from edge_vad.runtime.fine_model import FineModel
from edge_vad.runtime.http_server import HttpServer
from edge_vad.runtime.loaded_models import ModelSet, load_models
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.outputs import OutputLedger
from edge_vad.runtime.pipeline import READ_TIMEOUT_S, Pipeline, PipelineResult
from edge_vad.runtime.preflight import extras_problems, mqtt_spool_dir, output_problems, raise_problems
from edge_vad.runtime.recovery import recover
from edge_vad.runtime.report import ScoreLog, write_report
from edge_vad.runtime.source_worker import SourceSpec, SourceWorker, StartInterrupted, open_at_start
from edge_vad.sources import Source

log = logging.getLogger("edge_vad.run")

JOIN_POLL_S = 0.2  # main thread: how often it checks pipelines, the watchdog and the stop flag
STALL_S = 10.0  # a pipeline loop that has not turned for this long counts as hung (no watchdog ping)
STATUS_EVERY_S = 10.0  # systemd STATUS= line refresh
REPORT_EVENTS_SUBDIR = "events"  # with --report and no events folder given: DIR/events/


@dataclass(frozen=True)
class RunOptions:
    source: Optional[str] = None
    camera: Optional[str] = None
    config: Optional[Path] = None
    bundle: Optional[Path] = None
    backend: Optional[str] = None
    stride: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    loop: bool = False
    report: Optional[Path] = None
    events_dir: Optional[Path] = None
    no_http: bool = False
    precision: Optional[str] = None  # the backend's precision (TensorRT: fp32 / fp16 / int8); None: config / bundle


@dataclass
class RunSummary:
    results: List[PipelineResult] = field(default_factory=list)
    reports: Dict[str, Dict[str, Path]] = field(default_factory=dict)
    stopped_by_signal: Optional[str] = None
    backends: List[str] = field(default_factory=list)


def source_specs(opts: RunOptions, cfg: Config) -> List[SourceSpec]:
    """The sources to open: --source / --camera (one), else the config's [[sources]]. CLI size, rate, loop
    and stride options override each source's own."""
    if opts.source and opts.camera:
        raise EdgeVadError("pass --source or --camera, not both (--camera is the shorthand for --source)")
    uri = opts.source or opts.camera
    if uri:
        specs = [SourceSpec(uri)]
    elif cfg.sources:
        specs = [SourceSpec(s.uri, s.name, s.width, s.height, s.fps, s.loop, s.stride) for s in cfg.sources]
    else:
        raise EdgeVadError("no source: pass --source FILE_OR_URI or --camera /dev/videoN, or list [[sources]] "
                           "in the --config file")
    if opts.stride is not None and opts.stride < 1:
        raise EdgeVadError(f"--stride must be >= 1, got {opts.stride}")
    overrides = {k: v for k, v in (("width", opts.width), ("height", opts.height), ("fps", opts.fps),
                                   ("stride", opts.stride)) if v is not None}
    if opts.loop:
        overrides["loop"] = True
    return [replace(s, **overrides) for s in specs]


def open_sources(specs: List[SourceSpec]) -> List[Source]:
    """Open every source now (all at once); EdgeVadError when any does not open."""
    opened = open_at_start(specs, threading.Event(), retry_live=False)
    return [s for s in opened if s is not None]


def events_dir_for(opts: RunOptions, cfg: Config) -> Path:
    """--events-dir, else the config's events.dir when it sets one, else DIR/events/ under --report, else the
    default (events/ in the current directory)."""
    if opts.events_dir is not None:
        return Path(opts.events_dir)
    if "dir" not in cfg.events.model_fields_set and opts.report is not None:
        return Path(opts.report) / REPORT_EVENTS_SUBDIR
    return Path(cfg.events.dir)


def build_sinks(cfg: Config, events_dir: Path, ledger: Optional[OutputLedger] = None,
                metrics: Optional[Metrics] = None, cameras: Optional[List[str]] = None,
                live: Optional[LiveState] = None) -> EventSinks:
    sinks = EventSinks(ledger=ledger)
    if cfg.events.jsonl:
        sinks.add(JsonlEventWriter(events_dir / "events.jsonl", ledger=ledger))
    if cfg.events.stdout:
        sinks.add(StdoutEventSink())
    if cfg.mqtt.enabled:
        from edge_vad.runtime.mqtt_sink import MqttSink

        mqtt: Any = MqttSink(cfg.mqtt, spool_dir=mqtt_spool_dir(cfg, events_dir), ledger=ledger, metrics=metrics)
        if cfg.mqtt.home_assistant:
            from edge_vad.runtime.ha_discovery import HomeAssistantSink

            mqtt = HomeAssistantSink(mqtt, cfg.mqtt, cameras or [], live, events_dir / "ha-discovery.json")
        sinks.add(mqtt)
    return sinks


def http_guard(http_cfg: HttpConfig) -> AccessGuard:
    """The HTTP server's access guard: loopback only, or the token from http.token_file (read now, so a
    missing or weak token fails the start with one line before any model loads)."""
    token = read_token(http_cfg.token_file) if http_cfg.token_file is not None else None
    return AccessGuard(http_cfg.host, token)


class _Stopper:
    """SIGTERM / SIGINT -> one stop flag (handlers only where we are the main thread)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
        self.event.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _report_dir(base: Path, name: str, several: bool) -> Path:
    return base / name if several else base


def _log_plan(models: ModelSet) -> List[str]:
    lines = models.describe()
    log.info("bundle target %s, backend %s", models.plan.target, models.plan.backend)
    return lines


def _preflight(cfg: Config, opts: RunOptions, specs: List[SourceSpec], events_dir: Path) -> None:
    """Extras and output folders, before the bundle and the models load (one line per problem)."""
    raise_problems(extras_problems(cfg) + output_problems(cfg, events_dir, opts.report, [s.label for s in specs]))


def _open(specs: List[SourceSpec], stopper: _Stopper, from_config: bool) -> List[Optional[Source]]:
    """All sources at once; a signal meanwhile ends the run before it started (exit 130)."""
    try:
        return open_at_start(specs, stopper.event, retry_live=from_config)
    except StartInterrupted:
        raise EdgeVadError(f"{stopper.signal_name or 'stop'} received while the sources were opening; nothing was "
                           "run", exit_code=EXIT_INTERRUPTED) from None


def _write_reports(opts: RunOptions, cfg: Config, workers: List[SourceWorker], logs: Dict[str, ScoreLog],
                   summary: RunSummary, ledger: OutputLedger) -> None:
    several = len(workers) > 1
    for w in workers:
        if w.pipeline is None:
            log.warning("source '%s' never opened: no report for it", w.name)
            continue
        out = _report_dir(Path(opts.report), w.name, several)
        try:
            summary.reports[w.name] = write_report(out, logs[w.name], w.pipeline.events, title=w.name, gate=cfg.gate)
            log.info("report for '%s': %s", w.name, out)
        except OSError as exc:
            ledger.failed("report", f"report for '{w.name}' not written to {out}: {exc}")


def _close_sources(workers: List[SourceWorker], sources: List[Optional[Source]]) -> None:
    if not workers:
        sources_to_close = [s for s in sources if s is not None]
    else:  # a worker still opening holds no source; one that opened late holds its own
        sources_to_close = [w.source for w in workers if w.source is not None and not w.opening]
    for src in sources_to_close:
        src.close()


def run(opts: RunOptions) -> RunSummary:
    """The whole `edge-vad run`. Raises EdgeVadError (one line) for bad input, after writing what it could;
    OutputsLost (exit 4) at the end when outputs could not be written."""
    cfg = with_precision(load_config(opts.config), opts.precision)
    specs = source_specs(opts, cfg)
    events_dir = events_dir_for(opts, cfg)
    _preflight(cfg, opts, specs, events_dir)
    serve_http = cfg.http.enabled and not opts.no_http
    guard = http_guard(cfg.http) if serve_http else None
    bundle_dir = resolve_bundle_dir(opts.bundle or cfg.runtime.bundle)
    report = verify_bundle(bundle_dir)
    log.info("%s", report.summary())
    manifest = report.manifest
    cfg = config_for_bundle(cfg, manifest)
    plan = plan_backends(manifest, bundle_dir, opts.backend or cfg.runtime.backend, cfg.runtime,
                         fine=cfg.fine.enabled)
    stopper = _Stopper()
    stopper.install()  # before opening: Ctrl-C during a slow RTSP open must be seen at once
    summary = RunSummary()
    models: Optional[ModelSet] = None
    sinks: Optional[EventSinks] = None
    http: Optional[HttpServer] = None
    ledger: Optional[OutputLedger] = None
    workers: List[SourceWorker] = []
    sources: List[Optional[Source]] = []
    review: Optional[ReviewApp] = None
    try:
        sources = _open(specs, stopper, from_config=not (opts.source or opts.camera))
        # A first start on a Jetson builds TensorRT engines (minutes): keep systemd's start timeout extended
        # meanwhile, from a thread, since the build is one long call (docs/jetson.md, "First start").
        with sdnotify.StartupExtender(status_text="loading models (a TensorRT engine build takes minutes)"):
            models = load_models(bundle_dir, manifest, plan)
        summary.backends = _log_plan(models)
        metrics = Metrics(stale_after_s=cfg.http.stalled_after_s)
        ledger = OutputLedger(metrics)
        coarse = CoarseStage(models, metrics)
        fine = FineModel(models, metrics) if cfg.fine.enabled and models.get("fine_head") is not None else None
        if cfg.fine.enabled and fine is None:
            log.warning("the bundle has no fine stage: events carry no class")
        live = LiveState()  # what the review page and the Home Assistant score sensor show
        try:
            cameras = [s.name if s is not None else spec.label for spec, s in zip(specs, sources)]
            sinks = build_sinks(cfg, events_dir, ledger, metrics, cameras, live)
        except OSError as exc:  # e.g. a disk so full that events.jsonl cannot even be created
            raise EdgeVadError(f"cannot open the event outputs in {events_dir}: {exc}; free disk space or fix the "
                               "folder") from None
        recover(events_dir, events_dir / "clips" if cfg.events.clips else None, sinks.emit)
        if serve_http:
            review = ReviewApp(events_dir, live)
            http = HttpServer(metrics, cfg.http.host, cfg.http.port, app=review, guard=guard).start()
        logs: Dict[str, ScoreLog] = {}

        def make_pipeline(src: Source, spec: SourceSpec) -> Pipeline:
            return Pipeline(src, coarse, fine, cfg, emit=sinks.emit, metrics=metrics, events_dir=events_dir,
                            stride=spec.stride, score_log=logs.get(src.name), stop=stopper.event,
                            snippet_frames=manifest.snippet_frames, ledger=ledger, live=live)

        workers = [SourceWorker(spec, src, lambda s, spec=spec: make_pipeline(s, spec), stopper.event, metrics)
                   for spec, src in zip(specs, sources)]
        if opts.report:
            logs.update({w.name: ScoreLog() for w in workers})
        threads = [threading.Thread(target=w.run, name=f"edge-vad-{w.name}", daemon=True) for w in workers]
        for t in threads:
            t.start()
        sdnotify.ready()
        _supervise(workers, threads, stopper)
        summary.stopped_by_signal = stopper.signal_name
        summary.results = [w.result for w in workers]
        if opts.report:
            _write_reports(opts, cfg, workers, logs, summary, ledger)
    finally:
        stopper.restore()
        if sinks is not None:
            sinks.close()  # JSONL lines still unwritten and unsent MQTT events are counted here
        if http is not None:
            http.stop()
        if review is not None:
            review.close()
        if models is not None:
            models.close()
        release_probed()  # an Edge TPU delegate the backend choice loaded but no model took
        _close_sources(workers, sources)
    _raise_problems(summary, opts, ledger)
    if ledger is not None:
        ledger.raise_if_lost(cfg.events.fail_on_lost_outputs)
    return summary


def _supervise(workers: List[SourceWorker], threads: List[threading.Thread], stopper: _Stopper) -> None:
    dog = sdnotify.Watchdog.from_env()
    announced = False
    last_status = 0.0
    # A worker still trying to open its source holds nothing to flush: at stop it is not waited for.
    while any(t.is_alive() and not (stopper.event.is_set() and w.opening) for w, t in zip(workers, threads)):
        for t in threads:
            t.join(JOIN_POLL_S / max(1, len(threads)))
        now = time.monotonic()
        if stopper.event.is_set() and not announced:
            announced = True
            log.info("%s received: stopping (finishing open events and clips)", stopper.signal_name or "stop")
            sdnotify.stopping()
        alive = [w for w, t in zip(workers, threads) if t.is_alive()]
        if alive and all(now - w.heartbeat < max(STALL_S, 4 * READ_TIMEOUT_S) for w in alive):
            dog.maybe_ping()
        if now - last_status >= STATUS_EVERY_S:
            last_status = now
            sdnotify.status("; ".join(_status(w) for w in workers))


def _status(w: SourceWorker) -> str:
    if w.opening:
        return f"{w.name}: connecting"
    result = w.pipeline.result if w.pipeline is not None else w.result
    return f"{w.name}: {result.frames_scored} frames"


def _raise_problems(summary: RunSummary, opts: RunOptions, ledger: Optional[OutputLedger]) -> None:
    problems = [r.error for r in summary.results if r.error is not None]
    for result in summary.results:
        if result.frames_missing > 0:
            where = f"; they are in {opts.report}" if opts.report else ""
            problems.append(EdgeVadError(
                f"source '{result.source}': the video is damaged or truncated ({result.frames_missing} announced "
                f"frames never decoded); the {result.frames_scored} frames before the damage were scored{where}; "
                "re-encode or re-copy the file to score the rest"))
    if not problems:
        return
    if ledger is not None and ledger.lost_total():  # said here too: the exit code is the first problem's
        log.error("this run also lost outputs: %s", ledger.summary())
    raise problems[0]
