"""Coarse training: MIL on video labels learns frame-level anomalies (synthetic), the branch
trains jointly through trunk maps, and checkpoints round-trip."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from sklearn.metrics import roc_auc_score  # noqa: E402

from edge_vad_models.training.coarse import CoarseTrainConfig, InputBag, PooledBranch, score_sequence, train_teacher  # noqa: E402


def _bags(n: int, rng: np.random.Generator, maps: bool) -> list[InputBag]:
    """Anomalous bags hold a burst of frames whose first channel is raised (in a 2x2 patch for maps)."""
    bags = []
    for i in range(n):
        label = i % 2
        t = int(rng.integers(24, 48))
        x = rng.normal(size=(t, 8, 3, 3) if maps else (t, 8)).astype(np.float32)
        frames = np.zeros(t, np.uint8)
        if label:
            s = int(rng.integers(0, t - 8))
            frames[s:s + 8] = 1
            if maps:
                x[s:s + 8, 0, :2, :2] += 3.0
            else:
                x[s:s + 8, 0] += 3.0
        bags.append(InputBag(f"v{i}", x, label, frames))
    return bags


@pytest.mark.parametrize("maps", [False, True])
def test_mil_teacher_localises_frames(maps):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, val = _bags(40, rng, maps), _bags(16, rng, maps)
    featurizer = None
    if maps:
        deconv = torch.nn.ConvTranspose2d(8, 4, kernel_size=2, stride=2)
        featurizer = PooledBranch(lambda t: torch.relu(deconv(t)))
        featurizer.deconv = deconv  # registers its parameters with the featurizer
    cfg = CoarseTrainConfig(dim=32, epochs=25, batch_size=8, max_frames=48, dropout=0.0, lr=1e-2)
    teacher, history = train_teacher(train, cfg, in_dim=4 if maps else 8, featurizer=featurizer, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    scores = np.concatenate([score_sequence(teacher, featurizer, b.inputs) for b in val])
    labels = np.concatenate([b.frame_labels for b in val])
    assert roc_auc_score(labels, scores) > 0.9  # frame AUC learned from video labels only


def test_needs_both_labels():
    from edge_vad.errors import EdgeVadError

    bags = [InputBag("a", np.zeros((4, 2), np.float32), 0)]
    with pytest.raises(EdgeVadError, match="both normal"):
        train_teacher(bags, CoarseTrainConfig(epochs=1), in_dim=2, progress=False)
