"""Errors meant for people: the CLI prints `edge-vad: error: <message>` and exits non-zero."""

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


def require_module(module: str, install_hint: str):
    """Import an optional module or raise MissingDependency naming what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - message path tested via callers
        raise MissingDependency(f"'{module}' is not installed ({exc}); install it with: {install_hint}") from None
