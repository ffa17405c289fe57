"""Train the TCVADS fine stage (paper Sec. IV-B, Exp. 15-19) on weakly labelled videos, save and load it.

Inputs are `FineBag`s: per-frame image features [T, F] (lite0-minilm: the Lite0 pooled trunk feature, 1280-d;
clip-vit-b16: CLIP image embeddings), a description id per frame (index into the description vocabulary, e.g.
the frame's top-1 ImageNet class) and a video-level class (0 = normal). The loss is FineStage.loss:
alpha * align + beta * contrast, with MIL top-k pooling to video logits.

Descriptions. The text table is restricted to what the data needs:
- rows 0..K-1: the K vocabulary descriptions that occur in the TRAINING frames, in vocabulary-id order;
- row K, the fallback: the generic description "" (learnable context + class label, no frame description).
`description_rows[v]` maps every vocabulary id v to its row; ids never seen in training map to the fallback,
on the device as in validation. The fallback row is trained by description dropout: each training frame's
description is replaced by the fallback with probability `cfg.generic_prob`.

Per-step description budget. While training, the live text encoder runs once per (class, distinct description
of the batch) and is the bottleneck. When a batch holds more than `cfg.max_descriptions_per_step` distinct rows,
the fallback (if present) and the most frequent rows of the batch are kept (ties: lower row first) and every
other frame's description is mapped to the kept row whose plain sentence embedding (the frozen text encoder on
the description text alone, computed once before training) has the highest cosine to its own.

Checkpoint (`save_fine` -> out_dir/fine.pt, written atomically, loads with torch.load(weights_only=True)):
{"format": FINE_FORMAT, "config", "class_names", "descriptions" (the K+1 row texts), "description_rows"
(list, vocabulary id -> row), "fallback_row", "vocabulary_size", "feature_dim", "text_encoder" (embed_dim,
width, context_length: enough to rebuild the prompt's shapes), "trainable" (FineStage.trainable_state_dict(),
text table included), "text_table" (tensor [C, K+1, D], the exact normalised table the model uses), "report",
"history"}; the table also as out_dir/text_table.npy. `load_fine` never builds or runs a text encoder.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from edge_vad.constants import PROMPT_CONTEXT_TOKENS
from edge_vad.errors import EdgeVadError
from edge_vad_models.checkpoint import FINE_FILE, FINE_FORMAT, default_checkpoint_dir, save_atomic
from edge_vad_models.fine.encoders import TextEncoder, build_fine_encoders
from edge_vad_models.fine.fine_stage import FineStage
from edge_vad_models.fine.prompt import TextTable, average_embeddings

log = logging.getLogger(__name__)

GENERIC_DESCRIPTION = ""  # the fallback row's description: context + class label only (PromptLearner's "none")
TEXT_TABLE_FILE = "text_table.npy"
GRAD_CLIP_NORM = 5.0  # same clipping as the coarse teacher's training (models/training/coarse.py)
ENCODE_CHUNK = 256  # sentences per call when embedding the plain descriptions once


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class FineBag:
    """One weakly labelled video for the fine stage.

    features [T, F] float32 per-frame image features; description_ids [T] ints into the description
    vocabulary; class_index the video's class (index into class_names, 0 = normal)."""

    name: str
    features: np.ndarray
    description_ids: np.ndarray
    class_index: int

    def __post_init__(self) -> None:
        feats = np.asarray(self.features, dtype=np.float32)
        ids = np.asarray(self.description_ids)
        if feats.ndim != 2 or feats.shape[0] < 1:
            raise EdgeVadError(f"bag '{self.name}': features must be [T>=1, F], got shape {list(feats.shape)}")
        if ids.shape != (feats.shape[0],) or not np.issubdtype(ids.dtype, np.integer):
            raise EdgeVadError(f"bag '{self.name}': description_ids must be {feats.shape[0]} integers (one per "
                               f"frame), got shape {list(ids.shape)} dtype {ids.dtype}")
        if isinstance(self.class_index, bool) or not isinstance(self.class_index, (int, np.integer)):
            raise EdgeVadError(f"bag '{self.name}': class_index must be an int, got {self.class_index!r}")
        # Coerce once so training never copies per step (frozen dataclass: set through object).
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "description_ids", ids.astype(np.int64, copy=False))
        object.__setattr__(self, "class_index", int(self.class_index))

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class FineTrainConfig:
    encoder: str = "lite0-minilm"  # fine encoder registry name (edge_vad_models.fine.build_fine_encoders)
    hidden_dim: int = 256  # RWKV width of the video branch: our data is small (FineStage's default is 512)
    n_ctx: int = PROMPT_CONTEXT_TOKENS  # learnable prompt tokens
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0  # decoupled AdamW decay ON TOP of the loss's own L2 terms (Exp. 17-18)
    batch_size: int = 8
    max_frames: int = 64  # random crop per bag and step: bounds memory and adds variety
    seed: int = 0
    max_descriptions_per_step: int = 16  # distinct descriptions the live text encoder sees per step (see module doc)
    generic_prob: float = 0.1  # per training frame: chance its description becomes the fallback (trains that row)
    eval_every: int = 0  # validate every N epochs during training (0: only once, after training)

    def __post_init__(self) -> None:
        positive = {"hidden_dim": self.hidden_dim, "epochs": self.epochs, "batch_size": self.batch_size,
                    "max_frames": self.max_frames}
        for key, value in positive.items():
            if value < 1:
                raise EdgeVadError(f"fine training config: {key} must be >= 1, got {value}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise EdgeVadError(f"fine training config: need lr > 0 and weight_decay >= 0, got lr={self.lr}, "
                               f"weight_decay={self.weight_decay}")
        if self.n_ctx < 0 or self.eval_every < 0:
            raise EdgeVadError(f"fine training config: n_ctx and eval_every must be >= 0, got {self.n_ctx}, "
                               f"{self.eval_every}")
        if self.max_descriptions_per_step < 2:
            raise EdgeVadError(f"fine training config: max_descriptions_per_step must be >= 2 (the fallback plus one "
                               f"description), got {self.max_descriptions_per_step}")
        if not 0.0 <= self.generic_prob < 1.0:
            raise EdgeVadError(f"fine training config: generic_prob must be in [0, 1), got {self.generic_prob}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FineTrainResult:
    model: FineStage  # eval mode, text side frozen to `table`
    table: TextTable  # [C, K+1, D]: the K training descriptions, then the fallback
    descriptions: list[str]  # the K+1 row texts
    description_rows: list[int]  # vocabulary id -> table row (unseen ids -> fallback_row)
    fallback_row: int
    history: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)


