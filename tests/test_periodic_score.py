"""The periodic normalised score (GreedyEvaluation) follows the final score's refusal rule: with a
teacher reference that does not clearly beat a random policy (kdrl.scores.teacher_beats_random) it
is nan, so speed is not reached and QDagger's lambda keeps its start value (audit 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import nn

import kdrl.callbacks as callbacks
from kdrl.callbacks import GreedyEvaluation
from kdrl.checkpoints import BestReturnPolicy, ResumeCheckpoint
from kdrl.envs import env_spec, make_env
from kdrl.losses import LambdaSchedule
from kdrl.nets import MLP
from kdrl.runs.distill import first_reaching
from kdrl.scores import teacher_beats_random

NET_CFG = {"_target_": "kdrl.nets.MLP", "width": 8, "depth": 1, "dueling": False, "hidden": None}
# on the same 5 seeds: the teacher's mean is above random's (11.0 vs 10.4), not clearly (p ~ 0.25)
BARELY = ([10.0, 12.0, 11.0, 9.0, 13.0], [10.0, 11.0, 10.0, 9.0, 12.0])
CLEARLY = ([500.0, 480.0, 500.0, 495.0, 500.0], [20.0, 14.0, 31.0, 18.0, 25.0])


class FakeStudent(nn.Module):
    """What GreedyEvaluation reads of a module, with QDagger's lambda behind its hook."""

    def __init__(self) -> None:
        super().__init__()
        self.q_net = MLP((4,), 2, width=8, depth=1)
        self.spec = env_spec(make_env("CartPole-v1"))
        self.stream = type("Stream", (), {"grad_steps": 0})()
        self.env_steps = 0
        self.selection_phase = 0  # (RLModule's: the best policy's phase)
        self.lam = LambdaSchedule("qdagger", value=1.0)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(len(obs), dtype=np.int64)

    def flush_metrics(self) -> None:
        pass

    def log_env_metrics(self, metrics: dict) -> None:
        pass

    def may_stop_early(self) -> bool:
        return True

    def on_greedy_evaluation(self, student: float, teacher: float, random: float) -> None:
        self.lam.observe(student, teacher, random)


class FakeTrainer:
    should_stop = False

    def save_checkpoint(self, path) -> None:
        Path(path).write_bytes(b"checkpoint")


def _evaluations(tmp_path, monkeypatch, reference, student_returns):
    """Three periodic evaluations at 1000, 2000, 3000 env steps, the student's returns given."""
    returns = iter(student_returns)
    monkeypatch.setattr(callbacks, "evaluate_policy", lambda *a, **k: [next(returns)] * 5)
    policies, checkpoint = BestReturnPolicy(tmp_path, NET_CFG), ResumeCheckpoint(tmp_path)
    evaluation = GreedyEvaluation("CartPole-v1", None, 1000, 5, 0, policies, checkpoint, reference=reference)
    module, trainer = FakeStudent(), FakeTrainer()
    lambdas = []
    for steps in (1000, 2000, 3000):
        module.env_steps = steps
        evaluation.evaluate(trainer, module)
        lambdas.append(module.lam(steps))
    return evaluation, lambdas


def test_the_references_of_these_tests_are_what_they_say():
    assert np.mean(BARELY[0]) > np.mean(BARELY[1]) and not teacher_beats_random(*BARELY)
    assert teacher_beats_random(*CLEARLY)


def test_a_teacher_barely_above_random_gives_no_periodic_score_speed_or_lambda(tmp_path, monkeypatch):
    """The student scores above this teacher: the old rule (nan only when T <= R) gave scores of
    (S - 10.4) / 0.6 = 1.0, 2.7, 4.3, speed reached at 1,000 env steps and lambda 0."""
    evaluation, lambdas = _evaluations(tmp_path, monkeypatch, BARELY, [11.0, 12.0, 13.0])
    assert not evaluation.reference_beats_random
    scores = [h["normalized_score"] for h in evaluation.history]
    assert len(scores) == 3 and all(np.isnan(s) for s in scores)
    assert [h["teacher_return"] for h in evaluation.history] == [11.0] * 3  # the reference is still recorded
    assert first_reaching(evaluation.history, 0.9) is None and first_reaching(evaluation.history, 1.0) is None
    assert lambdas == [1.0, 1.0, 1.0]  # QDagger's start value, kept
    assert (tmp_path / "best_policy.pt").is_file()  # checkpoints are still chosen by return


def test_a_teacher_clearly_above_random_gives_periodic_scores_speed_and_lambda(tmp_path, monkeypatch):
    evaluation, lambdas = _evaluations(tmp_path, monkeypatch, CLEARLY, [101.6, 447.7, 500.0])
    t, r = np.mean(CLEARLY[0]), np.mean(CLEARLY[1])
    scores = [h["normalized_score"] for h in evaluation.history]
    assert scores == pytest.approx([(s - r) / (t - r) for s in (101.6, 447.7, 500.0)])
    assert scores[1] == pytest.approx(0.9, abs=1e-3)
    assert first_reaching(evaluation.history, 0.9) == {
        "env_steps": 2000,
        "train_wall_s": pytest.approx(evaluation.history[1]["train_wall_s"]),
    }
    assert lambdas == pytest.approx([1 - scores[0], 1 - scores[1], 0.0])
