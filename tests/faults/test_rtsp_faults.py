"""Cases 3 and 6 of issue 14 with a real RTSP server (GStreamer's gst-rtsp-server on 127.0.0.1): a camera that
is down at start-up does not stop the other sources and is picked up when it comes; a frozen (SIGSTOP) and a
killed stream make /healthz 503 and /metrics show it down (fps 0, last-frame age growing) within the
configured stall age; the stream is reconnected when the server is back and the log's gap covers the outage."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from edge_vad_test_support import bundles
from edge_vad_test_support.cli_runs import Running, healthz, http_get, metric
from edge_vad_test_support.faults import RtspServer, free_port, wait_for

STALL_S = 2.0


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return bundles.any_bundle(tmp_path_factory)


def _cam(base: str) -> dict:
    return healthz(base)[1].get("sources", {}).get("cam", {})


def test_dead_camera_at_start_frozen_and_killed_stream(bundle_dir: Path, tmp_path: Path) -> None:
    server = RtspServer()  # skips with the reason where GStreamer's RTSP server is missing; not started yet
    rng = np.random.default_rng(0)
    video = bundles.write_video(tmp_path / "good.mp4", [rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
                                                        for _ in range(16)], 8.0)
    port = free_port()
    cfg = tmp_path / "two.toml"
    cfg.write_text(f"""
[[sources]]
name = "good"
uri = "{video}"
loop = true
[[sources]]
name = "cam"
uri = "{server.url}"
[fine]
enabled = false
[events]
clips = false
snapshots = false
[http]
port = {port}
stalled_after_s = {STALL_S}
""")
    base = f"http://127.0.0.1:{port}"
    run = Running("run", "--config", str(cfg), "--bundle", str(bundle_dir), "--events-dir", str(tmp_path / "ev"))
    try:
        # 1. the camera is down at start-up: the file source runs anyway, /healthz says which one is not ok
        wait_for(lambda: run.proc.poll() is not None or (metric(base, "edge_vad_frames_total", source="good") or 0) > 20,
                 120, "the good source to be scored")
        assert run.proc.poll() is None, run.stderr
        status, health = healthz(base)
        assert status == 503 and health["sources"]["cam"]["state"] == "connecting"
        assert health["sources"]["good"]["ok"] is True
        assert run.saw("source 'cam': cannot be opened at start-up")
        # 2. the camera comes up: picked up by the start-up retries (same backoff as a lost stream)
        server.start()
        wait_for(lambda: _cam(base).get("ok"), 60, "the camera to open")
        assert http_get(base + "/healthz")[0] == 200
        assert (metric(base, "edge_vad_source_up", source="cam")) == 1
        # 3. the server freezes: not ok once no frame came for stalled_after_s, fps 0 (not the old rate)
        server.freeze()
        frozen_at = time.monotonic()
        wait_for(lambda: not _cam(base).get("ok", True), 30, "/healthz to see the frozen stream")
        assert http_get(base + "/healthz")[0] == 503
        assert metric(base, "edge_vad_fps", source="cam") == 0.0
        assert metric(base, "edge_vad_source_up", source="cam") == 0
        assert metric(base, "edge_vad_source_last_frame_age_seconds", source="cam") >= STALL_S
        # 4. ... and dies; it comes back after a while, on the same port
        wait_for(lambda: run.saw("source 'cam'") and run.saw("stopped delivering frames"), 60,
                 "the grabber to give up on the frozen stream")
        server.kill()
        time.sleep(3)
        server.start()
        back_at = time.monotonic()
        wait_for(lambda: _cam(base).get("ok"), 90, "the camera to reconnect")
        assert metric(base, "edge_vad_source_reconnects_total", source="cam") >= 1
        line = wait_for(lambda: run.saw("source 'cam': reconnected"), 10, "the reconnect log line")
        gap = float(re.search(r"after ([0-9.]+) s without frames", line).group(1))
        assert gap >= back_at - frozen_at - 0.5, line  # the whole outage, not a part of it
        assert metric(base, "edge_vad_frames_total", source="good") > 40  # the file source never stopped
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, run.stderr
    finally:
        run.kill()
        server.kill()
    assert "Traceback" not in run.stderr
