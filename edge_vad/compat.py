"""The few standard-library calls the runtime needs that Python 3.8 (JetPack 5) lacks, in one place.

The runtime supports Python 3.8-3.13 (README, "Python versions"); tests/test_python_versions.py checks the
package's source against 3.8 with vermin and runs `edge-vad run` on the oldest and the newest interpreter.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path


def package_dir(package: str) -> Path:
    """The folder of an installed (not zipped) package, for its package data."""
    if sys.version_info >= (3, 9):
        from importlib import resources

        return Path(str(resources.files(package)))  # novm (3.9+ branch)
    # importlib.resources.files is new in 3.9; a regular package on disk has the same folder in __file__
    return Path(importlib.import_module(package).__file__).parent  # pragma: no cover - Python 3.8 only


def remove_prefix(text: str, prefix: str) -> str:
    """str.removeprefix (3.9+)."""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def waitstatus_to_exitcode(status: int) -> int:
    """os.waitstatus_to_exitcode (3.9+): the exit code, or minus the signal number that ended the process."""
    if sys.version_info >= (3, 9):
        return os.waitstatus_to_exitcode(status)  # novm (3.9+ branch)
    if os.WIFSIGNALED(status):  # pragma: no cover - Python 3.8 only
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)  # pragma: no cover - Python 3.8 only
