"""Frame sources: files, folders, cameras (faked), network streams, truncation, reconnect backoff."""

from __future__ import annotations

import functools
import http.server
import logging
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.sources import (
    Backoff,
    CsiSource,
    NetworkSource,
    SourceState,
    V4L2Source,
    csi_pipeline,
    open_source,
    opencv_has_gstreamer,
    parse_uri,
)
from edge_vad.sources.image_folder import DEFAULT_FOLDER_FPS, natural_key

SYN_FRAMES, SYN_FPS, SYN_W, SYN_H = 20, 12.0, 64, 48


def write_video(path: Path, frames, fps: float, fourcc: str = "mp4v") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cv2 cannot write {path.suffix} with {fourcc}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def grey_ramp(n: int = SYN_FRAMES) -> list:
    """Frame i is flat grey 10*i: its decoded mean tells which frame it was."""
    return [np.full((SYN_H, SYN_W, 3), 10 * i, np.uint8) for i in range(n)]


def truncate_half(path: Path) -> int:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    return size // 2


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message, message
    return message


@pytest.fixture()
def synthetic_mp4(tmp_path: Path) -> Path:
    return write_video(tmp_path / "ramp.mp4", grey_ramp(), SYN_FPS)


# -- video files ----------------------------------------------------------------------------

def test_synthetic_file_frames_count_fps_and_order(synthetic_mp4: Path):
    with open_source(str(synthetic_mp4)) as src:
        assert src.info.kind == "file" and src.info.fps == SYN_FPS and src.info.frame_count == SYN_FRAMES
        assert (src.info.width, src.info.height) == (SYN_W, SYN_H)
        frames = list(src.frames())
        assert src.state is SourceState.ENDED
        assert src.read(0.1) is None  # reading past the end is not an error
        assert src.stats.frames_read == SYN_FRAMES and src.stats.frames_missing == 0
    assert [f.index for f in frames] == list(range(SYN_FRAMES))
    assert [f.timestamp_s for f in frames] == pytest.approx([i / SYN_FPS for i in range(SYN_FRAMES)])
    for i, frame in enumerate(frames):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (SYN_H, SYN_W, 3)
        assert abs(float(frame.image.mean()) - 10 * i) < 4, f"frame {i} out of order"
        assert frame.source == "ramp"


def test_file_uri_prefix_and_resize(synthetic_mp4: Path):
    with open_source(f"file://{synthetic_mp4}", width=32, name="cam1") as src:
        frame = src.read()
        assert src.name == "cam1" and frame.image.shape == (24, 32, 3)  # aspect kept
        assert (src.info.width, src.info.height) == (32, 24)


def test_loop_restarts_and_keeps_counting(synthetic_mp4: Path):
    with open_source(str(synthetic_mp4), loop=True) as src:
        frames = [src.read() for _ in range(2 * SYN_FRAMES + 5)]
        assert src.state is SourceState.OPEN and src.stats.loops == 2
    assert [f.index for f in frames] == list(range(2 * SYN_FRAMES + 5))
    assert frames[-1].timestamp_s == pytest.approx((2 * SYN_FRAMES + 4) / SYN_FPS)
    np.testing.assert_array_equal(frames[SYN_FRAMES].image, frames[0].image)
    np.testing.assert_array_equal(frames[2 * SYN_FRAMES + 3].image, frames[3].image)


def test_real_clips_match_what_the_container_reports(shared_data: Path):
    clips = sorted((shared_data / "fight-surv" / "fight").glob("*.mp4"))[:2]
    assert clips, "no fight-surv clips"
    for clip in clips:
        cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
        count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
        ok, first = cap.read()
        cap.release()
        assert ok and count > 10
        with open_source(str(clip)) as src:
            frames = list(src.frames())
            assert src.info.frame_count == count and src.info.fps == pytest.approx(fps)
            assert src.stats.frames_missing == 0 and src.stats.decode_errors == 0
        assert len(frames) == count
        assert all(f.image.shape == first.shape and f.image.dtype == np.uint8 for f in frames)
        np.testing.assert_array_equal(frames[0].image, first)
        assert frames[-1].timestamp_s == pytest.approx((count - 1) / fps)


