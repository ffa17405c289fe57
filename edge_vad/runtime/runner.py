"""`edge-vad run`: everything around the pipelines. Config, bundle, backends, sources, sinks, HTTP, systemd,
signals; one pipeline thread per source, models loaded once and shared.

    summary = run(RunOptions(source="clip.mp4", report=Path("out")))

Start-up order (cheap checks first, so a bad input fails fast with one line): config -> sources to open ->
bundle verified (every sha256, before anything loads it) -> backend plan (a missing backend is named with
what to install) -> sources opened -> models loaded (once) -> sinks, /healthz + /metrics -> READY=1.

Stop: SIGTERM or SIGINT sets one stop flag; each pipeline stops reading, ends its open event, drains its
fine worker and flushes its clips (pipeline.SHUTDOWN_* budgets), then the sinks are flushed and closed,
STOPPING=1 is sent, and the process exits 0 well within systemd's stop timeout (5 s budget).

Watchdog: the main thread pings WATCHDOG=1 (half of WatchdogSec) only while every running pipeline's loop
has turned within the watchdog interval, so a hung pipeline stops the pings and systemd restarts us.

Reports: `--report DIR` writes DIR/scores.csv, events.jsonl, curve.png for one source; with several
sources, DIR/<source name>/... each.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_vad.bundle import resolve_bundle_dir, verify_bundle
from edge_vad.config import Config, load_config, with_precision
from edge_vad.errors import EdgeVadError
from edge_vad.runtime import sdnotify
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.bundle_defaults import config_for_bundle
from edge_vad.runtime.coarse import CoarseStage
from edge_vad.runtime.events import EventSinks, JsonlEventWriter, StdoutEventSink
from edge_vad.runtime.fine_model import FineModel
from edge_vad.runtime.http_server import HttpServer
from edge_vad.runtime.loaded_models import ModelSet, load_models
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.pipeline import READ_TIMEOUT_S, Pipeline, PipelineResult
from edge_vad.runtime.report import ScoreLog, write_report
from edge_vad.sources import Source, open_source

log = logging.getLogger("edge_vad.run")

JOIN_POLL_S = 0.2  # main thread: how often it checks pipelines, the watchdog and the stop flag
STALL_S = 10.0  # a pipeline loop that has not turned for this long counts as hung (no watchdog ping)
STATUS_EVERY_S = 10.0  # systemd STATUS= line refresh


@dataclass(frozen=True)
class SourceSpec:
    uri: str
    name: Optional[str] = None  # None: derived from the URI
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    loop: bool = False
    stride: int = 1


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
    opened: List[Source] = []
    try:
        for spec in specs:
            opened.append(open_source(spec.uri, width=spec.width, height=spec.height, fps=spec.fps, loop=spec.loop,
                                      name=spec.name))
    except BaseException:
        for src in opened:
            src.close()
        raise
    names = [s.name for s in opened]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        for src in opened:
            src.close()
        raise EdgeVadError(f"several sources are named {dupes}; give each [[sources]] entry its own name")
    return opened


def build_sinks(cfg: Config, events_dir: Path) -> EventSinks:
    sinks = EventSinks()
    if cfg.events.jsonl:
        sinks.add(JsonlEventWriter(events_dir / "events.jsonl"))
    if cfg.events.stdout:
        sinks.add(StdoutEventSink())
    if cfg.mqtt.enabled:
        from edge_vad.runtime.mqtt_sink import MqttSink

        sinks.add(MqttSink(cfg.mqtt))
    return sinks


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


def run(opts: RunOptions) -> RunSummary:
    """The whole `edge-vad run`. Raises EdgeVadError (one line) for bad input, after writing what it could."""
    cfg = with_precision(load_config(opts.config), opts.precision)
    specs = source_specs(opts, cfg)
    bundle_dir = resolve_bundle_dir(opts.bundle or cfg.runtime.bundle)
    report = verify_bundle(bundle_dir)
    log.info("%s", report.summary())
    manifest = report.manifest
    cfg = config_for_bundle(cfg, manifest)
    plan = plan_backends(manifest, bundle_dir, opts.backend or cfg.runtime.backend, cfg.runtime,
                         fine=cfg.fine.enabled)
    sources = open_sources(specs)
    summary = RunSummary()
    models: Optional[ModelSet] = None
    sinks: Optional[EventSinks] = None
    http: Optional[HttpServer] = None
    stopper = _Stopper()
    try:
        # A first start on a Jetson builds TensorRT engines (minutes): keep systemd's start timeout extended
        # meanwhile, from a thread, since the build is one long call (docs/jetson.md, "First start").
        with sdnotify.StartupExtender(status_text="loading models (a TensorRT engine build takes minutes)"):
            models = load_models(bundle_dir, manifest, plan)
        summary.backends = _log_plan(models)
        metrics = Metrics()
        coarse = CoarseStage(models, metrics)
        fine = FineModel(models, metrics) if cfg.fine.enabled and models.get("fine_head") is not None else None
        if cfg.fine.enabled and fine is None:
            log.warning("the bundle has no fine stage: events carry no class")
        events_dir = Path(opts.events_dir or cfg.events.dir)
        sinks = build_sinks(cfg, events_dir)
        if cfg.http.enabled and not opts.no_http:
            http = HttpServer(metrics, cfg.http.host, cfg.http.port).start()
        several = len(sources) > 1
        logs = {s.name: ScoreLog() for s in sources} if opts.report else {}
        pipelines = [Pipeline(src, coarse, fine, cfg, emit=sinks.emit, metrics=metrics, events_dir=events_dir,
                              stride=spec.stride, score_log=logs.get(src.name), stop=stopper.event,
                              snippet_frames=manifest.snippet_frames)
                     for src, spec in zip(sources, specs)]
        stopper.install()
        threads = [threading.Thread(target=p.run, name=f"edge-vad-{p.name}", daemon=True) for p in pipelines]
        for t in threads:
            t.start()
        sdnotify.ready()
        _supervise(pipelines, threads, stopper)
        summary.stopped_by_signal = stopper.signal_name
        summary.results = [p.result for p in pipelines]
        if opts.report:
            for p in pipelines:
                out = _report_dir(Path(opts.report), p.name, several)
                summary.reports[p.name] = write_report(out, logs[p.name], p.events, title=p.name, gate=cfg.gate)
                log.info("report for '%s': %s", p.name, out)
    finally:
        stopper.restore()
        if sinks is not None:
            sinks.close()
        if http is not None:
            http.stop()
        if models is not None:
            models.close()
        for src in sources:
            src.close()
    _raise_problems(summary, opts)
    return summary


def _supervise(pipelines: List[Pipeline], threads: List[threading.Thread], stopper: _Stopper) -> None:
    dog = sdnotify.Watchdog.from_env()
    announced = False
    last_status = 0.0
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(JOIN_POLL_S / max(1, len(threads)))
        now = time.monotonic()
        if stopper.event.is_set() and not announced:
            announced = True
            log.info("%s received: stopping (finishing open events and clips)", stopper.signal_name or "stop")
            sdnotify.stopping()
        alive = [p for p, t in zip(pipelines, threads) if t.is_alive()]
        if alive and all(now - p.heartbeat < max(STALL_S, 4 * READ_TIMEOUT_S) for p in alive):
            dog.maybe_ping()
        if now - last_status >= STATUS_EVERY_S:
            last_status = now
            sdnotify.status("; ".join(f"{p.name}: {p.result.frames_scored} frames" for p in pipelines))


def _raise_problems(summary: RunSummary, opts: RunOptions) -> None:
    for result in summary.results:
        if result.error is not None:
            raise result.error
    for result in summary.results:
        if result.frames_missing > 0:
            where = f"; they are in {opts.report}" if opts.report else ""
            raise EdgeVadError(f"source '{result.source}': the video is damaged or truncated ({result.frames_missing} "
                               f"announced frames never decoded); the {result.frames_scored} frames before the damage "
                               f"were scored{where}; re-encode or re-copy the file to score the rest")

