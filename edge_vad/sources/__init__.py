"""Frame sources of the runtime: cameras, CSI, network streams, video files, image folders.

    from edge_vad.sources import open_source
    with open_source("/dev/video0", width=1280, height=720, fps=30) as src:
        for frame in src.frames():   # stops when the source ENDS
            ...                      # frame.image (uint8 BGR), frame.index, frame.timestamp_s

`read(timeout_s)` returns a Frame or None (nothing within the timeout); end of stream is
`src.state is SourceState.ENDED`, never an exception. Live sources keep only the newest
frame and reconnect with backoff; see edge_vad.sources.stream.
"""

from edge_vad.sources.base import Frame, Source, SourceInfo, SourceState, SourceStats
from edge_vad.sources.csi import CsiSource, csi_pipeline, opencv_has_gstreamer
from edge_vad.sources.image_folder import DEFAULT_FOLDER_FPS, ImageFolderSource
from edge_vad.sources.stream import Backoff, LiveSource, NetworkSource
from edge_vad.sources.uri import ParsedUri, open_source, parse_uri
from edge_vad.sources.v4l2 import V4L2Source
from edge_vad.sources.video_file import VideoFileSource

__all__ = [
    "Backoff", "CsiSource", "DEFAULT_FOLDER_FPS", "Frame", "ImageFolderSource", "LiveSource", "NetworkSource",
    "ParsedUri", "Source", "SourceInfo", "SourceState", "SourceStats", "V4L2Source", "VideoFileSource",
    "csi_pipeline", "open_source", "opencv_has_gstreamer", "parse_uri",
]
