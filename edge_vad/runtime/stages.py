"""The cascade's stages on the device: which backend runs which artifact, the coarse stage (every frame) and
the fine stage's per-frame step (while the gate is open). No torch: only the bundle's artifacts.

    plan = plan_backends(manifest, bundle_dir, requested="onnxruntime", runtime=cfg.runtime)
    models = load_models(bundle_dir, manifest, plan)          # loaded ONCE, shared by every pipeline
    coarse = CoarseStage(models)
    state = coarse.initial_state()
    state, out = coarse.step(state, frame.image)               # out.score in [0, 1]

Everything carried from one frame to the next is explicit data (DESIGN.md): the QACM feature window is
`CoarseState`, the fine head's RWKV state is an array passed in and returned by `FineModel.step`.

Coarse score: backbone -> `feature` (pooled F_A); the QACM student reads the last W features (oldest first)
and gives a logit; score = sigmoid(logit). At stream start the FIRST feature is repeated to fill the window,
as edge_vad_models.coarse_heads.QACMStudent.forward pads (so frame t's score equals the trained model's
score at t on the whole sequence).

Fine step (lite0-minilm): the frame's fine image feature (the manifest's `fine.image_input`: the backbone's
trunk_feature, feature, or both concatenated), the frame's description id (argmax of imagenet_logits) ->
text-table row (descriptions.vocabulary_to_row, unseen ids -> fallback row); fine_head(feature, state) ->
L2-normalised video feature v; logits_c = cos(v, table[c, row]) / tau. (clip-vit-b16: the CLIP image tower
gives the embedding, and the description id is the argmax cosine with the description embeddings.)
Event level: per class the mean of the k largest frame logits, k = max(1, n // mil_divisor) (MIL top-k,
as in training), softmax over classes.

Sharing: each artifact is loaded ONCE and every pipeline uses that one instance (`SharedModel`).
onnxruntime documents InferenceSession.run as safe to call from several threads, so its sessions are called
concurrently without a lock; TFLite interpreters and TensorRT execution contexts are not thread-safe, so
their calls take turns under a per-model lock. Measured on the development machine (2 cores shared with
other jobs, so noisy; two pipelines on the Lite0 backbone + QACM, frames/s of both together, three runs):
one shared session without a lock 48 / 125 / 32 (1 intra-op thread) and 29 / 78 / 30 (2 threads); the same
session behind a lock 39 / 66 / 32 and 19 / 51 / 14; a session per pipeline 45 / 123 / 36 and 21 / 16 / 21
at twice the memory. So: shared, lock only where the backend needs one.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_vad.backends import Backend, backend_status, dequantize, get_backend
from edge_vad.bundle.manifest import Artifact, Manifest, TargetProfile
from edge_vad.bundle.package_weights import materialise
from edge_vad.config import RuntimeConfig
from edge_vad.errors import EdgeVadError, MissingDependency
from edge_vad.head_input import MotionState, head_input_dim, head_input_step
from edge_vad.runtime.events import FineSummary
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.preprocess import Preprocessor

log = logging.getLogger("edge_vad.stages")

# Automatic choice, first match wins: a GPU or an Edge TPU when present, else the fp32 reference graphs on
# onnxruntime (the most accurate on a CPU), and the int8 TFLite CPU path only where onnxruntime is missing.
AUTO_ORDER: Tuple[Tuple[str, str], ...] = (
    ("tensorrt", "tensorrt"), ("tflite-int8", "edgetpu"), ("onnx", "onnxruntime"),
    ("tensorrt", "onnxruntime"), ("tflite-int8", "tflite"),
)
TARGET_FOR_BACKEND = {"onnxruntime": "onnx", "tensorrt": "tensorrt", "tflite": "tflite-int8", "edgetpu": "tflite-int8"}
THREAD_SAFE_BACKENDS = ("onnxruntime",)  # run() may be called concurrently (onnxruntime's documentation)
BACKBONE_OUTPUTS = ("feature", "heatmap", "imagenet_logits", "trunk_feature")  # edge_vad_export.onnx_export
TRT_CALIBRATION_BATCH = 8  # frames per TensorRT int8 calibration batch (64 shipped frames -> 8 batches)
HEATMAP_CHANNEL_MEAN = "channel-mean"  # how the F_A channels become one heatmap when no weights are given
HEATMAP_WEIGHTED = "channel-weights"
RUNTIME_STAGES = ("coarse_backbone", "coarse_head", "fine_image", "fine_head")


# --------------------------------------------------------------------------------------------------------
# Which backend runs which artifact
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    stage: str  # coarse_backbone | coarse_head | fine_image | fine_head
    artifact: str  # the manifest's artifact name
    file: Path
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendPlan:
    target: str  # the manifest target whose artifacts run
    backend: str  # the target backend (the coarse stage runs on it)
    stages: Tuple[StagePlan, ...]

    def stage(self, name: str) -> Optional[StagePlan]:
        return next((s for s in self.stages if s.stage == name), None)


def _unavailable(name: str) -> MissingDependency:
    status = backend_status(name)  # EdgeVadError for an unknown name
    return MissingDependency(f"backend {name!r} is unavailable: {status.reason}; {status.detail}")


def choose_target(manifest: Manifest, requested: Optional[str]) -> Tuple[str, str]:
    """(target, backend): `requested` if it can run here and the bundle has a target for it, else the first of
    AUTO_ORDER that can. The backend's own availability is checked first: asking for a missing one is a
    MissingDependency naming what to install, whatever the bundle holds."""
    targets = manifest.targets
    if requested:
        if not backend_status(requested).available:
            raise _unavailable(requested)
        for name, target in targets.items():
            if requested in target.backends:
                return name, requested
        raise EdgeVadError(f"the bundle has no artifacts for backend {requested!r} (its targets: "
                           f"{', '.join(f'{n} -> {t.backends}' for n, t in targets.items())}); drop --backend or "
                           f"re-export with --targets {TARGET_FOR_BACKEND.get(requested, 'onnx')}")
    listed = list(AUTO_ORDER) + [(n, b) for n, t in targets.items() for b in t.backends]
    reasons = []
    for name, backend in listed:
        if name in targets and backend in targets[name].backends:
            status = backend_status(backend)
            if status.available:
                return name, backend
            reasons.append(f"{backend}: {status.reason}")
    raise MissingDependency(f"no backend of the bundle's targets can run here ({'; '.join(dict.fromkeys(reasons))}); "
                            "run `edge-vad models backends` to see what to install")


def _stage_artifact(manifest: Manifest, target: TargetProfile, stage: str, backend: str) -> Optional[str]:
    names = [n for n in target.artifacts if manifest.artifacts[n].stage == stage]
    prefer = "tflite" if backend in ("tflite", "edgetpu") else "onnx"
    names.sort(key=lambda n: manifest.artifacts[n].format != prefer)
    return names[0] if names else None


def _artifact_backend(name: str, art: Artifact, target: TargetProfile, backend: str) -> str:
    """The backend for one artifact: the target's where it can load it, else the host's for its format.
    The fine head is a small recurrent graph: it always runs on onnxruntime (the bundle's notes say so)."""
    if art.format == "tflite":
        return backend if backend in ("tflite", "edgetpu") else "tflite"
    if backend == "tensorrt" and art.stage != "fine_head" and target.tensorrt is not None \
            and name in target.tensorrt.onnx_artifacts:
        return "tensorrt"
    return "onnxruntime"


def _calibration(bundle_dir: Path, manifest: Manifest, name: str) -> Any:
    """int8 TensorRT calibration batches from the bundle's uint8 RGB frames, normalised like live frames."""
    from edge_vad.backends.tensorrt_backend import CalibrationBatcher
    from edge_vad.runtime.preprocess import normalise

    data = np.load(bundle_dir / manifest.artifacts[name].file, allow_pickle=False)
    frames = (np.ascontiguousarray(normalise(f, manifest.preprocessing).transpose(2, 0, 1)) for f in data)
    return CalibrationBatcher(frames, TRT_CALIBRATION_BATCH, (3, manifest.preprocessing.size, manifest.preprocessing.size))


def _options(backend: str, plan_name: str, stage: str, target: TargetProfile, runtime: RuntimeConfig,
             bundle_dir: Path, manifest: Manifest) -> Dict[str, Any]:
    if backend == "onnxruntime":
        return {"threads": runtime.threads}
    if backend == "tflite":
        return {"num_threads": runtime.threads}
    if backend == "edgetpu":
        return {"device": runtime.edgetpu_device} if runtime.edgetpu_device else {}
    if backend == "tensorrt":
        assert target.tensorrt is not None
        precision = target.tensorrt.precision
        if precision == "int8":
            calib = target.tensorrt.calibration_artifact
            if stage == "coarse_backbone" and calib:
                return {"precision": "int8", "calibration": _calibration(bundle_dir, manifest, calib)}
            # the shipped calibration frames are images: only the image graph can be calibrated with them
            log.info("tensorrt: %s has no int8 calibration data of its own; building it in fp16", plan_name)
            precision = "fp16"
        return {"precision": precision}
    return {}


def plan_backends(manifest: Manifest, bundle_dir: Path, requested: Optional[str] = None,
                  runtime: Optional[RuntimeConfig] = None, fine: bool = True) -> BackendPlan:
    """Decide, before loading anything, which artifact of which target runs on which backend."""
    runtime = runtime or RuntimeConfig()
    target_name, backend = choose_target(manifest, requested)
    target = manifest.targets[target_name]
    stages = []
    wanted = RUNTIME_STAGES if fine and manifest.fine is not None else RUNTIME_STAGES[:2]
    for stage in wanted:
        name = _stage_artifact(manifest, target, stage, backend)
        if name is None:
            if stage in ("coarse_backbone", "coarse_head"):
                raise EdgeVadError(f"bundle {bundle_dir}: target {target_name} has no {stage} artifact; re-export it "
                                   "from a checkpoint with a trained QACM student")
            if stage == "fine_head" or manifest.fine.image_input == "clip_visual":  # type: ignore[union-attr]
                raise EdgeVadError(f"bundle {bundle_dir}: the manifest has a fine stage but target {target_name} lists "
                                   f"no {stage} artifact; re-export the bundle")
            continue
        art = manifest.artifacts[name]
        art_backend = _artifact_backend(name, art, target, backend)
        if art_backend != backend and not backend_status(art_backend).available:
            raise _unavailable(art_backend)
        stages.append(StagePlan(stage, name, bundle_dir / art.file, art_backend,
                                _options(art_backend, name, stage, target, runtime, bundle_dir, manifest)))
    return BackendPlan(target_name, backend, tuple(stages))


# --------------------------------------------------------------------------------------------------------
# Loaded models, shared by every pipeline
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Coarse stage
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CoarseState:
    """What the coarse stage carries between frames: the last W head inputs, oldest first (None before the
    first frame), how many frames it has seen, and the frame-difference state of the head input."""

    window: Optional[np.ndarray] = None
    frames: int = 0
    motion: MotionState = MotionState()


def push_window(state: CoarseState, feature: np.ndarray, window: int) -> CoarseState:
    """Slide a feature into the window. The first feature fills the whole window (QACMStudent.forward's pad)."""
    f = np.asarray(feature, dtype=np.float32).reshape(1, -1)
    if state.window is None:
        win = np.repeat(f, window, axis=0)
    else:
        win = np.concatenate([state.window[1:], f], axis=0)
    return CoarseState(win, state.frames + 1, state.motion)


@dataclass(frozen=True, eq=False)
class CoarseOutput:
    score: float  # sigmoid(logit), the coarse anomaly score
    logit: float
    feature: np.ndarray  # [D] pooled F_A (the QACM reads edge_vad.head_input of these)
    trunk_feature: np.ndarray  # [T] pooled backbone trunk
    imagenet_top1: int  # argmax of imagenet_logits: the frame's description id (lite0-minilm)
    heatmap: np.ndarray  # [h, w] F_A channels combined (mean, or manifest weights)


def sigmoid(x: float) -> float:
    # numerically safe in both tails
    return float(1.0 / (1.0 + np.exp(-x))) if x >= 0 else float(np.exp(x) / (1.0 + np.exp(x)))


def _declared_layout(art: Artifact, name: str, outputs: bool = True) -> str:
    infos = art.outputs if outputs else art.inputs
    return next((t.layout for t in infos if t.name == name), "")


class CoarseStage:
    """Backbone + QACM on one frame. Stateless itself: the caller holds the CoarseState."""

    def __init__(self, models: ModelSet, metrics: Optional[Metrics] = None,
                 heatmap_weights: Optional[np.ndarray] = None):
        backbone, head = models.get("coarse_backbone"), models.get("coarse_head")
        if backbone is None or head is None:
            raise EdgeVadError("the coarse stage needs a backbone and a QACM head; re-export the bundle")
        manifest = models.manifest
        self.backbone, self.head, self.metrics = backbone, head, metrics
        art = manifest.artifacts[backbone.plan.artifact]
        missing = [n for n in BACKBONE_OUTPUTS if n not in {s.name for s in backbone.outputs}]
        if missing or len(backbone.inputs) != 1:
            raise EdgeVadError(f"{art.file}: expected one image input and outputs {list(BACKBONE_OUTPUTS)}, missing "
                               f"{missing}; re-export the bundle")
        spec = backbone.inputs[0]
        self.preprocess = Preprocessor(manifest.preprocessing, spec, _declared_layout(art, spec.name, outputs=False))
        self.window = int(manifest.artifacts[head.plan.artifact].window or manifest.coarse.window or 0)
        if self.window < 1:
            raise EdgeVadError(f"bundle {models.bundle_dir}: the QACM artifact records no window W; re-export the bundle")
        self.head_input = head.inputs[0]
        size = int(np.prod([d for d in self.head_input.shape if d is not None]))
        self.head_input_kind = manifest.coarse.head_input
        width = head_input_dim(self.head_input_kind, manifest.coarse.feature_dim)
        if size != self.window * width:
            raise EdgeVadError(f"QACM input {self.head_input.describe()} does not hold {self.window} x {width} "
                               f"head inputs ({self.head_input_kind}); re-export the bundle")
        heat_layout = _declared_layout(art, "heatmap")
        heat_shape = next(s.shape for s in backbone.outputs if s.name == "heatmap")
        self.heat_channel_axis = 3 if heat_layout == "NHWC" or (not heat_layout and heat_shape[-1] == manifest.coarse.feature_dim) else 1
        if heatmap_weights is None:
            heatmap_weights = manifest.coarse.heatmap_weights
        self.heatmap_weights = None if heatmap_weights is None else np.asarray(heatmap_weights, np.float32).reshape(-1)
        if self.heatmap_weights is not None and self.heatmap_weights.shape[0] != manifest.coarse.feature_dim:
            raise EdgeVadError(f"bundle {models.bundle_dir}: {self.heatmap_weights.shape[0]} heatmap weights for "
                               f"{manifest.coarse.feature_dim} F_A channels; re-export the bundle")
        self.heatmap_method = HEATMAP_CHANNEL_MEAN if self.heatmap_weights is None else HEATMAP_WEIGHTED
        log.info("coarse stage: %s input via %s; QACM window %d; heatmap = F_A %s", spec.name, self.preprocess.mode,
                 self.window, self.heatmap_method)

    def initial_state(self) -> CoarseState:
        return CoarseState()

    def _timed(self, stage: str):
        return self.metrics.stage(stage) if self.metrics is not None else nullcontext()

    def backbone_outputs(self, image_bgr: np.ndarray) -> Dict[str, np.ndarray]:
        with self._timed("preprocess"):
            feed = self.preprocess(image_bgr)
        with self._timed("coarse"):
            return self.backbone.infer(feed, raw_inputs=self.preprocess.raw)

    def heatmap(self, heat: np.ndarray) -> np.ndarray:
        maps = np.moveaxis(heat[0], self.heat_channel_axis - 1, -1)  # [h, w, C]
        if self.heatmap_weights is None:
            return maps.mean(axis=-1)
        return np.maximum(maps @ self.heatmap_weights, 0.0)  # the explain module's rule (class_activation)

    def qacm(self, state: CoarseState, feature: np.ndarray) -> Tuple[CoarseState, float]:
        """One frame's pooled feature -> (new state, QACM logit): builds the head input, slides the window."""
        x, motion = head_input_step(feature, state.motion, self.head_input_kind)
        state = push_window(replace(state, motion=motion), x, self.window)
        with self._timed("qacm"):
            feed = {self.head_input.name: state.window.reshape(  # type: ignore[union-attr]
                tuple(d if d is not None else 1 for d in self.head_input.shape))}
            logit = float(next(iter(self.head.infer(feed).values())).reshape(-1)[0])
        return state, logit

    def step(self, state: CoarseState, image_bgr: np.ndarray) -> Tuple[CoarseState, CoarseOutput]:
        out = self.backbone_outputs(image_bgr)
        feature = out["feature"].reshape(-1)
        state, logit = self.qacm(state, feature)
        return state, CoarseOutput(
            score=sigmoid(logit), logit=logit, feature=feature, trunk_feature=out["trunk_feature"].reshape(-1),
            imagenet_top1=int(np.argmax(out["imagenet_logits"])), heatmap=self.heatmap(out["heatmap"]))


# --------------------------------------------------------------------------------------------------------
# Fine stage: one frame at a time, explicit RWKV state
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FineFrame:
    """What the fine stage needs of one scored frame (kept for the pre-roll and queued to the worker)."""

    index: int
    t: float
    feature: Optional[np.ndarray]  # fine image feature (lite0-minilm); None when the fine stage encodes images
    description_id: Optional[int]  # vocabulary id (lite0-minilm: ImageNet top-1); None with an image encoder
    image: Optional[np.ndarray] = None  # BGR frame, only for a fine stage with its own image encoder


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


class FineModel:
    """The fine stage's per-frame step and the event-level summary (see module doc)."""

    def __init__(self, models: ModelSet, metrics: Optional[Metrics] = None):
        manifest = models.manifest
        head = models.get("fine_head")
        if manifest.fine is None or head is None or models.text_table is None or manifest.descriptions is None:
            raise EdgeVadError("the bundle has no fine stage (fine head, text table and descriptions); "
                               "re-export it with a fine.pt, or disable [fine]")
        info, desc = manifest.fine, manifest.descriptions
        self.info, self.descriptions, self.metrics = info, desc, metrics
        self.classes: Tuple[str, ...] = tuple(manifest.classes)
        self.head = head
        self.table = models.text_table  # [C, K, D]
        if self.table.ndim != 3 or self.table.shape[0] != len(self.classes) or self.table.shape[1] != len(desc.rows):
            raise EdgeVadError(f"text table shape {list(self.table.shape)} does not match {len(self.classes)} classes x "
                               f"{len(desc.rows)} description rows; re-export the bundle")
        self.vocab_to_row = np.asarray(desc.vocabulary_to_row, dtype=np.int64)
        self.fallback_row = desc.fallback_row
        art = manifest.artifacts[head.plan.artifact]
        state = art.recurrent_state
        if state is None:
            raise EdgeVadError(f"{art.file}: the manifest records no recurrent state; re-export the bundle")
        self.state_input, self.state_output = state.input, state.output
        init = np.zeros(state.shape, dtype=np.float32)
        for i, row in enumerate(state.rows):
            init[:, i] = state.initial[row]
        self._initial = init
        self.feature_input = next(s for s in head.inputs if s.name != state.input)
        self.video_output = next(s.name for s in head.outputs if s.name != state.output)
        self.image_input = info.image_input
        self.encoder = models.get("fine_image")
        self.needs_image = info.image_input == "clip_visual"
        self.image_preprocess: Optional[Preprocessor] = None
        self.description_embeddings = models.description_embeddings
        if self.needs_image:
            if self.encoder is None or info.preprocessing is None or self.description_embeddings is None:
                raise EdgeVadError("the clip_visual fine stage needs its image tower, its preprocessing and the "
                                   "description embeddings in the bundle; re-export it")
            spec = self.encoder.inputs[0]
            self.image_preprocess = Preprocessor(info.preprocessing, spec,
                                                 _declared_layout(manifest.artifacts[self.encoder.plan.artifact],
                                                                  spec.name, outputs=False))
        elif self.image_input not in ("trunk_feature", "feature", "both"):
            raise EdgeVadError(f"fine.image_input {self.image_input!r} is not one this runtime knows "
                               "(trunk_feature, feature, both, clip_visual); update edge-vad")

    def _timed(self, stage: str):
        return self.metrics.stage(stage) if self.metrics is not None else nullcontext()

    def initial_state(self) -> np.ndarray:
        return self._initial.copy()

    def frame_record(self, index: int, t: float, image: np.ndarray, coarse: CoarseOutput) -> FineFrame:
        """What to keep of a scored frame for the fine stage (no model call for lite0-minilm)."""
        if self.needs_image:
            return FineFrame(index, t, None, None, image)
        parts = {"trunk_feature": (coarse.trunk_feature,), "feature": (coarse.feature,),
                 "both": (coarse.trunk_feature, coarse.feature)}[self.image_input]
        return FineFrame(index, t, np.concatenate(parts).astype(np.float32), coarse.imagenet_top1)

    def encode(self, frame: FineFrame) -> Tuple[np.ndarray, int]:
        """(fine image feature, description id) of a frame; runs the CLIP image tower where there is one."""
        if not self.needs_image:
            assert frame.feature is not None and frame.description_id is not None
            return frame.feature, frame.description_id
        assert self.encoder is not None and self.image_preprocess is not None and frame.image is not None
        with self._timed("fine_encoder"):
            emb = next(iter(self.encoder.infer(self.image_preprocess(frame.image),
                                               raw_inputs=self.image_preprocess.raw).values())).reshape(-1)
        sims = self.description_embeddings @ emb  # type: ignore[operator]
        return emb.astype(np.float32), int(np.argmax(sims))

    def row_of(self, description_id: int) -> int:
        if 0 <= description_id < len(self.vocab_to_row):
            return int(self.vocab_to_row[description_id])
        if self.fallback_row is None:
            raise EdgeVadError(f"description id {description_id} is outside the vocabulary and the bundle has no "
                               "fallback row; re-export the bundle")
        return int(self.fallback_row)

    def step(self, feature: np.ndarray, row: int, state: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One frame: (class logits [C], new state). logits_c = cos(video feature, table[c, row]) / tau."""
        shape = tuple(d if d is not None else 1 for d in self.feature_input.shape)
        with self._timed("fine_head"):
            out = self.head.infer({self.feature_input.name: np.asarray(feature, np.float32).reshape(shape),
                                   self.state_input: state})
        video = out[self.video_output].reshape(-1)
        text = self.table[:, row]  # [C, D], L2-normalised rows
        cos = text @ video / max(float(np.linalg.norm(video)), 1e-12)
        return (cos / self.info.tau).astype(np.float32), out[self.state_output]

    def describe_row(self, row: int, description_id: int) -> str:
        """The matched description text; for the generic fallback row (empty text), the frame's own word."""
        text = self.descriptions.rows[row]
        if text:
            return text
        vocab = self.descriptions.vocabulary
        return vocab[description_id] if 0 <= description_id < len(vocab) else ""

    def summarise(self, frames: Sequence[int], logits: np.ndarray, rows: Sequence[int],
                  description_ids: Sequence[int], top: int = 0) -> FineSummary:
        """Event-level result of the frames seen so far: MIL top-k mean per class, softmax; the class, the
        description of its strongest frame and the frames that made its top-k (strongest first)."""
        logits = np.asarray(logits, dtype=np.float64).reshape(len(frames), len(self.classes))
        k = max(1, len(frames) // self.info.mil_divisor)
        order = np.argsort(-logits, axis=0, kind="stable")[:k]  # [k, C]
        video = np.take_along_axis(logits, order, axis=0).mean(axis=0)
        probs = softmax(video)
        cls = int(np.argmax(probs))
        best = order[:, cls]
        top_frames = [int(frames[i]) for i in best[: top or k]]
        return FineSummary(class_name=self.classes[cls],
                           probs={c: float(p) for c, p in zip(self.classes, probs)},
                           description=self.describe_row(int(rows[best[0]]), int(description_ids[best[0]])),
                           top_snippets=top_frames)
