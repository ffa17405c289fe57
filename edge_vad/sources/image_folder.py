"""A folder of still images played as a video (the UCSD Ped2 layout: 000.jpg, 001.jpg, ...).

Images are sorted in natural order (2.jpg before 10.jpg). A folder carries no frame rate:
`fps` sets it, default DEFAULT_FOLDER_FPS, and timestamps are index / fps. An image that
cannot be decoded is skipped with a warning (`stats.decode_errors`) and its index is left
unused, so frame i is still file i and per-frame labels stay aligned. A JPEG cut short (a copy
or an upload interrupted) counts as undecodable: libjpeg pads a truncated file with grey and
cv2.imread returns that image without an error, so the file's end-of-image marker (FF D9) is
checked first.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.sources.base import Frame, Source, SourceInfo, SourceState, fit_size, to_bgr

log = logging.getLogger("edge_vad.sources")

DEFAULT_FOLDER_FPS = 10.0  # UCSD Ped2, the image-folder data we use, is about 10 fps (its README)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
JPEG_EOI = b"\xff\xd9"  # end-of-image marker: the last two bytes of a whole JPEG (ITU-T T.81, B.1.1.3)
JPEG_TAIL_SLACK = 64  # some encoders pad after the marker; look for it in the last bytes, not only at the end


def truncated_jpeg(path: Path) -> bool:
    """True when a .jpg / .jpeg file does not end with an end-of-image marker (it was cut short)."""
    if path.suffix.lower() not in JPEG_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - JPEG_TAIL_SLACK))
            tail = fh.read()
    except OSError:
        return False  # unreadable: cv2.imread reports it
    return JPEG_EOI not in tail.rstrip(b"\x00\r\n ")[-JPEG_TAIL_SLACK:]


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: 'f2.jpg' < 'f10.jpg'. re.split with a group
    alternates text and digits starting with text, so the list items line up by type."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> List[Path]:
    """Images directly inside `folder` (not recursive, hidden files skipped), natural order."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


class ImageFolderSource(Source):
    """Frames from the images of a folder; see the module docstring."""

    kind = "images"

    def __init__(
        self,
        folder: str | Path,
        *,
        name: Optional[str] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        fps: Optional[float] = None,
        loop: bool = False,
    ):
        self.folder = Path(folder)
        super().__init__(name or self.folder.name)
        if fps is not None and fps <= 0:
            raise EdgeVadError(f"{self.folder}: fps must be positive, got {fps}")
        self._fps = float(fps) if fps else DEFAULT_FOLDER_FPS
        self._size = (width, height)
        self._loop = loop
        self._paths: List[Path] = []
        self._pos = 0  # next file in the current pass
        self._passes = 0
        self._pass_delivered = 0  # frames decoded in the current pass

    def open(self) -> "ImageFolderSource":
        if not self.folder.is_dir():
            raise EdgeVadError(f"{self.folder}: no such folder; check the path")
        self._paths = list_images(self.folder)
        if not self._paths:
            raise EdgeVadError(f"{self.folder}: no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...) in this folder; "
                               f"check the path or pass a video file")
        first = self._decode(self._paths[0])
        if first is None:
            why = "is a truncated JPEG (no end marker)" if truncated_jpeg(self._paths[0]) else "cannot be decoded"
            raise EdgeVadError(f"{self._paths[0]}: the first image of the folder {why}; check or replace the file")
        self._opened(SourceInfo(kind=self.kind, uri=str(self.folder), backend="imread", width=first.shape[1],
                                height=first.shape[0], fps=self._fps, frame_count=len(self._paths)))
        return self

    def _decode(self, path: Path) -> Optional[np.ndarray]:
        if truncated_jpeg(path):
            return None
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # greyscale files come back as 3-channel BGR
        return None if image is None else fit_size(to_bgr(image), *self._size)

    def _read(self, timeout_s: Optional[float]) -> Optional[Frame]:
        while self._state is SourceState.OPEN:
            if self._pos >= len(self._paths):
                if not self._loop:
                    self._state = SourceState.ENDED
                    log.info("source '%s': end of %s after %d images", self.name, self.folder, len(self._paths))
                    return None
                if not self._pass_delivered:  # every file became unreadable: stop instead of spinning
                    self._state = SourceState.ENDED
                    log.warning("source '%s': no image of %s decodes any more; ending", self.name, self.folder)
                    return None
                self._pos = 0
                self._passes += 1
                self._pass_delivered = 0
                self._bump(loops=1)
            path = self._paths[self._pos]
            index = self._passes * len(self._paths) + self._pos
            self._pos += 1
            image = self._decode(path)
            if image is None:
                self._bump(decode_errors=1)
                why = "truncated JPEG (no end marker)" if truncated_jpeg(path) else "cannot decode"
                log.warning("source '%s': %s %s; skipped (its frame number stays unused)", self.name, why, path)
                continue
            self._pass_delivered += 1
            return Frame(image=image, index=index, timestamp_s=index / self._fps, source=self.name)
        return None

    def _close(self) -> None:
        self._paths = []
