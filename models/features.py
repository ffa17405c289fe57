"""Frame features from videos and image folders, with a spec file saying how they were made.

Two products:
- trunk caches (`extract_trunk_maps`): the backbone's last feature map per frame, fp16
  [N, C, 7, 7]. Training the deconvolution branch jointly with the teacher needs them, and
  they make re-running the branch cheap (no backbone pass).
- feature folders (`extract_features`, the `edge-vad features extract` command): per video
  `<name>.npy` [N, D] frame features and `<name>.snippets.npy` [ceil(N / 16), D] snippet means,
  plus `feature_spec.json`. Re-running skips finished videos; an unreadable video is reported
  by name and skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from edge_vad.constants import SNIPPET_FRAMES
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import atomic_target
from edge_vad.fileio import write_json_atomic as _write_json_atomic
from edge_vad_models.backbones import AdjustMobileNet, sha256_file

log = logging.getLogger(__name__)

FEATURE_KINDS = ("fa", "trunk")  # pooled F_A (the coarse frame feature) or the pooled trunk map
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
SPEC_NAME = "feature_spec.json"


@dataclass(frozen=True)
class FeatureSpec:
    """How a folder of features was made; a consumer refuses features whose spec differs."""

    backbone: str
    backbone_weights_sha256: Optional[str]
    branch_sha256: Optional[str]
    feature: str  # "fa" or "trunk"
    dim: int
    frame_sampling: str = "every decoded frame"
    resize: str = "whole frame to 224x224 as the backbone's PreprocessSpec says (edge_vad.resize), no crop"
    normalisation: dict = field(default_factory=dict)
    snippet_frames: int = SNIPPET_FRAMES
    snippet_rule: str = "mean of 16 consecutive frame features; the last snippet may be shorter"

    def to_json(self) -> dict:
        return asdict(self)


def write_json_atomic(path: Path, data) -> None:
    """Sorted, indented JSON written atomically. NaN stays allowed, as before: default_recipe's
    metrics.json goes through here and a diverged run's loss history may hold NaN."""
    _write_json_atomic(path, data, indent=2, sort_keys=True, allow_nan=True)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    # Through a handle into a `.tmp` name: a crash mid-write leaves nothing a `*.npy` listing picks up.
    with atomic_target(path, keep_suffix=False) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def video_name(path: Path) -> str:
    """Key of a video: the file's stem, or the image folder's name (as `edge-vad score` uses)."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def expand_sources(sources: Sequence[Path]) -> list[Path]:
    """Videos, folders of videos (each video), folders of images (one video), or CSV lists
    (`path,label`, the VadCLIP format: the first column is used)."""
    out: list[Path] = []
    for src in map(Path, sources):
        if src.suffix.lower() == ".csv":
            with open(src, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if not rows or "path" not in rows[0]:
                raise EdgeVadError(f"{src}: expected a CSV with a `path` column (path,label); fix the header")
            out.extend(Path(r["path"]) for r in rows)
        elif src.is_dir():
            videos = sorted(p for p in src.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            out.extend(videos if videos else [src])
        else:
            out.append(src)
    return out


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """uint8 BGR frames of a video file or image folder, in order (a damaged tail ends it)."""
    from edge_vad.sources import open_source

    with open_source(str(path)) as src:
        for frame in src.frames():
            yield frame.image


def _batched(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class TrunkRunner:
    """Runs the backbone trunk through onnxruntime: on this class of CPU the PyTorch eager
    depthwise convolutions are about 20x slower than onnxruntime for Lite0 (measured: ~420 ms
    vs ~18 ms per frame, 1 thread), which decides whether extraction takes minutes or hours."""

    def __init__(self, model: AdjustMobileNet, threads: int = 1):
        import onnxruntime as ort

        self.model = model.eval()
        self._dir = tempfile.TemporaryDirectory(prefix="edge-vad-trunk-")
        onnx_path = Path(self._dir.name) / "trunk.onnx"
        size = model.preprocess.size
        with torch.no_grad():
            torch.onnx.export(model.trunk, torch.zeros(1, 3, size, size), str(onnx_path), dynamo=False,
                              opset_version=17, input_names=["image"], output_names=["trunk"],
                              dynamic_axes={"image": {0: "batch"}, "trunk": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, frames_bgr: list[np.ndarray]) -> np.ndarray:
        # Each frame at its decoded size through the manifest's resize: exactly what the runtime does (no
        # pre-shrink: an extra INTER_AREA step before the backbone's own resize changed the pixels it saw).
        x = np.concatenate([self.model.preprocess_bgr(f).numpy() for f in frames_bgr])
        return self.session.run(None, {"image": x})[0]


def trunk_maps_of(runner: TrunkRunner, path: Path, batch_size: int = 16) -> np.ndarray:
    """Backbone trunk maps of every frame [N, C, 7, 7] as float16."""
    chunks = [runner(batch).astype(np.float16) for batch in _batched(iter_frames(path), batch_size)]
    if not chunks:
        raise EdgeVadError(f"{path}: no frame could be decoded; check the file or remove it from the list")
    return np.concatenate(chunks)


@torch.no_grad()
def features_from_trunk(model: AdjustMobileNet, trunk: np.ndarray, kind: str = "fa",
                        batch_size: int = 256) -> np.ndarray:
    """Frame features [N, D] from cached trunk maps: pooled F_A through the branch, or the pooled trunk."""
    if kind not in FEATURE_KINDS:
        raise EdgeVadError(f"unknown feature kind {kind!r}; use one of {', '.join(FEATURE_KINDS)}")
    out = []
    for i in range(0, len(trunk), batch_size):
        t = torch.from_numpy(trunk[i:i + batch_size].astype(np.float32))
        out.append((model.branch(t).mean(dim=(2, 3)) if kind == "fa" else t.mean(dim=(2, 3))).numpy())
    return np.concatenate(out).astype(np.float32)


def snippet_means(features: np.ndarray, snippet: int = SNIPPET_FRAMES) -> np.ndarray:
    n = len(features)
    return np.stack([features[i:i + snippet].mean(axis=0) for i in range(0, n, snippet)]).astype(np.float32)


def feature_spec(model: AdjustMobileNet, kind: str, branch_sha256: Optional[str]) -> FeatureSpec:
    pre = model.preprocess
    return FeatureSpec(
        backbone=model.backbone_name,
        backbone_weights_sha256=model.weights_sha256(),
        branch_sha256=branch_sha256 if kind == "fa" else None,
        feature=kind,
        dim=model.branch_channels if kind == "fa" else model.spec.trunk_channels,
        normalisation={"mean": list(pre.mean), "std": list(pre.std), "pixel_format": pre.pixel_format},
    )


def extract_features(sources: Sequence[Path], out_dir: Path, model: AdjustMobileNet, kind: str = "fa",
                     branch_sha256: Optional[str] = None, progress: bool = True) -> dict:
    """Write per-video features and the spec; returns {"done": [...], "skipped": [...], "failed": {name: reason}}."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = feature_spec(model, kind, branch_sha256).to_json()
    spec_path = out_dir / SPEC_NAME
    if spec_path.is_file():
        existing = json.loads(spec_path.read_text())
        if existing != spec:
            raise EdgeVadError(f"{out_dir} holds features made differently ({SPEC_NAME} differs); use another --out folder")
    write_json_atomic(spec_path, spec)
    report: dict = {"done": [], "skipped": [], "failed": {}}
    videos = expand_sources(sources)
    runner = TrunkRunner(model)
    for path in tqdm(videos, desc="features", unit="video", disable=not progress):
        name = video_name(path)
        target = out_dir / f"{name}.npy"
        if target.is_file() and (out_dir / f"{name}.snippets.npy").is_file():
            report["skipped"].append(name)
            continue
        try:
            feats = features_from_trunk(model, trunk_maps_of(runner, path), kind)
        except EdgeVadError as exc:
            log.warning("skipping %s: %s", name, exc)
            report["failed"][name] = str(exc)
            continue
        save_npy_atomic(out_dir / f"{name}.snippets.npy", snippet_means(feats))
        save_npy_atomic(target, feats)  # written last: its presence marks the video done
        report["done"].append(name)
    return report


def load_branch(model: AdjustMobileNet, checkpoint: Path) -> str:
    """Load trained branch weights (the `branch` entry of a coarse checkpoint); returns their sha256."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    branch = state.get("branch") if isinstance(state, dict) else None
    if branch is None:
        raise EdgeVadError(f"{checkpoint}: no `branch` weights in this checkpoint; pass a coarse checkpoint from `edge-vad train coarse`")
    model.branch_module.load_state_dict(branch, strict=True)
    return sha256_file(checkpoint)
