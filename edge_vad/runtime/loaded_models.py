"""The bundle's artifacts loaded once and shared by every pipeline (`SharedModel`, `ModelSet`).

    models = load_models(bundle_dir, manifest, plan)          # loaded ONCE, shared by every pipeline

Sharing: each artifact is loaded ONCE and every pipeline uses that one instance (`SharedModel`).
onnxruntime documents InferenceSession.run as safe to call from several threads, so its sessions are called
concurrently without a lock; TFLite interpreters and TensorRT execution contexts are not thread-safe, so
their calls take turns under a per-model lock (a TensorRT engine also runs only on its own CUDA owner thread,
edge_vad.backends.cuda_owner, whichever pipeline thread calls it). Measured on the development machine (2 cores shared with
other jobs, so noisy; two pipelines on the Lite0 backbone + QACM, frames/s of both together, three runs):
one shared session without a lock 48 / 125 / 32 (1 intra-op thread) and 29 / 78 / 30 (2 threads); the same
session behind a lock 39 / 66 / 32 and 19 / 51 / 14; a session per pipeline 45 / 123 / 36 and 21 / 16 / 21
at twice the memory. So: shared, lock only where the backend needs one.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Mapping, Optional, Sequence

import numpy as np

from edge_vad.backends import Backend, dequantize, get_backend
from edge_vad.bundle.manifest import Artifact, Manifest
from edge_vad.bundle.package_weights import materialise
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.backend_plan import BackendPlan, StagePlan

log = logging.getLogger("edge_vad.stages")

THREAD_SAFE_BACKENDS = ("onnxruntime",)  # run() may be called concurrently (onnxruntime's documentation)


def _match_names(declared: Sequence[Any], found: Sequence[Any], what: str, file: str) -> Dict[str, str]:
    """Manifest tensor name -> the backend's tensor name. Converters rename tensors (litert-torch gives
    `serving_default_<name>` and `serving_default_<name>_output`), so: the exact name, else those spellings,
    else the one tensor with the manifest's shape and dtype."""
    names = {s.name for s in found}
    out: Dict[str, str] = {}
    for info in declared:
        for candidate in (info.name, f"serving_default_{info.name}", f"serving_default_{info.name}_output",
                          f"{info.name}:0"):
            if candidate in names:
                out[info.name] = candidate
                break
        else:
            same = [s.name for s in found if list(s.shape) == list(info.shape) and s.dtype == info.dtype]
            if len(same) != 1:
                raise EdgeVadError(f"{file}: cannot tell which model {what} is the manifest's '{info.name}' "
                                   f"{info.shape} (model has {sorted(names)}); re-export the bundle")
            out[info.name] = same[0]
    if len(set(out.values())) != len(out):
        raise EdgeVadError(f"{file}: two manifest {what}s map to one model tensor ({out}); re-export the bundle")
    return out


class SharedModel:
    """One loaded artifact used by every pipeline (see module doc for the lock). Tensors are named as the
    MANIFEST names them, whatever the backend calls them. Outputs are always float32; `raw_inputs=True` feeds
    already-quantised inputs (lookup-table frames)."""

    def __init__(self, plan: StagePlan, backend: Backend, artifact: Optional[Artifact] = None, lock: bool = True):
        self.plan = plan
        self.backend = backend
        self._lock: ContextManager[Any] = threading.Lock() if lock else nullcontext()
        ins, outs = backend.inputs, backend.outputs
        file = plan.file.name
        self._in = _match_names(artifact.inputs, ins, "input", file) if artifact and artifact.inputs else \
            {s.name: s.name for s in ins}
        self._out = _match_names(artifact.outputs, outs, "output", file) if artifact and artifact.outputs else \
            {s.name: s.name for s in outs}
        by_name = {s.name: s for s in ins + outs}
        self.inputs = [replace(by_name[b], name=m) for m, b in self._in.items()]
        self.outputs = [replace(by_name[b], name=m) for m, b in self._out.items()]
        self.locked = lock

    def infer(self, feeds: Mapping[str, np.ndarray], raw_inputs: bool = False) -> Dict[str, np.ndarray]:
        model_feeds = {self._in[k]: v for k, v in feeds.items()}
        with self._lock:
            out = self.backend.infer(model_feeds, raw=raw_inputs)
        result = {}
        for spec in self.outputs:
            value = out[self._out[spec.name]]
            if raw_inputs and spec.quantized:  # raw=True left the quantised outputs quantised too
                value = dequantize(value, spec.scale, spec.zero_point)  # type: ignore[arg-type]
            result[spec.name] = value
        return result

    @property
    def backend_label(self) -> str:
        """The backend's name, with the provider it really runs on where it has one (onnxruntime)."""
        provider = getattr(self.backend, "provider", None)
        return f"{self.backend.name} ({provider})" if provider else self.backend.name

    def describe(self) -> str:
        return (f"{self.plan.stage}: {self.plan.file.name} on {self.backend_label}"
                f"{'' if self.locked else ', shared without a lock'}")

    def close(self) -> None:
        self.backend.close()


