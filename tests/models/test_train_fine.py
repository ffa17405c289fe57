"""Fine-stage training loop (models/training/fine.py): learns a 3-class synthetic problem with the real MiniLM,
restricts the text table to the training descriptions plus a fallback, caps distinct descriptions per step,
saves/loads without any text encoder, and is deterministic under its seed."""

from __future__ import annotations


import numpy as np
import pytest

from edge_vad_test_support.torch_env import one_torch_thread, require_minilm  # noqa: E402, F401

torch = require_minilm()
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.checkpoint import FINE_FILE, FINE_FORMAT  # noqa: E402
from edge_vad_models.fine import DescriptionVocabulary, build_fine_encoders  # noqa: E402
from edge_vad_models.training.fine import (  # noqa: E402
    GENERIC_DESCRIPTION,
    TEXT_TABLE_FILE,
    FineBag,
    FineTrainConfig,
    cap_descriptions,
    evaluate_fine,
    load_fine,
    save_fine,
    train_fine,
    video_probabilities,
)

CLASSES = ["normal", "fighting", "bicycle or vehicle on a walkway"]
# ids 0..3 occur in training frames; id 4 ("bicycle") only in validation -> the fallback row.
VOCAB = DescriptionVocabulary(("suit", "jersey", "street sign", "car wheel", "bicycle")).texts
FEATURE_DIM = 24
CFG = FineTrainConfig(hidden_dim=32, n_ctx=4, epochs=12, lr=3e-3, batch_size=6, max_frames=16, seed=3,
                      max_descriptions_per_step=3, generic_prob=0.1)


