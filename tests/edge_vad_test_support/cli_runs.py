"""`edge-vad` as an operator runs it, for the fault suite: a subprocess, its stderr collected as it comes, HTTP
polls of /healthz and /metrics, and small inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

MAIN = "from edge_vad.cli import main\nmain()\n"
ALWAYS_OPEN = """
[gate]
smoothing_frames = 1
on_threshold = 0.000001
off_threshold = 0.0000001
min_open_s = 0.0
cooldown_s = 0.0
[events]
clip_pre_roll_s = 0.5
clip_post_roll_s = 0.5
"""


def edge_vad(*args: str, timeout: float = 240, prelude: str = "", cwd: Optional[Path] = None,
             env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", prelude + MAIN, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess, needle: str) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edge-vad: error:")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]
    return errors[0]


class Running:
    """`edge-vad ...` in the background; `lines` grows as it logs."""

    def __init__(self, *args: str, cwd: Optional[Path] = None):
        self.proc = subprocess.Popen([sys.executable, "-c", MAIN, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def saw(self, needle: str) -> Optional[str]:
        return next((line for line in list(self.lines) if needle in line), None)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(5)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def http_get(url: str) -> Tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def healthz(base: str) -> Tuple[int, dict]:
    status, body = http_get(base + "/healthz")
    return status, (json.loads(body) if status in (200, 503) else {})


def metric(base: str, name: str, **labels: str) -> Optional[float]:
    status, body = http_get(base + "/metrics")
    if status != 200:
        return None
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.decode().splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def noise_video(path: Path, n: int, size=(180, 320), fps: float = 10.0) -> Path:
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    for _ in range(n):
        writer.write(rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8))
    writer.release()
    return path


def small_video(path: Path) -> Path:
    """16 frames of blurred noise, 128 x 72 at 8 fps: a file source that loads and scores in moments."""
    from edge_vad_test_support.bundles import write_video

    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (72, 128, 3), dtype=np.uint8), (9, 9), 3) for _ in range(16)]
    return write_video(path, frames, 8.0)
