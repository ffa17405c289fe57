"""`edge-vad models compile-edgetpu BUNDLE --out NEW_BUNDLE`: a thin shell over edge_vad.bundle.edgetpu_compile
(runs Google's edgetpu_compiler; needs no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape

from edge_vad.bundle.edgetpu_compile import compile_bundle, compile_notes
from edge_vad.bundle.verify import VerifyReport


def compile_edgetpu(bundle: str, out: Path, force: bool = False, min_runtime_version: Optional[int] = None,
                    console: Optional[Console] = None) -> VerifyReport:
    """Compile, then print one line per compiled model (how much the Edge TPU runs) and the new bundle's check."""
    report = compile_bundle(bundle, out, force=force, min_runtime_version=min_runtime_version)
    console = console or Console(stderr=True)
    for line in compile_notes(report.manifest):
        console.print(escape(line))
    console.print(escape(report.summary()))
    return report
