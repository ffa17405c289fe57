"""`edge-vad run` under real faults, as an operator meets them (issue 14): a full disk, broken and read-only
output folders, a missing extra, SIGKILL then restart, unreadable configs, Ctrl-C while a stream opens, and
where the README's first command puts its events."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path

import pytest

from edge_vad.runtime.events import read_events
from edge_vad_test_support import bundles, cli_runs
from edge_vad_test_support.cli_runs import ALWAYS_OPEN, Running, edge_vad, noise_video, one_error_line
from edge_vad_test_support.faults import fill_up, free_port, read_only, small_tmpfs, wait_for

MODELS_LOADED = "stage coarse_backbone:"  # logged once the models are loaded


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return bundles.any_bundle(tmp_path_factory)


@pytest.fixture()
def small_video(tmp_path: Path) -> Path:
    return cli_runs.small_video(tmp_path / "small.mp4")


def _config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(ALWAYS_OPEN + text)
    return path


# ----------------------------------------------------------------------------- case 1: disk full
def test_disk_full_no_broken_clip_whole_lines_and_exit_4(bundle_dir: Path, tmp_path: Path) -> None:
    video = noise_video(tmp_path / "noise.mp4", 60)  # a clip of noise needs MBs
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        events_dir = disk / "ev"
        events_dir.mkdir()
        fill_up(disk, leave_bytes=256 * 1024)  # room for the event lines and a snapshot, not for the clip
        proc = edge_vad("run", "--source", str(video), "--bundle", str(bundle_dir), "--config", str(_config(tmp_path)),
                        "--events-dir", str(events_dir), "--no-http")
        line = one_error_line(proc, "lost outputs")
        assert proc.returncode == 4 and "1 clip(s)" in line
        assert " E edge_vad.outputs: " in proc.stderr  # the loss itself is an ERROR line when it happens
        data = (events_dir / "events.jsonl").read_bytes()
        assert data.endswith(b"\n")
        events = [json.loads(raw) for raw in data.splitlines()]  # every line whole
        end = events[-1]
        assert end["type"] == "end" and end["clip"] is None and "not written completely" in end["clip_error"]
        assert not list((events_dir / "clips").glob("*.mp4"))  # no clip under a final name, no partial left
        (disk / "filler.bin").unlink()


# ----------------------------------------------------------------------------- cases 2 and 4: folders checked first
@pytest.mark.parametrize("case", ["clips-is-a-file", "report-read-only", "report-is-a-file", "events-read-only"])
def test_unusable_output_folders_fail_before_any_model_loads(case: str, bundle_dir: Path, small_video: Path,
                                                              tmp_path: Path) -> None:
    args = ["run", "--source", str(small_video), "--bundle", str(bundle_dir), "--no-http"]
    events_dir = tmp_path / "ev"
    if case == "clips-is-a-file":
        events_dir.mkdir()
        (events_dir / "clips").write_text("in the way")
        proc = edge_vad(*args, "--events-dir", str(events_dir))
        one_error_line(proc, f"clips folder {events_dir / 'clips'} is a file")
    elif case == "report-is-a-file":
        report = tmp_path / "report.txt"
        report.write_text("in the way")
        proc = edge_vad(*args, "--events-dir", str(events_dir), "--report", str(report))
        one_error_line(proc, "--report folder")
    else:
        with read_only(tmp_path / "ro") as ro:
            if case == "report-read-only":
                proc = edge_vad(*args, "--events-dir", str(events_dir), "--report", str(ro / "rep"))
                one_error_line(proc, "--report folder")
            else:
                proc = edge_vad(*args, "--events-dir", str(ro / "ev"))
                one_error_line(proc, "events folder")
        assert "Read-only file system" in proc.stderr
    assert MODELS_LOADED not in proc.stderr  # found before the models loaded, not after scoring


# ----------------------------------------------------------------------------- case 5: MQTT extra missing, broker down
BLOCK_PAHO = """
import sys
class _NoPaho:
    def find_spec(self, name, path=None, target=None):
        if name == "paho" or name.startswith("paho."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _NoPaho())
