"""`edge-vad review EVENTS_DIR`: the review page for recorded events, with no camera running (a report, a
copied events folder). The same page `edge-vad run` serves, minus the live cameras."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from edge_vad.errors import ConfigError, EdgeVadError
from edge_vad.review.event_index import EVENTS_FILE
from edge_vad.review.routes import ReviewApp
from edge_vad.review.web import AccessGuard, is_loopback_host, read_token
from edge_vad.runtime.http_server import HttpServer


def review(events_dir: Path, host: str, port: int, token_file: Optional[Path],
           stop: Optional[threading.Event] = None) -> None:
    """Serve the page until SIGINT / SIGTERM (or `stop`, for tests)."""
    if not events_dir.is_dir():
        raise EdgeVadError(f"{events_dir}: no such folder; pass the events folder of a run (the one holding "
                           f"{EVENTS_FILE}, `edge-vad run --events-dir`)")
    if not (events_dir / EVENTS_FILE).is_file():
        raise EdgeVadError(f"{events_dir}: has no {EVENTS_FILE}; pass the folder `edge-vad run --events-dir` wrote")
    if token_file is None and not is_loopback_host(host):
        raise ConfigError(f"--host {host} is not a loopback address: pass --token-file FILE (one line, a long random "
                          "token) so that only its holders see the events, or keep the default 127.0.0.1")
    token = read_token(token_file, key="--token-file") if token_file is not None else None
    app = ReviewApp(events_dir)
    server = HttpServer(None, host, port, app=app, guard=AccessGuard(host, token))
    stop = stop or _stop_on_signals()
    server.start()
    try:
        typer.echo(f"reviewing {events_dir}: open {server.url}/ (Ctrl-C to stop)", err=True)
        stop.wait()
    finally:
        server.stop()
        app.close()


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
