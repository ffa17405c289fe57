"""How many intra-op threads the backbone should get on this machine: 1, 2, ... threads timed in ONE process,
interleaved (one call per thread count per round, so load changes during the run move every count alike),
once on a quiet machine and once under load.

Load: one busy-looping process per core but one (nice 0), standing for what shares a board's cores with the
backbone when it runs: the decoder, the clip writer, the fine worker, a second camera, the OS. An intra-op pool
waits for its slowest thread, so one busy core can make a 2-thread call slower than a 1-thread one.

Each backbone artifact of the bundle that can run here is swept (onnxruntime fp32, TFLite int8 on XNNPACK),
and the whole pipeline too: the end-to-end child at 1 and at 2 threads, in the order 1, 2, 2, 1 (so a drift
in the machine's load moves both alike), fps averaged per count. `recommended` = the count with the higher
pipeline fps (ties: fewer threads): what the operator gets. Target profiles record their default from it
(edge_vad/bench/targets/*.toml [runtime] threads, read by edge_vad.runtime.threads).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from edge_vad.backends import backend_status
from edge_vad.bundle.manifest import Manifest
from edge_vad.config import RuntimeConfig
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.coarse import declared_layout
from edge_vad.runtime.loaded_models import SharedModel, load_stage
from edge_vad.runtime.preprocess import Preprocessor

ROUNDS = 100  # timed rounds per condition (each times every thread count once)
WARMUP_ROUNDS = 5
MAX_THREADS = 4
BUSY_LOOP = "while True: pass"


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_counts(cpus: Optional[int] = None) -> List[int]:
    """1, 2, ... up to the usable cores (at most MAX_THREADS), always at least [1, 2]."""
    return list(range(1, max(2, min(cpus or usable_cpus(), MAX_THREADS)) + 1))


@contextmanager
def busy_cores(n: int) -> Iterator[int]:
    """`n` busy-looping Python processes for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(max(0, n))]
    try:
        time.sleep(0.2 if procs else 0)  # let them reach their loop
        yield len(procs)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _interleaved_p50(models: Dict[int, SharedModel], feeds: Sequence[Dict[str, np.ndarray]], raw: bool,
                     rounds: int) -> Dict[int, float]:
    samples: Dict[int, List[float]] = {n: [] for n in models}
    for r in range(WARMUP_ROUNDS + rounds):
        order = list(models) if r % 2 == 0 else list(reversed(list(models)))  # no count always goes first
        for n in order:
            feed = feeds[r % len(feeds)]
            t0 = time.perf_counter()
            models[n].infer(feed, raw_inputs=raw)
            if r >= WARMUP_ROUNDS:
                samples[n].append((time.perf_counter() - t0) * 1e3)
    return {n: round(statistics.median(s), 3) for n, s in samples.items()}


def sweep_backbone(bundle_dir: Path, manifest: Manifest, backend: str, frames: Sequence[np.ndarray],
                   rounds: int = ROUNDS, counts: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """{p50_ms_quiet, p50_ms_loaded: {threads: ms}, recommended, ...} for the bundle's backbone on `backend`."""
    counts = list(counts or thread_counts())
    models: Dict[int, SharedModel] = {}
    try:
        for n in counts:
            plan = plan_backends(manifest, bundle_dir, backend, RuntimeConfig(threads=n), fine=False)
            models[n] = load_stage(plan.stage("coarse_backbone"), manifest)  # type: ignore[arg-type]
        first = models[counts[0]]
        spec = first.inputs[0]
        pre = Preprocessor(manifest.preprocessing, spec,
                           declared_layout(manifest.artifacts[first.plan.artifact], spec.name, outputs=False))
        feeds = [{k: v.copy() for k, v in pre(f).items()} for f in frames]
        quiet = _interleaved_p50(models, feeds, pre.raw, rounds)
        with busy_cores(max(1, usable_cpus() - 1)) as busy:
            loaded = _interleaved_p50(models, feeds, pre.raw, rounds)
        best = min(counts, key=lambda n: (loaded[n], n))
        return {"backend": first.backend_label, "artifact": first.plan.file.name, "threads": counts,
                "p50_ms_quiet": {str(n): quiet[n] for n in counts}, "p50_ms_loaded": {str(n): loaded[n] for n in counts},
                "busy_processes": busy, "recommended": best, "rounds": rounds}
    finally:
        for m in models.values():
            m.close()


PIPELINE_ORDER = (1, 2, 2, 1)


def pipeline_sweep(source: Path, bundle: Optional[Path], backend: Optional[str]) -> Dict[str, Any]:
    """End-to-end fps of the runtime as deployed at 1 and 2 intra-op threads (module doc)."""
    from edge_vad.bench.subproc import child_args, child_timeout, run_child

    runs: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edge-vad-bench-threads-") as tmp:
        for i, n in enumerate(PIPELINE_ORDER):
            events = Path(tmp) / f"run{i}"
            r = run_child(child_args(source, bundle, backend) + ["--threads", str(n), "--events-dir", str(events)],
                          child_timeout(10_000), f"end-to-end at {n} thread(s)").result
            runs.append({"threads": n, "fps": r["fps"], "fps_cpu": r.get("fps_cpu")})
    fps = {n: round(statistics.mean(r["fps"] for r in runs if r["threads"] == n), 3) for n in sorted(set(PIPELINE_ORDER))}
    best = max(fps, key=lambda n: (fps[n], -n))
    return {"fps": {str(n): v for n, v in fps.items()}, "runs": runs, "recommended": best,
            "order": list(PIPELINE_ORDER)}


def thread_sweep(bundle_dir: Path, manifest: Manifest, frames: Sequence[np.ndarray], rounds: int = ROUNDS,
                 counts: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """The sweep for every CPU backend that can run one of the bundle's backbones here (see module doc)."""
    out: Dict[str, Any] = {"how": " ".join(__doc__.split("\n\n")[:2]).replace("\n", " "), "cpus": usable_cpus(),
                           "backends": {}}
    for backend in ("onnxruntime", "tflite"):
        has = any(backend in t.backends for t in manifest.targets.values())
        if not has:
            continue
        if not backend_status(backend).available:
            out["backends"][backend] = {"skipped": backend_status(backend).reason}
            continue
        out["backends"][backend] = sweep_backbone(bundle_dir, manifest, backend, frames, rounds, counts)
    return out
