"""`edge-vad models build-engines`: the CLI shell over edge_vad.runtime.engine_build (one line per engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edge_vad.runtime.engine_build import build_engines as build


def build_engines(bundle: Optional[Path], precision: Optional[str], config: Optional[Path], rebuild: bool) -> None:
    for engine in build(bundle, precision, config, rebuild):
        typer.echo(engine.describe())
