"""Timing helpers: cold call, warm-up, then N timed calls summarised as percentiles (milliseconds)."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


def summarise(samples_ms: Sequence[float]) -> Dict[str, Any]:
    """p50/p95/p99 (numpy's linear interpolation), mean and count of a list of durations in ms."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no timing samples")
    out: Dict[str, Any] = {f"p{p}_ms": round(float(np.percentile(arr, p)), 4) for p in PERCENTILES}
    out["mean_ms"] = round(float(arr.mean()), 4)
    out["iterations"] = int(arr.size)
    return out


def time_calls(fn: Callable[[int], Any], iterations: int, warmup: int) -> List[float]:
    """Call fn(i) `warmup` times untimed, then `iterations` times timed; durations in ms."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    for i in range(max(0, warmup)):
        fn(i)
    samples = []
    for i in range(iterations):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def timed_once(fn: Callable[[], Any]) -> tuple:
    """(result, ms) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - t0) * 1000.0
