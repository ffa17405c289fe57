"""The fine stage's per-frame step on the device (while the gate is open) and its event-level summary.

Fine step (lite0-minilm): the frame's fine image feature (the manifest's `fine.image_input`: the backbone's
trunk_feature, feature, or both concatenated), the frame's description id (argmax of the fine_describer
graph, the backbone's ImageNet classifier, on the frame's trunk feature; run only for the frames the fine stage
reads, not on every frame) -> text-table row (descriptions.vocabulary_to_row, unseen ids -> fallback row);
fine_head(feature, state) -> L2-normalised video feature v; logits_c = cos(v, table[c, row]) / tau.
(clip-vit-b16: the CLIP image tower gives the embedding, and the description id is the argmax cosine with the
description embeddings.)
Event level: per class the mean of the k largest frame logits, k = max(1, n // mil_divisor) (MIL top-k,
as in training), softmax over classes. The fine head's RWKV state is an array passed in and returned by
`FineModel.step` (explicit data, DESIGN.md).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.coarse import CoarseOutput, declared_layout
from edge_vad.runtime.events import FineSummary
from edge_vad.runtime.loaded_models import ModelSet
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.preprocess import Preprocessor


@dataclass(frozen=True, eq=False)
class FineFrame:
    """What the fine stage needs of one scored frame (kept for the pre-roll and queued to the worker)."""

    index: int
    t: float
    feature: Optional[np.ndarray]  # fine image feature (lite0-minilm); None when the fine stage encodes images
    describe_from: Optional[np.ndarray]  # trunk feature, the describer's input (lite0-minilm); None with CLIP
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
                                                 declared_layout(manifest.artifacts[self.encoder.plan.artifact],
                                                                  spec.name, outputs=False))
        elif self.image_input not in ("trunk_feature", "feature", "both"):
            raise EdgeVadError(f"fine.image_input {self.image_input!r} is not one this runtime knows "
                               "(trunk_feature, feature, both, clip_visual); update edge-vad")
        self.describer = models.get("fine_describer")
        if desc.source == "imagenet_logits":
            raise EdgeVadError("this bundle's backbone computes ImageNet logits on every frame (exported by an older "
                               "edge-vad); re-export it with `edge-vad export`, which moves them to its "
                               "fine_describer graph")
        if desc.source == "frame_describer" and self.describer is None:
            raise EdgeVadError("the bundle's descriptions come from its fine_describer graph, which its target does "
                               "not list; re-export the bundle")

    def _timed(self, stage: str):
        return self.metrics.stage(stage) if self.metrics is not None else nullcontext()

    def initial_state(self) -> np.ndarray:
        return self._initial.copy()

    def frame_record(self, index: int, t: float, image: np.ndarray, coarse: CoarseOutput) -> FineFrame:
        """What to keep of a scored frame for the fine stage (no model call: that waits for `encode`)."""
        if self.needs_image:
            return FineFrame(index, t, None, None, image)
        parts = {"trunk_feature": (coarse.trunk_feature,), "feature": (coarse.feature,),
                 "both": (coarse.trunk_feature, coarse.feature)}[self.image_input]
        feature = np.concatenate(parts).astype(np.float32, copy=False)  # a copy of the backend's outputs
        # the describer reads the trunk feature: the same array when that is the fine feature (one copy per frame)
        describe_from = feature if self.image_input == "trunk_feature" else coarse.trunk_feature
        return FineFrame(index, t, feature, describe_from)

    def encode(self, frame: FineFrame) -> Tuple[np.ndarray, int]:
        """(fine image feature, description id) of a frame the fine stage reads; runs the describer graph or the
        CLIP image tower."""
        if not self.needs_image:
            assert frame.feature is not None and frame.describe_from is not None and self.describer is not None
            spec = self.describer.inputs[0]
            feed = {spec.name: np.asarray(frame.describe_from, np.float32).reshape(
                tuple(d if d is not None else 1 for d in spec.shape))}
            with self._timed("fine_encoder"):
                logits = next(iter(self.describer.infer(feed).values()))
            return frame.feature, int(np.argmax(logits))
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
