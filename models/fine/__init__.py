"""Fine stage of TCVADS (paper Sec. IV-B): frozen image/text encoders, prompt learner, descriptions, FineStage.

Encoder implementations ("clip-vit-b16", "lite0-minilm") are imported lazily through `build_fine_encoders`,
so importing this package never pulls in open_clip or transformers.
"""

from __future__ import annotations

from edge_vad_models.fine.descriptions import (
    ClipDescriber,
    DescriptionVocabulary,
    FrameDescriptions,
    Lite0Describer,
    describe_labels,
)
from edge_vad_models.fine.encoders import (
    FineEncoders,
    ImageEncoder,
    ImagePreprocessing,
    TextEncoder,
    build_fine_encoders,
    fine_encoder_names,
)
from edge_vad_models.fine.fine_stage import FineOutput, FineStage, mil_topk_mean
from edge_vad_models.fine.prompt import PromptLearner, TextTable

__all__ = [
    "ClipDescriber", "DescriptionVocabulary", "FineEncoders", "FineOutput", "FineStage", "FrameDescriptions",
    "ImageEncoder", "ImagePreprocessing", "Lite0Describer", "PromptLearner", "TextEncoder", "TextTable",
    "build_fine_encoders", "describe_labels", "fine_encoder_names", "mil_topk_mean",
]
