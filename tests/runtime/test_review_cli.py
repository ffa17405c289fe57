"""`edge-vad events` (list and follow, like journalctl) and `edge-vad review` (the page for a recorded folder)."""

from __future__ import annotations

import io
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_vad.cli.events_cmd import events, format_short, parse_since
from edge_vad.errors import EdgeVadError
from edge_vad_test_support.mosquitto import free_port, wait_port

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def rec(event_id: str, kind: str, source: str, minutes_ago: float, **extra) -> dict:
    when = (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds")
    record = {"id": event_id, "type": kind, "seq": {"start": 0, "update": 1, "end": 2}[kind], "source": source,
              "start_time": when, "emitted_at": when, "start_s": 1.0, "peak_score": 0.91, "fine": None,
              "clip": None, "snapshot": None}
    record.update(extra)
    return record


def write(path: Path, *records, tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        for r in records:
            fh.write((json.dumps(r) + "\n").encode())
        fh.write(tail)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from edge_vad.cli import main\nmain()\n", *args],
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edge-vad: error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


# ----------------------------------------------------------------------------- events
def test_since_understands_journalctl_style_times():
    now = datetime(2026, 12, 2, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("2h ago", now) == now - timedelta(hours=2)
    assert parse_since("-1d", now) == now - timedelta(days=1)
    assert parse_since("today", now) == datetime(2026, 12, 2, tzinfo=now.tzinfo)
    assert parse_since("yesterday", now) == datetime(2026, 12, 1, tzinfo=now.tzinfo)
    assert parse_since("2026-12-02T10:00:00+00:00", now) == datetime(2026, 12, 2, 10, tzinfo=timezone.utc)
    assert parse_since("2026-12-02 10:00", now).tzinfo is not None  # naive: local time
    with pytest.raises(EdgeVadError, match="not a time"):
        parse_since("last tuesday", now)


def test_events_lists_filters_and_skips_a_torn_last_line(tmp_path: Path, caplog):
    path = tmp_path / "ev" / "events.jsonl"
    write(path, rec("aaaaaaaa-1", "start", "door", 120),
          rec("aaaaaaaa-1", "end", "door", 119, end_s=6.5, clip="clips/aaaaaaaa-1.mp4",
              fine={"class": "fighting", "probs": {"fighting": 0.97}}),
          rec("bbbbbbbb-2", "start", "yard", 5), tail=b'{"id": "cccccccc-3", "ty')
    out = io.StringIO()
    assert events(tmp_path / "ev", out=out) == 3
    lines = out.getvalue().splitlines()
    assert [line.split()[2:4] for line in lines] == [["door", "start"], ["door", "end"], ["yard", "start"]]
    assert "fighting 97%" in lines[1] and "5.5 s" in lines[1] and "clip clips/aaaaaaaa-1.mp4" in lines[1]
    assert "torn final line" in caplog.text
    out = io.StringIO()
    events(tmp_path / "ev", cameras=["yard"], out=out, output="json")
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == ["bbbbbbbb-2"]
    out = io.StringIO()
    since = (NOW - timedelta(minutes=60)).isoformat()
    assert events(path, since=since, out=out) == 1  # the file itself works too
    with pytest.raises(EdgeVadError, match="no such file"):
        events(tmp_path / "nowhere")
    with pytest.raises(EdgeVadError, match="--output"):
        events(tmp_path / "ev", output="xml")
    utc_line = format_short(rec("aaaaaaaa-1", "start", "door", 0), utc=True)
    assert utc_line.startswith("2026-12-02 12:00:00  door  start   aaaaaaaa")


def test_events_follow_prints_appended_records(tmp_path: Path):
    folder = tmp_path / "ev"
    write(folder / "events.jsonl", rec("aaaaaaaa-1", "start", "door", 3))
    # Started with SIGINT ignored, as a background job of a non-interactive shell (CI) starts: Ctrl-C must still
    # end the follow (without its own handler Python would raise no KeyboardInterrupt and follow forever).
    proc = subprocess.Popen([sys.executable, "-c", "from edge_vad.cli import main\nmain()\n", "events", str(folder),
                             "--follow", "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert json.loads(lines.get(timeout=60))["id"] == "aaaaaaaa-1"
        write(folder / "events.jsonl", tail=b'{"id": "bbbbbbbb-2", "type": "start", "se')  # half a line ...
        time.sleep(1.0)
        assert lines.empty()  # ... is not printed
        write(folder / "events.jsonl", tail=b'q": 0, "source": "door"}\n')  # ... until it is whole
        write(folder / "events.jsonl", rec("aaaaaaaa-1", "end", "door", 1))
        assert json.loads(lines.get(timeout=10))["id"] == "bbbbbbbb-2"
        assert json.loads(lines.get(timeout=10))["type"] == "end"
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends a follow cleanly, like journalctl -f
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_events_bad_input_is_one_line(tmp_path: Path):
    one_line_error(cli("events", str(tmp_path / "nowhere")), "no such file")
    write(tmp_path / "events.jsonl", rec("aaaaaaaa-1", "start", "door", 1))
    one_line_error(cli("events", str(tmp_path), "--since", "someday"), "not a time")


# ----------------------------------------------------------------------------- review
def test_review_serves_a_recorded_folder_and_takes_feedback(tmp_path: Path):
    folder = tmp_path / "copied-events"
    write(folder / "events.jsonl", rec("aaaaaaaa-1", "start", "door", 3), rec("aaaaaaaa-1", "end", "door", 2))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from edge_vad.cli import main\nmain()\n", "review", str(folder),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, timeout_s=60)
        url = f"http://127.0.0.1:{port}"
        status = json.loads(urllib.request.urlopen(url + "/api/status", timeout=10).read())
        assert status == {"mode": "review", "events_dir": str(folder), "cameras": []}
        listed = json.loads(urllib.request.urlopen(url + "/api/events", timeout=10).read())
        assert [e["id"] for e in listed["events"]] == ["aaaaaaaa-1"] and listed["events"][0]["state"] == "ended"
        page = urllib.request.urlopen(url + "/", timeout=10)
        assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
        post = urllib.request.Request(url + "/api/events/aaaaaaaa-1/feedback", method="POST",
                                      data=json.dumps({"verdict": "confirmed", "note": "real fight"}).encode(),
                                      headers={"Content-Type": "application/json"})
        assert json.loads(urllib.request.urlopen(post, timeout=10).read())["ok"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (folder / "browser-clips").exists()  # made only when a clip is asked for
    line = json.loads((folder / "feedback.jsonl").read_text())
    assert line["event_id"] == "aaaaaaaa-1" and line["verdict"] == "confirmed" and line["note"] == "real fight"


def test_review_bad_input_is_one_line(tmp_path: Path):
    one_line_error(cli("review", str(tmp_path / "nowhere")), "no such folder")
    one_line_error(cli("review", str(tmp_path)), "has no events.jsonl")
    write(tmp_path / "events.jsonl", rec("aaaaaaaa-1", "start", "door", 1))
    one_line_error(cli("review", str(tmp_path), "--host", "0.0.0.0"), "--token-file")
    weak = tmp_path / "token"
    weak.write_text("abc\n")
    one_line_error(cli("review", str(tmp_path), "--host", "0.0.0.0", "--token-file", str(weak)), "fewer than 16")
