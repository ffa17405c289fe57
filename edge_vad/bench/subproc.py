"""Run `python -m edge_vad.bench.child` in its own process and collect its JSON and its peak RSS.

Peak RSS: the child's own VmHWM (/proc/self/status, read by the child at the end of its run) where there is a
/proc. The kernel's ru_maxrss (os.wait4) is kept only as the fallback elsewhere, because on Linux it also
counts the forked copy of the PARENT before exec (exec_mmap folds the old mm's high-water mark into it): with
bench's own models in memory it read 452 MB for a run whose VmHWM was 168 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_vad.compat import waitstatus_to_exitcode
from edge_vad.errors import EdgeVadError

CHILD_MODULE = "edge_vad.bench.child"
POLL_S = 0.05
MIN_TIMEOUT_S = 120.0
SLOWEST_FPS = 1.0  # a child slower than one frame per second is considered hung


@dataclass
class ChildRun:
    returncode: int
    peak_rss_mb: Optional[float]
    wall_s: float
    result: Dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""
    peak_rss_source: str = ""


def maxrss_mb(ru_maxrss: int) -> float:
    return round(ru_maxrss / (2**20 if sys.platform == "darwin" else 1024.0), 2)


def child_args(source: Path, bundle: Optional[Path], backend: Optional[str]) -> List[str]:
    """The child's --source / --bundle / --backend arguments."""
    args = ["--source", str(source)]
    if bundle is not None:
        args += ["--bundle", str(bundle)]
    if backend:
        args += ["--backend", backend]
    return args


def child_timeout(frames: int) -> float:
    """Seconds a child run over `frames` frames may take before it counts as hung."""
    return MIN_TIMEOUT_S + frames / SLOWEST_FPS


def run_child(args: List[str], timeout_s: float, what: str) -> ChildRun:
    """Run the child with `args` (plus --json), wait for it (killing it after timeout_s), read its JSON."""
    if not hasattr(os, "wait4"):  # pragma: no cover - Windows
        raise EdgeVadError("edge-vad bench needs os.wait4 (Linux or macOS) to measure the run's peak RSS")
    with tempfile.TemporaryDirectory(prefix="edge-vad-bench-") as tmp:
        out_json = Path(tmp) / "child.json"
        err_path = Path(tmp) / "stderr.txt"
        env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR", PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        with open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", CHILD_MODULE, *args, "--json", str(out_json)],
                                    stdout=subprocess.DEVNULL, stderr=err, env=env)
            status, rusage = _wait(proc, timeout_s)
        wall = time.perf_counter() - t0
        code = waitstatus_to_exitcode(status) if status is not None else -9
        proc.returncode = code  # reaped by wait4: tell Popen so it does not wait again
        tail = err_path.read_text(errors="replace")[-2000:]
        result: Dict[str, Any] = {}
        if out_json.is_file():
            try:
                result = json.loads(out_json.read_text())
            except json.JSONDecodeError:
                result = {}
    peak = result.get("vmhwm_mb")
    source = "VmHWM of the child (/proc/self/status)"
    if peak is None and rusage is not None:
        peak, source = maxrss_mb(rusage.ru_maxrss), "ru_maxrss from os.wait4 (includes the pre-exec fork of bench)"
    run = ChildRun(code, peak, round(wall, 3), result, tail, source)
    if status is None:
        raise EdgeVadError(f"bench: the {what} run did not finish within {timeout_s:.0f} s and was stopped")
    if code != 0 or result.get("error"):
        reason = result.get("error") or (tail.strip().splitlines() or [f"exit code {code}"])[-1]
        raise EdgeVadError(f"bench: the {what} run failed: {reason}")
    return run


def _wait(proc: subprocess.Popen, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, rusage
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            return None, None
        time.sleep(POLL_S)
