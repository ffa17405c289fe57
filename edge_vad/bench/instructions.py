"""Deterministic cost of the coarse stage: instructions per frame under Valgrind's callgrind.

Wall-clock figures on a shared machine move by tens of percent; the number of instructions a frame executes
does not, so it compares a change's cost across noisy machines (same CPU architecture and libraries: the
JSON records both). How it is counted:
- a child process runs under `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=ffi_call`: it
  decodes the frames, loads the backbone and the QACM on one intra-op thread (from the model files the parent
  resolved, so no hashing runs under Valgrind), warms up on WARMUP_FRAMES frames, then runs CoarseStage.step
  on `frames` more frames inside ONE ctypes callback (libc's bsearch calling back into Python). Callgrind
  collects only while a libffi call is active (ffi_call is one of the few symbols every libffi exports by
  name), so the count is those frames' instructions: preprocessing, the backbone, the QACM, the heatmap and
  the Python between them, nothing of start-up;
- instructions per frame = the collected total (callgrind's `totals:` line) / frames.
Valgrind runs every thread on one core and emulates a CPU without AVX-512, so the count is for its code path,
the same on every run. It takes a few minutes (start-up runs instrumented, about 50x slower than native).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge_vad.errors import EdgeVadError

VALGRIND_HINT = "valgrind is not installed (Debian/Ubuntu: apt-get install valgrind); the instruction count was skipped"
TOGGLE_FUNCTION = "ffi_call"  # libffi's exported entry point: collection is on only inside ctypes calls
FRAMES = 3  # counted frames: the count is deterministic, a few frames give it exactly
WARMUP_FRAMES = 2  # untimed steps first (onnxruntime allocates its arenas on the first runs)
TIMEOUT_S = 1800.0
_TOTALS = re.compile(r"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


def valgrind_path() -> Optional[str]:
    return shutil.which("valgrind")


def parse_totals(text: str) -> int:
    """The Ir total of a callgrind output file (its `totals:` line, else `summary:`)."""
    found = _TOTALS.findall(text)
    if not found:
        raise EdgeVadError("callgrind wrote no totals line; is this a callgrind output file?")
    return int(found[-1])


def instructions_per_frame(bundle_dir: Path, backend: str, files: Dict[str, Path], source: Path,
                           frames: int = FRAMES, valgrind: Optional[str] = None) -> Dict[str, Any]:
    """{ir_per_frame, frames, ...} or {skipped: why}. `files`: stage -> the model file to load (loadable_file)."""
    valgrind = valgrind or valgrind_path()
    if valgrind is None:
        return {"skipped": VALGRIND_HINT}
    version = subprocess.run([valgrind, "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="edge-vad-bench-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        result = Path(tmp) / "child.json"
        cmd = [valgrind, "--tool=callgrind", "--collect-atstart=no", f"--toggle-collect={TOGGLE_FUNCTION}",
               f"--callgrind-out-file={out}", sys.executable, "-m", "edge_vad.bench.instructions", "--child",
               "--bundle", str(bundle_dir), "--backend", backend, "--source", str(source), "--frames", str(frames),
               "--json", str(result)]
        for stage, path in files.items():
            cmd += ["--model", f"{stage}={path}"]
        env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", OPENCV_LOG_LEVEL="ERROR")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise EdgeVadError(f"bench: the callgrind run did not finish within {TIMEOUT_S:.0f} s") from None
        wall = time.perf_counter() - t0
        child: Dict[str, Any] = json.loads(result.read_text()) if result.is_file() else {}
        if proc.returncode != 0 or not out.is_file() or child.get("error"):
            tail = child.get("error") or (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise EdgeVadError(f"bench: the callgrind run failed: {tail}")
        total = parse_totals(out.read_text(errors="replace"))
    return {
        "skipped": None, "ir_per_frame": total // frames, "ir_total": total, "frames": frames,
        "frame_size": child.get("frame_size"), "backends": child.get("backends"), "threads": 1,
        "valgrind": version, "wall_s": round(wall, 1),
        "how": (f"callgrind instructions (Ir) of {frames} CoarseStage.step calls on decoded frames of the stream, "
                f"after {WARMUP_FRAMES} warm-up steps, collected only inside one ctypes callback "
                f"(--toggle-collect={TOGGLE_FUNCTION}); one intra-op thread; deterministic for a given machine "
                "architecture, library build and bundle"),
    }


# -- the child, under Valgrind ---------------------------------------------------------------------------
def _in_ffi_call(work) -> None:
    """Run `work()` inside a libffi call (libc's bsearch on a one-element array calls the comparator once)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    compare_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    failure: List[BaseException] = []

    def compare(_a, _b) -> int:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised outside the C frame
            failure.append(exc)
        return 0

    key, items = ctypes.c_int(0), (ctypes.c_int * 1)(0)
    libc.bsearch.restype = ctypes.c_void_p
    libc.bsearch(ctypes.byref(key), items, 1, ctypes.sizeof(ctypes.c_int), compare_type(compare))
    if failure:
        raise failure[0]


def _child(args: argparse.Namespace) -> Dict[str, Any]:
    from edge_vad.backends import get_backend
    from edge_vad.bench.stream import read_frames
    from edge_vad.bundle.manifest import load_manifest
    from edge_vad.config import RuntimeConfig
    from edge_vad.runtime.backend_plan import plan_backends
    from edge_vad.runtime.coarse import CoarseStage
    from edge_vad.runtime.loaded_models import ModelSet, SharedModel

    files = dict(m.split("=", 1) for m in args.model)
    bundle_dir = Path(args.bundle)
    manifest = load_manifest(bundle_dir)  # the parent verified the bundle: no hashing under Valgrind
    plan = plan_backends(manifest, bundle_dir, args.backend, RuntimeConfig(threads=1), fine=False)
    frames = read_frames(Path(args.source), WARMUP_FRAMES + args.frames)
    models: Dict[str, SharedModel] = {}
    try:
        for stage in plan.stages:
            backend = get_backend(stage.backend)
            backend.load(Path(files.get(stage.stage, stage.file)), **dict(stage.options))
            models[stage.stage] = SharedModel(stage, backend, manifest.artifacts[stage.artifact])
        coarse = CoarseStage(ModelSet(manifest, bundle_dir, plan, models))
        state = [coarse.initial_state()]

        def steps(batch: Sequence[Any]) -> None:
            for image in batch:
                state[0], _ = coarse.step(state[0], image)

        steps(frames[:WARMUP_FRAMES])
        _in_ffi_call(lambda: steps(frames[WARMUP_FRAMES:]))
        return {"frame_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "error": None,
                "backends": [m.describe() for m in models.values()]}
    finally:
        for m in models.values():
            m.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_vad.bench.instructions", description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--frames", type=int, default=FRAMES)
    p.add_argument("--model", action="append", default=[], help="STAGE=PATH of a model file to load")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    try:
        out = _child(args)
    except EdgeVadError as exc:
        out = {"error": str(exc)}
    Path(args.json).write_text(json.dumps(out))
    return 0 if not out.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
