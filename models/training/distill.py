"""Distil the QACM student from the AFED teacher, the temperature T chosen by Bayesian optimisation
(paper Sec. IV-A (2), Exp. 11-14, Fig. 5).

Training loss (Exp. 14): L_total = L_hard + lam * L_soft(T), with
  L_hard = MIL top-k BCE of the student's snippet logits against the VIDEO label (weak supervision),
  L_soft = T^2 * KL(teacher || student) of the temperature-softened per-snippet Bernoulli outputs (Exp. 11).

What BO minimises (our rule, see `distillation_objective`): the paper writes "minimise L_soft(T)", but L_soft at
temperature T is measured in a different unit for every T (T^2 scaling, softened targets), so comparing its value
across candidates would just favour some T by construction. We instead train a student at each candidate T and
score it on HELD-OUT bags by its fidelity to the teacher at a FIXED temperature of 1: the mean per-snippet
KL(teacher || student) of sigmoid outputs. That is what distillation is for, it is smooth in T, and it is
comparable across candidates. Validation AUCs are recorded beside it, never optimised.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from edge_vad.constants import KD_TEMPERATURE_PAPER, KD_TEMPERATURE_RANGE, QACM_LAYERS
from edge_vad.errors import EdgeVadError
from edge_vad.eval.metrics import frame_metrics
from edge_vad.fileio import SHARED_FILE_MODE, atomic_write_text
from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent
from edge_vad_models.losses import kd_soft_loss, mil_topk_bce
from edge_vad_models.training.bags import FeatureBag
from edge_vad_models.training.bayes_opt import DEFAULT_N_INIT, DEFAULT_N_TOTAL, BOTrace, minimize_1d, plot_trace

_DILATION_SHAPE = (1, 2, 4)  # relative dilations of the three layers: the classic doubling TCN pattern


@dataclass(frozen=True)
class DistillConfig:
    """Student shape and optimiser settings. window = receptive field W of the student (frames); with kernel k
    the dilations are split 1:2:4 so that 1 + (k - 1) * sum(dilations) == window."""

    window: int = 15
    kernel: int = 3
    hidden: int = 64
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    lam: float = 1.0  # lambda of Exp. (14)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kernel < 2:
            raise EdgeVadError(f"QACM kernel must be >= 2 for a temporal receptive field, got {self.kernel}")
        span, rest = divmod(self.window - 1, self.kernel - 1)
        if rest or span < QACM_LAYERS:
            raise EdgeVadError(f"window {self.window} is not 1 + (kernel - 1) * s with s >= {QACM_LAYERS} for kernel "
                               f"{self.kernel}; use e.g. window {1 + (self.kernel - 1) * 7}")
        if self.epochs < 1 or self.batch_size < 1 or self.hidden < 1 or self.lr <= 0 or self.lam < 0:
            raise EdgeVadError(f"DistillConfig needs epochs, batch_size, hidden >= 1, lr > 0, lam >= 0; got {self}")

    @property
    def dilations(self) -> tuple[int, ...]:
        span = (self.window - 1) // (self.kernel - 1)
        weight = sum(_DILATION_SHAPE)
        head = [max(1, round(span * w / weight)) for w in _DILATION_SHAPE[:-1]]
        return (*head, span - sum(head))


@dataclass
class DistillResult:
    """A trained student and its per-epoch losses (mean over batches): epoch, hard, soft, total."""

    student: QACMStudent
    history: list[dict[str, float]] = field(default_factory=list)


def _check_inputs(bags: Sequence[FeatureBag], teacher_logits: Sequence[np.ndarray], what: str) -> int:
    if not bags:
        raise EdgeVadError(f"no {what} bags given; pass at least one FeatureBag")
    if len(bags) != len(teacher_logits):
        raise EdgeVadError(f"{len(bags)} {what} bags but {len(teacher_logits)} teacher logit sequences; "
                           "pass one per bag")
    dims = {b.features.shape[1] for b in bags}
    if len(dims) != 1:
        raise EdgeVadError(f"{what} bags have different feature sizes {sorted(dims)}; use one backbone for all")
    for b, z in zip(bags, teacher_logits):
        if np.shape(z) != (len(b),):
            raise EdgeVadError(f"teacher logits for bag '{b.name}' have shape {list(np.shape(z))}, expected [{len(b)}]")
    return dims.pop()


def _collate(bags: Sequence[FeatureBag], teacher_logits: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest bag. The student is causal, so padding AFTER the end never changes a valid step."""
    length = max(len(b) for b in bags)
    dim = bags[0].features.shape[1]
    x = torch.zeros(len(bags), length, dim)
    z = torch.zeros(len(bags), length)
    lengths = torch.tensor([len(b) for b in bags])
    for i, (b, t) in enumerate(zip(bags, teacher_logits)):
        x[i, :len(b)] = torch.from_numpy(np.asarray(b.features, dtype=np.float32))
        z[i, :len(b)] = torch.from_numpy(np.asarray(t, dtype=np.float32))
    mask = torch.arange(length)[None, :] < lengths[:, None]
    labels = torch.tensor([float(b.label) for b in bags])
    return {"x": x, "teacher": z, "lengths": lengths, "mask": mask, "labels": labels}


