"""Export parity (DESIGN.md convention 6): every exported graph is run and compared with PyTorch, with a
declared tolerance per output; a failed check fails the export.

Metrics:
- `max_rel_diff` (fp32 ONNX): max |onnx - torch| / max |torch| over all elements and inputs of one output,
  i.e. the worst absolute error relative to the output's own scale (an elementwise ratio is meaningless near
  zero). Tolerance ONNX_REL_TOL = 1e-4 (measured on Lite0: ~2.5e-6).
- recurrent graphs (fine head, teacher step): the single-step ONNX graph stepped RECURRENT_STEPS = 1024 times
  from the initial state, against the PyTorch PARALLEL form over the whole sequence, same metric and tolerance.
- int8 (TFLite): per-sample cosine of the features >= INT8_COSINE_FLOOR (0.98, the issue's floor; DESIGN.md
  measured 0.985 mean on Lite0), and the coarse clip-score AUC within INT8_AUC_TOLERANCE (0.01) of fp32's on
  labelled validation clips.

Frames: real frames from a --calib folder (videos and/or images, any depth); synthetic frames only where no
folder is given (tests on machines without ../shared/data).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from edge_vad.errors import EdgeVadError

ONNX_REL_TOL = 1e-4  # fp32 ONNX vs PyTorch (issue 4)
RECURRENT_STEPS = 1024  # single-step RWKV graph stepped this many times vs the parallel form (issue 4)
INT8_COSINE_FLOOR = 0.98  # int8 feature cosine to fp32 (issue 4)
INT8_AUC_TOLERANCE = 0.01  # |AUC int8 - AUC fp32| on validation clips (issue 4)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Sub-folder names that label validation clips (case-insensitive); fight-surv uses fight / noFight.
NORMAL_FOLDERS = ("normal", "nofight", "no_fight", "negative")
ANOMALY_FOLDERS = ("anomaly", "anomalous", "abnormal", "fight", "violence", "positive")


# --------------------------------------------------------------------------------------------------------
# Checks in the manifest's form
# --------------------------------------------------------------------------------------------------------


def check(metric: str, value: float, tolerance: float, compare: str, detail: str = "") -> dict[str, Any]:
    """A manifest ParityCheck: {metric, value, tolerance, compare, pass, detail}."""
    value = float(value)
    passed = value <= tolerance if compare == "<=" else value >= tolerance
    if not math.isfinite(value):
        passed = False
    return {"metric": metric, "value": value, "tolerance": float(tolerance), "compare": compare, "pass": bool(passed),
            "detail": detail}


def require_passed(artifact: str, checks: Mapping[str, Mapping[str, Any]]) -> None:
    """Fail the export, naming the first failed check: what was measured against what."""
    for name, c in checks.items():
        if not c["pass"]:
            raise EdgeVadError(f"export parity failed for {artifact}: {name} {c['metric']} = {c['value']:.3g}, "
                               f"needs {c['compare']} {c['tolerance']:g} ({c['detail']}); nothing was written")


def max_rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        raise EdgeVadError(f"parity: output shapes differ (exported {got.shape}, PyTorch {ref.shape})")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return float(np.max(np.abs(got - ref)) / max(scale, 1e-12)) if ref.size else 0.0


# --------------------------------------------------------------------------------------------------------
# Running ONNX and PyTorch
# --------------------------------------------------------------------------------------------------------


class OrtRunner:
    """One onnxruntime CPU session (1 thread: deterministic, and the shared CPUs stay free)."""

    def __init__(self, path: Path | str):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {k: np.asarray(v) for k, v in feeds.items()})))


def torch_outputs(module: Any, inputs: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """module(*inputs) in eval / no-grad, its tensor, tuple or NamedTuple result named by `names`."""
    import torch

    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
    values = [out] if isinstance(out, torch.Tensor) else list(out)
    if len(values) != len(names):
        raise EdgeVadError(f"parity: the module returned {len(values)} outputs, expected {list(names)}")
    return {n: v.detach().cpu().numpy() for n, v in zip(names, values)}


def onnx_vs_torch(module: Any, onnx_path: Path | str, samples: Sequence[Mapping[str, np.ndarray]],
                  tolerance: float = ONNX_REL_TOL, what: str = "") -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Per output: max_rel_diff of the ONNX graph vs `module` over `samples` (dicts of named inputs).

    Returns (checks named "<output>_vs_torch", the PyTorch outputs stacked over samples [N, ...])."""
    if not samples:
        raise EdgeVadError("parity needs at least one input sample")
    runner = OrtRunner(onnx_path)
    input_names = [i.name for i in runner.session.get_inputs()]
    got: dict[str, list[np.ndarray]] = {n: [] for n in runner.output_names}
    ref: dict[str, list[np.ndarray]] = {n: [] for n in runner.output_names}
    for sample in samples:
        feeds = {n: np.asarray(sample[n], np.float32) for n in input_names}
        for n, v in runner.run(feeds).items():
            got[n].append(v)
        for n, v in torch_outputs(module, [feeds[n] for n in input_names], runner.output_names).items():
            ref[n].append(v)
    detail = f"{len(samples)} {what or 'inputs'}, ONNX vs PyTorch"
    refs = {n: np.stack(v) for n, v in ref.items()}
    checks = {f"{n}_vs_torch": check("max_rel_diff", max_rel_diff(np.stack(got[n]), refs[n]), tolerance, "<=", detail)
              for n in runner.output_names}
    return checks, refs