# ---- descriptions ----------------------------------------------------------------------------------------------

def description_rows_for(train_bags: Sequence[FineBag], vocabulary_size: int) -> tuple[list[int], list[int], int]:
    """(kept vocabulary ids in id order, vocabulary id -> row for every id, fallback row)."""
    seen = np.unique(np.concatenate([b.description_ids for b in train_bags]))
    kept = [int(v) for v in seen]
    fallback = len(kept)
    rows = np.full(vocabulary_size, fallback, dtype=np.int64)
    rows[seen] = np.arange(len(kept))
    return kept, rows.tolist(), fallback


def cap_descriptions(rows: np.ndarray, budget: int, similarity: np.ndarray, fallback_row: int) -> np.ndarray:
    """Map `rows` (table rows of one batch's frames) onto at most `budget` distinct rows (see module doc).

    similarity [R, R]: cosine of the plain description embeddings between table rows (the fallback's row and
    column are never read). Returns the remapped rows, same shape."""
    values, counts = np.unique(rows, return_counts=True)
    if len(values) <= budget:
        return rows
    has_fallback = bool((values == fallback_row).any())
    specific, specific_counts = values[values != fallback_row], counts[values != fallback_row]
    order = np.lexsort((specific, -specific_counts))  # most frequent first, then lower row
    n_keep = budget - int(has_fallback)
    keep, dropped = specific[order[:n_keep]], specific[order[n_keep:]]
    remap = np.arange(similarity.shape[0])
    remap[dropped] = keep[np.argmax(similarity[np.ix_(dropped, keep)], axis=1)]
    return remap[rows]