def fit_student(train_bags: Sequence[FeatureBag], teacher_logits: Sequence[np.ndarray], temperature: float,
                cfg: DistillConfig = DistillConfig(), progress: bool = True) -> DistillResult:
    """Train a QACMStudent with L_hard + cfg.lam * L_soft(temperature). Deterministic for a given cfg.seed
    (the caller's global torch RNG is left as it was)."""
    in_dim = _check_inputs(train_bags, teacher_logits, "training")
    if not temperature > 0:
        raise EdgeVadError(f"distillation temperature must be > 0, got {temperature}")
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        student = QACMStudent(in_dim, hidden=cfg.hidden, kernel=cfg.kernel, dilations=cfg.dilations)
        if student.window != cfg.window:  # guards the dilation split against a change in QACMStudent
            raise EdgeVadError(f"student window {student.window} != configured window {cfg.window}")
        opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        history: list[dict[str, float]] = []
        student.train()
        for epoch in tqdm(range(cfg.epochs), desc=f"distil T={temperature:.3g}", disable=not progress, leave=False):
            sums = {"hard": 0.0, "soft": 0.0, "total": 0.0}
            order = torch.randperm(len(train_bags), generator=gen).tolist()
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            for idx in batches:
                batch = _collate([train_bags[i] for i in idx], [teacher_logits[i] for i in idx])
                logits = student(batch["x"])
                hard = mil_topk_bce(logits, batch["labels"], batch["lengths"])
                soft = kd_soft_loss(logits, batch["teacher"], temperature, mask=batch["mask"])
                total = hard + cfg.lam * soft
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                for k, v in (("hard", hard), ("soft", soft), ("total", total)):
                    sums[k] += float(v.detach())
            history.append({"epoch": float(epoch), **{k: v / len(batches) for k, v in sums.items()}})
    student.eval()
    return DistillResult(student=student, history=history)


def train_student(train_bags: Sequence[FeatureBag], teacher_logits: Sequence[np.ndarray], temperature: float,
                  cfg: DistillConfig = DistillConfig(), progress: bool = True) -> QACMStudent:
    """Exp. (14) training at a fixed temperature; returns the student in eval mode."""
    return fit_student(train_bags, teacher_logits, temperature, cfg, progress=progress).student


@torch.no_grad()
def predict_logits(model: torch.nn.Module, bags: Sequence[FeatureBag], batch_size: int = 16) -> list[np.ndarray]:
    """Per-snippet logits [T_i] of a [B, T, D] -> [B, T] causal model (QACMStudent or AFEDTeacher) for each bag."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    for i in range(0, len(bags), batch_size):
        chunk = bags[i:i + batch_size]
        batch = _collate(chunk, [np.zeros(len(b), np.float32) for b in chunk])
        logits = model(batch["x"])
        out += [logits[j, :len(b)].numpy().astype(np.float32) for j, b in enumerate(chunk)]
    model.train(was_training)
    return out


def teacher_logits_for(teacher: AFEDTeacher, bags: Sequence[FeatureBag]) -> list[np.ndarray]:
    """The teacher's per-snippet logits for each bag (the soft targets of distillation)."""
    return predict_logits(teacher, bags)


def evaluate_student(student: QACMStudent, bags: Sequence[FeatureBag],
                     teacher_logits: Sequence[np.ndarray]) -> dict[str, float | None]:
    """Held-out metrics: fidelity_kl (mean per-snippet KL(teacher || student) of sigmoid outputs at T = 1),
    fidelity_mse (mean squared difference of those probabilities), frame_auc / frame_ano_auc (vs frame labels,
    bags that have them; None when not computable), video_auc (bag max probability vs video labels)."""
    _check_inputs(bags, teacher_logits, "evaluation")
    student_logits = predict_logits(student, bags)
    s = torch.from_numpy(np.concatenate(student_logits))
    t = torch.from_numpy(np.concatenate([np.asarray(z, np.float32) for z in teacher_logits]))
    out: dict[str, float | None] = {
        "fidelity_kl": float(kd_soft_loss(s[None], t[None], 1.0)),
        "fidelity_mse": float(((torch.sigmoid(s) - torch.sigmoid(t)) ** 2).mean()),
        "frame_auc": None, "frame_ano_auc": None, "video_auc": None,
    }
    if len({b.name for b in bags}) != len(bags):
        raise EdgeVadError("evaluation bags must have unique names (frame metrics are keyed by name)")
    labelled = {b.name: i for i, b in enumerate(bags) if b.frame_labels is not None}
    if labelled:
        probs = {n: 1.0 / (1.0 + np.exp(-student_logits[i].astype(np.float64))) for n, i in labelled.items()}
        fm = frame_metrics({n: np.asarray(bags[i].frame_labels) for n, i in labelled.items()}, probs)
        out["frame_auc"], out["frame_ano_auc"] = fm["auc"], fm["ano_auc"]
    video_labels = [b.label for b in bags]
    if 0 < sum(video_labels) < len(video_labels):
        out["video_auc"] = float(roc_auc_score(video_labels, [float(z.max()) for z in student_logits]))
    return out


