"""QACM distillation from the AFED teacher (Exp. 11-14) with the temperature chosen by Bayesian optimisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
pytest.importorskip("sklearn", reason="needs scikit-learn")

from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.coarse_heads import AFEDTeacher  # noqa: E402
from edge_vad_models.training.bags import FeatureBag  # noqa: E402
from edge_vad_models.training.distill import (  # noqa: E402
    DistillConfig,
    distill_with_bo,
    distillation_objective,
    evaluate_student,
    fit_student,
    predict_logits,
    teacher_logits_for,
    train_student,
)

DIM = 8
CFG = DistillConfig(window=7, hidden=16, epochs=30, lr=3e-3, batch_size=8, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_bags(n_normal: int, n_anomalous: int, seed: int, prefix: str):
    """Normal bags: N(0, 1) features. Anomalous bags: one burst of 8-15 frames whose first 3 feature means
    are shifted by +1.5. Teacher logits come from the true frame labels (+-2, small noise): a good teacher."""
    rng = np.random.default_rng(seed)
    bags, logits = [], []
    for i in range(n_normal + n_anomalous):
        t = int(rng.integers(40, 80))
        x = rng.standard_normal((t, DIM)).astype(np.float32)
        frames = np.zeros(t, np.int64)
        label = int(i >= n_normal)
        if label:
            start, length = int(rng.integers(5, t - 20)), int(rng.integers(8, 16))
            frames[start:start + length] = 1
            x[start:start + length, :3] += 1.5
        logits.append((4.0 * frames - 2.0 + 0.3 * rng.standard_normal(t)).astype(np.float32))
        bags.append(FeatureBag(f"{prefix}{i}", x, label, frames))
    return bags, logits


@pytest.fixture(scope="module")
def data():
    train = make_bags(12, 12, seed=0, prefix="train")
    val = make_bags(8, 8, seed=1, prefix="val")
    return train, val


@pytest.fixture(scope="module")
def trained(data):
    torch.set_num_threads(1)
    (train_bags, zt), _ = data
    return fit_student(train_bags, zt, 2.5, CFG, progress=False)


def test_student_learns_the_anomalies(data, trained):
    _, (val_bags, zv) = data
    metrics = evaluate_student(trained.student, val_bags, zv)
    assert metrics["frame_auc"] > 0.9
    assert metrics["video_auc"] > 0.9
    assert metrics["fidelity_kl"] < 0.2  # a student predicting p = 0.5 everywhere scores about 0.33 here


def test_kd_term_decreases(trained):
    soft = [h["soft"] for h in trained.history]
    assert len(soft) == CFG.epochs
    assert np.mean(soft[-3:]) < 0.5 * soft[0]
    assert all(h["total"] == pytest.approx(h["hard"] + CFG.lam * h["soft"], rel=1e-5) for h in trained.history)


def test_same_seed_identical_weights(data):
    (train_bags, zt), _ = data
    cfg = DistillConfig(window=7, hidden=16, epochs=3, lr=3e-3, batch_size=8, seed=5)
    torch.manual_seed(123)
    a = train_student(train_bags, zt, 1.7, cfg, progress=False)
    global_state = torch.random.get_rng_state()
    b = train_student(train_bags, zt, 1.7, cfg, progress=False)
    c = train_student(train_bags, zt, 1.7, DistillConfig(**{**cfg.__dict__, "seed": 6}), progress=False)
    assert torch.equal(global_state, torch.random.get_rng_state())  # the caller's RNG is left alone
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_padding_does_not_change_valid_steps(trained, data):
    # Batched (right-padded) prediction equals one-bag-at-a-time prediction: the student is causal.
    _, (val_bags, _) = data
    batched = predict_logits(trained.student, val_bags, batch_size=16)
    single = predict_logits(trained.student, val_bags, batch_size=1)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_config_window_and_dilations():
    assert DistillConfig().dilations == (1, 2, 4) and DistillConfig().window == 15
    assert sum(DistillConfig(window=31).dilations) == 15
    with pytest.raises(EdgeVadError, match="window"):
        DistillConfig(window=6)


def test_mismatched_teacher_logits_rejected(data):
    (train_bags, zt), _ = data
    with pytest.raises(EdgeVadError, match="teacher logits"):
        train_student(train_bags, [zt[0][:-1]] + zt[1:], 2.0, CFG, progress=False)
    with pytest.raises(EdgeVadError, match="temperature"):
        train_student(train_bags, zt, 0.0, CFG, progress=False)


def test_teacher_logits_for_real_teacher(data):
    (train_bags, _), _ = data
    torch.manual_seed(0)
    teacher = AFEDTeacher(DIM, dim=16)
    logits = teacher_logits_for(teacher, train_bags[:3])
    assert [z.shape for z in logits] == [(len(b),) for b in train_bags[:3]]
    with torch.no_grad():
        direct = teacher(torch.from_numpy(train_bags[0].features)[None])[0].numpy()
    np.testing.assert_allclose(logits[0], direct, atol=1e-5)


def test_bo_loop_writes_json_and_png(data, tmp_path):
    (train_bags, zt), (val_bags, zv) = data
    cfg = DistillConfig(window=7, hidden=8, epochs=4, lr=3e-3, batch_size=8, seed=0)
    student, trace, summary = distill_with_bo(train_bags[::2], val_bags[::2], zt[::2], zv[::2], cfg,
                                              n_total=5, n_init=3, seed=0, out_dir=tmp_path, progress=False)
    assert len(trace.observations) == 5 and 0.5 <= trace.best_x <= 5.0
    assert summary["chosen_temperature"] == trace.best_x
    assert len(summary["evaluations"]) == 5 and "frame_auc" in summary["evaluations"][0]
    # The returned student is the one evaluated at the chosen T: its objective is reproduced.
    again = distillation_objective(trace.best_x, train_bags[::2], val_bags[::2], zt[::2], zv[::2], cfg)
    assert again == pytest.approx(trace.best_y, rel=1e-6)
    assert evaluate_student(student, val_bags[::2], zv[::2])["fidelity_kl"] == pytest.approx(trace.best_y, rel=1e-6)
    doc = json.loads((tmp_path / "distill_bo.json").read_text())
    assert doc["trace"]["best_x"] == trace.best_x and len(doc["trace"]["metadata"]["evaluations"]) == 5
    assert doc["summary"]["paper_temperature"] == 2.5
    png = (tmp_path / "distill_bo.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distill_bo.json", "distill_bo.png"]
