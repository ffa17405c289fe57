"""int8 calibration for TensorRT: the batching is plain numpy (testable anywhere); the TensorRT class is thin.

A static ONNX graph ([1, 3, 224, 224]) reads exactly one input-shaped buffer per `get_batch`, so the
batches here have the engine input's own shape: batch 1 for the shipped graphs (docs/jetson.md, "int8").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_vad.backends.cuda_driver import CudaDriver
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import atomic_write_bytes

log = logging.getLogger(__name__)


class CalibrationBatcher:
    """Fixed-size float32 batches of preprocessed frames for TensorRT's int8 entropy calibrator.

    Frames (each of `frame_shape`, the network input without its batch dimension) are read once,
    lazily, so a long iterator never sits in memory. A last partial batch is DROPPED, never
    padded: padding repeats or invents frames, which skews the activation histograms that entropy
    calibration fits. So at least `batch_size` frames are needed, unless `cache_file` already
    holds a calibration table (TensorRT then reads it and asks for no batch).
    """

    def __init__(self, frames: Iterable[np.ndarray], batch_size: int, frame_shape: Sequence[int],
                 cache_file: Optional[Union[str, Path]] = None, max_batches: Optional[int] = None) -> None:
        if int(batch_size) < 1:
            raise EdgeVadError(f"calibration batch_size must be >= 1, found {batch_size}")
        self.batch_size = int(batch_size)
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.max_batches = max_batches
        self._frames: Iterator[np.ndarray] = iter(frames)
        self.batches_done = 0
        self.frames_dropped = 0

    @property
    def batch_shape(self) -> Tuple[int, ...]:
        return (self.batch_size,) + self.frame_shape

    @property
    def batch_nbytes(self) -> int:
        return int(np.prod(self.batch_shape)) * np.dtype(np.float32).itemsize

    def next_batch(self) -> Optional[np.ndarray]:
        """The next (batch_size, *frame_shape) float32 batch, or None when the frames run out."""
        if self.max_batches is not None and self.batches_done >= self.max_batches:
            return None
        batch = np.empty(self.batch_shape, dtype=np.float32)
        for i in range(self.batch_size):
            frame = next(self._frames, None)
            if frame is None:
                self.frames_dropped = i
                if i:
                    log.info("calibration: dropped the last %d frame(s), short of a batch of %d", i, self.batch_size)
                if self.batches_done == 0 and self.read_cache() is None:
                    raise EdgeVadError(f"int8 calibration needs at least {self.batch_size} frames (got {i}); "
                                       "pass more calibration frames")
                return None
            frame = np.asarray(frame)
            if frame.shape != self.frame_shape:
                raise EdgeVadError(f"calibration frame {self.batches_done * self.batch_size + i}: expected shape "
                                   f"{self.frame_shape}, found {frame.shape}")
            batch[i] = frame
        self.batches_done += 1
        return batch

    def __iter__(self) -> Iterator[np.ndarray]:
        while (batch := self.next_batch()) is not None:
            yield batch

    def read_cache(self) -> Optional[bytes]:
        if self.cache_file is not None and self.cache_file.is_file():
            return self.cache_file.read_bytes()
        return None

    def write_cache(self, data: bytes) -> None:
        if self.cache_file is not None:
            atomic_write_bytes(self.cache_file, bytes(data))


def make_entropy_calibrator(trt: Any, batcher: CalibrationBatcher, cuda: CudaDriver) -> Any:
    """A trt.IInt8EntropyCalibrator2 feeding `batcher`'s batches through one device buffer. Made and used on
    the engine's owner thread: TensorRT calls get_batch on the thread that builds."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT requires the explicit base call
            self.error: Optional[BaseException] = None  # exceptions do not cross TensorRT's C++ boundary
            self._stream = cuda.new_stream()
            self._device = cuda.malloc(batcher.batch_nbytes)

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            try:
                batch = batcher.next_batch()
                if batch is None:
                    return None
                cuda.htod(self._device, batch, self._stream)
                cuda.sync(self._stream)
                return [int(self._device)]
            except BaseException as exc:  # noqa: BLE001 - re-raised by the builder after the build
                self.error = exc
                return None

        def read_calibration_cache(self) -> Optional[bytes]:
            return batcher.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            batcher.write_cache(bytes(cache))

        def free(self) -> None:
            cuda.free(self._device)
            cuda.destroy_stream(self._stream)

    return EntropyCalibrator()