@torch.no_grad()
def _description_similarity(text_encoder: TextEncoder, texts: Sequence[str]) -> np.ndarray:
    """[R, R] cosine between the plain sentence embeddings of `texts` (frozen encoder, once)."""
    chunks = [text_encoder.encode(list(texts[i:i + ENCODE_CHUNK])) for i in range(0, len(texts), ENCODE_CHUNK)]
    emb = torch.nn.functional.normalize(torch.cat(chunks).float().cpu(), dim=-1)
    return (emb @ emb.T).numpy()


# ---- checks ----------------------------------------------------------------------------------------------------

def _check_bags(bags: Sequence[FineBag], role: str, n_classes: int, vocabulary_size: int,
                feature_dim: Optional[int]) -> None:
    for bag in bags:
        if not 0 <= bag.class_index < n_classes:
            raise EdgeVadError(f"{role} bag '{bag.name}': class index {bag.class_index} is out of range for "
                               f"{n_classes} classes (0..{n_classes - 1}); fix its label or the class list")
        ids = bag.description_ids
        if ids.min() < 0 or ids.max() >= vocabulary_size:
            raise EdgeVadError(f"{role} bag '{bag.name}': description ids must be in 0..{vocabulary_size - 1} "
                               f"(the vocabulary), found {int(ids.min())}..{int(ids.max())}")
        if feature_dim is not None and bag.features.shape[1] != feature_dim:
            raise EdgeVadError(f"{role} bag '{bag.name}': features are {bag.features.shape[1]}-d, other bags "
                               f"{feature_dim}-d; use one feature extractor for all bags")


def _map_rows(ids: np.ndarray, description_rows: Optional[Sequence[int]]) -> np.ndarray:
    if description_rows is None:
        return ids
    table = np.asarray(description_rows, dtype=np.int64)
    if ids.min() < 0 or ids.max() >= len(table):
        raise EdgeVadError(f"description ids must be in 0..{len(table) - 1} (the vocabulary this fine stage was "
                           f"trained with), found {int(ids.min())}..{int(ids.max())}")
    return table[ids]


# ---- evaluation ------------------------------------------------------------------------------------------------

@torch.no_grad()
def video_probabilities(model: FineStage, bags: Sequence[FineBag],
                        description_rows: Optional[Sequence[int]] = None) -> np.ndarray:
    """[N, C] video-level class probabilities, one whole bag at a time (no crop), as on the device.
    `description_rows` maps the bags' vocabulary ids to table rows (None: the ids already are rows)."""
    was_training = model.training
    model.eval()
    device = model.in_proj.weight.device
    out = []
    for bag in bags:
        feats = torch.from_numpy(bag.features)[None].to(device)
        rows = torch.from_numpy(_map_rows(bag.description_ids, description_rows))[None].to(device)
        out.append(model(feats, rows).video_probs[0].float().cpu().numpy())
    model.train(was_training)
    return np.stack(out) if out else np.zeros((0, len(model.class_names)), dtype=np.float32)


