"""`edge-vad run`: the CLI shell over edge_vad.runtime.runner.run (all the work happens there)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edge_vad.runtime.runner import RunOptions, RunSummary, run


def run_command(source: Optional[str] = None, camera: Optional[str] = None, config: Optional[Path] = None,
                bundle: Optional[Path] = None, backend: Optional[str] = None, stride: Optional[int] = None,
                width: Optional[int] = None, height: Optional[int] = None, fps: Optional[float] = None,
                loop: bool = False, report: Optional[Path] = None, events_dir: Optional[Path] = None,
                no_http: bool = False, precision: Optional[str] = None) -> RunSummary:
    """Run the cascade; print one summary line per source on stderr. Errors are EdgeVadError (one line)."""
    summary = run(RunOptions(source=source, camera=camera, config=config, bundle=bundle, backend=backend,
                             stride=stride, width=width, height=height, fps=fps, loop=loop, report=report,
                             events_dir=events_dir, no_http=no_http, precision=precision))
    for r in summary.results:
        events = r.events.get("start", 0)
        typer.echo(f"{r.source}: {r.frames_scored} frames scored ({r.fps:.1f} fps), {events} event(s), "
                   f"{r.fine_dropped_frames} fine frames dropped"
                   + (f"; report in {summary.reports[r.source]['scores'].parent}" if r.source in summary.reports else ""),
                   err=True)
    return summary
