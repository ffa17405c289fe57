"""Bundles and videos for the runtime tests (test_pipeline.py, test_run_cli.py, test_score.py, tests/bench):
`any_bundle` prefers the shipped default bundle (no torch needed) and otherwise exports ONE small bundle
(random heads on the real Lite0 trunk, onnx target only) per test session; `exported_bundle` always exports it
(tests that compare with the PyTorch modules need its checkpoint). Importable because pyproject's pytest
`pythonpath` puts tests/ on sys.path.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest

from edge_vad.bundle import MANIFEST_NAME, default_bundle_dir
from edge_vad.head_input import FEATURE_MOTION

TEST_BUNDLE_DIR = "edge_vad_runtime_test_bundle"  # under the session's basetemp: exported once per session
HIDDEN, TEXT_DIM = 32, 32  # fine head width of the test checkpoint (small: fast export)
SUIT = 834  # an ImageNet id given its own text-table row in the test checkpoint


# ----------------------------------------------------------------------------- bundle helpers
def shipped_bundle() -> Optional[Path]:
    path = default_bundle_dir()
    return path if (path / MANIFEST_NAME).is_file() else None


def _write_checkpoint(folder: Path) -> None:
    """coarse.pt (real Lite0 trunk, random branch / teacher / QACM) and fine.pt (random head, random table)."""
    import torch

    from edge_vad_models.backbones import AdjustMobileNet
    from edge_vad_models.checkpoint import coarse_state, save_atomic
    from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent

    torch.manual_seed(0)
    # The heads read [F, M] (256 wide) as the default models do, so export and runtime are tested on that path.
    tcfg, scfg = {"in_dim": 256, "dim": 32}, {"in_dim": 256, "hidden": 16}
    save_atomic(coarse_state(AdjustMobileNet(), AFEDTeacher(**tcfg), tcfg, QACMStudent(**scfg), scfg, temperature=2.5,
                             extra={"head_input": FEATURE_MOTION}), folder / "coarse.pt")
    torch.manual_seed(1)
    write_test_fine(folder, "lite0-minilm", feature_dim=1280, text_dim=TEXT_DIM)


def write_test_fine(folder: Path, encoder: str, feature_dim: int, text_dim: int) -> None:
    """fine.pt with a random head and text table; the SUIT ImageNet id and id 610 get their own description rows."""
    import torch

    from edge_vad.constants import XD_VIOLENCE_CLASSES
    from edge_vad_models.fine.fine_stage import FineStage
    from edge_vad_models.fine.prompt import TextTable, average_embeddings
    from edge_vad_models.training.fine import FineTrainConfig, FineTrainResult, TableOnlyTextEncoder, save_fine

    descriptions = ["a photo of a suit", "a photo of a jersey", ""]
    stage = FineStage(XD_VIOLENCE_CLASSES, TableOnlyTextEncoder(text_dim, text_dim, 77), descriptions,
                      feature_dim=feature_dim, hidden_dim=HIDDEN, n_ctx=4)
    stage.use_text_table(torch.randn(len(XD_VIOLENCE_CLASSES), 3, text_dim))
    rows = [2] * 1000
    rows[SUIT], rows[610] = 0, 1
    table = TextTable(table=stage.text_table.numpy(), mean=average_embeddings(stage.text_table).numpy(),
                      class_names=stage.class_names, descriptions=tuple(descriptions))
    save_fine(FineTrainResult(model=stage.eval(), table=table, descriptions=descriptions, description_rows=rows,
                              fallback_row=2), FineTrainConfig(encoder=encoder, hidden_dim=HIDDEN, n_ctx=4), folder)


def _export_test_checkpoint(root: Path, targets: str, calib_clips: Sequence[Path] = ()) -> Path:
    """The test checkpoint written to root/ckpt and exported to root/bundle with `targets` (once: kept while the
    session's temp folder lives); calibration clips, if any, are linked into root/calib. Skipped without torch."""
    bundle, ckpt, calib = root / "bundle", root / "ckpt", root / "calib"
    if not (bundle / MANIFEST_NAME).is_file():
        torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch) to export a test bundle")
        pytest.importorskip("onnx", reason="needs the export extra (onnx) to export a test bundle")
        from edge_vad.cli.export_cmd import run_export

        torch.set_num_threads(1)
        ckpt.mkdir(parents=True, exist_ok=True)
        _write_checkpoint(ckpt)
        if calib_clips:
            calib.mkdir(exist_ok=True)
            for clip in calib_clips:
                (calib / clip.name).symlink_to(clip)
        run_export(str(ckpt), targets, calib if calib_clips else None, bundle, True, "lite0-minilm", None)
    return bundle


def exported_bundle(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """(bundle, checkpoint folder): exported once per session (about 6 s), skipped without torch."""
    root = tmp_path_factory.getbasetemp() / TEST_BUNDLE_DIR
    return _export_test_checkpoint(root, "onnx"), root / "ckpt"


def exported_trt_bundle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The test checkpoint exported with `--targets onnx,tensorrt --calib` (four real fight-surv clips): a bundle
    whose tensorrt target, calibration frames and reference outputs come from the real exporter. Once per session."""
    clips = [c for label in ("fight", "noFight")
             for c in sorted((shared_data / "fight-surv" / label).glob("*.mp4"))[:2]]
    return _export_test_checkpoint(tmp_path_factory.getbasetemp() / (TEST_BUNDLE_DIR + "_tensorrt"),
                                   "onnx,tensorrt", clips)


def any_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped default bundle when it is there (no torch needed), else the session's exported one."""
    return shipped_bundle() or exported_bundle(tmp_path_factory)[0]


def write_video(path: Path, frames: List[np.ndarray], fps: float) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def stitched_stream(shared_data: Path, out: Path, labels=(0, 1), fps: float = 8.0, first: int = 0):
    """Real fight-surv clips (one per label, in order) stitched at 320x180."""
    from edge_vad.datasets import fight_surv_clips, stitch_clips

    clips = fight_surv_clips(shared_data)
    by = {0: [c for c in clips if c.label == 0], 1: [c for c in clips if c.label == 1]}
    picked = [by[lab][first + i] for i, lab in enumerate(labels)]
    return stitch_clips(picked, out, size=(320, 180), fps=fps)