@dataclass
class ModelSet:
    manifest: Manifest
    bundle_dir: Path
    plan: BackendPlan
    models: Dict[str, SharedModel]  # stage -> model
    text_table: Optional[np.ndarray] = None  # [C, K, D]
    description_embeddings: Optional[np.ndarray] = None  # [V, E] (clip-vit-b16)

    def get(self, stage: str) -> Optional[SharedModel]:
        return self.models.get(stage)

    def describe(self) -> List[str]:
        return [m.describe() for m in self.models.values()]

    def close(self) -> None:
        for model in self.models.values():
            model.close()
        self.models = {}


def _load_npy(bundle_dir: Path, manifest: Manifest, name: str) -> np.ndarray:
    art = manifest.artifacts[name]
    arr = np.load(bundle_dir / art.file, allow_pickle=False)
    if art.shape is not None and list(arr.shape) != list(art.shape):
        raise EdgeVadError(f"bundle {bundle_dir}: {art.file} has shape {list(arr.shape)}, the manifest says {art.shape}; "
                           "re-export the bundle")
    return arr.astype(np.float32, copy=False)


def loadable_file(stage: StagePlan, manifest: Manifest) -> Path:
    """The file a backend loads for `stage`: the bundle's own, or, for a graph whose ImageNet weights stay in
    their pip package (manifest package_weights), its copy with the weights laid out in the model cache."""
    art = manifest.artifacts[stage.artifact]
    if art.package_weights is None:
        return stage.file
    return materialise(stage.file, art.sha256, art.package_weights)


def load_stage(stage: StagePlan, manifest: Manifest, lock: Optional[bool] = None) -> SharedModel:
    """Load one planned artifact on its backend. `lock`: None = a lock only for backends that are not thread-safe."""
    backend = get_backend(stage.backend)
    backend.load(loadable_file(stage, manifest), **dict(stage.options))
    needs_lock = stage.backend not in THREAD_SAFE_BACKENDS if lock is None else lock
    return SharedModel(stage, backend, manifest.artifacts[stage.artifact], lock=needs_lock)


def load_fine_tables(models: ModelSet) -> None:
    """The fine stage's constant tables: the text table and, for clip-vit-b16, the description embeddings."""
    manifest, bundle_dir = models.manifest, models.bundle_dir
    models.text_table = _load_npy(bundle_dir, manifest, "text_table")
    emb = manifest.descriptions.embeddings_artifact if manifest.descriptions else None
    if emb:
        models.description_embeddings = _load_npy(bundle_dir, manifest, emb)


def load_models(bundle_dir: Path, manifest: Manifest, plan: BackendPlan, lock: Optional[bool] = None) -> ModelSet:
    """Load every artifact of `plan` once. `lock`: None = a lock only for backends that are not thread-safe.
    Any failure closes what was loaded and raises (one line)."""
    loaded: Dict[str, SharedModel] = {}
    try:
        for stage in plan.stages:
            loaded[stage.stage] = load_stage(stage, manifest, lock)
            log.info("stage %s", loaded[stage.stage].describe())
        models = ModelSet(manifest, bundle_dir, plan, loaded)
        if "fine_head" in loaded:
            load_fine_tables(models)
        return models
    except BaseException:
        for model in loaded.values():
            model.close()
        raise
