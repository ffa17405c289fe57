"""`edge-vad bench`: the CLI shell over edge_vad.bench.suite.run_bench (all the work happens there)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import typer

from edge_vad.bench.suite import MIN_ITERATIONS, BenchOptions, run_bench
from edge_vad.errors import EdgeVadError


def bench_command(target: str, json_out: Optional[Path], bundle: Optional[Path], source: Optional[Path],
                  iterations: int, warmup: int, soak: float, assert_reference: bool, skip_rwkv: bool,
                  device: str, skip_instructions: bool = False, cascade_bundle: Optional[Path] = None,
                  clip_cascade: bool = True) -> Dict[str, Any]:
    if iterations < MIN_ITERATIONS:
        raise EdgeVadError(f"--iterations {iterations}: steady-state figures need at least {MIN_ITERATIONS} "
                           "iterations after warm-up", exit_code=2)
    command = "edge-vad " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "edge-vad bench"
    opts = BenchOptions(target=target, json_path=json_out, bundle=bundle, source=source, iterations=iterations,
                        warmup=warmup, soak_minutes=soak, assert_reference=assert_reference, skip_rwkv=skip_rwkv,
                        device=device, command=command, skip_instructions=skip_instructions,
                        cascade_bundle=cascade_bundle, clip_cascade=clip_cascade)
    return run_bench(opts, say=typer.echo, progress=lambda m: typer.echo(f"bench: {m} ...", err=True))
