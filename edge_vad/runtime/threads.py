"""How many intra-op threads the CPU backends (onnxruntime, TFLite) use: the config's, else the board's.

    threads, why = resolve_threads(cfg.runtime)      # e.g. (1, "host target profile: measured ...")

The board is the first target profile (edge_vad/bench/targets/*.toml) whose detection rules match this machine
(device-tree model, device nodes, USB ids; edge_vad.bench.profiles.detect), else the `host` profile. Each profile's
[runtime] threads names the measurement it was chosen from (`edge-vad bench` measures the backbone at 1 vs
more threads, interleaved, quiet and under load, and the whole pipeline at 1 and 2: its `threads` section).
Why per board and measured: issue 16 saw a backbone on 2 threads run about 3x slower than on 1 under load on
the 2-core development machine, while our interleaved runs there (non-spinning onnxruntime pools) found the
whole pipeline 20 % faster at 2 (benchmarks/reference/host.json, section threads): the answer depends on
the cores, the backend and what else runs, so each board records its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Tuple

from edge_vad.config import RuntimeConfig

log = logging.getLogger(__name__)

HOST_PROFILE = "host"


def board_threads(root: Path = Path("/")) -> Tuple[int, str]:
    """(threads, why) from the target profile this machine matches (else the host profile)."""
    from edge_vad.bench.profiles import detect, load_profile, target_names

    for name in target_names():
        if name == HOST_PROFILE:
            continue
        profile = load_profile(name)
        found = detect(profile, root)
        if found.on_target:
            return profile.runtime.threads, f"{name} target profile ({found.reason}): {profile.runtime.threads_source}"
    host = load_profile(HOST_PROFILE)
    return host.runtime.threads, f"host target profile (no board detected): {host.runtime.threads_source}"


def resolve_threads(runtime: Optional[RuntimeConfig], root: Path = Path("/")) -> Tuple[int, str]:
    """(threads, where the number comes from): the config's runtime.threads, else board_threads."""
    if runtime is not None and runtime.threads is not None:
        return runtime.threads, "config runtime.threads"
    return board_threads(root)
