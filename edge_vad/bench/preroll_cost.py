"""What the clip pre-roll costs the pipeline thread per frame: ClipRecorder.push with no event open, as the
pipeline calls it for every frame read, on real frames of the stream at their own size and scaled to 1280x720,
against what the former JPEG pre-roll cost (one JPEG encode per frame, timed in the same rounds)."""

from __future__ import annotations

import tempfile
from typing import Any, Dict, List, Sequence

import cv2
import numpy as np

from edge_vad.bench.timing import summarise
from edge_vad.runtime.clips import DEFAULT_PRE_ROLL_MB, ClipRecorder
from edge_vad.runtime.snapshot import encode_jpeg
from edge_vad.sources.base import Frame

SIZES = {"720p": (1280, 720)}  # besides the stream's own frame size
FPS = 30.0  # the clip's frame rate assumed for the ring's length (4 s at 30 fps: the default bound's case)
FORMER_JPEG_QUALITY = 90  # what the JPEG pre-roll encoded every frame at


def _time_push(images: Sequence[np.ndarray], iterations: int, warmup: int) -> Dict[str, Any]:
    import time

    push_ms: List[float] = []
    kept_ms: List[float] = []  # the frames the ring keeps (converted); with a stride of 2 the others cost ~0
    jpeg_ms: List[float] = []
    with tempfile.TemporaryDirectory(prefix="edge-vad-bench-preroll-") as tmp:
        rec = ClipRecorder(pre_roll_s=3.0, post_roll_s=3.0, fps=FPS, out_dir=tmp, lookback_s=1.0)
        try:
            for i in range(rec.capacity + warmup):  # fill the ring once: its steady state
                rec.push(Frame(images[i % len(images)], i, i / FPS, "bench"))
            for k in range(iterations):
                i = rec.capacity + warmup + k
                image = images[i % len(images)]
                ring = rec._ring
                kept = ring._pushed % ring.stride == 0
                t0 = time.perf_counter()
                rec.push(Frame(image, i, i / FPS, "bench"))
                t1 = time.perf_counter()
                encode_jpeg(image, FORMER_JPEG_QUALITY)
                t2 = time.perf_counter()
                push_ms.append((t1 - t0) * 1e3)
                if kept:
                    kept_ms.append((t1 - t0) * 1e3)
                jpeg_ms.append((t2 - t1) * 1e3)
            info = {"frame_size": "x".join(map(str, rec.frame_size or ())), "frames": rec.capacity,
                    "stride": rec._ring.stride, "mib": round(rec.buffered_bytes / 2**20, 2)}
        finally:
            rec.close()
    out = summarise(push_ms)
    out["kept_frame_p50_ms"] = summarise(kept_ms)["p50_ms"]
    out["former_jpeg_p50_ms"] = summarise(jpeg_ms)["p50_ms"]
    out["ring"] = info
    return out


def preroll_cost(frames: Sequence[np.ndarray], iterations: int, warmup: int) -> Dict[str, Any]:
    """{<size>: {p50_ms, ..., former_jpeg_p50_ms, ring}} for the stream's size and 720p (see module doc)."""
    h, w = frames[0].shape[:2]
    result: Dict[str, Any] = {"stream": _time_push(frames, iterations, warmup)}
    for name, (sw, sh) in SIZES.items():
        scaled = [cv2.resize(f, (sw, sh), interpolation=cv2.INTER_LINEAR) for f in frames]
        result[name] = _time_push(scaled, iterations, warmup)
    result["how"] = (f"ClipRecorder.push per frame read (p50, mean, ...; kept_frame_p50_ms: the frames the ring "
                     f"keeps, converted, when it keeps every second one), no event open, ring filled first; "
                     f"3 s pre-roll + 1 s look-back at {FPS:g} fps, events.clip_pre_roll_mb {DEFAULT_PRE_ROLL_MB:g}; "
                     f"stream frames {w}x{h}, and the same scaled to 1280x720; former_jpeg = one JPEG encode at "
                     f"quality {FORMER_JPEG_QUALITY} of the same frame in the same round (the former pre-roll's cost)")
    return result
