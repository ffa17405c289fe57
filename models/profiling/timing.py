"""Wall-clock timing of PyTorch calls: warm-up, then the median of repeats, synchronised on CUDA."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work (CUDA launches are asynchronous); a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: str | torch.device = "cpu") -> list[float]:
    """`warmup` untimed calls, then `repeats` timed ones; durations in ms, each ending with the device idle."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(max(0, warmup)):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def summary(samples_ms: list[float]) -> dict[str, float | int]:
    """median (the figure reported), min and max in ms, and the number of timed calls."""
    return {"median_ms": round(statistics.median(samples_ms), 4), "min_ms": round(min(samples_ms), 4),
            "max_ms": round(max(samples_ms), 4), "repeats": len(samples_ms)}
