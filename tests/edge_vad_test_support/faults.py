"""Real faults for tests/faults: a small tmpfs (a disk that fills up), read-only mounts, a real RTSP server
(GStreamer's gst-rtsp-server run by the system's python3 with PyGObject) and a real Mosquitto broker,
each started and stopped by the test. Each helper skips with the reason when the machine lacks what it
needs (mount needs root / CAP_SYS_ADMIN; the RTSP server needs Debian's gstreamer1.0-rtsp,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good and python3-gi, as .ci/run installs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from edge_vad_test_support.mosquitto import Broker, free_port, wait_port  # noqa: F401 (re-exported)

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3: PyGObject and the GStreamer typelibs are installed for it


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail the test naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


# ----------------------------------------------------------------------------- file systems
def _mount(args: List[str], what: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot {what} here ({proc.stderr.strip() or 'mount failed'}); needs root / CAP_SYS_ADMIN")


def _umount(path: Path) -> None:
    for _ in range(50):  # a writer thread may still hold a file for a moment
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` at `path`: a disk that really fills up (ENOSPC, short writes)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    path.mkdir(parents=True, exist_ok=True)
    _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], f"mount a {size} tmpfs")
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` (a folder) bind-mounted read-only onto itself: writes fail with EROFS, even for root."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    path.mkdir(parents=True, exist_ok=True)
    _mount(["--bind", str(path), str(path)], "bind-mount a folder")
    try:
        _mount(["-o", "remount,bind,ro", str(path)], "remount a bind mount read-only")
        yield path
    finally:
        _umount(path)


def fill_up(folder: Path, leave_bytes: int) -> None:
    """Fill the file system of `folder` until about `leave_bytes` are free."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler.bin", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))


# ----------------------------------------------------------------------------- RTSP server
_RTSP_SERVER = textwrap.dedent("""
    import sys
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
    Gst.init(None)
    port, width, height, fps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # MJPEG over RTP (RFC 2435): needs only plugins-good; 4:2:0 is what the payloader accepts.
    factory.set_launch(f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={width},"
                       f"height={height},framerate={fps}/1 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit("could not listen on port " + port)
    print("ready", flush=True)
    GLib.MainLoop().run()
""")


def rtsp_server_available() -> Optional[str]:
    """None when the GStreamer RTSP server can run here, else why not."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the RTSP test server runs on Debian's python3 with python3-gi)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "gi.require_version('Gst', '1.0'); from gi.repository import Gst, GstRtspServer; "
                            "Gst.init(None); assert Gst.ElementFactory.find('rtpjpegpay') and "
                            "Gst.ElementFactory.find('videotestsrc')"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("GStreamer's RTSP server is not installed (apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-plugins-good python3-gi): " + (probe.stderr.strip().splitlines() or ["?"])[-1])
    return None


class RtspServer:
    """A real RTSP server on 127.0.0.1:<port>/cam that a test can start, kill, freeze (SIGSTOP) and restart."""

    def __init__(self, port: Optional[int] = None, width: int = 160, height: int = 120, fps: int = 10):
        why = rtsp_server_available()
        if why:
            pytest.skip(why)
        self.port = port or free_port()
        self.args = [str(self.port), str(width), str(height), str(fps)]
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen([SYSTEM_PYTHON, "-c", _RTSP_SERVER, *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.kill()
            raise RuntimeError(f"the RTSP test server did not start (said {line!r})")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server must be able to die
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