def torch_outputs_many(module: Any, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """A module returning a dict of tensors, run on each input; outputs concatenated along the batch axis."""
    import torch

    out: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for x in inputs:
            for k, v in module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).items():
                out.setdefault(k, []).append(v.detach().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def recurrent_parity(onnx_path: Path | str, sequence: np.ndarray, initial_state: np.ndarray,
                     parallel: Callable[[np.ndarray], np.ndarray], input_name: str, output_name: str,
                     tolerance: float = ONNX_REL_TOL, what: str = "") -> dict[str, Any]:
    """Step the single-step graph over `sequence` [T, F] from `initial_state`; compare its outputs [T, ...]
    with `parallel(sequence[None])` [1, T, ...] (the PyTorch parallel form from the same initial state)."""
    runner = OrtRunner(onnx_path)
    state = np.asarray(initial_state, np.float32)
    outs = []
    for x in np.asarray(sequence, np.float32):
        res = runner.run({input_name: x[None], "state": state})
        outs.append(res[output_name][0])
        state = res["state_out"]
    ref = np.asarray(parallel(np.asarray(sequence, np.float32)[None]))[0]
    steps = len(sequence)
    return check("max_rel_diff", max_rel_diff(np.stack(outs), ref), tolerance, "<=",
                 f"{what or output_name}: ONNX single step x {steps} vs PyTorch parallel form over {steps} steps")


def feature_sequence(real: Optional[np.ndarray], length: int, dim: int, seed: int = 0) -> np.ndarray:
    """A [length, dim] stream of features for the recurrent checks: the real per-frame features (cycled,
    each with 10% multiplicative noise so no two steps repeat) where given, else non-negative random ones
    with a slowly drifting scale (backbone features are post-ReLU averages)."""
    rng = np.random.default_rng(seed)
    if real is not None and len(real):
        base = np.asarray(real, np.float32)[np.arange(length) % len(real)]
        return (base * (1.0 + 0.1 * rng.standard_normal(base.shape))).astype(np.float32)
    scale = 0.5 + 0.4 * np.sin(np.linspace(0, 6 * np.pi, length))[:, None]
    return (np.abs(rng.standard_normal((length, dim))) * scale).astype(np.float32)


def qacm_windows(features: np.ndarray, window: int) -> np.ndarray:
    """[T, D] frame features -> [T, W, D]: the window ending at each frame, the first frame repeated at the
    stream start (QACMStudent.forward's rule, which the runtime follows too)."""
    features = np.asarray(features, np.float32)
    padded = np.concatenate([np.repeat(features[:1], window - 1, axis=0), features], axis=0)
    return np.stack([padded[t:t + window] for t in range(len(features))])


# --------------------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------------------


def _media(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES)
    return files


def _video_frames(path: Path, count: int, offset: float) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or total < 1:
            return []
        frames = []
        for j in range(count):
            cap.set(cv2.CAP_PROP_POS_FRAMES, min(total - 1, int((j + offset) * total / count)))
            ok, frame = cap.read()
            if ok and frame is not None:
                frames.append(frame)
        return frames
    finally:
        cap.release()


def _read_image(path: Path) -> Optional[np.ndarray]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return img if img is not None and img.ndim == 3 else None


def collect_frames(folder: Path | str, n: int, offset: float = 0.5) -> list[np.ndarray]:
    """n uint8 BGR frames spread over the videos and images under `folder` (recursively).

    Sources are picked evenly over the sorted list; from each video, frames at evenly spaced positions
    shifted by `offset` (0..1), so two calls with different offsets give different frames.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeVadError(f"calibration folder not found: {folder}; pass --calib DIR with real frames or videos")
    media = _media(folder)
    if not media:
        raise EdgeVadError(f"no videos or images under {folder}; pass --calib DIR with real frames or videos "
                           f"({', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)})")
    images = [p for p in media if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in media if p.suffix.lower() in VIDEO_SUFFIXES]
    frames: list[np.ndarray] = []
    if videos:
        chosen = [videos[int((i + offset) * len(videos) / min(n, len(videos)))] for i in range(min(n, len(videos)))]
        per = -(-n // len(chosen))
        for path in chosen:
            frames.extend(_video_frames(path, per, offset))
    if len(frames) < n and images:
        want = n - len(frames)
        picks = sorted({int((i + offset) * len(images) / min(want, len(images))) for i in range(min(want, len(images)))})
        frames.extend(f for f in (_read_image(images[i]) for i in picks) if f is not None)
    if not frames:
        raise EdgeVadError(f"could not decode any frame under {folder}; check the files (OpenCV could not read them)")
    return frames[:n]


def synthetic_frames(n: int, seed: int = 0, height: int = 360, width: int = 640) -> list[np.ndarray]:
    """Smooth random uint8 BGR frames (blurred noise, not white noise, so activations look more natural).
    For tests where no real frames exist; real exports use collect_frames."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
        out.append(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    return out


def labelled_clips(folder: Path | str) -> list[tuple[Path, int]]:
    """(video or image folder, label) from sub-folders named like normal / anomaly (see NORMAL_FOLDERS,
    ANOMALY_FOLDERS); empty when the folder has no such labelled sub-folders."""
    folder = Path(folder)
    clips: list[tuple[Path, int]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        key = sub.name.lower()
        label = 0 if key in NORMAL_FOLDERS else 1 if key in ANOMALY_FOLDERS else None
        if label is None:
            continue
        videos = sorted(p for p in sub.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        frame_dirs = sorted(p for p in sub.iterdir() if p.is_dir())
        clips.extend((p, label) for p in videos + frame_dirs)
    return clips


def clip_frames(path: Path, count: int) -> list[np.ndarray]:
    """`count` evenly spaced uint8 BGR frames of one video file or image folder."""
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        idx = sorted({int((j + 0.5) * len(images) / count) for j in range(min(count, len(images)))})
        return [f for f in (_read_image(images[i]) for i in idx) if f is not None]
    return _video_frames(path, count, 0.5)


# --------------------------------------------------------------------------------------------------------
# int8 checks (run where the tflite-int8 extra is installed)
# --------------------------------------------------------------------------------------------------------


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2 = np.asarray(a, np.float64).reshape(len(a), -1)
    b2 = np.asarray(b, np.float64).reshape(len(b), -1)
    return np.sum(a2 * b2, axis=1) / np.maximum(np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1), 1e-12)


def int8_feature_checks(fp32: Mapping[str, np.ndarray], int8: Mapping[str, np.ndarray], names: Iterable[str],
                        floor: float = INT8_COSINE_FLOOR) -> dict[str, dict[str, Any]]:
    """Mean per-sample cosine of each named output, int8 vs fp32 ([N, ...] arrays in the same layout)."""
    out = {}
    for name in names:
        cos = cosine_rows(int8[name], fp32[name])
        out[f"{name}_cosine"] = check("cosine_mean", float(cos.mean()), floor, ">=",
                                      f"{len(cos)} held-out real frames, int8 vs fp32; min {cos.min():.4f}")
    return out


def auc_agreement(labels: Sequence[int], fp32_scores: Sequence[float], int8_scores: Sequence[float],
                  tolerance: float = INT8_AUC_TOLERANCE) -> dict[str, Any]:
    """|AUC(int8 clip scores) - AUC(fp32 clip scores)| on labelled clips (both classes needed)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if not 0 < labels.sum() < len(labels):
        raise EdgeVadError("AUC agreement needs validation clips of both labels (normal and anomalous sub-folders)")
    auc32 = float(roc_auc_score(labels, fp32_scores))
    auc8 = float(roc_auc_score(labels, int8_scores))
    return check("auc_abs_diff", abs(auc8 - auc32), tolerance, "<=",
                 f"{len(labels)} clips: AUC fp32 {auc32:.4f}, int8 {auc8:.4f}")


def clip_score(frame_logits: np.ndarray) -> float:
    """Clip score from per-frame logits: the mean of the top-k frame probabilities, k = max(1, T // 16), as the
    coarse training and validation pool them (edge_vad_models.training.validation.clip_score)."""
    from edge_vad_models.training.validation import clip_score as pooled

    return pooled(1.0 / (1.0 + np.exp(-np.asarray(frame_logits, np.float64))))