"""


def test_mqtt_without_paho_is_found_by_validate_config_and_before_models(bundle_dir: Path, small_video: Path,
                                                                         tmp_path: Path) -> None:
    cfg = tmp_path / "mqtt.toml"
    cfg.write_text("[mqtt]\nenabled = true\n")
    proc = edge_vad("validate-config", str(cfg), prelude=BLOCK_PAHO)
    assert proc.returncode == 3 and "paho-mqtt" in proc.stderr and "OK" not in proc.stdout, proc.stderr
    proc = edge_vad("run", "--source", str(small_video), "--bundle", str(bundle_dir), "--config", str(cfg),
                    "--events-dir", str(tmp_path / "ev"), "--no-http", prelude=BLOCK_PAHO)
    one_error_line(proc, "paho-mqtt")
    assert proc.returncode == 3 and MODELS_LOADED not in proc.stderr


def test_broker_down_for_the_whole_run_keeps_the_events_in_the_spool(bundle_dir: Path, small_video: Path,
                                                                     tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt.client", reason="needs the mqtt extra")
    cfg = _config(tmp_path, f"[mqtt]\nenabled = true\nport = {free_port()}\n")  # nothing listens there
    events_dir = tmp_path / "ev"
    proc = edge_vad("run", "--source", str(small_video), "--bundle", str(bundle_dir), "--config", str(cfg),
                    "--events-dir", str(events_dir), "--no-http")
    assert proc.returncode == 0, proc.stderr  # kept, not lost
    n = len(read_events(events_dir / "events.jsonl"))
    spooled = sorted((events_dir / "mqtt-spool").glob("*.json"))
    assert n >= 2 and len(spooled) == n
    assert f"{n} event(s) not acknowledged by the broker stay in the spool" in proc.stderr


# ----------------------------------------------------------------------------- case 7: SIGKILL, then restart
def test_sigkill_leftovers_are_cleaned_up_by_the_next_run(bundle_dir: Path, small_video: Path,
                                                          tmp_path: Path) -> None:
    events_dir = tmp_path / "ev"
    cfg = tmp_path / "long-clip.toml"  # the clip stays open (partial) while the run goes on
    cfg.write_text(ALWAYS_OPEN.replace("clip_post_roll_s = 0.5", "clip_post_roll_s = 600.0"))
    run = Running("run", "--source", str(small_video), "--loop", "--bundle", str(bundle_dir), "--config", str(cfg),
                  "--events-dir", str(events_dir), "--no-http")
    try:
        wait_for(lambda: run.proc.poll() is not None or list((events_dir / "clips").glob("*.partial.mp4")), 120,
                 "a partial clip")
        assert run.proc.poll() is None, run.stderr
        wait_for(lambda: (events_dir / "events.jsonl").is_file() and read_events(events_dir / "events.jsonl"), 30,
                 "the start record")
        run.proc.send_signal(signal.SIGKILL)
        run.wait()
    finally:
        run.kill()
    (partial,) = list((events_dir / "clips").glob("*.partial.mp4"))
    before = read_events(events_dir / "events.jsonl")
    event_id = before[0]["id"]
    assert not any(e["type"] == "end" for e in before)
    proc = edge_vad("run", "--source", str(small_video), "--bundle", str(bundle_dir), "--config",
                    str(_config(tmp_path)), "--events-dir", str(events_dir), "--no-http")
    assert proc.returncode == 0, proc.stderr
    assert f"event {event_id} of source 'small' was still open when the last run crashed" in proc.stderr
    assert partial.name in proc.stderr and not partial.exists()
    after = read_events(events_dir / "events.jsonl")
    closed = [e for e in after if e["id"] == event_id and e["type"] == "end"]
    assert len(closed) == 1 and closed[0]["end_reason"] == "crash_recovered"
    assert closed[0]["clip"] is None and closed[0]["clip_error"]
    assert closed[0]["seq"] == max(e["seq"] for e in before if e["id"] == event_id) + 1
    assert not list((events_dir / "clips").glob("*.partial.mp4"))


# ----------------------------------------------------------------------------- case 8: config files
@pytest.mark.parametrize("case", ["latin-1", "folder", "quoted-bool", "quoted-port"])
def test_bad_config_files_are_one_line(case: str, tmp_path: Path) -> None:
    if case == "latin-1":
        cfg = tmp_path / "c.toml"
        cfg.write_bytes("[gate]\n# café\n".encode("latin-1"))
        needle = "not UTF-8"
    elif case == "folder":
        cfg, needle = tmp_path, "is a folder"
    else:
        cfg = tmp_path / "c.toml"
        cfg.write_text('[mqtt]\nenabled = "yes"\n' if case == "quoted-bool" else "[mqtt]\nport = \"1883\"\n")
        needle = "mqtt.enabled = 'yes'" if case == "quoted-bool" else "mqtt.port = '1883'"
    for args in (("validate-config", str(cfg)), ("run", "--source", "x.mp4", "--config", str(cfg))):
        proc = edge_vad(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr


# ----------------------------------------------------------------------------- case 9: Ctrl-C, README command
def test_ctrl_c_while_an_rtsp_stream_opens_exits_130_at_once(bundle_dir: Path, tmp_path: Path) -> None:
    """A server that accepts the connection and never answers: the open would block for its 10 s timeout."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    url = f"rtsp://127.0.0.1:{server.getsockname()[1]}/cam"
    run = Running("run", "--source", url, "--bundle", str(bundle_dir), "--events-dir", str(tmp_path / "ev"),
                  "--no-http")
    try:
        wait_for(lambda: accepted, 60, "edge-vad to connect to the silent server")
        run.proc.send_signal(signal.SIGINT)
        code = run.wait(timeout=30)
    finally:
        run.kill()
        server.close()
    assert code == 130, run.stderr
    assert "cannot open the stream" not in run.stderr  # it did not sit out the open timeout
    assert "Traceback" not in run.stderr
    assert [line for line in run.lines if line.startswith("edge-vad: error:")] == [
        "edge-vad: error: SIGINT received while the sources were opening; nothing was run"]


def test_readme_first_command_writes_events_under_the_report_folder(bundle_dir: Path, small_video: Path,
                                                                     tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = edge_vad("run", "--source", str(small_video), "--bundle", str(bundle_dir), "--report", "out/", "--no-http",
                    cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["out"]  # no events/ in the current directory
    assert (cwd / "out" / "events" / "events.jsonl").is_file() and (cwd / "out" / "scores.csv").is_file()
