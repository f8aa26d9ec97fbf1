"""Tests written against surviving mutants (docs/mutation.md): each pins a value that a one-line
change in kdrl's maths or wiring would move and no other test looked at. Grouped by room; each test
names the mutants it was written for (mutmut's names: scripts/mutation.py writes them to
build/mutation/<room>[-<tag>]/survivors-<room>.txt)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdrl.losses import DistillLoss, LambdaSchedule, StudentLoss, ce_loss, kl_loss, mse_loss, nll_loss
from kdrl.replay import Transitions
from kdrl.schedules import LinearSchedule
from kdrl.seeding import generator, seed_ints, seed_sequence
from kdrl.td import TargetNetwork, TDTerm, td_error_loss, td_targets


# ---- schedules ------------------------------------------------------------------------------------------------------
def test_linear_schedule_reaches_its_end_value_exactly():
    """``t >= delay + duration`` returns ``end`` itself; at the last step the interpolation would give
    1.0 + (0.04 - 1.0) = 0.040000000000000036 (mutant: ``t > delay + duration``). The logged epsilon
    is then eps_end, bit for bit."""
    s = LinearSchedule(1.0, 0.04, duration=8000, delay=100)
    assert s(8100) == 0.04 and s(8099) > 0.04
    assert s(100) == 1.0 and s(101) < 1.0


# ---- seeding --------------------------------------------------------------------------------------------------------
def test_seed_ints_are_31_bit_and_one_by_default():
    """(mutants: ``n=2`` default, ``>> 2``, ``<< 1``) the ints are the stream's 32-bit words halved."""
    assert len(seed_ints(5, "envs")) == 1
    words = seed_sequence(5, "envs").generate_state(64)
    assert seed_ints(5, "envs", n=64) == [int(w) >> 1 for w in words]
    ints = seed_ints(5, "envs", n=256)
    assert all(0 <= x < 2**31 for x in ints) and max(ints) >= 2**30


def test_generator_is_the_streams_own():
    """(mutants: ``default_rng(None)``, the key dropped) the same (seed, key) gives the same draws,
    another key or seed other draws."""
    draw = lambda *a: generator(*a).random(4).tolist()
    assert draw(3, "collector") == draw(3, "collector")
    assert draw(3, "collector") != draw(3, "control") and draw(3, "collector") != draw(4, "collector")
    assert draw(3, "collector") == np.random.default_rng(seed_sequence(3, "collector")).random(4).tolist()


# ---- losses ---------------------------------------------------------------------------------------------------------
Q_S = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
Q_T = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(kind: str, tau: float, tau_s: float, squared: bool) -> float:
    """KL(p_T || p_S) or H(p_T, p_S), softmax per row, mean over the batch, times tau*tau_S if squared."""
    p_t, p_s = _softmax(Q_T.numpy() / tau), _softmax(Q_S.numpy() / tau_s)
    per_row = (p_t * (np.log(p_t) - np.log(p_s))).sum(1) if kind == "kl" else -(p_t * np.log(p_s)).sum(1)
    return float(per_row.mean() * (tau * tau_s if squared else 1.0))


@pytest.mark.parametrize("kind", ["kl", "ce"])
@pytest.mark.parametrize("tau,tau_s", [(0.5, 4.0), (2.0, 0.25), (0.3, None)])
@pytest.mark.parametrize("squared", [True, False])
def test_kl_and_ce_by_hand_per_row(kind, tau, tau_s, squared):
    """(mutants: softmax over the whole batch (``dim=None``), the student temperature dropped,
    ``tau / tau_s`` or ``/`` for the tau*tau_S factor, the factor always off) the losses of a 2-state
    batch at unequal temperatures, against numpy; and DistillLoss dispatches to them."""
    expected = _by_hand(kind, tau, tau if tau_s is None else tau_s, squared)
    fn = kl_loss if kind == "kl" else ce_loss
    assert fn(Q_S, Q_T, tau, tau_s, squared).item() == pytest.approx(expected, rel=1e-5)
    assert DistillLoss(kind, tau, tau_s, squared)(Q_S, Q_T).item() == pytest.approx(expected, rel=1e-5)


