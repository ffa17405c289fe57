"""`edge-vad run` as a user runs it: a real subprocess, a real bundle, real files.

- a file source with --report (in an interpreter where importing torch fails: the runtime needs none);
- SIGTERM on a looping file source with /healthz, /metrics and sd_notify: exit 0 within 5 s, the open event
  ended, its clip complete on disk;
- bad input: each a single `edge-vad: error:` line on stderr, a non-zero exit and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from edge_vad.sources import open_source
from edge_vad_test_support import bundles, cli_runs
from edge_vad_test_support.cli_runs import ALWAYS_OPEN
from edge_vad_test_support.no_torch import BLOCK_TORCH

STOP_BUDGET_S = 5.0  # SIGTERM -> exit, the budget (systemd TimeoutStopSec is 10)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    return bundles.any_bundle(tmp_path_factory)


@pytest.fixture()
def small_video(tmp_path: Path) -> Path:
    return cli_runs.small_video(tmp_path / "small.mp4")


def edge_vad(*args: str, env=None, timeout: float = 240, block_torch: bool = False) -> subprocess.CompletedProcess:
    code = (BLOCK_TORCH if block_torch else "") + "from edge_vad.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edge-vad: error:")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]
    return errors[0]


# ----------------------------------------------------------------------------- the main job
def test_run_file_writes_report_events_and_logs_the_plan(bundle_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    stream = bundles.stitched_stream(shared_data, tmp_path / "stream.mp4", labels=(0, 1), fps=8.0)
    n = len(stream.frame_labels)
    cfg = tmp_path / "always.toml"
    cfg.write_text(ALWAYS_OPEN)
    proc = edge_vad("run", "--source", str(stream.path), "--bundle", str(bundle_dir), "--config", str(cfg),
                    "--report", str(tmp_path / "rep"), "--events-dir", str(tmp_path / "ev"), "--no-http",
                    block_torch=True)
    assert proc.returncode == 0, proc.stderr
    # the log says what was opened and which backend runs each stage
    assert "opened file" in proc.stderr and "320x180 @ 8 fps" in proc.stderr
    assert "stage coarse_backbone:" in proc.stderr and "on onnxruntime (CPUExecutionProvider)" in proc.stderr
    assert "stage fine_head:" in proc.stderr
    rep = tmp_path / "rep"
    lines = (rep / "scores.csv").read_text().splitlines()
    assert lines[0] == "frame,time_s,coarse_score,gate_open,fine_class,smoothed_score"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(n))
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows) and all(r[3] == "1" for r in rows)
    assert rows[-1][4] != ""  # the fine stage named a class while the gate was open
    assert (rep / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [json.loads(line) for line in (rep / "events.jsonl").read_text().splitlines()]
    assert events == [json.loads(line) for line in (tmp_path / "ev" / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events][0] == "start" and events[-1]["type"] == "end"
    end = events[-1]
    assert end["end_frame"] == n - 1 and end["frames"] == n and set(end["fine"]) >= {"class", "probs", "description",
                                                                                     "top_snippets"}
    assert abs(sum(end["fine"]["probs"].values()) - 1.0) < 1e-6
    assert Path(end["clip"]).is_file() and Path(end["snapshot"]).is_file()
    assert not list(rep.glob(".*partial*")) and not list((tmp_path / "ev" / "clips").glob("*.partial*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _datagrams(sock: socket.socket, until: str, timeout_s: float) -> List[str]:
    got: List[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
        if any(until in g for g in got):
            break
    return got


def test_sigterm_ends_the_event_flushes_the_clip_and_exits_zero(bundle_dir: Path, small_video: Path,
                                                                 tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "live.toml"
    cfg.write_text(ALWAYS_OPEN + f"[http]\nenabled = true\nport = {port}\n")
    notify_path = Path(tempfile.mkdtemp(prefix="evn")) / "notify.sock"  # AF_UNIX paths must stay short
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    code = "from edge_vad.cli import main\nmain()\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--source", str(small_video), "--loop", "--bundle",
                             str(bundle_dir), "--config", str(cfg), "--events-dir", str(tmp_path / "ev")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
    try:
        assert any("READY=1" in d for d in _datagrams(notify, "READY=1", 120)), "no READY=1 from the service"
        url = f"http://127.0.0.1:{port}"
        frames = 0.0
        deadline = time.monotonic() + 60
        while frames < 20 and time.monotonic() < deadline:  # past one loop of the 16-frame file
            text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
            frames = sum(float(line.split()[-1]) for line in text.splitlines()
                         if line.startswith("edge_vad_frames_total{"))
            time.sleep(0.2)
        assert frames >= 20, "the pipeline did not process frames"
        health = json.loads(urllib.request.urlopen(url + "/healthz", timeout=5).read())
        assert health["status"] == "ok" and health["sources"]["small"]["state"] == "open"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert elapsed < STOP_BUDGET_S, f"stop took {elapsed:.1f} s"
    assert "Traceback" not in stderr
    later = _datagrams(notify, "STOPPING=1", 2)
    notify.close()
    assert any("STOPPING=1" in d for d in later)
    assert any("WATCHDOG=1" in d for d in later), "the main loop never pinged the watchdog (WatchdogSec=0.4 s)"
    events = [json.loads(line) for line in (tmp_path / "ev" / "events.jsonl").read_text().splitlines()]
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"
    assert events[-1]["end_frame"] >= 19  # it looped: indices keep counting past the file's 16 frames
    clip = Path(events[-1]["clip"])
    assert clip.is_file() and clip.stat().st_size > 0
    assert not list((tmp_path / "ev" / "clips").glob("*.partial*"))
    cap = cv2.VideoCapture(str(clip))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= 20
    cap.release()


# ----------------------------------------------------------------------------- bad input
def _tampered(bundle: Path, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(bundle, tmp_path / "tampered"))
    target = copy / "qacm.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different
    target.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("case", ["camera", "undecodable", "missing-bundle", "tampered-bundle", "bad-config",
                                  "tensorrt", "edgetpu", "both-sources"])
def test_bad_input_is_one_line_and_a_nonzero_exit(case: str, bundle_dir: Path, small_video: Path,
                                                  tmp_path: Path) -> None:
    base = ["run", "--no-http", "--events-dir", str(tmp_path / "ev")]
    src = ["--source", str(small_video)]
    if case == "camera":
        if Path("/dev/video9").exists():
            pytest.skip("this machine has a /dev/video9")
        proc = edge_vad(*base, "--camera", "/dev/video9", "--bundle", str(bundle_dir))
        assert_one_line_error(proc, "/dev/video9: no such camera")
    elif case == "undecodable":
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(np.random.default_rng(2).integers(0, 256, 8192, dtype=np.uint8).tobytes())
        assert_one_line_error(edge_vad(*base, "--source", str(bad), "--bundle", str(bundle_dir)),
                              "no frame could be decoded")
    elif case == "missing-bundle":
        assert_one_line_error(edge_vad(*base, *src, "--bundle", str(tmp_path / "nope")), "not a folder")
    elif case == "tampered-bundle":
        line = assert_one_line_error(edge_vad(*base, *src, "--bundle", str(_tampered(bundle_dir, tmp_path))),
                                     "qacm.onnx sha256 mismatch")
        assert "expected" in line and "found" in line
    elif case == "bad-config":
        cfg = tmp_path / "bad.toml"
        cfg.write_text("[gate]\non_threshold = 2.0\n")
        assert_one_line_error(edge_vad(*base, *src, "--bundle", str(bundle_dir), "--config", str(cfg)),
                              "gate.on_threshold = 2.0")
    elif case == "tensorrt":
        from edge_vad.backends import backend_status

        if backend_status("tensorrt").available:
            pytest.skip("TensorRT is installed here")
        proc = edge_vad(*base, *src, "--bundle", str(bundle_dir), "--backend", "tensorrt")
        assert_one_line_error(proc, "backend 'tensorrt' is unavailable: tensorrt")
        assert proc.returncode == 3  # MissingDependency
    elif case == "edgetpu":
        from edge_vad.backends import backend_status

        if backend_status("edgetpu").available:
            pytest.skip("an Edge TPU runtime is installed here")
        proc = edge_vad(*base, *src, "--bundle", str(bundle_dir), "--backend", "edgetpu")
        line = assert_one_line_error(proc, "backend 'edgetpu' is unavailable")
        assert "libedgetpu" in line or "ai_edge_litert" in line
    else:
        assert_one_line_error(edge_vad(*base, *src, "--camera", "/dev/video0", "--bundle", str(bundle_dir)),
                              "not both")


def test_truncated_video_scores_frames_before_the_damage(bundle_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """A recording cut off midway (real clip re-encoded as MKV, then truncated): the frames before the damage
    are scored and reported, and the run still says, in one line, that the file is damaged."""
    clip = sorted((shared_data / "fight-surv" / "fight").glob("*.mp4"))[0]
    with open_source(str(clip), width=320, height=180) as src:
        real = [f.image for f in src.frames()]
        fps = src.info.fps
    path = bundles.write_video(tmp_path / "recording.mkv", real, fps)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    proc = edge_vad("run", "--source", str(path), "--bundle", str(bundle_dir), "--report", str(tmp_path / "rep"),
                    "--events-dir", str(tmp_path / "ev"), "--no-http")
    assert_one_line_error(proc, "damaged or truncated")
    rows = (tmp_path / "rep" / "scores.csv").read_text().splitlines()[1:]
    assert 0 < len(rows) < len(real)
    assert [int(r.split(",")[0]) for r in rows] == list(range(len(rows)))