def evaluate_fine(model: FineStage, bags: Sequence[FineBag], class_names: Sequence[str],
                  description_rows: Optional[Sequence[int]] = None) -> dict:
    """Video-level metrics: accuracy, per-class accuracy (recall; None for a class with no bags), the confusion
    matrix (rows = true class, columns = predicted) and per-class counts."""
    if tuple(class_names) != tuple(model.class_names):
        raise EdgeVadError(f"class names {list(class_names)} differ from the model's {list(model.class_names)}")
    n_classes = len(class_names)
    _check_bags(bags, "evaluation", n_classes, len(description_rows) if description_rows is not None
                else model.prompt.num_descriptions, model.feature_dim)
    probs = video_probabilities(model, bags, description_rows)
    truth = np.array([b.class_index for b in bags], dtype=np.int64)
    pred = probs.argmax(axis=1) if len(bags) else truth
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    counts = confusion.sum(axis=1)
    per_class = {name: (float(confusion[c, c] / counts[c]) if counts[c] else None)
                 for c, name in enumerate(class_names)}
    return {
        "n_videos": len(bags),
        "accuracy": float((pred == truth).mean()) if len(bags) else None,
        "per_class_accuracy": per_class,
        "class_counts": {name: int(counts[c]) for c, name in enumerate(class_names)},
        "confusion_matrix": confusion.tolist(),
        "confusion_axes": "rows = true class, columns = predicted class, in class_names order",
    }


# ---- training --------------------------------------------------------------------------------------------------

def _make_batch(bags: Sequence[FineBag], rows_of: np.ndarray, cfg: FineTrainConfig, fallback_row: int,
                similarity: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor, float]:
    """Crop, map ids to rows, description dropout, cap distinct rows; pad. -> feats, rows, lengths, capped share."""
    crops, row_crops = [], []
    for bag in bags:
        n = len(bag)
        start = int(rng.integers(0, n - cfg.max_frames + 1)) if n > cfg.max_frames else 0
        stop = min(n, start + cfg.max_frames)
        rows = rows_of[bag.description_ids[start:stop]].copy()
        if cfg.generic_prob > 0:
            rows[rng.random(len(rows)) < cfg.generic_prob] = fallback_row
        crops.append(bag.features[start:stop])
        row_crops.append(rows)
    flat = np.concatenate(row_crops)
    capped = cap_descriptions(flat, cfg.max_descriptions_per_step, similarity, fallback_row)
    changed = float((capped != flat).mean())
    lengths = [len(c) for c in crops]
    steps = max(lengths)
    feats = np.zeros((len(bags), steps, crops[0].shape[1]), dtype=np.float32)
    rows = np.zeros((len(bags), steps), dtype=np.int64)
    offset = 0
    for i, (crop, n) in enumerate(zip(crops, lengths)):
        feats[i, :n] = crop
        rows[i, :n] = capped[offset:offset + n]
        rows[i, n:] = capped[offset]  # padding reuses a row already in the batch: no extra text encoding
        offset += n
    return torch.from_numpy(feats), torch.from_numpy(rows), torch.tensor(lengths), changed


def _frozen_table(model: FineStage) -> TextTable:
    """The table exactly as the model uses it (normalised buffer), for the result and the checkpoint."""
    values = model.text_table.detach().float().cpu()
    return TextTable(table=values.numpy().copy(), mean=average_embeddings(values).numpy(),
                     class_names=model.class_names, descriptions=model.prompt.descriptions)


