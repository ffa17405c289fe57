"""One measured run of the cascade in its own process: `python -m edge_vad.bench.child --source V --json OUT ...`.

It assembles the runtime the way `edge-vad run` does (bundle verified, backend plan, models loaded once,
CoarseStage + FineModel + the gate in a Pipeline, the fine worker thread, events with clips and snapshots
written to --events-dir), minus the HTTP server and signal handling, so the parent can read this process's
peak RSS (os.wait4) without counting its own memory. Imports are the runtime's only: no matplotlib, no torch.

Modes:
- default: as deployed (fine stage in its worker thread, drop-oldest queue; dropped frames counted).
- --fine-inline: the fine stage runs in line, nothing is dropped (offline scoring; the cascade comparison).
- --always-on: the gate is forced open on every frame, so the fine stage runs on every snippet (VadCLIP-style).
- --max-frames N + --loop: stop after N frames of a looped file (the soak); --rss-every K samples VmRSS.
- --scores-out F.npz: per-frame coarse score, gate state and fine class probabilities (NaN where none).
- --threads N: intra-op threads of the backends (default: the runtime's, edge_vad.runtime.threads).
- --stage-cpu: also record each stage's CPU time (stage_cpu_s; the cascade's bound needs it).
- --coarse-only: no pipeline: CoarseStage.step on every frame of the source, timed per step (decoding, the
  gate, the fine stage, events and clips excluded): the coarse stage's own fps on the same frames and threads,
  the denominator of bench's end_to_end.fps_vs_coarse.

Output JSON keys: frames_read, frames_scored, seconds, fps, load_s, cpu_seconds (process CPU time of the
pipeline run, all threads), fps_cpu (frames per CPU second), gate_duty, fine_frames, fine_dropped_frames,
source_dropped, frames_missing, events, rss_samples [[frames, MB], ...], vmhwm_mb, backends, threads, error,
stage_cpu_s {stage: CPU seconds of the calling thread}, stage_calls {stage: calls}. --coarse-only: frames_read,
coarse_seconds, fps, backends, threads, vmhwm_mb, error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from edge_vad.bundle import resolve_bundle_dir, verify_bundle
from edge_vad.config import Config, GateConfig, HttpConfig
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import atomic_target
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.bundle_defaults import config_for_bundle
from edge_vad.runtime.coarse import CoarseStage
from edge_vad.runtime.fine_model import FineModel
from edge_vad.runtime.loaded_models import load_models
from edge_vad.runtime.metrics import STAGES, Metrics
from edge_vad.runtime.pipeline import Pipeline
from edge_vad.runtime.report import ScoreLog
from edge_vad.runtime.runner import build_sinks
from edge_vad.sources import open_source

ALWAYS_ON_THRESHOLD = 1e-300  # gate thresholds so low that any score > 0 keeps it open (sigmoid is never 0 here)


def proc_status_mb(field: str) -> Optional[float]:
    """VmRSS / VmHWM of this process in MB from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024.0, 2)
    except OSError:
        return None
    return None


class CountingMetrics(Metrics):
    """Metrics that also count gate-open frames over the whole run (/metrics keeps a sliding window only) and,
    with stage_cpu, the CPU time of each stage in the thread that runs it (time.thread_time: with one intra-op
    thread the backends compute in the calling thread, so this is the stage's work, whatever else the machine
    runs). Opt-in (the cascade runs): two reads of the thread's CPU clock per stage call (about 1 us each here)
    that the end-to-end run has no use for."""

    def __init__(self, stage_cpu: bool = False) -> None:
        super().__init__()
        self.scored_frames = 0
        self.open_frames = 0
        self.stage_cpu = stage_cpu
        self.stage_cpu_s: Dict[str, float] = {s: 0.0 for s in STAGES}
        self.stage_calls: Dict[str, int] = {s: 0 for s in STAGES}

    @contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        if not self.stage_cpu:
            with super().stage(stage):
                yield
            return
        cpu0 = time.thread_time()
        with super().stage(stage):
            yield
        with self._lock:
            self.stage_cpu_s[stage] += time.thread_time() - cpu0
            self.stage_calls[stage] += 1

    def frame(self, source: str, gate_open: bool = False) -> None:
        self.scored_frames += 1
        self.open_frames += bool(gate_open)
        super().frame(source, gate_open=gate_open)


def config(always_on: bool, threads: int = 0) -> Config:
    """The runtime's default config without HTTP; always-on forces the gate open on every frame; threads > 0
    overrides the backends' intra-op threads."""
    cfg = Config(http=HttpConfig(enabled=False))
    if threads > 0:
        cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"threads": threads})})
    if always_on:
        gate = GateConfig(smoothing_frames=1, on_threshold=ALWAYS_ON_THRESHOLD, off_threshold=ALWAYS_ON_THRESHOLD,
                          min_open_s=0.0, cooldown_s=0.0)
        cfg = cfg.model_copy(update={"gate": gate})
    return cfg


