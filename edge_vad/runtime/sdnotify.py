"""systemd notifications (sd_notify protocol) without libsystemd.

    ready()                      # after models and sources are up: Type=notify start is done
    dog = Watchdog.from_env()    # WatchdogSec= in the unit -> ping every half of it
    in the main loop:  dog.maybe_ping()      # only the loop that does the work pings: a hung
                                             # loop stops pinging and systemd restarts us
    status("front-door: 15.0 fps")
    extend_timeout(120)          # before a long start-up step (TensorRT engine build)
    with StartupExtender():      # ... or keep extending from a thread while a long step runs
        load_models(...)
    stopping()                   # on SIGTERM, before flushing clips

The protocol: send "KEY=VALUE" lines as one datagram to the AF_UNIX socket named by
$NOTIFY_SOCKET (a leading '@' means the Linux abstract namespace). Everything is a no-op
returning False when $NOTIFY_SOCKET is unset (not started by systemd, or Type= not notify).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Mapping, Optional

log = logging.getLogger("edge_vad.sdnotify")


def _address(env: Mapping[str, str]) -> Optional[str]:
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    return path


def notify(state: str, env: Optional[Mapping[str, str]] = None) -> bool:
    """Send one notification ("READY=1", "WATCHDOG=1", "STATUS=...", several lines allowed).
    Returns True when sent, False when there is no socket or sending failed (never raises:
    losing a status line must not stop detection)."""
    env = os.environ if env is None else env
    address = _address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        log.debug("sd_notify %r to %r failed: %s", state, env.get("NOTIFY_SOCKET"), exc)
        return False


def ready(env: Optional[Mapping[str, str]] = None) -> bool:
    return notify("READY=1", env)


def stopping(env: Optional[Mapping[str, str]] = None) -> bool:
    return notify("STOPPING=1", env)


def watchdog(env: Optional[Mapping[str, str]] = None) -> bool:
    return notify("WATCHDOG=1", env)


def status(text: str, env: Optional[Mapping[str, str]] = None) -> bool:
    return notify("STATUS=" + text.replace("\n", " "), env)


def extend_timeout(seconds: float, env: Optional[Mapping[str, str]] = None) -> bool:
    """Ask systemd for `seconds` more before the current start/stop step times out."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", env)


def watchdog_interval_s(env: Optional[Mapping[str, str]] = None) -> Optional[float]:
    """Half of $WATCHDOG_USEC in seconds (systemd's advice: ping at half the timeout), or None
    when the watchdog is off, or meant for another process ($WATCHDOG_PID)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Watchdog:
    """Pings WATCHDOG=1 at most every `interval_s`, when the caller's loop asks. Disabled
    (interval None) outside systemd or without WatchdogSec=."""

    def __init__(self, interval_s: Optional[float], env: Optional[Mapping[str, str]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._env = env
        self._clock = clock
        self._last: Optional[float] = None
        self.pings = 0

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, clock: Callable[[], float] = time.monotonic) -> "Watchdog":
        return cls(watchdog_interval_s(env), env, clock)

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def maybe_ping(self) -> bool:
        """Ping if the interval has passed since the last ping; True when a ping was sent."""
        if self.interval_s is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        sent = watchdog(self._env)
        self.pings += sent
        return sent


class StartupExtender:
    """While the `with` block runs, send EXTEND_TIMEOUT_USEC from a thread every `every_s`, each asking for
    `extend_s` more (systemd: the service "must send a new message" within that time, sd_notify(3); since
    systemd 236). A TensorRT engine build is one long synchronous call, so the main thread cannot do it itself.
    Capped at `max_total_s`: a build that hangs for an hour is stopped by systemd, not extended forever.
    A no-op outside systemd ($NOTIFY_SOCKET unset)."""

    def __init__(self, extend_s: float = 90.0, every_s: float = 30.0, max_total_s: float = 3600.0,
                 env: Optional[Mapping[str, str]] = None, status_text: str = "") -> None:
        if not 0 < every_s < extend_s:
            raise ValueError(f"every_s ({every_s}) must be positive and below extend_s ({extend_s})")
        self.extend_s, self.every_s, self.max_total_s = extend_s, every_s, max_total_s
        self._env = env
        self._status = status_text
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.sent = 0

    def _loop(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - start + self.extend_s <= self.max_total_s:
            if extend_timeout(self.extend_s, self._env):
                self.sent += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> "StartupExtender":
        if _address(os.environ if self._env is None else self._env) is None:
            return self
        if self._status:
            status(self._status, self._env)
        self._thread = threading.Thread(target=self._loop, name="sd-notify-extend", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
