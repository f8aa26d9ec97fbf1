"""Each distillation loss against values computed by hand, and the temperature semantics."""

import math

import pytest
import torch

from kdrl.losses import DistillLoss, LambdaSchedule, ce_loss, hint_loss, kl_loss, mse_loss, nll_loss

Q_S = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
Q_T = torch.tensor([[2.0, 0.0], [1.0, 3.0]])


def softmax2(a, b):
    ea, eb = math.exp(a), math.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def kl2(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_mse_by_hand():
    # row 1: (1-2)^2 + (2-0)^2 = 5 ; row 2: 1 + 9 = 10 ; mean 7.5
    assert mse_loss(Q_S, Q_T).item() == pytest.approx(7.5)


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_kl_by_hand_tau_divides_both(tau):
    rows = []
    for s, t in zip(Q_S.tolist(), Q_T.tolist()):
        p_t = softmax2(t[0] / tau, t[1] / tau)
        p_s = softmax2(s[0] / tau, s[1] / tau)
        rows.append(kl2(p_t, p_s))
    expected = sum(rows) / 2
    assert kl_loss(Q_S, Q_T, tau, tau_squared=False).item() == pytest.approx(expected, rel=1e-5)
    assert kl_loss(Q_S, Q_T, tau, tau_squared=True).item() == pytest.approx(expected * tau * tau, rel=1e-5)


def test_kl_rusu_form_teacher_only_temperature():
    tau = 0.5
    rows = [kl2(softmax2(t[0] / tau, t[1] / tau), softmax2(*s)) for s, t in zip(Q_S.tolist(), Q_T.tolist())]
    got = kl_loss(Q_S, Q_T, tau, student_temperature=1.0, tau_squared=False).item()
    assert got == pytest.approx(sum(rows) / 2, rel=1e-5)


def test_sharp_tau_makes_teacher_one_hot():
    # tau = 0.01: the teacher distribution is one-hot on its argmax, so KL == NLL on that action
    kl = kl_loss(Q_S, Q_T, 0.01, student_temperature=1.0, tau_squared=False)
    assert kl.item() == pytest.approx(nll_loss(Q_S, Q_T).item(), rel=1e-4)


def test_ce_equals_kl_plus_teacher_entropy():
    tau = 1.5
    p_t = torch.softmax(Q_T / tau, 1)
    entropy = -(p_t * p_t.log()).sum(1).mean()
    ce = ce_loss(Q_S, Q_T, tau, tau_squared=False)
    assert ce.item() == pytest.approx((kl_loss(Q_S, Q_T, tau, tau_squared=False) + entropy).item(), rel=1e-5)


def test_nll_by_hand():
    # teacher argmax: [0, 1]; -log softmax(q_s)[a]
    expected = (-math.log(softmax2(1, 2)[0]) - math.log(0.5)) / 2
    assert nll_loss(Q_S, Q_T).item() == pytest.approx(expected, rel=1e-6)


def test_identical_q_values_give_zero_kl_and_mse():
    assert kl_loss(Q_T, Q_T, 0.01).item() == pytest.approx(0.0, abs=1e-6)
    assert mse_loss(Q_T, Q_T).item() == 0.0


def test_hint_loss_by_hand():
    proj = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[2.0], [0.0]]))
    h_s, h_t = torch.tensor([[1.0]]), torch.tensor([[1.0, 1.0]])
    assert hint_loss(h_s, h_t, proj).item() == pytest.approx((1.0 + 1.0) / 2)


def test_registry_and_bad_input():
    assert DistillLoss("kl", 0.01)(Q_S, Q_T).item() > 0
    with pytest.raises(ValueError, match="unknown distillation loss"):
        DistillLoss("kld")
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        DistillLoss("kl", temperature=0.0)
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        DistillLoss("ce", temperature=-1.0)


def test_lambda_schedules():
    assert LambdaSchedule("constant", 0.3)(10**6) == 0.3
    lin = LambdaSchedule("linear", 1.0, 0.0, decay_steps=100)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.5) and lin(200) == 0.0
    q = LambdaSchedule("qdagger", 1.0)
    assert q(0) == 1.0
    q.observe(student_return=250.0, teacher_return=500.0, random_return=0.0)
    assert q(0) == pytest.approx(0.5)
    q.observe(600.0, 500.0, 0.0)
    assert q(0) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LambdaSchedule("constant", 1.5)
    with pytest.raises(ValueError, match="unknown lambda schedule"):
        LambdaSchedule("cosine")