def train_fine(train_bags: Sequence[FineBag], val_bags: Sequence[FineBag], class_names: Sequence[str],
               vocabulary: Sequence[str], cfg: FineTrainConfig = FineTrainConfig(),
               text_encoder: Optional[TextEncoder] = None, progress: bool = True,
               device: str | torch.device = "cpu") -> FineTrainResult:
    """Train a FineStage (video branch + learnable prompts; the encoders stay frozen), freeze its text table
    and evaluate on `val_bags`. `vocabulary[i]` is the text of description id i (e.g. DescriptionVocabulary.texts).
    `device` runs training there (the text encoder moves with the model); the returned model is on the CPU.
    """
    from tqdm import tqdm

    class_names, vocabulary = list(class_names), list(vocabulary)
    if not train_bags:
        raise EdgeVadError("fine training needs at least one training video")
    if not vocabulary:
        raise EdgeVadError("fine training needs a non-empty description vocabulary")
    feature_dim = train_bags[0].features.shape[1]
    _check_bags(train_bags, "training", len(class_names), len(vocabulary), feature_dim)
    _check_bags(val_bags, "validation", len(class_names), len(vocabulary), feature_dim)
    if len({b.class_index for b in train_bags}) < 2:
        raise EdgeVadError("fine training needs videos of at least two classes in the training list")

    kept_ids, description_rows, fallback_row = description_rows_for(train_bags, len(vocabulary))
    descriptions = [vocabulary[i] for i in kept_ids] + [GENERIC_DESCRIPTION]
    rows_of = np.asarray(description_rows, dtype=np.int64)
    if text_encoder is None:
        text_encoder = build_fine_encoders(cfg.encoder).text
    device = torch.device(device)
    text_encoder.to(device)
    similarity = _description_similarity(text_encoder, descriptions)
    log.info("fine stage: %d training descriptions of %d in the vocabulary, + 1 fallback", len(kept_ids),
             len(vocabulary))

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = FineStage(class_names, text_encoder, descriptions, feature_dim=feature_dim, hidden_dim=cfg.hidden_dim,
                      n_ctx=cfg.n_ctx, normal_class=0).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    history: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc="train fine", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = rng.permutation(len(train_bags))
        sums = {"total": 0.0, "align": 0.0, "contrast": 0.0, "capped": 0.0}
        n_steps = 0
        for i in range(0, len(order), cfg.batch_size):
            bags = [train_bags[j] for j in order[i:i + cfg.batch_size]]
            feats, rows, lengths, capped = _make_batch(bags, rows_of, cfg, fallback_row, similarity, rng)
            labels = torch.tensor([b.class_index for b in bags], device=device)
            losses = model.loss(model(feats.to(device), rows.to(device), lengths.to(device)), labels)
            opt.zero_grad()
            losses["total"].backward()
            nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM)
            opt.step()
            for key in ("total", "align", "contrast"):
                sums[key] += float(losses[key].detach())
            sums["capped"] += capped
            n_steps += 1
        sched.step()
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": sums["total"] / n_steps,
                               "align": sums["align"] / n_steps, "contrast": sums["contrast"] / n_steps,
                               "capped_frames": sums["capped"] / n_steps}
        if val_bags and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            model.freeze_text()
            row["val_accuracy"] = evaluate_fine(model, val_bags, class_names, description_rows)["accuracy"]
            model.use_text_table(None)  # back to the live prompts
        history.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    train_seconds = time.perf_counter() - started

    model.eval()
    model.freeze_text()
    model.cpu()
    table = _frozen_table(model)
    val = evaluate_fine(model, val_bags, class_names, description_rows) if val_bags else None
    if val is not None and history:
        history[-1]["val_accuracy"] = val["accuracy"]
    val_rows = np.concatenate([rows_of[b.description_ids] for b in val_bags]) if val_bags else np.zeros(0)
    report = {
        "val": val,
        "accuracy": val["accuracy"] if val else None,
        "per_class_accuracy": val["per_class_accuracy"] if val else None,
        "confusion_matrix": val["confusion_matrix"] if val else None,
        "loss_curve": [h["loss"] for h in history],
        "train_seconds": train_seconds,
        "trainable_parameters": model.trainable_parameter_count(),
        "n_train_videos": len(train_bags),
        "n_val_videos": len(val_bags),
        "table_shape": list(table.table.shape),
        "kept_descriptions": len(kept_ids),
        "vocabulary_size": len(vocabulary),
        # share of validation frames whose description has its own row (the rest use the fallback)
        "val_description_coverage": float((val_rows != fallback_row).mean()) if len(val_rows) else None,
    }
    return FineTrainResult(model=model, table=table, descriptions=descriptions, description_rows=description_rows,
                           fallback_row=fallback_row, history=history, report=report)


# ---- checkpoint ------------------------------------------------------------------------------------------------

