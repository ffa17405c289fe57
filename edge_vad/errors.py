"""Errors meant for people: the CLI prints `edge-vad: error: <message>` and exits non-zero.

Exit codes of `edge-vad` (README "Faults and recovery", `edge-vad run --help`):
    0    done (or stopped by SIGTERM / SIGINT while running)
    1    bad input or a fault that stopped the run (one `edge-vad: error:` line says which)
    2    bad command-line usage
    3    a library the command needs is not installed (MissingDependency)
    4    the run finished but lost outputs: a clip, snapshot, event line, MQTT event or report could not be
         written (OutputsLost; `[events] fail_on_lost_outputs = false` makes it 0)
    130  interrupted (Ctrl-C) before the run started
"""

from __future__ import annotations


class EdgeVadError(Exception):
    """A problem the user can fix. The message says what is wrong and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(EdgeVadError):
    """An invalid config file: the message names the file, the key path and the bad value."""


class MissingDependency(EdgeVadError):
    """An optional library is not installed; the message names the package or extra."""

    exit_code = 3


EXIT_OUTPUTS_LOST = 4
EXIT_INTERRUPTED = 130


class OutputsLost(EdgeVadError):
    """The run went to its end, but some outputs could not be written; the message counts them by kind."""

    exit_code = EXIT_OUTPUTS_LOST


def require_module(module: str, install_hint: str):
    """Import an optional module or raise MissingDependency naming what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - message path tested via callers
        raise MissingDependency(f"'{module}' is not installed ({exc}); install it with: {install_hint}") from None
