"""Per-frame cache of what the frozen backbone sees, made once so that every design and fold fits on it.

Per video `<name>` in the cache folder (float16 maps, float32 vectors; numpy files, git-ignored under runs/):
- `<name>.trunk.npy`  [T, 1280, 7, 7]  the Lite0 trunk map (the head conv, stride 32);
- `<name>.mid.npy`    [T, 112, 14, 14] the stride-16 stage (block 10's output), for finer maps;
- `<name>.pooled.npy` [T, 1280]        the trunk map's spatial mean, in float32 (the runtime's trunk_feature);
- `<name>.pixdiff.npy`[T]              mean absolute difference of consecutive greyscale frames at their own
                                       size (row 0 repeats row 1): the issue's trivial motion baselines;
- `<name>.grey224.npy`[T, 224, 224]    uint8 grey model input (edge_vad.runtime.heatmap.grey_input): the
                                       scene calibration's and the heatmap's grey-level motion.
`cache_spec.json` names the backbone weights and the preprocessing; a cache made otherwise is refused, so a
change of resize (issue 12: "exact-area") can never mix old and new maps.

Frames go through `AdjustMobileNet.preprocess_bgr` one by one at their decoded size: exactly the resize the
runtime applies (edge_vad.resize), with no pre-shrink, so training sees what the device sees.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from edge_vad.datasets import Clip
from edge_vad.errors import EdgeVadError
from edge_vad_models.backbones import AdjustMobileNet
from edge_vad_models.features import iter_frames, save_npy_atomic, write_json_atomic

log = logging.getLogger(__name__)

MID_BLOCK = 10  # index of the last stride-16 block of EfficientNet-Lite0 (112 channels, 14 x 14)
PARTS = ("trunk", "mid", "pooled", "pixdiff", "grey224")
SPEC_FILE = "cache_spec.json"
BATCH_FRAMES = 16


class TrunkAndMid(nn.Module):
    """Lite0 stem + blocks + head conv, returning (trunk map, stride-16 map); drop-connect is off in eval."""

    def __init__(self, backbone: AdjustMobileNet):
        super().__init__()
        self.net = backbone.trunk.net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        mid = h
        for idx, block in enumerate(net._blocks):
            h = block(h)
            if idx == MID_BLOCK:
                mid = h
        return net._swish(net._bn1(net._conv_head(h))), mid


class CacheRunner:
    """Both maps through onnxruntime (Lite0's eager depthwise convolutions are ~20x slower, models/features.py)."""

    def __init__(self, backbone: AdjustMobileNet, threads: int = 1):
        import onnxruntime as ort

        self.backbone = backbone.eval()
        self._dir = tempfile.TemporaryDirectory(prefix="edge-vad-cache-")
        path = Path(self._dir.name) / "trunk_mid.onnx"
        size = backbone.preprocess.size
        with torch.no_grad():
            torch.onnx.export(TrunkAndMid(backbone).eval(), torch.zeros(1, 3, size, size), str(path), dynamo=False,
                              opset_version=17, input_names=["image"], output_names=["trunk", "mid"],
                              dynamic_axes={"image": {0: "batch"}, "trunk": {0: "batch"}, "mid": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, frames_bgr: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([self.backbone.preprocess_bgr(f).numpy() for f in frames_bgr])
        trunk, mid = self.session.run(None, {"image": x})
        return trunk, mid


def pixel_differences(frames_grey: Sequence[np.ndarray]) -> np.ndarray:
    """[T] mean |g_t - g_(t-1)| of greyscale frames (row 0 repeats row 1; 0 for a one-frame video)."""
    d = [float(np.abs(b.astype(np.float32) - a.astype(np.float32)).mean()) for a, b in zip(frames_grey, frames_grey[1:])]
    return np.asarray(d[:1] + d if d else [0.0], dtype=np.float32)


def _batches(frames: Iterable[np.ndarray], size: int):
    batch: list[np.ndarray] = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def cache_video(runner: CacheRunner, path: Path) -> dict[str, np.ndarray]:
    import cv2

    from edge_vad.runtime.heatmap import grey_input

    pre = runner.backbone.preprocess
    trunks, mids, pooled, greys, inputs = [], [], [], [], []
    for batch in _batches(iter_frames(path), BATCH_FRAMES):
        trunk, mid = runner(batch)
        trunks.append(trunk.astype(np.float16))
        mids.append(mid.astype(np.float16))
        pooled.append(trunk.mean(axis=(2, 3)).astype(np.float32))
        greys += [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in batch]
        inputs += [grey_input(f, pre.size, pre.interpolation) for f in batch]
    if not trunks:
        raise EdgeVadError(f"{path}: no frame could be decoded; check the file or remove it from the list")
    return {"trunk": np.concatenate(trunks), "mid": np.concatenate(mids), "pooled": np.concatenate(pooled),
            "pixdiff": pixel_differences(greys), "grey224": np.stack(inputs)}


def cache_spec(backbone: AdjustMobileNet) -> dict:
    return {"backbone": backbone.backbone_name, "backbone_weights_sha256": backbone.weights_sha256(),
            "preprocessing": backbone.preprocess.as_dict(), "mid_block": MID_BLOCK, "parts": list(PARTS)}


@dataclass
class FrameCache:
    """Read access to a built cache: arrays per video and part (memory-mapped)."""

    folder: Path

    def path(self, name: str, part: str) -> Path:
        return self.folder / f"{name}.{part}.npy"

    def get(self, name: str, part: str) -> np.ndarray:
        return np.load(self.path(name, part), mmap_mode="r")

    def has(self, name: str) -> bool:
        return all(self.path(name, p).is_file() for p in PARTS)


def build_cache(clips: Sequence[Clip], folder: Path, progress: bool = True,
                backbone: Optional[AdjustMobileNet] = None) -> FrameCache:
    """Fill `folder` with every part of every clip (finished videos are skipped); returns the reader."""
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = backbone or AdjustMobileNet().eval()
    spec = cache_spec(backbone)
    spec_path = folder / SPEC_FILE
    if spec_path.is_file() and json.loads(spec_path.read_text()) != spec:
        raise EdgeVadError(f"{folder} holds a frame cache made with other preprocessing or weights ({SPEC_FILE} "
                           "differs); delete the folder or pass another --cache")
    write_json_atomic(spec_path, spec)
    cache = FrameCache(folder)
    runner: Optional[CacheRunner] = None
    todo = [c for c in clips if not cache.has(c.name)]
    for clip in tqdm(todo, desc="frame cache", unit="video", disable=not progress):
        runner = runner or CacheRunner(backbone)
        parts = cache_video(runner, clip.path)
        for part in ("mid", "pooled", "pixdiff", "grey224", "trunk"):  # trunk last: has() needs every part
            save_npy_atomic(cache.path(clip.name, part), parts[part])
    return cache


def local_motion(maps: np.ndarray, chunk: int = 64) -> np.ndarray:
    """[T, C, h, w] maps -> [T, C] mean over positions of |map_t - map_(t-1)| (row 0: zeros, no previous frame).

    Unlike the change of the POOLED feature, this sees an object that moves within the frame (its pooled
    feature barely changes) and cancels nothing out."""
    maps = np.asarray(maps)
    out = np.zeros(maps.shape[:2], dtype=np.float32)
    for i in range(1, len(maps), chunk):
        cur = maps[i:i + chunk].astype(np.float32)
        prev = maps[i - 1:i - 1 + len(cur)].astype(np.float32)
        out[i:i + len(cur)] = np.abs(cur - prev).mean(axis=(2, 3))
    return out


DERIVED = ("pooled", "pixdiff", "lmotion", "smax", "mid_lmotion")


def derived_parts(cache: FrameCache, name: str, folder: Optional[Path] = None) -> dict[str, np.ndarray]:
    """Per-frame vectors of one video for fitting heads (kept in `folder`/<name>.npz once computed):
    pooled trunk, pixel difference, trunk local motion, spatial max of the trunk, stride-16 local motion."""
    target = Path(folder) / f"{name}.npz" if folder is not None else None
    if target is not None and target.is_file():
        with np.load(target) as z:
            if set(z.files) >= set(DERIVED):
                return {k: z[k] for k in DERIVED}
    trunk = cache.get(name, "trunk")
    parts = {"pooled": np.asarray(cache.get(name, "pooled")), "pixdiff": np.asarray(cache.get(name, "pixdiff")),
             "lmotion": local_motion(trunk), "smax": np.asarray(trunk).max(axis=(2, 3)).astype(np.float32),
             "mid_lmotion": local_motion(cache.get(name, "mid"))}
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        from edge_vad.fileio import atomic_target

        with atomic_target(target) as tmp:
            np.savez(tmp, **parts)
    return parts