class TableOnlyTextEncoder(TextEncoder):
    """Stands in for the text encoder of a FineStage whose text side is a frozen table (a loaded checkpoint).

    It carries only the shapes the PromptLearner needs (width for the context vectors, embed_dim for the table,
    context_length for the length check); it has no tokenizer and no weights, and any attempt to encode text
    raises. Its prompt layout is therefore empty: nothing reads it while the table is in use."""

    def __init__(self, embed_dim: int, width: int, context_length: int):
        super().__init__()
        self.embed_dim, self.width, self.context_length = int(embed_dim), int(width), int(context_length)
        self.bos_id = self.eos_id = self.pad_id = 0
        self.freeze()

    def word_ids(self, text: str) -> list[int]:
        return []

    def _refuse(self) -> None:
        raise EdgeVadError("this fine stage was loaded from a checkpoint and has no text encoder (its text side is "
                           "the frozen table); build one with build_fine_encoders to train the prompts again")

    def token_embedding(self, ids: Tensor) -> Tensor:
        self._refuse()

    def encode_embeddings(self, token_embeds: Tensor, eot_positions: Tensor, normalize: bool = True) -> Tensor:
        self._refuse()


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(buffer.getvalue())
    os.replace(tmp, path)


def save_fine(result: FineTrainResult, cfg: FineTrainConfig, out_dir: str | os.PathLike) -> Path:
    """Write out_dir/fine.pt (and out_dir/text_table.npy) atomically; returns the fine.pt path."""
    model = result.model
    if not model.text_frozen:
        raise EdgeVadError("the fine stage's text side is not frozen; save the result of train_fine")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder = model.prompt.text_encoder
    table = model.text_table.detach().float().cpu().clone()
    state = {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}
    payload = {
        "format": FINE_FORMAT,
        "config": cfg.to_json(),
        "class_names": list(model.class_names),
        "descriptions": list(result.descriptions),
        "description_rows": [int(r) for r in result.description_rows],
        "fallback_row": int(result.fallback_row),
        "vocabulary_size": len(result.description_rows),
        "feature_dim": int(model.feature_dim),
        "text_encoder": {"embed_dim": int(encoder.embed_dim), "width": int(encoder.width),
                         "context_length": int(encoder.context_length)},
        "trainable": state,
        "text_table": table,
        "report": result.report,
        "history": result.history,
    }
    path = out / FINE_FILE
    _save_npy_atomic(out / TEXT_TABLE_FILE, table.numpy())
    save_atomic(payload, path)
    return path


def load_fine(out_dir: str | os.PathLike) -> tuple[FineStage, dict]:
    """Read out_dir/fine.pt ("default": the shipped models) -> (FineStage in eval mode with the table frozen in,
    metadata: everything in fine.pt but the weights). Builds no text encoder."""
    folder = default_checkpoint_dir() if str(out_dir) == "default" else Path(out_dir)
    path = folder / FINE_FILE
    if not path.is_file():
        raise EdgeVadError(f"no {FINE_FILE} in {folder}; train one with `edge-vad train fine` or pass another folder")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which file, not a pickle traceback
        raise EdgeVadError(f"{path}: unreadable fine-stage checkpoint ({type(exc).__name__}); "
                           "re-run training") from None
    if not isinstance(raw, dict) or raw.get("format") != FINE_FORMAT:
        raise EdgeVadError(f"{path}: not an edge-vad fine checkpoint (expected format {FINE_FORMAT})")
    cfg = raw["config"]
    text = raw["text_encoder"]
    model = FineStage(raw["class_names"], TableOnlyTextEncoder(**text), raw["descriptions"],
                      feature_dim=raw["feature_dim"], hidden_dim=cfg["hidden_dim"], n_ctx=cfg["n_ctx"],
                      normal_class=0)
    model.load_trainable_state_dict(raw["trainable"])
    if not model.text_frozen or not torch.equal(model.text_table, raw["text_table"]):
        raise EdgeVadError(f"{path}: the text table in the weights differs from the stored table; re-run training")
    meta = {k: v for k, v in raw.items() if k not in ("trainable", "text_table")}
    return model.eval(), meta