def _candidate(temperature: float, train_bags: Sequence[FeatureBag], val_bags: Sequence[FeatureBag],
               teacher_logits_train: Sequence[np.ndarray], teacher_logits_val: Sequence[np.ndarray],
               cfg: DistillConfig) -> tuple[float, dict[str, float | None], QACMStudent]:
    student = train_student(train_bags, teacher_logits_train, temperature, cfg, progress=False)
    metrics = evaluate_student(student, val_bags, teacher_logits_val)
    return float(metrics["fidelity_kl"]), metrics, student  # type: ignore[arg-type]


def distillation_objective(temperature: float, train_bags: Sequence[FeatureBag], val_bags: Sequence[FeatureBag],
                           teacher_logits_train: Sequence[np.ndarray], teacher_logits_val: Sequence[np.ndarray],
                           cfg: DistillConfig = DistillConfig()) -> float:
    """The value BO minimises for a candidate T. Rule: train a student at T on the training bags (same seed for
    every T, so candidates differ only by T), then return on the HELD-OUT bags the mean per-snippet
    KL(teacher || student) between sigmoid(teacher logit) and sigmoid(student logit), both at temperature 1.
    Lower = the student reproduces the teacher's scores more faithfully. (Module docstring: why not L_soft(T).)"""
    return _candidate(temperature, train_bags, val_bags, teacher_logits_train, teacher_logits_val, cfg)[0]


def distill_with_bo(train_bags: Sequence[FeatureBag], val_bags: Sequence[FeatureBag],
                    teacher_logits_train: Sequence[np.ndarray], teacher_logits_val: Sequence[np.ndarray],
                    cfg: DistillConfig = DistillConfig(), n_total: int = DEFAULT_N_TOTAL,
                    n_init: int = DEFAULT_N_INIT, seed: int = 0,
                    bounds: tuple[float, float] = KD_TEMPERATURE_RANGE,
                    out_dir: str | os.PathLike[str] | None = None,
                    progress: bool = True) -> tuple[QACMStudent, BOTrace, dict[str, Any]]:
    """Choose T by Bayesian optimisation of `distillation_objective` over `bounds`, return the student trained at
    the chosen T (the one stored from that evaluation, no retraining), the trace and a summary. With out_dir,
    writes out_dir/distill_bo.json (trace + summary) and out_dir/distill_bo.png (Fig. 5 style), atomically."""
    _check_inputs(train_bags, teacher_logits_train, "training")
    _check_inputs(val_bags, teacher_logits_val, "validation")
    evaluations: list[dict[str, Any]] = []
    students: dict[float, dict[str, torch.Tensor]] = {}

    def objective(t: float) -> float:
        value, metrics, student = _candidate(t, train_bags, val_bags, teacher_logits_train, teacher_logits_val, cfg)
        evaluations.append({"temperature": t, "objective": value, **metrics})
        students[t] = copy.deepcopy(student.state_dict())
        return value

    trace = minimize_1d(objective, bounds=bounds, n_init=n_init, n_total=n_total, seed=seed, progress=progress)
    in_dim = train_bags[0].features.shape[1]
    student = QACMStudent(in_dim, hidden=cfg.hidden, kernel=cfg.kernel, dilations=cfg.dilations)
    student.load_state_dict(students[trace.best_x])
    student.eval()
    chosen = next(e for e in evaluations if e["temperature"] == trace.best_x)
    summary: dict[str, Any] = {
        "objective": "held-out mean KL(teacher || student) of per-snippet sigmoid outputs at temperature 1",
        "chosen_temperature": trace.best_x,
        "chosen_objective": trace.best_y,
        "chosen_metrics": chosen,
        "paper_temperature": KD_TEMPERATURE_PAPER,
        "bounds": list(bounds),
        "evaluations": evaluations,
        "config": {**asdict(cfg), "dilations": list(cfg.dilations)},
        "n_train": len(train_bags),
        "n_val": len(val_bags),
    }
    trace.metadata = {"evaluations": evaluations}
    if out_dir is not None:
        out = Path(out_dir)
        # The per-evaluation metrics are already in trace.metadata; no second copy in the file.
        doc = {"trace": trace.to_json(), "summary": {k: v for k, v in summary.items() if k != "evaluations"}}
        # SHARED_FILE_MODE whatever the umask: the report is an ordinary, shareable artifact.
        atomic_write_text(out / "distill_bo.json", json.dumps(doc, indent=2, allow_nan=False, default=_json_default),
                          mode=SHARED_FILE_MODE)
        plot_trace(trace, out / "distill_bo.png", xlabel="temperature T",
                   ylabel="held-out KL(teacher || student)",
                   title=f"QACM distillation: T chosen {trace.best_x:.2f} (paper {KD_TEMPERATURE_PAPER})")
    return student, trace, summary


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


__all__ = ["DistillConfig", "DistillResult", "distill_with_bo", "distillation_objective", "evaluate_student",
           "fit_student", "predict_logits", "teacher_logits_for", "train_student"]
