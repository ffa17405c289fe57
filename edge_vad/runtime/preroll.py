"""The clip pre-roll: the last few seconds of camera frames, kept RAW in a bounded ring, encoded only for a clip.

    ring = PreRollRing(capacity=122, budget_bytes=48 << 20, max_side=None)
    frame = ring.push(index, t, image_bgr)    # every frame: one downscale + colour conversion into a slot
    frames = ring.since(t0)                   # an event opened: the pre-roll, oldest first, lent to the clip
    ring.lend(frame)                          # a frame that also goes to an open clip

Why raw and not JPEG: encoding every frame read for a pre-roll that is rarely used cost 4-6 ms per 720p
frame on the pipeline thread of the x86 development machine (several times that on a Cortex-A57), more than
the rest of the pipeline's per-frame overhead. Here a frame costs one `cv2.resize` (only when it must shrink)
and one `cv2.cvtColor` into a preallocated slot; nothing is compressed until an event opens and the clip
writer encodes the video (edge_vad.runtime.clips).

Format: I420 (planar Y, then U and V at half resolution, 1.5 bytes a pixel, half of BGR). The clip's MPEG-4
encoder stores 4:2:0 chroma anyway, so the ring keeps what the clip can show at half the memory of BGR.

Memory bound: the ring holds `capacity` frames and never more than `budget_bytes` of pixels (the config's
events.clip_pre_roll_mb). The frame size is fixed at the first frame: the source's size divided by the
smallest integer k (even sides, at most `max_side` long) at which `capacity` frames fit the budget. 640x360
I420 is 338 KiB, so 122 frames (3 s pre-roll + 1 s look-back at 30 fps, + 2) take 41 MiB: with the default
48 MiB, 640x360 is kept whole, 1280x720 at k = 2 and 1920x1080 at k = 3 (both 640x360). Integer factors keep
the area resize on OpenCV's fast path: 0.6 ms per 1280x720 frame against 9.5 ms for a fractional factor on
the development machine. Later frames of another size (a camera that changed mode) are resized to it.

Lending: a frame handed to a clip (`since`, `lend`) is never written over; its slot gets a fresh buffer
when the ring comes round to it, so the clip writer can encode lent frames at its own pace with no copy.
While no clip is open the ring allocates nothing after its first lap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

from edge_vad.errors import EdgeVadError

I420_BYTES_PER_PIXEL = 1.5  # Y at full resolution, U and V at half resolution in both directions
MIN_SIDE = 16  # below this a clip frame shows nothing useful; the budget is then too small (config error)


def i420_bytes(width: int, height: int) -> int:
    return width * height * 3 // 2


def _even(x: float) -> int:
    return max(2, int(x) // 2 * 2)


def ring_frame_size(width: int, height: int, capacity: int, budget_bytes: int,
                    max_side: Optional[int] = None) -> Tuple[int, int, int]:
    """(w, h, k): the source shrunk by the smallest INTEGER factor k (even sides, at most `max_side` long) at
    which `capacity` I420 frames fit `budget_bytes`. Integer factors keep cv2.INTER_AREA on its fast path
    (about 10x cheaper than a fractional area resize here). EdgeVadError when no useful size fits."""
    if width < 2 or height < 2 or capacity < 1:
        raise ValueError(f"frame {width}x{height} or ring capacity {capacity} is not valid")
    k = 1
    while True:
        w, h = _even(width // k), _even(height // k)
        if min(w, h) < MIN_SIDE:
            raise EdgeVadError(f"{capacity} pre-roll frames do not fit {budget_bytes / 2**20:.1f} MiB at any useful "
                             f"size; raise events.clip_pre_roll_mb or shorten the pre-roll")
        if (max_side is None or max(w, h) <= max_side) and i420_bytes(w, h) * capacity <= budget_bytes:
            return w, h, k
        k += 1


@dataclass(frozen=True, eq=False)
class ClipFrame:
    """One ring frame: source index, timestamp, and its pixels as I420 [h * 3 / 2, w] uint8."""

    index: int
    t: float
    i420: np.ndarray
    slot: int

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the picture."""
        return self.i420.shape[1], self.i420.shape[0] * 2 // 3

    def bgr(self) -> np.ndarray:
        return cv2.cvtColor(self.i420, cv2.COLOR_YUV2BGR_I420)