# -- truncated and broken files --------------------------------------------------------------

def _assert_truncated_read(path: Path, announced: int, caplog) -> int:
    with caplog.at_level(logging.WARNING, logger="edge_vad.sources"):
        with open_source(str(path)) as src:
            assert src.info.frame_count == announced  # the header still promises every frame
            frames = list(src.frames())  # must not raise
            stats = src.stats
            assert src.state is SourceState.ENDED
    assert 0 < len(frames) < announced
    assert stats.frames_missing == announced - len(frames) and stats.decode_errors == 1
    assert any("truncated" in r.getMessage() for r in caplog.records)
    return len(frames)


def test_truncated_synthetic_video_delivers_frames_then_ends(tmp_path: Path, caplog):
    # Noise in MJPEG (every frame intra, about the same size): half the file is about half the frames.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (SYN_H, SYN_W, 3), dtype=np.uint8) for _ in range(40)]
    path = write_video(tmp_path / "noise.mkv", frames, SYN_FPS, fourcc="MJPG")
    truncate_half(path)
    delivered = _assert_truncated_read(path, 40, caplog)
    assert 10 <= delivered <= 30


def test_truncated_real_clip_delivers_frames_then_ends(shared_data: Path, tmp_path: Path, caplog):
    # The fight-surv MP4s keep their index (moov) at the END, so cutting one in half leaves
    # nothing decodable (next test). A recorder writing a streamable container (MKV) is what
    # leaves a usable head behind: re-encode the real clip that way, then cut it in half.
    clip = sorted((shared_data / "fight-surv" / "fight").glob("*.mp4"))[0]
    with open_source(str(clip)) as src:
        real = [f.image for f in src.frames()]
        fps = src.info.fps
    path = write_video(tmp_path / "recording.mkv", real, fps)
    truncate_half(path)
    _assert_truncated_read(path, len(real), caplog)


def test_real_mp4_cut_before_its_index_is_a_clear_error(shared_data: Path, tmp_path: Path):
    clip = sorted((shared_data / "fight-surv" / "fight").glob("*.mp4"))[0]
    path = Path(shutil.copy(clip, tmp_path / clip.name))
    truncate_half(path)
    with pytest.raises(EdgeVadError) as excinfo:
        open_source(str(path))
    assert "cut off" in one_line_error(excinfo) and str(path) in str(excinfo.value)


def test_garbage_file_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(EdgeVadError) as excinfo:
        open_source(str(path))
    assert "no frame could be decoded" in one_line_error(excinfo)


def test_missing_file_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(EdgeVadError) as excinfo:
        open_source(str(tmp_path / "nope.mp4"))
    assert "no such video file" in one_line_error(excinfo)


# -- image folders ----------------------------------------------------------------------------

