"""The `edge-vad` command line. Commands live in small modules next to this one; anything
heavy (torch, the export toolchain) is imported inside the command that needs it."""

from __future__ import annotations

import sys
from typing import List, Optional

from edge_vad.errors import EdgeVadError


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: every EdgeVadError becomes one line and an exit code."""
    from edge_vad.cli.app import app

    try:
        app(args=argv, prog_name="edge-vad", standalone_mode=True)
    except EdgeVadError as exc:
        for line in str(exc).splitlines() or [exc.__class__.__name__]:
            print(f"edge-vad: error: {line}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("edge-vad: interrupted", file=sys.stderr)
        sys.exit(130)
