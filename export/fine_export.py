"""The fine stage's artifacts: the checkpoint's fine.pt read once (`load_fine_source`), the CLIP image tower
(clip-vit-b16) and the fine head as ONNX with their parity checks, and the constant text table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad_export.export_plan import FILES, ExportPlan
from edge_vad_export.export_work import ExportWork, onnx_artifact


@dataclass
class FineSource:
    """Everything the fine stage's artifacts are made from.

    stage: a FineStage with its text side frozen (stage.text_table [C, K, D]).
    image_input: which per-frame feature feeds the head: trunk_feature | feature | both (lite0-minilm, from
        the coarse backbone) or clip_visual (clip-vit-b16, from `clip_image`).
    vocabulary: description id -> word (ImageNet class names: id == ImageNet class id for lite0-minilm).
    vocabulary_to_row: description id -> text-table row (ids unseen in training -> fallback_row).
    description_embeddings: clip-vit-b16 only, [V, E] CLIP text embeddings of the zero-shot captions.
    """

    stage: Any
    encoder: str
    image_input: str
    vocabulary: list[str]
    vocabulary_to_row: list[int]
    fallback_row: Optional[int] = None
    clip_image: Any = None
    description_embeddings: Optional[np.ndarray] = None
    description_template: Optional[str] = None
    sha256: dict[str, Optional[str]] = field(default_factory=dict)


def image_input_for(feature_dim: int, backbone: Any) -> str:
    """lite0-minilm: which coarse-backbone output the fine stage was trained on, from its width."""
    trunk, branch = backbone.spec.trunk_channels, backbone.branch_channels
    by_dim = {trunk: "trunk_feature", branch: "feature", trunk + branch: "both"}
    if feature_dim not in by_dim:
        raise EdgeVadError(f"fine stage expects {feature_dim}-d frame features, but the coarse backbone gives "
                           f"{trunk} (trunk), {branch} (branch) or {trunk + branch} (both); train both on one backbone")
    return by_dim[feature_dim]


def load_fine_source(folder: Path, plan: ExportPlan, backbone: Any) -> Optional[FineSource]:
    """The ONE place that reads fine.pt (edge_vad_models.training.fine.load_fine). None: no fine.pt."""
    from edge_vad_models.backbones import sha256_file
    from edge_vad_models.checkpoint import FINE_FILE
    from edge_vad_models.imagenet import imagenet_class_names
    from edge_vad_models.training.fine import load_fine

    path = Path(folder) / FINE_FILE
    if not path.is_file():
        return None
    stage, meta = load_fine(folder)
    encoder = meta.get("config", {}).get("encoder", "lite0-minilm")
    if encoder != plan.fine_encoder:
        raise EdgeVadError(f"{path} was trained with fine encoder {encoder}; pass --fine-encoder {encoder}")
    words = imagenet_class_names()
    if int(meta["vocabulary_size"]) != len(words):
        raise EdgeVadError(f"{path}: its description vocabulary has {meta['vocabulary_size']} ids, not ImageNet's "
                           f"{len(words)}; this exporter maps descriptions through ImageNet class ids")
    source = FineSource(stage=stage, encoder=encoder, image_input="", vocabulary=words,
                        vocabulary_to_row=[int(r) for r in meta["description_rows"]],
                        fallback_row=meta.get("fallback_row"), sha256={FINE_FILE: sha256_file(path)})
    if encoder == "clip-vit-b16":
        from edge_vad_models.fine.clip_vit_b16 import build_clip_encoders
        from edge_vad_models.fine.descriptions import ClipDescriber, DescriptionVocabulary

        encoders = build_clip_encoders(plan.clip_checkpoint)
        describer = ClipDescriber(encoders.text, DescriptionVocabulary(tuple(words)))
        source.clip_image = encoders.image
        source.image_input = "clip_visual"
        source.description_embeddings = describer.vocabulary_embeddings.numpy().astype(np.float32)
        source.description_template = describer.template
        source.sha256["clip_checkpoint"] = sha256_file(plan.clip_checkpoint)
    else:
        source.image_input = image_input_for(stage.feature_dim, backbone)
    return source


# --------------------------------------------------------------------------------------------------------
# 3. Export
# --------------------------------------------------------------------------------------------------------


def _resize_cover_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """CLIP's pixel path: shorter side to `size` (bicubic), centre crop size x size."""
    import cv2

    h, w = frame.shape[:2]
    scale = size / min(h, w)
    resized = cv2.resize(frame, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=cv2.INTER_CUBIC)
    top = (resized.shape[0] - size) // 2
    left = (resized.shape[1] - size) // 2
    return resized[top:top + size, left:left + size]


