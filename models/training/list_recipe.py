"""Train the three TCVADS parts from feature lists (CSV `path,label`, the field's format), with no code change:

    edge-vad train coarse  --list TRAIN.csv [--val-list VAL.csv] [--features-root DIR] --out CKPT
    edge-vad train distill --checkpoint CKPT --list TRAIN.csv [...]
    edge-vad train fine    --checkpoint CKPT --list TRAIN.csv [...] [--classes "normal,fighting,..."]

Each row of a list is one weakly labelled bag (a video, or one crop of it): features [T, D] in a .npy file
(e.g. VadCLIP's CLIP features of XD-Violence / UCF-Crime, or `edge-vad features extract` output). The same
library functions as the default recipe do the work (train_teacher, distill_with_bo, train_fine); this module
only reads the lists, checks them and writes the checkpoint folder:
- coarse.pt with `"feature_source": "list"` (no backbone: edge_vad_models.checkpoint.list_coarse_state);
- distill_bo.json / .png and the student in coarse.pt; fine.pt and text_table.npy;
- metrics.json, one section per command ("coarse", "distill", "fine"), merged and written atomically.

Validation (--val-list) is video-level: lists carry no frame labels. Coarse and distill report the video AUC
of the MIL clip score (mean of the top-k frame probabilities, the pooling used in training); fine reports
accuracy per class. Feature lists carry no per-frame descriptions, so the fine stage's text side uses the
generic description (context + class label) for every frame.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edge_vad.constants import XD_VIOLENCE_CLASSES
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import write_json_atomic
from edge_vad_models.feature_lists import ListEntry, read_feature_list
from edge_vad_models.training import validation as V

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
BO_HOLDOUT_EVERY = 5  # every 5th training bag is held out to choose T, as the default recipe does
NORMAL_CLASS = "normal"
LIST_MAX_FRAMES = 256  # snippets per bag and training step: VadCLIP's visual length for these lists


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class ListItem:
    """One row of a feature list with its features [T, D] (float32, memory-mapped where the file allows)."""

    name: str
    entry: ListEntry
    features: np.ndarray


# ---- reading lists -------------------------------------------------------------------------------------------

def _open_npy(path: Path) -> np.ndarray:
    # Memory-mapped: a training list of XD-Violence holds ~40k files, several GB as float32 in RAM;
    # training reads random crops, so only the crops are paged in. Copy-on-write ("c"), not read-only: torch
    # warns on non-writable arrays, and nothing is ever written back to the file.
    try:
        arr = np.load(path, mmap_mode="c")
    except OSError as exc:
        if exc.errno == errno.ENOMEM:  # one mapping per file: a list can exceed the kernel's vm.max_map_count
            raise EdgeVadError(f"{path}: cannot memory-map more feature files ({exc.strerror}); raise "
                               "vm.max_map_count (sysctl) or split the list") from None
        raise EdgeVadError(f"{path}: not a readable .npy feature file ({exc}); re-extract it") from None
    except ValueError as exc:
        raise EdgeVadError(f"{path}: not a readable .npy feature file ({exc}); re-extract it") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[0] < 1:
        shape = list(arr.shape) if isinstance(arr, np.ndarray) else type(arr).__name__
        raise EdgeVadError(f"{path}: expected features [T, D], got shape {shape}; one 2-D array per file")
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def load_list(csv_path: str | Path, root: Optional[str | Path] = None, option: str = "--list") -> list[ListItem]:
    """Read a feature list and open every feature file. One error line for the first problem: a missing
    file names --features-root, mixed feature widths name the two widths."""
    csv_path = Path(csv_path)
    entries = read_feature_list(csv_path, Path(root) if root is not None else None)
    missing = [e for e in entries if not e.path.is_file()]
    if missing:
        where = f"under --features-root {root}" if root is not None else "at the path in the list"
        raise EdgeVadError(f"{missing[0].path}: feature file not found {where} ({len(missing)} of {len(entries)} "
                           f"in {option} {csv_path} missing); pass --features-root with the folder that holds them")
    items: list[ListItem] = []
    seen: dict[str, int] = {}
    for entry in entries:
        feats = _open_npy(entry.path)
        if items and feats.shape[1] != items[0].features.shape[1]:
            raise EdgeVadError(f"{entry.path}: {feats.shape[1]}-d features, but {items[0].entry.path.name} has "
                               f"{items[0].features.shape[1]}-d; use one feature extractor for the whole list")
        stem = entry.path.stem
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        items.append(ListItem(stem if count == 0 else f"{stem}#{count}", entry, feats))
    return items


def feature_dim(items: Sequence[ListItem]) -> int:
    return int(items[0].features.shape[1])


def _check_same_dim(train: Sequence[ListItem], val: Sequence[ListItem], expected: Optional[int] = None,
                    what: str = "") -> None:
    dim = expected if expected is not None else feature_dim(train)
    for role, items in (("--list", train), ("--val-list", val)):
        if items and feature_dim(items) != dim:
            raise EdgeVadError(f"{role} has {feature_dim(items)}-d features but {what or 'the training list'} "
                               f"expects {dim}-d; use the same feature extractor throughout")


def _label_counts(items: Sequence[ListItem]) -> dict[str, int]:
    n1 = sum(i.entry.label for i in items)
    return {"normal": len(items) - n1, "anomalous": n1}


def video_auc(items: Sequence[ListItem], frame_probs: Sequence[np.ndarray]) -> Optional[float]:
    """AUC of the MIL clip score (mean of the top-k frame probabilities) against the video labels;
    None when the list holds only one label."""
    labels = np.array([i.entry.label for i in items])
    return V.safe_auc(labels, np.array([V.clip_score(np.asarray(p)) for p in frame_probs]))


# ---- metrics.json -----------------------------------------------------------------------------------------------

def update_metrics(folder: Path, section: str, value: dict, drop: Sequence[str] = ()) -> Path:
    """Merge `value` as metrics.json[section] (dropping stale `drop` sections); written atomically."""
    path = Path(folder) / METRICS_FILE
    doc: dict[str, Any] = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s is unreadable; writing a new one", path)
        if not isinstance(doc, dict):
            doc = {}
    for key in drop:
        doc.pop(key, None)
    doc[section] = value
    return write_json_atomic(path, doc)


def _writable_checkpoint_dir(spec: str | Path) -> Path:
    """The checkpoint folder a command updates in place; never the shipped default models."""
    from edge_vad_models.checkpoint import default_checkpoint_dir, resolve_checkpoint_dir

    folder = resolve_checkpoint_dir(spec)
    if folder.resolve() == default_checkpoint_dir().resolve():
        raise EdgeVadError(f"--checkpoint {spec} is the shipped default model; copy the folder (cp -r {folder} "
                           "DIR) and pass the copy: training updates its checkpoint folder in place")
    return folder


# ---- coarse -----------------------------------------------------------------------------------------------------

def train_coarse_on_list(train_csv: str | Path, out_dir: str | Path, val_csv: Optional[str | Path] = None,
                         root: Optional[str | Path] = None, cfg: Any = None, progress: bool = True) -> dict:
    """AFED teacher with MIL on the list's video labels; writes out_dir/coarse.pt (no student yet) and the
    "coarse" section of metrics.json. Returns that section."""
    from edge_vad_models.checkpoint import COARSE_FILE, default_checkpoint_dir, list_coarse_state, save_atomic
    from edge_vad_models.training.coarse import CoarseTrainConfig, InputBag, score_sequence, train_teacher

    cfg = cfg or CoarseTrainConfig(max_frames=LIST_MAX_FRAMES)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EdgeVadError(f"--out {out} is a file; pass a folder for the checkpoint")
    if out.resolve() == default_checkpoint_dir().resolve():
        raise EdgeVadError(f"--out {out} is the shipped default model (a backbone checkpoint); pass another folder")
    train = load_list(train_csv, root, "--list")
    val = load_list(val_csv, root, "--val-list") if val_csv is not None else []
    _check_same_dim(train, val)
    dim = feature_dim(train)
    bags = [InputBag(i.name, i.features, i.entry.label) for i in train]

    def validate(teacher, _featurizer) -> dict:
        return {"val_video_auc": video_auc(val, [score_sequence(teacher, None, i.features) for i in val])}

    log.info("coarse: %d training bags (%d-d features), %d validation bags", len(train), dim, len(val))
    started = time.perf_counter()
    teacher, history = train_teacher(bags, cfg, in_dim=dim, validate=validate if val else None, progress=progress)
    seconds = time.perf_counter() - started
    teacher.eval()
    auc = history[-1].get("val_video_auc") if val else None  # validate() runs after the last epoch
    teacher_config = {"in_dim": dim, "dim": cfg.dim}
    extra = {"trained_on": {"list": str(train_csv), "n_bags": len(train)}, "coarse_config": cfg.to_json()}
    save_atomic(list_coarse_state(dim, teacher, teacher_config, extra=extra), out / COARSE_FILE)
    section = {
        "feature_source": "list",
        "train_list": str(train_csv),
        "val_list": str(val_csv) if val_csv is not None else None,
        "feature_dim": dim,
        "n_train": len(train),
        "train_counts": _label_counts(train),
        "n_val": len(val),
        "val_counts": _label_counts(val) if val else None,
        "val_video_auc": auc,
        "video_score": "mean of the top-k frame probabilities (k = T // 16, at least 1), as in MIL training",
        "config": cfg.to_json(),
        "history": history,
        "seconds": seconds,
    }
    update_metrics(out, "coarse", section, drop=("distill",))  # a new teacher makes any old student stale
    return section


# ---- distillation -----------------------------------------------------------------------------------------------

def distill_on_list(checkpoint: str | Path, train_csv: str | Path, val_csv: Optional[str | Path] = None,
                    root: Optional[str | Path] = None, cfg: Any = None, n_total: int = 15,
                    progress: bool = True) -> dict:
    """QACM student from the checkpoint's teacher, T by Bayesian optimisation on held-out training bags (every
    5th); updates coarse.pt (student, its config, T) and writes distill_bo.*, metrics.json["distill"]."""
    from edge_vad_models.checkpoint import COARSE_FILE, load_coarse, save_atomic
    from edge_vad_models.training.bags import FeatureBag
    from edge_vad_models.training.distill import (DistillConfig, distill_with_bo, evaluate_student,
                                                  predict_logits, teacher_logits_for)

    cfg = cfg or DistillConfig()
    folder = _writable_checkpoint_dir(checkpoint)
    ckpt = load_coarse(folder, pretrained_trunk=False)  # only the teacher and the raw entries are needed
    train = load_list(train_csv, root, "--list")
    val = load_list(val_csv, root, "--val-list") if val_csv is not None else []
    _check_same_dim(train, val, ckpt.feature_dim, f"the teacher in {folder / COARSE_FILE}")
    if len(train) < 2:
        raise EdgeVadError(f"--list {train_csv} has {len(train)} bag; distillation needs at least 2 (some are "
                           "held out to choose the temperature)")
    bags = [FeatureBag(i.name, i.features, i.entry.label) for i in train]
    bo_val = bags[::BO_HOLDOUT_EVERY]
    bo_train = [b for k, b in enumerate(bags) if k % BO_HOLDOUT_EVERY]
    teacher = ckpt.teacher
    started = time.perf_counter()
    student, trace, summary = distill_with_bo(bo_train, bo_val, teacher_logits_for(teacher, bo_train),
                                              teacher_logits_for(teacher, bo_val), cfg, n_total=n_total,
                                              out_dir=folder, progress=progress)
    seconds = time.perf_counter() - started
    dim = ckpt.feature_dim
    student_config = {"in_dim": dim, "hidden": cfg.hidden, "kernel": cfg.kernel, "dilations": list(cfg.dilations)}
    raw = dict(ckpt.raw)
    raw.update(student=student.state_dict(), student_config=student_config, temperature=float(trace.best_x),
               distilled_on={"list": str(train_csv), "n_bags": len(train)})
    save_atomic(raw, folder / COARSE_FILE)
    section: dict[str, Any] = {
        "train_list": str(train_csv),
        "val_list": str(val_csv) if val_csv is not None else None,
        "n_train": len(bo_train),
        "n_bo_holdout": len(bo_val),
        "chosen_temperature": float(trace.best_x),
        "objective": summary["objective"],
        "bo_holdout": {k: v for k, v in summary["chosen_metrics"].items() if k != "temperature"},
        "config": summary["config"],
        "n_bo_evaluations": n_total,
        "seconds": seconds,
        "n_val": len(val),
        "val_video_auc": None,
        "val_teacher_video_auc": None,
    }
    if val:
        val_bags = [FeatureBag(i.name, i.features, i.entry.label) for i in val]
        teacher_val = teacher_logits_for(teacher, val_bags)
        fidelity = evaluate_student(student, val_bags, teacher_val)
        sig = lambda z: 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))  # noqa: E731
        section.update(
            val_video_auc=video_auc(val, [sig(z) for z in predict_logits(student, val_bags)]),
            val_teacher_video_auc=video_auc(val, [sig(z) for z in teacher_val]),
            val_fidelity_kl=fidelity["fidelity_kl"], val_fidelity_mse=fidelity["fidelity_mse"],
            val_counts=_label_counts(val))
    update_metrics(folder, "distill", section)
    return section


# ---- fine -------------------------------------------------------------------------------------------------------

def class_names_for(train: Sequence[ListItem], classes: Optional[str] = None) -> list[str]:
    """The fine stage's classes, "normal" first. Default: the classes the training list's labels name, in the
    paper's XD-Violence order where they are XD classes (XD codes were mapped by read_feature_list), else
    alphabetically. `classes`: an explicit comma list, which must start with "normal"."""
    present = {i.entry.class_name for i in train}
    if classes is not None:
        names = [c.strip().lower() for c in classes.split(",") if c.strip()]
        if len(set(names)) != len(names):
            raise EdgeVadError(f"--classes {classes!r} lists a class twice; name each class once")
        if not names or names[0] != NORMAL_CLASS:
            raise EdgeVadError(f"--classes {classes!r} must start with `{NORMAL_CLASS}` (class 0 is the normal "
                               "class of the fine stage's contrastive loss)")
        if len(names) < 2:
            raise EdgeVadError(f"--classes {classes!r} needs at least one anomaly class after `{NORMAL_CLASS}`")
        return names
    if present <= set(XD_VIOLENCE_CLASSES):
        return [c for c in XD_VIOLENCE_CLASSES if c in present or c == NORMAL_CLASS]
    return [NORMAL_CLASS] + sorted(present - {NORMAL_CLASS})


def _fine_bags(items: Sequence[ListItem], classes: Sequence[str], option: str) -> list:
    from edge_vad_models.training.fine import FineBag

    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({i.entry.class_name for i in items} - set(index))
    if unknown:
        raise EdgeVadError(f"{option} has videos of class(es) {', '.join(unknown)} that are not among the classes "
                           f"{', '.join(classes)}; add them to --classes")
    # No per-frame descriptions in a feature list: every frame gets description id 0 = the generic description.
    return [FineBag(i.name, i.features, np.zeros(len(i.features), dtype=np.int64), index[i.entry.class_name])
            for i in items]


def train_fine_on_list(checkpoint: str | Path, train_csv: str | Path, val_csv: Optional[str | Path] = None,
                       root: Optional[str | Path] = None, classes: Optional[str] = None, cfg: Any = None,
                       clip_checkpoint: Optional[str | Path] = None, progress: bool = True,
                       text_encoder: Any = None) -> dict:
    """Fine stage (prompt learning + RWKV video head) on the list's video classes; writes fine.pt and
    text_table.npy into the checkpoint folder and metrics.json["fine"]. Every frame uses the generic
    description. `text_encoder` overrides the one cfg.encoder names (tests pass a shared one)."""
    from edge_vad_models.fine import build_fine_encoders
    from edge_vad_models.fine.encoders import fine_encoder_names
    from edge_vad_models.training.fine import GENERIC_DESCRIPTION, FineTrainConfig, save_fine, train_fine

    cfg = cfg or FineTrainConfig(max_frames=LIST_MAX_FRAMES, generic_prob=0.0)
    folder = _writable_checkpoint_dir(checkpoint)
    if cfg.encoder not in fine_encoder_names():
        raise EdgeVadError(f"unknown --fine-encoder {cfg.encoder!r}; choose one of: {', '.join(fine_encoder_names())}")
    if cfg.encoder == "clip-vit-b16" and clip_checkpoint is None and text_encoder is None:
        raise EdgeVadError("--fine-encoder clip-vit-b16 needs --clip-checkpoint PATH (CLIP weights are never "
                           "downloaded); or use --fine-encoder lite0-minilm")
    if cfg.encoder != "clip-vit-b16" and clip_checkpoint is not None:
        raise EdgeVadError("--clip-checkpoint is only used with --fine-encoder clip-vit-b16; drop it or switch encoder")
    train = load_list(train_csv, root, "--list")
    val = load_list(val_csv, root, "--val-list") if val_csv is not None else []
    _check_same_dim(train, val)
    names = class_names_for(train, classes)
    train_bags = _fine_bags(train, names, "--list")
    val_bags = _fine_bags(val, names, "--val-list")
    if text_encoder is None:
        opts = {"checkpoint": clip_checkpoint} if cfg.encoder == "clip-vit-b16" else {}
        text_encoder = build_fine_encoders(cfg.encoder, **opts).text
    log.info("fine: classes %s; %d training videos, %d validation videos", names, len(train_bags), len(val_bags))
    result = train_fine(train_bags, val_bags, names, [GENERIC_DESCRIPTION], cfg, text_encoder=text_encoder,
                        progress=progress)
    save_fine(result, cfg, folder)
    report = result.report
    section = {
        "train_list": str(train_csv),
        "val_list": str(val_csv) if val_csv is not None else None,
        "classes": names,
        "feature_dim": feature_dim(train),
        "descriptions": "generic (context + class label) for every frame: feature lists carry no frame descriptions",
        "n_train": len(train_bags),
        "train_class_counts": {c: sum(b.class_index == k for b in train_bags) for k, c in enumerate(names)},
        "n_val": len(val_bags),
        "accuracy": report["accuracy"],
        "per_class_accuracy": report["per_class_accuracy"],
        "confusion_matrix": report["confusion_matrix"],
        "val_class_counts": report["val"]["class_counts"] if report["val"] else None,
        "loss_curve": report["loss_curve"],
        "trainable_parameters": report["trainable_parameters"],
        "config": cfg.to_json(),
        "seconds": report["train_seconds"],
    }
    update_metrics(folder, "fine", section)
    return section


__all__ = ["ListItem", "class_names_for", "distill_on_list", "load_list", "train_coarse_on_list",
           "train_fine_on_list", "update_metrics", "video_auc"]