def make_bags(n_per_class: int, seed: int, prefix: str, unseen_id: bool = False) -> list[FineBag]:
    """Frame features = class mean + noise; the class shows only in the features, never in the descriptions."""
    means = np.random.default_rng(100).normal(size=(len(CLASSES), FEATURE_DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    bags = []
    for c in range(len(CLASSES)):
        for i in range(n_per_class):
            steps = int(rng.integers(12, 28))
            feats = means[c] + 0.8 * rng.normal(size=(steps, FEATURE_DIM)).astype(np.float32)
            ids = rng.integers(0, 5 if unseen_id else 4, steps)
            bags.append(FineBag(f"{prefix}{c}_{i}", feats, ids, c))
    return bags


@pytest.fixture(scope="module")
def minilm():
    return build_fine_encoders("lite0-minilm").text


@pytest.fixture(scope="module")
def data():
    return make_bags(6, seed=1, prefix="train"), make_bags(4, seed=2, prefix="val", unseen_id=True)


@pytest.fixture(scope="module")
def trained(minilm, data):
    train, val = data
    return train_fine(train, val, CLASSES, VOCAB, CFG, text_encoder=minilm, progress=False)


def test_learns_the_classes_and_reports(trained, data):
    report = trained.report
    assert report["accuracy"] >= 0.9, report
    for name in CLASSES:
        assert report["per_class_accuracy"][name] >= 0.9, report["per_class_accuracy"]
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (3, 3) and confusion.sum() == len(data[1]) and confusion.sum(1).tolist() == [4, 4, 4]
    curve = report["loss_curve"]
    assert len(curve) == CFG.epochs and all(np.isfinite(curve))
    assert np.mean(curve[-3:]) < 0.6 * np.mean(curve[:2]), curve
    assert report["trainable_parameters"] == trained.model.trainable_parameter_count() > 0
    assert report["train_seconds"] > 0
    # the cap of 3 distinct descriptions per step (of 4 + fallback present) must have remapped some frames
    assert all(h["capped_frames"] > 0 for h in trained.history)


def test_table_is_training_descriptions_plus_fallback(trained):
    assert trained.descriptions == VOCAB[:4] + [GENERIC_DESCRIPTION]
    assert trained.fallback_row == 4
    assert trained.description_rows == [0, 1, 2, 3, 4]  # id 4 never occurs in training -> fallback row
    assert trained.table.table.shape == (3, 5, 384)
    assert trained.model.text_frozen
    np.testing.assert_allclose(np.linalg.norm(trained.table.table, axis=-1), 1.0, atol=1e-5)
    assert 0.7 < trained.report["val_description_coverage"] < 1.0  # id 4 is about 1/5 of the validation frames


def test_cap_descriptions_keeps_frequent_and_maps_to_most_similar():
    similarity = np.eye(6)
    similarity[3, 1], similarity[3, 0] = 0.9, 0.2  # row 3 is most like row 1
    similarity[4, 0], similarity[4, 1] = 0.8, 0.1  # row 4 is most like row 0
    rows = np.array([0, 0, 0, 1, 1, 3, 4, 5, 5])  # 5 = fallback, always kept when present
    capped = cap_descriptions(rows, budget=3, similarity=similarity, fallback_row=5)
    assert capped.tolist() == [0, 0, 0, 1, 1, 1, 0, 5, 5]
    assert len(np.unique(capped)) == 3
    assert cap_descriptions(rows, budget=5, similarity=similarity, fallback_row=5) is rows  # within budget: as is


def test_save_load_round_trip_needs_no_text_encoder(trained, data, tmp_path, monkeypatch):
    _, val = data
    path = save_fine(trained, CFG, tmp_path)
    assert path == tmp_path / FINE_FILE
    np.testing.assert_array_equal(np.load(tmp_path / TEXT_TABLE_FILE), trained.table.table)
    expected = video_probabilities(trained.model, val, trained.description_rows)

    def no_text_encoder(*args, **kwargs):
        raise AssertionError("a text encoder was used while loading a fine checkpoint")

    from edge_vad_models.fine import lite0_minilm
    from edge_vad_models.training import fine as fine_module

    monkeypatch.setattr(lite0_minilm.MiniLMTextEncoder, "encode_embeddings", no_text_encoder)
    monkeypatch.setattr(lite0_minilm.MiniLMTextEncoder, "__init__", no_text_encoder)
    monkeypatch.setattr(fine_module, "build_fine_encoders", no_text_encoder)
    model, meta = load_fine(tmp_path)
    got = video_probabilities(model, val, meta["description_rows"])
    np.testing.assert_array_equal(got, expected)
    assert meta["format"] == FINE_FORMAT and meta["class_names"] == CLASSES
    assert meta["descriptions"] == trained.descriptions and meta["config"] == CFG.to_json()
    assert evaluate_fine(model, val, CLASSES, meta["description_rows"])["accuracy"] == trained.report["accuracy"]
    with pytest.raises(EdgeVadError, match="no text encoder"):
        model.use_text_table(None)
        model(torch.zeros(1, 2, FEATURE_DIM), torch.zeros(1, 2, dtype=torch.long))


def test_seed_makes_training_deterministic(minilm, data, trained):
    train, _ = data
    small = FineTrainConfig(**{**CFG.to_json(), "epochs": 2})
    first = train_fine(train, [], CLASSES, VOCAB, small, text_encoder=minilm, progress=False)
    second = train_fine(train, [], CLASSES, VOCAB, small, text_encoder=minilm, progress=False)
    other = train_fine(train, [], CLASSES, VOCAB, FineTrainConfig(**{**small.to_json(), "seed": 4}),
                       text_encoder=minilm, progress=False)
    a, b, c = (r.model.trainable_state_dict() for r in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.history == second.history
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters: the check above can fail
    assert first.report["val"] is None


def test_bad_class_index_is_a_one_line_error(data):
    train, val = data
    bad = FineBag("video_7", np.zeros((5, FEATURE_DIM), np.float32), np.zeros(5, np.int64), 3)
    with pytest.raises(EdgeVadError, match=r"bag 'video_7': class index 3 is out of range for 3 classes") as info:
        train_fine([*train, bad], val, CLASSES, VOCAB, CFG, text_encoder=None, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(EdgeVadError, match="description ids must be in 0..4"):
        train_fine([FineBag("v", np.zeros((2, FEATURE_DIM), np.float32), np.array([0, 5]), 1), *train], val,
                   CLASSES, VOCAB, CFG, progress=False)
    with pytest.raises(EdgeVadError, match="one per frame"):
        FineBag("v", np.zeros((3, FEATURE_DIM), np.float32), np.zeros(2, np.int64), 0)
    with pytest.raises(EdgeVadError, match="max_descriptions_per_step"):
        FineTrainConfig(max_descriptions_per_step=1)
