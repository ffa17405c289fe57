"""`edge-vad bench`: every section in order, one result dict (the JSON), then the files and the --assert verdict.

    result = run_bench(BenchOptions(target="jetson-nano", json_path=Path("out.json")), say=print)

Order: bad input first (target, --assert reference, bundle, source, cascade bundle: one line, exit code 2), then
the first line (on the target or not), static budgets, per-stage latency, the clip pre-roll's cost per frame,
instructions per coarse frame
(callgrind), intra-op threads (1 vs more, quiet and loaded), end to end (+ soak), cascade vs always-on (a clip-vit-b16 bundle, and the shipped one), the PyTorch
sections, the files. Each measured section records how it was measured next to its figures.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from edge_vad.bench import assert_ref, cascade, clip_cascade, end_to_end, instructions, latency, report, stream, \
    preroll_cost, threads, torch_sections
from edge_vad.bench.hostinfo import describe_host, describe_short
from edge_vad.bench.profiles import detect, load_profile
from edge_vad.bench.static_budgets import COUNTING_RULE, check, model_sizes, recount, static_budgets
from edge_vad.bundle import resolve_bundle_dir, verify_bundle
from edge_vad.config import RuntimeConfig
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.loaded_models import loadable_file
from edge_vad.runtime.threads import resolve_threads

log = logging.getLogger("edge_vad.bench")

SCHEMA = "edge-vad-bench/1"
MIN_ITERATIONS = 200  # issue 6: steady state over at least 200 iterations
LATENCY_FRAMES = 16  # distinct real frames cycled through by the latency loops
DEVICES = ("cpu", "cuda")
BAD_INPUT = 2


@dataclass(frozen=True)
class BenchOptions:
    target: str = "host"
    json_path: Optional[Path] = None
    bundle: Optional[Path] = None
    source: Optional[Path] = None
    iterations: int = MIN_ITERATIONS
    warmup: int = 20
    soak_minutes: float = 0.0
    assert_reference: bool = False
    skip_rwkv: bool = False
    skip_instructions: bool = False
    cascade_bundle: Optional[Path] = None  # a clip-vit-b16 bundle for the cascade (default: a random-weight one)
    clip_cascade: bool = True  # False: only the shipped bundle's cascade (no clip-vit-b16 bundle built or run)
    device: str = "cpu"
    results_dir: Optional[Path] = None  # where files go without --json (default ./benchmarks/results)
    root: Path = Path("/")  # file-system root for target detection (tests use a fake one)
    command: str = "edge-vad bench"
    reference_dirs: Optional[tuple] = None  # where --assert looks (default: assert_ref.reference_dirs())


def _bad(message: str) -> EdgeVadError:
    return EdgeVadError(message, exit_code=BAD_INPUT)


def _inputs(opts: BenchOptions):
    """Check everything the user passed before measuring anything; bad input is one line, exit code 2."""
    if opts.device not in DEVICES:
        raise _bad(f"--device {opts.device!r} is not one of {', '.join(DEVICES)} (it applies to the PyTorch sections)")
    if opts.iterations < 1 or opts.warmup < 0 or opts.soak_minutes < 0:
        raise _bad("--iterations must be >= 1, --warmup and --soak >= 0")
    profile = load_profile(opts.target)
    detection = detect(profile, opts.root)
    reference = None
    if opts.assert_reference:
        path = assert_ref.find_reference(opts.target, opts.reference_dirs)
        if not detection.on_target:
            raise _bad(f"--assert compares with figures measured on a {opts.target}, and this machine is not one "
                       f"({detection.reason}); drop --assert or run bench on the board")
        reference = (path, assert_ref.load_reference(path))
    try:
        bundle_dir = resolve_bundle_dir(opts.bundle)
        manifest = verify_bundle(bundle_dir).manifest
    except EdgeVadError as exc:
        raise _bad(str(exc)) from None
    source = Path(opts.source) if opts.source is not None else stream.default_source()
    if not source.is_file():
        raise _bad(f"--source {source}: no such video file; pass a video (labels, if any, beside it as <stem>.json)")
    labels = stream.read_labels(source)
    if opts.cascade_bundle is not None:
        try:
            clip_cascade.cascade_bundle(opts.cascade_bundle, progress=log.info)
        except EdgeVadError as exc:
            raise _bad(str(exc)) from None
    return profile, detection, reference, bundle_dir, manifest, source, labels


def run_bench(opts: BenchOptions, say: Callable[[str], Any] = print,
              progress: Callable[[str], Any] = lambda m: log.info("%s", m)) -> Dict[str, Any]:
    """Run every section; returns the result (also written to the files). Raises EdgeVadError for bad input
    (exit 2) and for --assert failures (exit 1, one line per figure)."""
    started = time.perf_counter()
    profile, detection, reference, bundle_dir, manifest, source, labels = _inputs(opts)
    first = report.first_line(opts.target, detection)
    say(first)
    host = describe_host(opts.root)
    r: Dict[str, Any] = {
        "schema": SCHEMA, "target": opts.target, "on_target": detection.on_target, "first_line": first,
        "detection": {"on_target": detection.on_target, "reason": detection.reason},
        "host": host, "host_summary": describe_short(host),
        "run": {"command": opts.command, "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "bundle": str(bundle_dir), "bundle_created_at": manifest.created_at, "source": str(source),
                "labels": str(labels.path) if labels else None, "iterations": opts.iterations, "warmup": opts.warmup,
                "soak_minutes": opts.soak_minutes, "device": opts.device, "skip_rwkv": opts.skip_rwkv,
                "skip_instructions": opts.skip_instructions, "clip_cascade": opts.clip_cascade},
        "profile": {"description": profile.description, "preferred_backends": profile.preferred_backends,
                    "budget_source": profile.budgets.source, "reference": profile.reference.model_dump()},
    }

    progress("static budgets")
    fine_ref = torch_sections.fine_reference_budget()
    r["budgets"] = static_budgets(manifest, profile, None if fine_ref.get("skipped") else fine_ref)
    r["static"] = {"counting_rule": COUNTING_RULE, "recount": recount(bundle_dir, manifest),
                   "model_sizes": model_sizes(manifest), "fine_reference": fine_ref}

    backend, why = latency.choose_backend(manifest, profile)
    progress(f"per-stage latency on {backend} ({opts.iterations} iterations)")
    frames = stream.read_frames(source, LATENCY_FRAMES)
    lat = latency.measure_stages(bundle_dir, manifest, backend, frames, opts.iterations, opts.warmup)
    r["latency"] = {"backend": backend, "label": why if detection.on_target else f"measured on this machine, not on "
                    f"a {opts.target}: {why}", "threads": lat["threads"], "iterations": opts.iterations,
                    "warmup": opts.warmup, "frames": f"{len(frames)} real frames of {source.name}, cycled"}
    r["stages"] = lat["stages"]
    r["coarse_frame_to_score"] = lat["coarse_frame_to_score"]
    r["preroll"] = preroll_cost.preroll_cost(frames, opts.iterations, opts.warmup)
    r["instructions"] = _instructions(opts, bundle_dir, manifest, backend, source, progress)
    progress("intra-op threads: the backbone at 1 vs more, interleaved, quiet and under load")
    r["threads"] = threads.thread_sweep(bundle_dir, manifest, frames, rounds=max(20, opts.iterations // 2))

    progress("end to end on the stream (child process)")
    e2e = end_to_end.end_to_end(source, opts.bundle, backend)
    if opts.soak_minutes > 0:
        progress(f"soak: {opts.soak_minutes} min of video in a loop")
        fps = e2e["decode"].get("media_fps") or (labels.fps if labels else None)
        e2e["soak"] = end_to_end.soak(source, opts.bundle, opts.soak_minutes, fps, e2e["decode"]["frames"], backend)
    else:
        e2e["soak"] = {"skipped": "--soak not given (pass --soak MINUTES of video, e.g. 10)"}
    r["end_to_end"] = e2e
    progress("intra-op threads: the pipeline at 1 and 2 threads (four child processes)")
    r["threads"]["pipeline"] = threads.pipeline_sweep(source, opts.bundle, backend)
    r["threads"]["recommended"] = r["threads"]["pipeline"]["recommended"]
    r["threads"]["runtime_default"] = dict(zip(("threads", "source"), resolve_threads(None, opts.root)))
    if profile.budgets.max_peak_rss_mb is not None:
        r["budgets"]["peak_rss_mb"] = check(profile.budgets.max_peak_rss_mb, e2e["peak_rss_mb"], "MB",
                                            "peak RSS of the runtime on the stream",
                                            note="" if detection.on_target else "measured on this machine")

    progress("cascade vs always-on, shipped bundle (two child processes)")
    shipped = cascade.cascade_vs_always_on(source, labels, opts.bundle, backend, e2e["frames"])
    cv = _clip_cascade(opts, source, labels, e2e["frames"], progress)
    cv["shipped_bundle"] = shipped
    r["cascade_vs_always_on"] = cv

    progress("PyTorch sections")
    r["fine_torch_latency"] = torch_sections.fine_torch_latency(opts.device, opts.iterations, opts.warmup)
    r["rwkv_vs_transformer"] = torch_sections.rwkv_vs_transformer(opts.device, opts.skip_rwkv)
    r["run"]["duration_s"] = round(time.perf_counter() - started, 1)

    failures = None
    if reference is not None:
        path, ref = reference
        failures = assert_ref.compare(r, ref)
        r["assert"] = {"reference": str(path), "tolerance": ref.get("tolerance", assert_ref.TOLERANCE),
                       "failures": failures, "pass": not failures}
    report.write_outputs(r, opts.json_path, opts.results_dir)
    say(report.text_report(r))
    say("files: " + ", ".join(r["files"].values()))
    if failures:
        raise EdgeVadError("--assert: outside tolerance of " + str(reference[0]) + ":\n" + "\n".join(failures))
    if reference is not None:
        say(f"--assert: every figure within +-{r['assert']['tolerance']:.0%} of {reference[0]}")
    return r


def _instructions(opts: BenchOptions, bundle_dir: Path, manifest: Any, backend: str, source: Path,
                  progress: Callable[[str], Any]) -> Dict[str, Any]:
    if opts.skip_instructions:
        return {"skipped": "--skip-instructions was given"}
    if instructions.valgrind_path() is None:
        return {"skipped": instructions.VALGRIND_HINT}
    progress("instructions per coarse frame (callgrind; a few minutes)")
    plan = plan_backends(manifest, bundle_dir, backend, RuntimeConfig(threads=1), fine=False)
    files = {s.stage: loadable_file(s, manifest) for s in plan.stages}
    return instructions.instructions_per_frame(bundle_dir, backend, files, source)


def _clip_cascade(opts: BenchOptions, source: Path, labels: Any, frames: int,
                  progress: Callable[[str], Any]) -> Dict[str, Any]:
    """The cascade section on a clip-vit-b16 bundle (see edge_vad.bench.clip_cascade), or why it was skipped."""
    if not opts.clip_cascade:
        return {"skipped": "--no-clip-cascade was given; see shipped_bundle"}
    bundle, where = clip_cascade.cascade_bundle(opts.cascade_bundle, progress)
    if bundle is None:
        return {"skipped": where}
    progress(f"cascade vs always-on, {clip_cascade.ENCODER} bundle (two child processes)")
    cv = cascade.cascade_vs_always_on(source, labels, bundle, None, frames)
    random = opts.cascade_bundle is None
    cv.update({"bundle": str(bundle), "bundle_source": where, "encoder": clip_cascade.ENCODER,
               "weights": clip_cascade.WEIGHTS_LABEL if random else "as exported by the user"})
    if random:
        for key in ("auc_cascade", "auc_always_on", "auc_coarse_only"):
            cv[key] = None
        cv["auc_note"] = "not reported: the fine stage has random weights (see shipped_bundle for the real model)"
    return cv
