"""Which bundle target runs on which backend here, and why: one decision, one small function.

    choice = choose_backend(manifest, requested=None, host=LiveHost(device))
    log.info("%s", choice.line())      # backend onnxruntime (bundle target onnx): Edge TPU not used: ...; CPU: ...

Automatic order (first that can run wins):
1. TensorRT, where the bundle has a tensorrt target and TensorRT is installed.
2. The Edge TPU, only where the bundle has models compiled for it (edgetpu_compiler), the Coral runtime is
   installed, its interpreter pair is not one reported to fail (edge_vad.backends.coral_pairs), AND the delegate
   really loads (probed; the probe's delegate is kept for the first interpreter, so the device is opened once).
3. The CPU (`cpu_choice`): the int8 TFLite models on the TFLite interpreter (XNNPACK) where the bundle's parity
   record says int8 matches fp32 (every coarse int8 model has parity checks and all pass: `int8_parity`), since
   that is the fastest correct path on a CPU (docs/performance.md); else the fp32 ONNX graphs on onnxruntime.
   `precision` (--precision, [runtime] precision) overrides: "fp32" keeps the fp32 graphs (and skips the int8-only
   Edge TPU), "int8" takes the int8 models whatever their parity; "fp16" is a TensorRT precision, so a CPU runs
   fp32 and says so.

`BackendChoice.reasons` says why this backend and why not the better ones, so the run log says in one INFO line
which path it took. An explicit backend that cannot run is one error line with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from edge_vad.backends import BackendStatus, backend_status
from edge_vad.bundle.manifest import Manifest, TargetProfile
from edge_vad.config import PRECISIONS
from edge_vad.errors import EdgeVadError, MissingDependency

EDGETPU = "edgetpu"
COARSE_STAGES = ("coarse_backbone", "coarse_head")
INT8_TARGET = "tflite-int8"
TARGET_FOR_BACKEND = {"onnxruntime": "onnx", "tensorrt": "tensorrt", "tflite": "tflite-int8",
                      "edgetpu": "tflite-int8,edgetpu"}
COMPILE_HINT = ("the bundle has no models compiled for the Edge TPU; run `edge-vad models compile-edgetpu BUNDLE --out "
                "NEW` where Google's edgetpu_compiler is installed (x86-64 Debian/Ubuntu) and pass --bundle NEW")


@dataclass(frozen=True)
class BackendChoice:
    target: str  # the manifest target whose artifacts run
    backend: str
    reasons: Tuple[str, ...]  # why this backend, and why not the ones tried before it

    def line(self) -> str:
        return f"backend {self.backend} (bundle target {self.target}): " + "; ".join(self.reasons)


@dataclass
class HostProbe:
    """What the decision needs to know about this machine. `status`: is a backend's software installed;
    `edgetpu`: None when the Edge TPU delegate loads for `device`, else why not (one line)."""

    status: Callable[[str], BackendStatus]
    edgetpu: Callable[[Optional[str]], Optional[str]]
    device: Optional[str] = None


def live_edgetpu(device: Optional[str]) -> Optional[str]:
    """The real check: the interpreter pair, then the delegate itself (kept for the first interpreter)."""
    import importlib

    from edge_vad.backends.edgetpu_runtime import edgetpu_interpreter, probe_delegate

    module_name, verdict = edgetpu_interpreter()
    if module_name is None or verdict.status == "fails":
        return verdict.line
    return probe_delegate(device, importlib.import_module(f"{module_name}.interpreter").load_delegate)


def live_host(device: Optional[str] = None) -> HostProbe:
    return HostProbe(backend_status, live_edgetpu, device)


def compiled_for_edgetpu(manifest: Manifest, target: TargetProfile) -> bool:
    """Every coarse-stage TFLite model of `target` was compiled by edgetpu_compiler (and it has some)."""
    tflite = [manifest.artifacts[n] for n in target.artifacts
              if manifest.artifacts[n].format == "tflite" and manifest.artifacts[n].stage in COARSE_STAGES]
    return bool(tflite) and all(a.edgetpu_compile is not None for a in tflite)


def serving_target(manifest: Manifest, backend: str) -> Optional[str]:
    """The first target that lists `backend` and has what it runs (the Edge TPU: compiled models)."""
    for name, target in manifest.targets.items():
        if backend in target.backends and (backend != EDGETPU or compiled_for_edgetpu(manifest, target)):
            return name
    return None


def int8_parity(manifest: Manifest, target: str = INT8_TARGET) -> Tuple[bool, str]:
    """(int8 may stand in for fp32, why): every coarse-stage int8 model of `target` carries parity checks against
    fp32 (written by the export, e.g. the head's clip AUC int8 vs fp32) and every one passed."""
    if target not in manifest.targets:
        return False, f"the bundle has no {target} target"
    arts = [(n, manifest.artifacts[n]) for n in manifest.targets[target].artifacts
            if manifest.artifacts[n].precision == "int8" and manifest.artifacts[n].stage in COARSE_STAGES]
    if not arts:
        return False, f"target {target} has no int8 coarse models"
    failed = [f"{n}.{k}" for n, a in arts for k, c in a.parity.items() if not c.passed]
    unchecked = [n for n, a in arts if not a.parity]
    if failed or unchecked:
        return False, "int8 parity " + ("failed: " + ", ".join(failed) if failed else
                                         "not recorded for " + ", ".join(unchecked))
    checks = [f"{k} {c.value:.4g} {c.compare} {c.tolerance:g}" for _, a in arts for k, c in a.parity.items()]
    return True, "int8 parity passed (" + "; ".join(checks) + ")"


def cpu_choice(manifest: Manifest, host: HostProbe,
               precision: Optional[str] = None) -> Tuple[Optional[Tuple[str, str]], List[str]]:
    """((target, backend) or None, reasons) for the CPU (module doc, step 3): int8 TFLite first where its parity
    passed (or precision "int8"), else fp32 ONNX on onnxruntime (a TensorRT target's ONNX too), else int8."""
    reasons: List[str] = []
    fp32 = [("onnx", "onnxruntime", "CPU: onnxruntime runs the fp32 ONNX graphs"),
            ("tensorrt", "onnxruntime", "CPU: onnxruntime runs the fp32 ONNX graphs of the tensorrt target")]
    int8_ok, int8_why = int8_parity(manifest)
    if precision == "fp16":
        reasons.append("precision fp16 is a TensorRT precision: the CPU runs fp32")
        precision = "fp32"
    if precision == "int8":
        int8 = [(INT8_TARGET, "tflite", f"CPU: the TFLite interpreter runs the int8 models (precision int8; {int8_why})")]
        order = int8 + fp32
    elif precision == "fp32":
        order = fp32 + [(INT8_TARGET, "tflite", "CPU: the TFLite interpreter runs the int8 models (no fp32 graphs)")]
        reasons.append("precision fp32 asked for")
    elif int8_ok:
        order = [(INT8_TARGET, "tflite", f"CPU: the TFLite interpreter runs the int8 models (XNNPACK), faster than "
                                         f"fp32 on a CPU; {int8_why}")] + fp32
    else:
        order = fp32 + [(INT8_TARGET, "tflite", "CPU: the TFLite interpreter runs the int8 models")]
        if INT8_TARGET in manifest.targets:
            reasons.append(f"int8 not preferred: {int8_why}")
    order += [(n, b, f"CPU: {b} runs target {n}") for n, t in manifest.targets.items() for b in t.backends
              if b not in (EDGETPU, "tensorrt")]
    for target, backend, why in order:
        if target not in manifest.targets or backend not in manifest.targets[target].backends:
            continue
        status = host.status(backend)
        if status.available:
            return (target, backend), reasons + [why]
        if precision == "int8" and target == INT8_TARGET:  # asked for: never a silent fp32 instead
            raise MissingDependency(f"precision int8 on a CPU needs the TFLite interpreter: {status.reason}; "
                                    f"{status.detail}")
        reasons.append(f"{backend}: {status.reason}")
    if precision == "int8":
        raise EdgeVadError(f"precision int8 asked for, but the bundle has no {INT8_TARGET} target; re-export with "
                           f"--targets onnx,{INT8_TARGET} or drop --precision")
    return None, reasons


def _requested(manifest: Manifest, requested: str, host: HostProbe) -> BackendChoice:
    status = host.status(requested)  # EdgeVadError for an unknown name
    if not status.available:
        raise MissingDependency(f"backend {requested!r} is unavailable: {status.reason}; {status.detail}")
    target = serving_target(manifest, requested)
    if target is None and requested == EDGETPU:
        raise EdgeVadError(f"--backend edgetpu cannot run: {COMPILE_HINT}", exit_code=MissingDependency.exit_code)
    if target is None:
        raise EdgeVadError(f"the bundle has no artifacts for backend {requested!r} (its targets: "
                           f"{', '.join(f'{n} -> {t.backends}' for n, t in manifest.targets.items())}); drop --backend "
                           f"or re-export with --targets {TARGET_FOR_BACKEND.get(requested, 'onnx')}")
    if requested == EDGETPU:
        why = host.edgetpu(host.device)
        if why is not None:
            raise EdgeVadError(f"--backend edgetpu cannot run: {why}; drop --backend to run on the CPU",
                               exit_code=MissingDependency.exit_code)
    return BackendChoice(target, requested, ("requested",))


def choose_backend(manifest: Manifest, requested: Optional[str], host: HostProbe,
                   precision: Optional[str] = None) -> BackendChoice:
    """The (target, backend) to run and why (see the module doc). `precision`: None or one of PRECISIONS."""
    if precision is not None and precision not in PRECISIONS:
        raise EdgeVadError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if requested:
        return _requested(manifest, requested, host)
    reasons: List[str] = []
    trt = serving_target(manifest, "tensorrt")
    if trt is not None:
        status = host.status("tensorrt")
        if status.available:
            return BackendChoice(trt, "tensorrt", ("TensorRT is installed and the bundle has a tensorrt target",))
        reasons.append(f"TensorRT not used: {status.reason}")
    tpu = serving_target(manifest, EDGETPU)
    if tpu is not None and precision == "fp32":
        reasons.append("Edge TPU not used: it runs int8 only and precision fp32 was asked for")
    elif tpu is None:
        has_int8 = any(a.format == "tflite" for a in manifest.artifacts.values())
        reasons.append("Edge TPU not used: the bundle has no models compiled for it"
                       + (" (edge-vad models compile-edgetpu)" if has_int8 else ""))
    else:
        status = host.status(EDGETPU)
        why = status.reason if not status.available else host.edgetpu(host.device)
        if why is None:
            return BackendChoice(tpu, EDGETPU, ("the Edge TPU delegate loaded and the bundle has compiled models",))
        reasons.append(f"Edge TPU not used: {why}")
    cpu, cpu_reasons = cpu_choice(manifest, host, precision)
    if cpu is None:
        raise MissingDependency(f"no backend of the bundle's targets can run here ({'; '.join(reasons + cpu_reasons)}); "
                                "run `edge-vad models backends` to see what to install")
    return BackendChoice(cpu[0], cpu[1], tuple(reasons + cpu_reasons))