def test_image_folder_natural_order_and_timestamps(tmp_path: Path):
    for number in (10, 2, 1, 9):
        cv2.imwrite(str(tmp_path / f"{number}.png"), np.full((8, 12), number * 10, np.uint8))  # greyscale
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(str(tmp_path), fps=5) as src:
        frames = list(src.frames())
        assert src.info.frame_count == 4 and src.info.fps == 5
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 90, 100]  # lexical order would put 10 second
    assert [f.timestamp_s for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert all(f.image.shape == (8, 12, 3) for f in frames)
    assert natural_key("f2.jpg") < natural_key("f10.jpg")


def test_image_folder_skips_an_unreadable_image_keeping_indices(tmp_path: Path):
    for number in range(3):
        cv2.imwrite(str(tmp_path / f"{number:03d}.jpg"), np.full((8, 8, 3), 50, np.uint8))
    (tmp_path / "003.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(tmp_path / "004.jpg"), np.full((8, 8, 3), 50, np.uint8))
    with open_source(str(tmp_path)) as src:
        frames = list(src.frames())
        assert src.stats.decode_errors == 1
    assert [f.index for f in frames] == [0, 1, 2, 4]
    assert frames[-1].timestamp_s == pytest.approx(4 / DEFAULT_FOLDER_FPS)


def test_ucsd_ped2_folder(shared_data: Path):
    folder = shared_data / "ucsd-ped2" / "testing" / "frames" / "01"
    labels = np.load(shared_data / "ucsd-ped2" / "test_frame_labels.npz")["01"]
    with open_source(str(folder), loop=True) as src:
        assert src.info.frame_count == len(labels) and src.info.fps == DEFAULT_FOLDER_FPS
        frames = [src.read() for _ in range(len(labels) + 2)]
        assert src.stats.loops == 1
    assert [f.index for f in frames] == list(range(len(labels) + 2))
    for i in (0, 57, len(labels) - 1):  # frame i is file i:03d.jpg, so labels line up
        np.testing.assert_array_equal(frames[i].image, cv2.imread(str(folder / f"{i:03d}.jpg")))
        assert frames[i].timestamp_s == pytest.approx(i / DEFAULT_FOLDER_FPS)
    np.testing.assert_array_equal(frames[len(labels)].image, frames[0].image)  # looped


def test_empty_folder_is_a_one_line_error(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(EdgeVadError) as excinfo:
        open_source(str(tmp_path))
    assert "no images" in one_line_error(excinfo)


# -- URIs -------------------------------------------------------------------------------------

def test_uri_parsing(tmp_path: Path, synthetic_mp4: Path):
    assert parse_uri("0").target == "/dev/video0" and parse_uri("0").kind == "v4l2"
    assert parse_uri("/dev/video3").kind == "v4l2"
    assert parse_uri("v4l2:///dev/video1").target == "/dev/video1"
    assert parse_uri("csi://1").target == "1" and parse_uri("csi://1").kind == "csi"
    for url in ("rtsp://h/x", "rtsps://h/x", "http://h/x.mjpg", "HTTPS://h/x"):
        assert parse_uri(url).kind == "stream"
    assert parse_uri(f"file://{synthetic_mp4}").kind == "file"
    assert parse_uri(f"file://{tmp_path}").kind == "images"
    with pytest.raises(EdgeVadError) as excinfo:
        parse_uri("rtmp://user:pw@host/live")
    assert "unknown source scheme" in one_line_error(excinfo) and "pw" not in str(excinfo.value)
    with pytest.raises(EdgeVadError):
        parse_uri("csi://front")


@pytest.mark.parametrize("uri", ["/dev/video987", "987"])
def test_missing_camera_is_a_one_line_error(uri: str):
    with pytest.raises(EdgeVadError) as excinfo:
        open_source(uri)
    message = one_line_error(excinfo)
    assert "/dev/video987: no such camera device" in message and "ls /dev/video*" in message


def test_unreachable_stream_is_a_one_line_error_without_password():
    with pytest.raises(EdgeVadError) as excinfo:
        open_source("rtsp://admin:hunter2@127.0.0.1:1/stream", backoff=Backoff(max_attempts=1))
    message = one_line_error(excinfo)
    assert "cannot open the stream" in message and "hunter2" not in message and "admin:***@" in message


def test_http_stream_of_a_real_server_ends_at_its_last_frame(tmp_path: Path):
    write_video(tmp_path / "remote.mkv", grey_ramp(), SYN_FPS)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/remote.mkv"
        with open_source(url, threaded=False) as src:  # every frame, in order
            assert src.info.kind == "stream" and src.info.frame_count == SYN_FRAMES
            frames = list(src.frames())
            assert src.state is SourceState.ENDED and src.stats.reconnects == 0
        assert [f.index for f in frames] == list(range(SYN_FRAMES))
        assert all(abs(float(f.image.mean()) - 10 * f.index) < 4 for f in frames)
        assert all(b.timestamp_s >= a.timestamp_s for a, b in zip(frames, frames[1:]))  # monotonic wall time
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


# -- live sources with fake captures ----------------------------------------------------------

class FakeCapture:
    """A cv2.VideoCapture stand-in: opened or not, delivers `frames` frames then fails."""

    def __init__(self, frames: int = 0, opened: bool = True, shape=(48, 64, 3), fps: float = 10.0):
        self.remaining, self.opened, self.shape, self.fps = frames, opened, shape, fps
        self.props: dict = {}
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def read(self):
        if self.remaining <= 0:
            return False, None
        self.remaining -= 1
        return True, np.zeros(self.shape, np.uint8)

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: self.fps}.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def release(self) -> None:
        self.released = True


class FakeTime:
    """Injected clock and sleep: sleeping advances the clock, nothing really waits."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted_factory(captures: list):
    """A capture factory handing out the given captures in order."""
    queue = list(captures)

    def factory(*_args):
        return queue.pop(0)

    return factory


def test_backoff_delays_double_and_are_capped():
    assert [Backoff().delay(i) for i in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert [Backoff(initial_s=1, factor=3, max_s=10).delay(i) for i in range(5)] == [1, 3, 9, 10, 10]
    with pytest.raises(EdgeVadError):
        Backoff(initial_s=0)


def test_reconnect_backoff_sequence_with_fake_clock(caplog):
    fake = FakeTime()
    failing = 7
    captures = [FakeCapture(frames=3)] + [FakeCapture(opened=False) for _ in range(failing)]
    captures += [FakeCapture(frames=2), FakeCapture(opened=False), FakeCapture(frames=1)]
    src = NetworkSource("rtsp://cam.local/live", threaded=False, clock=fake.clock, sleep=fake.sleep,
                        capture_factory=scripted_factory(captures))
    with caplog.at_level(logging.INFO, logger="edge_vad.sources"), src.open():
        first = [src.read() for _ in range(3)]
        assert fake.sleeps == []
        after = src.read()  # the stream drops here: 7 failed attempts, the 8th succeeds
        expected = [0.5, 1, 2, 4, 8, 16, 30, 30]
        assert fake.sleeps == expected
        stats = src.stats
        assert stats.reconnects == 1 and stats.reconnect_attempts == failing + 1
        assert stats.gap_s == pytest.approx(sum(expected))
        assert stats.frames_missed == round(sum(expected) * 10.0) - 1
        assert src.state is SourceState.OPEN
        assert [f.index for f in first] == [0, 1, 2] and after.index == 3
        assert after.timestamp_s == pytest.approx(1000.0 + sum(expected))
        src.read()
        src.read()  # second drop: the backoff starts again at 0.5 s
        assert fake.sleeps[len(expected):] == [0.5, 1]
        assert src.stats.reconnects == 2
    attempts = [r for r in caplog.records if "reconnect attempt" in r.getMessage()]
    assert len(attempts) >= failing + 1 + 2  # every attempt is logged
    assert all(c.released for c in captures)


def test_reconnect_gives_up_after_max_attempts():
    fake = FakeTime()
    captures = [FakeCapture(frames=1)] + [FakeCapture(opened=False) for _ in range(3)]
    src = NetworkSource("rtsp://user:pw@cam.local/live", threaded=False, clock=fake.clock, sleep=fake.sleep,
                        backoff=Backoff(max_attempts=3), capture_factory=scripted_factory(captures))
    with src.open():
        with pytest.raises(EdgeVadError) as excinfo:
            list(src.frames())
        assert src.state is SourceState.FAILED and src.read(0.01) is None
    assert fake.sleeps == [0.5, 1, 2]
    assert "3 reconnect attempts failed" in one_line_error(excinfo) and "pw" not in str(excinfo.value)


def test_v4l2_requests_size_logs_what_it_got_and_survives_unplugging(tmp_path: Path, caplog):
    device = tmp_path / "video0"  # stands in for the device node
    device.touch()
    fake = FakeTime()
    captures = [FakeCapture(frames=2, shape=(480, 640, 3), fps=15), FakeCapture(frames=1, shape=(480, 640, 3))]
    made = []

    def factory(path, api):
        assert path == str(device) and api == cv2.CAP_V4L2
        made.append(captures.pop(0))
        return made[-1]

    def sleep(seconds):  # the camera is unplugged for the first two attempts
        fake.sleep(seconds)
        if len(fake.sleeps) == 1:
            device.unlink()
        if len(fake.sleeps) == 3:
            device.touch()

    src = V4L2Source(str(device), width=1280, height=720, fps=30, threaded=False, clock=fake.clock, sleep=sleep,
                     capture_factory=factory)
    with caplog.at_level(logging.INFO, logger="edge_vad.sources"), src.open():
        assert made[0].props == {cv2.CAP_PROP_FRAME_WIDTH: 1280, cv2.CAP_PROP_FRAME_HEIGHT: 720, cv2.CAP_PROP_FPS: 30}
        assert (src.info.width, src.info.height, src.info.fps) == (640, 480, 15)
        assert src.info.requested == "1280x720 @ 30 fps"
        assert [src.read().index for _ in range(3)] == [0, 1, 2]  # third read reconnects
        assert fake.sleeps == [0.5, 1, 2] and src.stats.reconnects == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("gave 640x480 @ 15 fps, not the requested 1280x720 @ 30 fps" in m for m in messages)
    assert any("opened v4l2" in m and "640x480" in m for m in messages)
    assert sum("no such camera device" in m for m in messages) == 2


class GatedCapture(FakeCapture):
    """Delivers one frame per permit; blocks otherwise (a camera waiting for its next frame)."""

    def __init__(self, is_closing):
        super().__init__(frames=10**6)
        self.permits = threading.Semaphore(0)
        self.calls = 0
        self.is_closing = is_closing

    def read(self):
        self.calls += 1
        while not self.permits.acquire(timeout=0.01):
            if self.is_closing():
                return False, None
        return super().read()


def _wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_threaded_live_source_keeps_only_the_newest_frame():
    holder = {}
    cap = GatedCapture(lambda: holder["src"].state is SourceState.ENDED)
    cap.permits.release()  # the frame open() reads
    src = NetworkSource("rtsp://cam.local/live", capture_factory=scripted_factory([cap]))
    holder["src"] = src
    with src.open():
        assert src.read(1.0).index == 0
        cap.permits.release(5)
        _wait_until(lambda: cap.calls == 7)  # 5 frames published, the grabber waits for the next one
        frame = src.read(1.0)
        assert frame.index == 5 and src.stats.frames_dropped == 4  # 1..4 were replaced unread
        started = time.monotonic()
        assert src.read(0.05) is None  # nothing new: None within the timeout, no exception
        assert time.monotonic() - started < 1.0
        assert src.state is SourceState.OPEN
    assert src.state is SourceState.ENDED
    _wait_until(lambda: cap.released)


# -- CSI --------------------------------------------------------------------------------------

def test_csi_pipeline_string_carries_the_request():
    pipeline = csi_pipeline(1, 1920, 1080, 60)
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "width=1920" in pipeline and "height=1080" in pipeline and "framerate=60/1" in pipeline
    assert "format=BGR ! appsink drop=true max-buffers=1" in pipeline
    assert "framerate=2997/100" in csi_pipeline(0, 1280, 720, 29.97)
    assert "width=1280,height=720,framerate=30/1" in CsiSource(0).pipeline  # jetson-utils defaults


def test_csi_source_opens_its_pipeline_with_gstreamer_and_logs_it(caplog):
    seen = []

    def factory(pipeline, api):
        seen.append((pipeline, api))
        return FakeCapture(frames=5, shape=(720, 1280, 3), fps=30)

    with caplog.at_level(logging.DEBUG, logger="edge_vad.sources"):
        with CsiSource(0, width=1280, height=720, fps=30, threaded=False, capture_factory=factory).open() as src:
            assert src.read().image.shape == (720, 1280, 3) and src.info.kind == "csi"
    assert seen == [(csi_pipeline(0, 1280, 720, 30), cv2.CAP_GSTREAMER)]
    assert any("nvarguscamerasrc sensor-id=0" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer (it would try a real CSI camera)")
def test_csi_without_gstreamer_says_so_in_one_line():
    with pytest.raises(EdgeVadError) as excinfo:
        open_source("csi://0")
    assert "built without GStreamer" in one_line_error(excinfo)
