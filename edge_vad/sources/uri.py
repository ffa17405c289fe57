"""Which source a URI names, and `open_source`, the one way the runtime opens one.

    /dev/video0, /dev/v4l/by-id/..., "0"   -> V4L2 camera (v4l2:///dev/video0 also works)
    csi://0                                  -> Jetson CSI camera (GStreamer)
    rtsp://, rtsps://, http://, https://     -> network stream (FFmpeg), reconnects
    path/to/clip.mp4 or file:///abs/clip.mp4 -> video file
    path/to/folder or file:///abs/folder     -> folder of images, natural order
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit

from edge_vad.errors import EdgeVadError
from edge_vad.sources.base import Source
from edge_vad.sources.csi import CsiSource
from edge_vad.sources.image_folder import ImageFolderSource
from edge_vad.sources.stream import NETWORK_SCHEMES, Backoff, NetworkSource, redact
from edge_vad.sources.v4l2 import V4L2Source, device_path
from edge_vad.sources.video_file import VideoFileSource

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_KNOWN = "use /dev/videoN, csi://N, rtsp://, rtsps://, http(s)://, a video file or a folder of images"


@dataclass(frozen=True)
class ParsedUri:
    kind: str  # "v4l2", "csi", "stream", "file", "images"
    target: str  # device path, sensor id, URL, or file/folder path


def parse_uri(uri: str) -> ParsedUri:
    """Classify a source URI; raise EdgeVadError for unknown schemes and missing paths."""
    text = uri.strip()
    if not text:
        raise EdgeVadError(f"empty source; {_KNOWN}")
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        rest = text[match.end():]
        if scheme in NETWORK_SCHEMES:
            return ParsedUri("stream", text)
        if scheme == "csi":
            if not rest.isdigit():
                raise EdgeVadError(f"{text}: the CSI sensor id must be a number, e.g. csi://0")
            return ParsedUri("csi", rest)
        if scheme == "v4l2":  # jetson-utils spelling: v4l2:///dev/video0
            return ParsedUri("v4l2", device_path(rest))
        if scheme == "file":
            text = unquote(urlsplit(text).path)
        else:
            raise EdgeVadError(f"{redact(text)}: unknown source scheme '{scheme}://'; {_KNOWN}")
    elif text.isdigit() or text.startswith("/dev/"):
        return ParsedUri("v4l2", device_path(text))
    path = Path(text).expanduser()
    if path.is_dir():
        return ParsedUri("images", str(path))
    if path.exists():
        return ParsedUri("file", str(path))
    raise EdgeVadError(f"{path}: no such video file or image folder; check the path ({_KNOWN})")


def safe_name(text: str) -> str:
    """A source name that fits the config's pattern [A-Za-z0-9_.-]+."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "source"


def open_source(
    uri: str,
    *,
    width: Optional[int] = None,
    height: Optional[int] = None,
    fps: Optional[float] = None,
    loop: bool = False,
    name: Optional[str] = None,
    backoff: Optional[Backoff] = None,
    threaded: bool = True,
    clock: Optional[Callable[[], float]] = None,
    sleep: Optional[Callable[[float], object]] = None,
) -> Source:
    """Open the source a URI names and return it OPEN; raise EdgeVadError (one line) if it
    cannot be opened.

    width/height: cameras are asked for this size; files, folders and streams are resized.
    fps: cameras are asked for this rate; image folders play at it (default 10); video files
        use it only when the container has no rate; streams ignore it.
    loop: restart files and folders at their end (live sources ignore it).
    backoff, threaded, clock, sleep: live sources only (see edge_vad.sources.stream).
    """
    parsed = parse_uri(uri)
    live = dict(backoff=backoff, threaded=threaded, clock=clock, sleep=sleep)
    source: Source
    if parsed.kind == "file":
        source = VideoFileSource(parsed.target, width=width, height=height, fps=fps, loop=loop,
                                 name=name or safe_name(Path(parsed.target).stem))
    elif parsed.kind == "images":
        source = ImageFolderSource(parsed.target, width=width, height=height, fps=fps, loop=loop,
                                   name=name or safe_name(Path(parsed.target).name))
    elif parsed.kind == "v4l2":
        source = V4L2Source(parsed.target, width=width, height=height, fps=fps,
                            name=name or safe_name(Path(parsed.target).name), **live)
    elif parsed.kind == "csi":
        source = CsiSource(int(parsed.target), width=width, height=height, fps=fps, name=name, **live)
    else:
        host = urlsplit(parsed.target).hostname or "stream"
        source = NetworkSource(parsed.target, width=width, height=height, name=name or safe_name(host), **live)
    return source.open()