def test_loss_defaults():
    """(mutants: default temperature 2.0, default tau_squared False) tau = 1 and the tau^2 factor on."""
    for kind, fn in (("kl", kl_loss), ("ce", ce_loss)):
        assert fn(Q_S, Q_T).item() == pytest.approx(_by_hand(kind, 1.0, 1.0, True), rel=1e-5)
        assert fn(Q_S, Q_T, 0.5).item() == pytest.approx(_by_hand(kind, 0.5, 0.5, True), rel=1e-5)
    d = DistillLoss("kl")
    assert (d.temperature, d.student_temperature, d.tau_squared) == (1.0, None, True)


def test_distill_loss_dispatches_each_name_to_its_function():
    """(mutants on DistillLoss.__call__'s name tests and arguments) each name computes its own loss."""
    values = {
        "mse": mse_loss(Q_S, Q_T).item(),
        "nll": nll_loss(Q_S, Q_T).item(),
        "kl": kl_loss(Q_S, Q_T, 0.5, 2.0, False).item(),
        "ce": ce_loss(Q_S, Q_T, 0.5, 2.0, False).item(),
    }
    assert len({round(v, 6) for v in values.values()}) == 4  # four different numbers
    for name, value in values.items():
        assert DistillLoss(name, 0.5, 2.0, False)(Q_S, Q_T).item() == pytest.approx(value, rel=1e-6), name
    assert mse_loss(Q_S, Q_T).item() == pytest.approx(((Q_S - Q_T) ** 2).sum(1).mean().item())


def test_student_loss_builds_its_distill_term_from_its_fields():
    """(StudentLoss.__post_init__ had no test in the room) the configured term, feature weight and kind."""
    loss = StudentLoss("x", "ce", temperature=0.5, student_temperature=2.0, tau_squared=False, feature_weight=None)
    assert loss.distill == DistillLoss("ce", 0.5, 2.0, False)
    assert loss.feature_weight == 0.0 and isinstance(loss.feature_weight, float) and not loss.hybrid
    hybrid = StudentLoss("h", "nll", feature_weight=0.25, td=TDTerm(), distill_weight=LambdaSchedule())
    assert hybrid.hybrid and hybrid.feature_weight == 0.25 and hybrid.distill == DistillLoss("nll", 1.0, None, True)


def test_lambda_schedules_by_hand():
    """(mutants on LambdaSchedule's defaults, kinds and edges)"""
    d = LambdaSchedule()
    assert (d.kind, d.value, d.end, d.decay_steps, d.score) == ("constant", 1.0, 0.0, 0, None)
    const = LambdaSchedule("constant", 0.3)
    const.observe(50.0, 100.0, 0.0)  # a constant lambda ignores the scores
    assert const(0) == const(10**6) == 0.3
    lin = LambdaSchedule("linear", 1.0, 0.2, decay_steps=100)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.6) and lin(100) == 0.2 and lin(10**6) == 0.2
    assert LambdaSchedule("linear", 1.0, 0.0, decay_steps=1)(0) == 1.0
    assert LambdaSchedule("linear", 0.7, 0.1, decay_steps=0)(0) == 0.1
    q = LambdaSchedule("qdagger", 0.9)
    assert q(0) == 0.9  # before any evaluation
    q.observe(25.0, 100.0, 0.0)
    assert q(0) == pytest.approx(0.75)
    q.observe(-10.0, 100.0, 0.0)  # below random: lambda is clipped to 1
    assert q(0) == 1.0
    q.observe(150.0, 100.0, 0.0)  # above the teacher: clipped to 0
    assert q(0) == 0.0
    q.observe(1.0, 0.0, 0.0)  # a teacher no better than random: the last score stays
    assert q.score == 1.5


def test_lambda_state_round_trip():
    """(state_dict / load_state_dict had no test in the room) a resumed qdagger lambda keeps its score."""
    q = LambdaSchedule("qdagger")
    q.observe(30.0, 100.0, -20.0)
    state = q.state_dict()
    assert state == {"score": pytest.approx(50.0 / 120.0)}
    fresh = LambdaSchedule("qdagger")
    fresh.load_state_dict(state)
    assert fresh.score == q.score and fresh(0) == q(0)
    fresh.load_state_dict({"score": None})
    assert fresh.score is None and fresh(0) == 1.0
    fresh.load_state_dict({})
    assert fresh.score is None


# ---- td -------------------------------------------------------------------------------------------------------------
def _batch(discounts=None) -> Transitions:
    return Transitions(
        obs=torch.tensor([[0.0], [1.0]]),
        actions=torch.tensor([1, 0]),
        rewards=torch.tensor([1.0, 2.0]),
        next_obs=torch.tensor([[2.0], [3.0]]),
        terminated=torch.tensor([0.0, 0.0]),
        discounts=discounts,
    )


