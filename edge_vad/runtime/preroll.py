"""The clip pre-roll: the last few seconds of camera frames, kept RAW in a bounded ring, encoded only for a clip.

    ring = PreRollRing(frames=122, budget_bytes=24 << 20)   # frames: how many frames the ring must span
    frame = ring.push(index, t, image_bgr)    # every frame: a downscale + colour conversion into a slot, or
                                              # nothing at all for the frames the stride skips (None)
    frame = ring.push(index, t, image_bgr, keep_all=True)   # a clip is open: every frame comes back
    frames = ring.since(t0)                   # an event opened: the pre-roll, oldest first, lent to the clip
    ring.lend(frame)                          # a frame that also goes to an open clip

Why raw and not JPEG: encoding every frame read for a pre-roll that is rarely used cost 4-6 ms per 720p
frame on the pipeline thread of the x86 development machine (several times that on a Cortex-A57), more than
the rest of the pipeline's per-frame overhead. Here a kept frame costs one `cv2.resize` (only when it must
shrink) and one `cv2.cvtColor` into a preallocated slot; nothing is compressed until an event opens and the
clip writer encodes the video (edge_vad.runtime.clips).

Format: I420 (planar Y, then U and V at half resolution, 1.5 bytes a pixel, half of BGR). The clip's MPEG-4
encoder stores 4:2:0 chroma anyway, so the ring keeps what the clip can show at half the memory of BGR.

Memory bound: the ring never holds more than `budget_bytes` of pixels (the config's events.clip_pre_roll_mb).
At the first frame it picks, in this order, the first fit of `frames` frames into the budget: the source's
size (shrunk by integer factors k = 1, 2, ... only as far as needed, even sides, at most `max_side` long),
keeping every frame, else every second frame (the clip then shows each kept pre-roll frame twice: right
timing, half the frame rate; frames while an event is open are all kept). 640x360 I420 is 338 KiB: with the
default 24 MiB, 4 s at 25 fps (102 frames) keep 640x360 at every second frame (17 MiB), and so do 1280x720
at 30 fps (k = 2, 61 kept frames, 21 MiB). Integer factors keep the area resize on OpenCV's fast path: 0.6 ms
per 1280x720 frame against 9.5 ms for a fractional factor on the development machine. Later frames of
another size (a camera that changed mode) are resized to the ring's.

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


MAX_STRIDE = 2  # keep at least every second pre-roll frame; below that, shrink the picture instead


def ring_frame_size(width: int, height: int, frames: int, budget_bytes: int,
                    max_side: Optional[int] = None) -> Tuple[int, int, int, int]:
    """(w, h, k, stride): the source shrunk by the smallest INTEGER factor k (even sides, at most `max_side`
    long) at which the ring spans `frames` frames within `budget_bytes`, keeping every frame or, failing
    that, every `stride`-th (stride <= MAX_STRIDE). EdgeVadError when no useful size fits."""
    if width < 2 or height < 2 or frames < 1:
        raise ValueError(f"frame {width}x{height} or ring length {frames} is not valid")
    k = 1
    while True:
        w, h = _even(width // k), _even(height // k)
        if min(w, h) < MIN_SIDE:
            raise EdgeVadError(f"{frames} pre-roll frames do not fit {budget_bytes / 2**20:.1f} MiB at any useful "
                               f"size; raise events.clip_pre_roll_mb or shorten the pre-roll")
        if max_side is None or max(w, h) <= max_side:
            for stride in range(1, MAX_STRIDE + 1):
                if i420_bytes(w, h) * slots_for(frames, stride) <= budget_bytes:
                    return w, h, k, stride
        k += 1


def slots_for(frames: int, stride: int) -> int:
    """Slots a ring keeping every `stride`-th of `frames` frames needs."""
    return -(-frames // stride)


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

    def __init__(self, frames: int, budget_bytes: int, max_side: Optional[int] = None,
                 interpolation: int = cv2.INTER_AREA):
        if frames < 1:
            raise ValueError(f"pre-roll ring length must be >= 1 frame, got {frames}")
        if budget_bytes <= 0:
            raise ValueError(f"pre-roll memory budget must be > 0 bytes, got {budget_bytes}")
        self.span = int(frames)  # frames of the stream the ring must reach back over
        self.budget_bytes = int(budget_bytes)
        self.max_side = max_side
        self.interpolation = interpolation
        self.size: Optional[Tuple[int, int]] = None  # (w, h), fixed by the first frame
        self.factor = 1  # the integer shrink factor of the first frame
        self.stride = 1  # every stride-th frame is kept
        self.capacity = 0  # slots, once the first frame fixed the stride
        self._slots: List[Optional[np.ndarray]] = []
        self._lent: List[bool] = []
        self._frames: List[Optional[ClipFrame]] = []
        self._next = 0
        self._count = 0
        self._pushed = 0
        self._scratch: Optional[np.ndarray] = None  # the downscaled BGR frame, reused

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes of pixels the ring holds now (slots of frames it still keeps)."""
        return sum(f.i420.nbytes for f in self._frames if f is not None)

    def _start(self, image_bgr: np.ndarray) -> None:
        h, w = image_bgr.shape[:2]
        w, h, self.factor, self.stride = ring_frame_size(w, h, self.span, self.budget_bytes, self.max_side)
        self.size = (w, h)
        self.capacity = slots_for(self.span, self.stride)
        self.clear()

    def push(self, index: int, t: float, image_bgr: np.ndarray, keep_all: bool = False) -> Optional[ClipFrame]:
        """Keep the frame if the stride keeps it (replacing the oldest when full) and return it; a frame the
        stride skips is not converted at all (None), unless `keep_all` (a clip is open): then it is converted
        into a buffer of its own, returned but not kept."""
        if self.size is None:
            self._start(image_bgr)
        w, h = self.size  # type: ignore[misc]
        keep = self._pushed % self.stride == 0
        self._pushed += 1
        if not keep:
            if not keep_all:
                return None
            buf = np.empty((h * 3 // 2, w), np.uint8)
            cv2.cvtColor(self._fit(image_bgr), cv2.COLOR_BGR2YUV_I420, dst=buf)
            return ClipFrame(int(index), float(t), buf, -1)
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
        if frame.slot >= 0 and self._slots[frame.slot] is frame.i420:
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
        self._next = 0
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
