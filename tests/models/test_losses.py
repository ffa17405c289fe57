"""Losses checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.constants import (  # noqa: E402
    ALIGN_WEIGHT_ALPHA,
    CONTRAST_MARGIN_DELTA,
    CONTRAST_WEIGHT_BETA,
    MIL_TOPK_DIVISOR,
)
from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.losses import (  # noqa: E402
    align_loss,
    contrast_loss,
    fine_total_loss,
    kd_soft_loss,
    mil_topk_bce,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --- MIL top-k BCE ---------------------------------------------------------------------------------------

def _two_bags():
    """Bag 0: 32 valid steps -> k = 2, top logits 4 and 2 (mean 3), label 1.
    Bag 1: 20 valid steps -> k = 1, top logit 0.5, label 0; its padding holds 100s that must be ignored."""
    assert MIL_TOPK_DIVISOR == 16
    logits = torch.zeros(2, 32)
    logits[0, 5], logits[0, 9] = 4.0, 2.0
    logits[1, :20] = -1.0
    logits[1, 3] = 0.5
    logits[1, 20:] = 100.0
    return logits, torch.tensor([1.0, 0.0]), torch.tensor([32, 20])


def test_mil_topk_bce_hand_value():
    logits, labels, lengths = _two_bags()
    # BCE-with-logits: label 1 -> softplus(-z), label 0 -> softplus(z)
    expected = (softplus(-3.0) + softplus(0.5)) / 2  # = (0.048587 + 0.974077) / 2 = 0.511332
    assert abs(expected - 0.511332) < 1e-6
    got = mil_topk_bce(logits, labels, lengths).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_mil_topk_bce_without_lengths_uses_every_step():
    logits, labels, _ = _two_bags()
    # bag 1 now sees its 100s: k = 2, top-2 mean 100 against label 0 -> softplus(100) = 100
    expected = (softplus(-3.0) + 100.0) / 2
    assert mil_topk_bce(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mil_topk_bce_short_bag_uses_k1_and_gradient_only_on_topk():
    logits = torch.tensor([[0.0, 3.0, 1.0, 7.0, -2.0]], requires_grad=True)
    loss = mil_topk_bce(logits, torch.tensor([1.0]), torch.tensor([3]))  # k = max(1, 3 // 16) = 1, top = 3.0
    assert loss.item() == pytest.approx(softplus(-3.0), rel=1e-6)
    loss.backward()
    grad = logits.grad[0]
    assert grad[1].item() == pytest.approx(-1 / (1 + math.exp(3.0)), rel=1e-5)  # d softplus(-z)/dz
    assert torch.count_nonzero(grad) == 1  # padding (the 7.0) and non-top steps get nothing


def test_mil_topk_bce_rejects_bad_lengths():
    with pytest.raises(EdgeVadError):
        mil_topk_bce(torch.zeros(2, 8), torch.zeros(2), torch.tensor([0, 8]))
    with pytest.raises(EdgeVadError):
        mil_topk_bce(torch.zeros(2, 8), torch.zeros(2), torch.tensor([3, 9]))


# --- distillation ----------------------------------------------------------------------------------------

def test_kd_soft_loss_hand_value():
    # T = 2, teacher logit 2 ln 3 -> p = sigmoid(ln 3) = 0.75; student logit 0 -> q = 0.5
    # KL = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5) = 0.130812; times T^2 = 4 -> 0.523248
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert abs(kl - 0.130812) < 1e-6
    got = kd_soft_loss(torch.tensor([0.0]), torch.tensor([2 * math.log(3.0)]), temperature=2.0).item()
    assert got == pytest.approx(4 * kl, rel=1e-5)


def test_kd_soft_loss_is_T2_times_kl_of_softened_logits():
    torch.manual_seed(0)
    s, t = 3 * torch.randn(4, 10), 3 * torch.randn(4, 10)
    for temp in (0.5, 2.5, 5.0):
        scaled = kd_soft_loss(s, t, temp)
        unit = kd_soft_loss(s / temp, t / temp, 1.0)
        assert scaled.item() == pytest.approx(temp**2 * unit.item(), rel=1e-5)


def test_kd_soft_loss_nonnegative_and_zero_when_equal():
    torch.manual_seed(1)
    s, t = 5 * torch.randn(3, 50), 5 * torch.randn(3, 50)
    assert kd_soft_loss(s, t, 2.5).item() > 0
    assert kd_soft_loss(s, s.clone(), 2.5).item() == pytest.approx(0.0, abs=1e-7)
    extreme = torch.tensor([[80.0, -80.0, 0.0]])
    val = kd_soft_loss(-extreme, extreme, 1.0)
    assert torch.isfinite(val) and val.item() > 50  # saturated logits stay finite (log-sigmoid form)


def test_kd_soft_loss_mask_and_teacher_gets_no_gradient():
    student = torch.tensor([[0.0, 9.0], [0.0, -9.0]], requires_grad=True)
    teacher = torch.tensor([[2 * math.log(3.0), 0.0], [2 * math.log(3.0), 0.0]], requires_grad=True)
    mask = torch.tensor([[True, False], [True, False]])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = kd_soft_loss(student, teacher, 2.0, mask=mask)
    assert loss.item() == pytest.approx(4 * kl, rel=1e-5)  # the masked 9s would change it a lot
    loss.backward()
    assert teacher.grad is None
    assert student.grad[:, 1].abs().max() == 0 and student.grad[:, 0].abs().min() > 0
    with pytest.raises(EdgeVadError):
        kd_soft_loss(student, teacher, 0.0)
    with pytest.raises(EdgeVadError):
        kd_soft_loss(student, teacher, 1.0, mask=torch.zeros(2, 2, dtype=torch.bool))


# --- fine stage ------------------------------------------------------------------------------------------

def test_align_loss_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    # CE: -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2) = 0.239545 and log 3 = 1.098612; mean 0.669079
    ce = (math.log(1 + 2 * math.exp(-2.0)) + math.log(3.0)) / 2
    assert abs(ce - 0.669079) < 1e-6
    assert align_loss(logits, labels).item() == pytest.approx(ce, rel=1e-6)
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[2.0]])]  # ||theta||^2 = 1 + 4 + 4 = 9
    assert align_loss(logits, labels, params=params, l2=0.1).item() == pytest.approx(ce + 0.9, rel=1e-6)


def test_contrast_loss_hand_value():
    assert CONTRAST_MARGIN_DELTA == 0.5
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    # normal = row 0: cos = 1/sqrt 2, 0, -1 -> hinge max(0, cos - 0.5) = 0.207107, 0, 0
    assert contrast_loss(emb).item() == pytest.approx(1 / math.sqrt(2) - 0.5, rel=1e-6)
    # normal = row 1: cos to rows 0, 2, 3 = 1/sqrt 2, 1/sqrt 2, -1/sqrt 2 -> 2 * 0.207107
    assert contrast_loss(emb, normal_index=1).item() == pytest.approx(2 * (1 / math.sqrt(2) - 0.5), rel=1e-6)
    # scale does not matter (cosine), the penalty adds l2 * ||theta||^2
    params = [torch.tensor([3.0])]
    got = contrast_loss(10 * emb, params=params, l2=0.01).item()
    assert got == pytest.approx(1 / math.sqrt(2) - 0.5 + 0.09, rel=1e-6)
    with pytest.raises(EdgeVadError):
        contrast_loss(emb, normal_index=4)


def test_contrast_loss_pushes_anomaly_classes_away():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.2]], requires_grad=True)
    contrast_loss(emb).backward()
    # the anomaly row's gradient points further into the normal row's direction: descent turns it away
    assert emb.grad[1, 1] < 0


def test_fine_total_loss():
    assert (ALIGN_WEIGHT_ALPHA, CONTRAST_WEIGHT_BETA) == (1.2, 0.8)
    assert fine_total_loss(torch.tensor(2.0), torch.tensor(0.5)).item() == pytest.approx(1.2 * 2.0 + 0.8 * 0.5)
    assert fine_total_loss(torch.tensor(2.0), torch.tensor(0.5), alpha=1.0, beta=2.0).item() == pytest.approx(3.0)