def _q(table: dict[float, list[float]]):
    return lambda x: torch.tensor([table[float(v)] for v in x[:, 0]])


ONLINE = _q({2.0: [5.0, 1.0], 3.0: [0.0, 4.0]})  # online argmax at s': 0, then 1
TARGET = _q({2.0: [2.0, 7.0], 3.0: [6.0, 3.0]})  # target max at s': 7, then 6


@pytest.mark.parametrize("double", [True, False])
def test_td_term_by_hand(double):
    """(mutants: Double DQN off, the online net given None, gamma or the per-sample discounts ignored)"""
    q = torch.tensor([[0.5, 1.5], [2.5, 0.0]])
    term = TDTerm(gamma=0.5, td_loss="mse", double_dqn=double)
    next_v = torch.tensor([2.0, 3.0]) if double else torch.tensor([7.0, 6.0])
    loss, q_taken = term(q, _batch(), ONLINE, TARGET)
    assert q_taken.tolist() == [1.5, 2.5]
    y = torch.tensor([1.0, 2.0]) + 0.5 * next_v
    assert loss.item() == pytest.approx(((q_taken - y) ** 2).mean().item())
    disc = torch.tensor([0.25, 0.125])  # n-step batches carry gamma^m per sample
    loss, _ = term(q, _batch(disc), ONLINE, TARGET)
    y = torch.tensor([1.0, 2.0]) + disc * next_v
    assert loss.item() == pytest.approx(((q_taken - y) ** 2).mean().item())


def test_td_defaults_and_messages():
    """(mutants: the default TD loss, the refusal messages)"""
    q, y = torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0])
    assert td_error_loss(q, y).item() == td_error_loss(q, y, "huber").item() != td_error_loss(q, y, "mse").item()
    assert (TDTerm().gamma, TDTerm().td_loss, TDTerm().double_dqn) == (0.99, "huber", True)
    with pytest.raises(ValueError, match=r"^unknown TD loss 'l1' \(expected huber or mse\)$"):
        TDTerm(td_loss="l1")
    with pytest.raises(ValueError, match=r"^unknown TD loss 'l1' \(expected 'huber' or 'mse'\)$"):
        td_error_loss(q, y, "l1")
    assert td_targets(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([[9.0, 9.0]]), 0.9).item() == 1.0


def test_target_network_schedule_by_hand():
    """(TargetNetwork had no test in the room: its timing was caught only by a resume test) a refresh
    at the first progress at or after each multiple of the interval; none in between; progress that
    jumps several intervals refreshes once and re-aims at the next multiple; the count is kept."""
    online = torch.nn.Linear(2, 2)
    target = TargetNetwork(online, interval=100, tau=1.0)
    assert target.next_update == 100 and target.updates == 0
    assert torch.equal(target.net.weight, online.weight) and not target.net.weight.requires_grad
    seen = []
    for progress in (0, 50, 99, 100, 101, 199, 230, 250, 299, 640, 650, 700):
        with torch.no_grad():
            online.weight.add_(1.0)
        synced = target.maybe_update(online, progress)
        assert torch.equal(target.net.weight, online.weight) == synced
        if synced:
            seen.append(progress)
    assert seen == [100, 230, 640, 700]
    assert target.updates == 4 and target.next_update == 800
    assert target(torch.zeros(1, 2)).shape == (1, 2)


def test_target_network_soft_update_and_resume_state():
    """(mutants: tau dropped, the extra state's keys or values) Polyak refresh, and the schedule's
    counters travel in the state_dict."""
    online = torch.nn.Linear(2, 2)
    target = TargetNetwork(online, interval=10, tau=0.25)
    before = target.net.weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(4.0)
    assert target.maybe_update(online, 10)
    assert torch.allclose(target.net.weight, 0.75 * before + 0.25 * online.weight)
    target.maybe_update(online, 35)
    assert target.get_extra_state() == {"next_update": 40, "updates": 2}
    resumed = TargetNetwork(online, interval=10, tau=0.25)
    resumed.load_state_dict(target.state_dict())
    assert (resumed.next_update, resumed.updates) == (40, 2)
    assert not resumed.maybe_update(online, 39) and resumed.maybe_update(online, 40)
    assert (resumed.interval, resumed.tau) == (10, 0.25) and math.isclose(TargetNetwork(online, 3).tau, 1.0)