class PreRollRing:
    """The bounded ring of raw frames (see module doc). Used from one thread (the pipeline's)."""

    def __init__(self, capacity: int, budget_bytes: int, max_side: Optional[int] = None,
                 interpolation: int = cv2.INTER_AREA):
        if capacity < 1:
            raise ValueError(f"pre-roll ring capacity must be >= 1, got {capacity}")
        if budget_bytes <= 0:
            raise ValueError(f"pre-roll memory budget must be > 0 bytes, got {budget_bytes}")
        self.capacity = int(capacity)
        self.budget_bytes = int(budget_bytes)
        self.max_side = max_side
        self.interpolation = interpolation
        self.size: Optional[Tuple[int, int]] = None  # (w, h), fixed by the first frame
        self.factor = 1  # the integer shrink factor of the first frame
        self._slots: List[Optional[np.ndarray]] = [None] * self.capacity
        self._lent = [False] * self.capacity
        self._frames: List[Optional[ClipFrame]] = [None] * self.capacity
        self._next = 0
        self._count = 0
        self._scratch: Optional[np.ndarray] = None  # the downscaled BGR frame, reused

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes of pixels the ring holds now (slots of frames it still keeps)."""
        return sum(f.i420.nbytes for f in self._frames if f is not None)

    def push(self, index: int, t: float, image_bgr: np.ndarray) -> ClipFrame:
        """Keep a frame (replacing the oldest when full); returns it as stored."""
        if self.size is None:
            h, w = image_bgr.shape[:2]
            w, h, self.factor = ring_frame_size(w, h, self.capacity, self.budget_bytes, self.max_side)
            self.size = (w, h)
        w, h = self.size
        slot = self._next
        buf = self._slots[slot]
        if buf is None or self._lent[slot]:
            buf = self._slots[slot] = np.empty((h * 3 // 2, w), np.uint8)
            self._lent[slot] = False
        cv2.cvtColor(self._fit(image_bgr), cv2.COLOR_BGR2YUV_I420, dst=buf)
        frame = self._frames[slot] = ClipFrame(int(index), float(t), buf, slot)
        self._next = (slot + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)
        return frame

    def lend(self, frame: ClipFrame) -> ClipFrame:
        """Mark a frame as handed to a clip: its buffer is never written again."""
        if self._slots[frame.slot] is frame.i420:
            self._lent[frame.slot] = True
        return frame

    def frames(self) -> List[ClipFrame]:
        """The frames kept, oldest first (not lent)."""
        order = [(self._next + i) % self.capacity for i in range(self.capacity)]
        return [f for f in (self._frames[i] for i in order) if f is not None]

    def since(self, t0: float) -> List[ClipFrame]:
        """The kept frames with t >= t0, oldest first, lent to the caller."""
        return [self.lend(f) for f in self.frames() if f.t >= t0]

    def clear(self) -> None:
        self._slots = [None] * self.capacity
        self._lent = [False] * self.capacity
        self._frames = [None] * self.capacity
        self._count = 0
        self._scratch = None

    def _fit(self, image_bgr: np.ndarray) -> np.ndarray:
        """The frame at the ring's size: a view when the frame only loses an odd row or column, else an
        integer-factor area resize of the frame cropped to a multiple of the size (top left; at most k - 1
        pixels per side go) into the reused scratch buffer; another size (a camera changed mode) is resized."""
        assert self.size is not None
        w, h = self.size
        src_h, src_w = image_bgr.shape[:2]
        k = self.factor
        if src_w // k // 2 * 2 == w and src_h // k // 2 * 2 == h:
            if k == 1:
                return image_bgr[:h, :w]
            image_bgr = image_bgr[:h * k, :w * k]
        if self._scratch is None:
            self._scratch = np.empty((h, w, 3), np.uint8)
        return cv2.resize(image_bgr, (w, h), dst=self._scratch, interpolation=self.interpolation)