def clip_pixels(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """uint8 BGR frame -> CLIP input [1, 3, size, size] float32 (RGB, CLIP mean / std)."""
    from edge_vad.constants import CLIP_MEAN, CLIP_STD

    rgb = _resize_cover_crop(frame_bgr, size)[..., ::-1].astype(np.float32) / 255.0
    x = (rgb - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def export_fine(work: ExportWork, fine: FineSource, backbone: Any, frames: list[np.ndarray], frames_note: str,
                 backbone_ref: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    from edge_vad_export import onnx_export as ox
    from edge_vad_export import parity as px

    stage = fine.stage.eval()
    if not stage.text_frozen:
        raise EdgeVadError("the fine stage's text side is not frozen (no text table); export a trained fine.pt")
    writer, progress = work.writer, work.progress
    fields: dict[str, Any] = {}
    if fine.image_input == "clip_visual":
        if fine.clip_image is None:
            raise EdgeVadError("clip-vit-b16 fine stage without its CLIP image encoder; pass --clip-checkpoint")
        size = int(fine.clip_image.image_size)
        progress.step(f"CLIP image tower ({size}x{size}) -> ONNX")
        graph = ox.export_clip_visual(fine.clip_image, writer.path(FILES["clip_visual"]))
        pixels = [clip_pixels(f, size) for f in frames]
        checks, ref = px.onnx_vs_torch(ox.ClipVisual(fine.clip_image), graph.path, [{"image": x} for x in pixels],
                                       what=frames_note)
        onnx_artifact(work, "clip_visual", "fine_image", graph, checks)
        real = ref["embedding"][:, 0]
        from edge_vad.constants import CLIP_MEAN, CLIP_STD

        fields["preprocessing"] = {"size": size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "pixel_format": "RGB",
                                   "resize": "shorter side to size, cv2.INTER_CUBIC, centre crop", "interpolation": "cubic",
                                   "layout": "NCHW"}
    else:
        parts = {"trunk_feature": [backbone_ref["trunk_feature"][:, 0]], "feature": [backbone_ref["feature"][:, 0]]}
        parts["both"] = parts["trunk_feature"] + parts["feature"]
        real = np.concatenate(parts[fine.image_input], axis=-1)
        export_describer(work, backbone, backbone_ref["trunk_feature"], frames_note)
    if real.shape[-1] != stage.feature_dim:
        raise EdgeVadError(f"fine stage expects {stage.feature_dim}-d features, its image input "
                           f"{fine.image_input} gives {real.shape[-1]}")

    progress.step(f"fine head (one RWKV step) -> ONNX (parity over {px.RECURRENT_STEPS} steps)")
    head = ox.FineHeadStep.from_stage(stage)
    graph = ox.export_fine_head(head, writer.path(FILES["fine_head"]))
    seq = px.feature_sequence(real, px.RECURRENT_STEPS, stage.feature_dim)
    check = px.recurrent_parity(graph.path, seq, stage.rwkv.init_state(1).numpy(),
                                lambda s: stage.video_features(torch.from_numpy(s)).detach().numpy(),
                                "frame_feature", "video_feature", what="video feature")
    onnx_artifact(work, "fine_head", "fine_head", graph, {"video_feature_recurrent_vs_parallel": check},
                   recurrent_state=ox.rwkv_state_info(stage.rwkv))

    table = stage.text_table.detach().float().cpu().numpy().astype(np.float32)
    ox.save_npy(table, writer.path(FILES["text_table"]))
    writer.add("text_table", FILES["text_table"], "text_table", "npy", "fp32", shape=list(table.shape),
               layout="[classes, descriptions, dim], L2-normalised rows")
    if fine.description_embeddings is not None:
        emb = np.asarray(fine.description_embeddings, np.float32)
        ox.save_npy(emb, writer.path(FILES["description_embeddings"]))
        writer.add("description_embeddings", FILES["description_embeddings"], "text_table", "npy", "fp32",
                   shape=list(emb.shape), layout="[vocabulary, dim], L2-normalised CLIP text embeddings of the "
                   "zero-shot captions; description id = argmax cosine with the frame's CLIP embedding")
    return fields


def export_describer(work: ExportWork, backbone: Any, trunk_features: np.ndarray, frames_note: str) -> None:
    """lite0-minilm: the backbone's ImageNet classifier as its own graph (trunk feature -> ImageNet logits), so
    that the per-frame backbone does not compute logits that only the fine stage's descriptions read. Its
    weights stay in the backbone's pip package, as the backbone's own do."""
    from edge_vad_export import onnx_export as ox
    from edge_vad_export import parity as px
    from edge_vad_export.export_plan import DESCRIBER_WEIGHTS_FILE
    from edge_vad_export.package_weights import leave_in_package

    work.progress.step("ImageNet classifier (frame descriptions) -> ONNX")
    graph = ox.export_fine_describer(backbone, work.writer.path(FILES["fine_describer"]))
    package_weights, loadable = leave_in_package(work, backbone, graph.path, DESCRIBER_WEIGHTS_FILE)
    checks, _ = px.onnx_vs_torch(backbone.classifier, loadable, [{"trunk_feature": x} for x in trunk_features],
                                 what=f"trunk features of {frames_note}")
    onnx_artifact(work, "fine_describer", "fine_describer", graph, checks, package_weights=package_weights)


# -- int8 (tflite hook) -------------------------------------------------------------------------------------------