def run(args: argparse.Namespace) -> Dict[str, Any]:
    cfg = config(args.always_on, args.threads)
    t0 = time.perf_counter()
    bundle_dir = resolve_bundle_dir(args.bundle)
    manifest = verify_bundle(bundle_dir).manifest
    cfg = config_for_bundle(cfg, manifest)  # as `edge-vad run`: the bundle's gate unless always-on sets one
    plan = plan_backends(manifest, bundle_dir, args.backend, cfg.runtime, fine=cfg.fine.enabled)
    source = open_source(args.source, loop=args.loop)
    models = load_models(bundle_dir, manifest, plan)
    sinks = None
    try:
        metrics = CountingMetrics(stage_cpu=args.stage_cpu)
        coarse = CoarseStage(models, metrics)
        fine = FineModel(models, metrics) if models.get("fine_head") is not None else None
        events_dir = Path(args.events_dir) if args.events_dir else None
        if events_dir is not None:
            sinks = build_sinks(cfg, events_dir)
        score_log = ScoreLog() if args.scores_out else None
        stop = threading.Event()
        rss: List[List[float]] = []
        seen = [0]

        def on_frame(_frame: Any) -> None:
            seen[0] += 1
            if args.rss_every and (seen[0] == 1 or seen[0] % args.rss_every == 0):
                rss.append([seen[0], proc_status_mb("VmRSS")])
            if args.max_frames and seen[0] >= args.max_frames:
                stop.set()

        pipe = Pipeline(source, coarse, fine, cfg, emit=sinks.emit if sinks else None, metrics=metrics,
                        events_dir=events_dir, score_log=score_log, stop=stop, fine_inline=args.fine_inline,
                        snippet_frames=manifest.snippet_frames, on_frame=on_frame)
        load_s = time.perf_counter() - t0
        cpu0 = time.process_time()
        result = pipe.run()
        cpu_s = time.process_time() - cpu0
        if args.rss_every:
            rss.append([seen[0], proc_status_mb("VmRSS")])
        stats = source.stats
        out: Dict[str, Any] = {
            "frames_read": result.frames_read, "frames_scored": result.frames_scored,
            "seconds": round(result.seconds, 4),
            "fps": round(result.frames_read / result.seconds, 3) if result.seconds > 0 else None,
            "load_s": round(load_s, 4), "cpu_seconds": round(cpu_s, 4),
            "fps_cpu": round(result.frames_read / cpu_s, 3) if cpu_s > 0 else None,
            "gate_duty": round(metrics.open_frames / metrics.scored_frames, 6) if metrics.scored_frames else None,
            "fine_frames": result.fine_frames, "fine_dropped_frames": result.fine_dropped_frames,
            "source_dropped": stats.frames_dropped, "frames_missing": result.frames_missing,
            "events": dict(result.events), "rss_samples": rss, "vmhwm_mb": proc_status_mb("VmHWM"),
            "backends": models.describe(), "threads": plan.threads, "threads_source": plan.threads_source,
            "error": str(result.error) if result.error else None,
            "stage_cpu_s": {k: round(v, 4) for k, v in metrics.stage_cpu_s.items()},
            "stage_calls": dict(metrics.stage_calls),
        }
        if score_log is not None:
            _write_scores(Path(args.scores_out), score_log, fine)
        return out
    finally:
        if sinks is not None:
            sinks.close()
        models.close()
        source.close()


def coarse_only(args: argparse.Namespace) -> Dict[str, Any]:
    """CoarseStage.step on every frame of the source, with the models and threads `run` would use."""
    cfg = config(False, args.threads)
    bundle_dir = resolve_bundle_dir(args.bundle)
    manifest = verify_bundle(bundle_dir).manifest
    plan = plan_backends(manifest, bundle_dir, args.backend, cfg.runtime, fine=False)
    source = open_source(args.source)
    models = load_models(bundle_dir, manifest, plan)
    try:
        coarse = CoarseStage(models)
        state = coarse.initial_state()
        frames, seconds = 0, 0.0
        for frame in source.frames():
            t0 = time.perf_counter()
            state, _ = coarse.step(state, frame.image)
            seconds += time.perf_counter() - t0
            frames += 1
        return {"frames_read": frames, "coarse_seconds": round(seconds, 4),
                "fps": round(frames / seconds, 3) if seconds > 0 else None, "backends": models.describe(),
                "threads": plan.threads, "threads_source": plan.threads_source, "vmhwm_mb": proc_status_mb("VmHWM"),
                "error": None if frames else f"{args.source}: no frame decoded"}
    finally:
        models.close()
        source.close()


def _write_scores(path: Path, log: Any, fine: Any) -> None:
    frames = np.frombuffer(log.frames, dtype=np.int64).copy() if len(log) else np.zeros(0, np.int64)
    n_cls = len(fine.classes) if fine is not None else 0
    probs = np.full((len(frames), n_cls), np.nan, np.float32)
    row = {int(f): i for i, f in enumerate(frames)}
    for index, p in log.probs.items():
        if index in row:
            probs[row[index]] = p
    normal = fine.info.normal_class if fine is not None else -1
    with atomic_target(path) as tmp:  # the temporary name keeps .npz, so np.savez writes exactly there
        np.savez(tmp, frames=frames, coarse=log.score_array().astype(np.float32), gate=log.gate_array(),
                 probs=probs, normal_class=np.int64(normal))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge_vad.bench.child", description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--bundle", default=None)
    p.add_argument("--backend", default=None)
    p.add_argument("--json", required=True)
    p.add_argument("--events-dir", default=None)
    p.add_argument("--scores-out", default=None)
    p.add_argument("--fine-inline", action="store_true")
    p.add_argument("--always-on", action="store_true")
    p.add_argument("--loop", action="store_true")
    p.add_argument("--max-frames", type=int, default=0)
    p.add_argument("--rss-every", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--coarse-only", action="store_true")
    p.add_argument("--stage-cpu", action="store_true")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        out = coarse_only(args) if args.coarse_only else run(args)
    except EdgeVadError as exc:
        out = {"error": str(exc)}
        Path(args.json).write_text(json.dumps(out))
        print(f"edge-vad bench child: error: {exc}", file=sys.stderr)
        return exc.exit_code or 1
    Path(args.json).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
