"""What machine a benchmark ran on (DESIGN.md convention 8: benchmarks record the machine)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Any, Dict, Optional

from edge_vad import __version__
from edge_vad.bench.profiles import device_tree_model


def _cpu_model(root: Path) -> str:
    try:
        text = (root / "proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Hardware", "Model", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def _memory_mb(root: Path) -> Optional[float]:
    try:
        text = (root / "proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return round(int(m.group(1)) / 1024, 1) if m else None


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_host(root: Path = Path("/")) -> Dict[str, Any]:
    """CPU, cores usable by this process, memory, OS, Python and the inference libraries' versions."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libs = {name: _version(dist) for name, dist in (("onnxruntime", "onnxruntime"), ("numpy", "numpy"),
                                                    ("opencv", "opencv-python-headless"),
                                                    ("ai_edge_litert", "ai-edge-litert"), ("tensorrt", "tensorrt"),
                                                    ("torch", "torch"))}
    return {
        "cpu": _cpu_model(root),
        "machine": platform.machine(),
        "cpus_usable": usable,
        "cpus_total": os.cpu_count(),
        "memory_mb": _memory_mb(root),
        "os": f"{platform.system()} {platform.release()}",
        "device_tree_model": device_tree_model(root),
        "python": platform.python_version(),
        "edge_vad": __version__,
        "libraries": {k: v for k, v in libs.items() if v is not None},
    }


def describe_short(host: Dict[str, Any]) -> str:
    mem = f", {host['memory_mb'] / 1024:.0f} GB" if host.get("memory_mb") else ""
    return f"{host['cpu']} ({host['cpus_usable']} usable of {host['cpus_total']} cores{mem}), {host['os']}"
