"""The periodic evaluation hands each result to its listeners (kdrl.evaluation.EvaluationListener):
policy files first, then the others in order, then the resume checkpoint, which holds every
listener's state; the metrics are logged once, after all of them. A tuner's reporter is one more
listener (``add_listener``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import nn

import kdrl.callbacks as callbacks
from kdrl.callbacks import GreedyEvaluation
from kdrl.checkpoints import BestReturnPolicy, ResumeCheckpoint
from kdrl.envs import env_spec, make_env
from kdrl.evaluation import EvaluationListener
from kdrl.nets import MLP
from kdrl.stopping import StopAtReturn

NET_CFG = {"_target_": "kdrl.nets.MLP", "width": 8, "depth": 1, "dueling": False, "hidden": None}


class FakeModule(nn.Module):
    """What the evaluation and its listeners read of a module (RLModule's declared hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.q_net = MLP((4,), 2, width=8, depth=1)
        self.spec = env_spec(make_env("CartPole-v1"))
        self.stream = type("Stream", (), {"grad_steps": 0})()
        self.env_steps = 0
        self.selection_phase = 0
        self.stop_allowed = True
        self.logged: list[dict] = []

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(len(obs), dtype=np.int64)

    def flush_metrics(self) -> None:
        pass

    def log_env_metrics(self, metrics: dict) -> None:
        self.logged.append(dict(metrics))

    def may_stop_early(self) -> bool:
        return self.stop_allowed


class FakeTrainer:
    def __init__(self, log: list[str]) -> None:
        self.should_stop = False
        self.log = log

    def save_checkpoint(self, path) -> None:
        self.log.append("checkpoint")
        Path(path).write_bytes(b"checkpoint")


class Reporter(EvaluationListener):
    """A tuner's reporter: sees every score, keeps its own resume state, may add a metric."""

    def __init__(self, log: list[str]) -> None:
        self.log, self.reported = log, []

    def on_evaluation(self, trainer, pl_module, result) -> None:
        self.log.append(f"report {result.record['return_mean']} best {result.metrics['eval/best_return_mean']}")
        self.reported.append((result.record["env_steps"], result.record["return_mean"]))
        result.metrics["tuner/reports"] = float(len(self.reported))

    def state_dict(self) -> dict:
        return {"reported": [list(r) for r in self.reported]}

    def load_state_dict(self, state: dict) -> None:
        self.reported = [tuple(r) for r in state.get("reported", [])]


def _evaluation(tmp_path, monkeypatch, returns, listeners=()):
    it = iter(returns)
    monkeypatch.setattr(callbacks, "evaluate_policy", lambda *a, **k: [next(it)] * 3)
    return GreedyEvaluation(
        "CartPole-v1", None, 1000, 3, 0, BestReturnPolicy(tmp_path, NET_CFG), ResumeCheckpoint(tmp_path), listeners
    )


def test_listeners_run_after_the_policy_files_and_before_the_checkpoint(tmp_path, monkeypatch):
    log: list[str] = []
    reporter = Reporter(log)
    evaluation = _evaluation(tmp_path, monkeypatch, [10.0, 30.0, 20.0])
    evaluation.add_listener(reporter)
    module, trainer = FakeModule(), FakeTrainer(log)
    for steps in (1000, 2000, 3000):
        module.env_steps = steps
        evaluation.evaluate(trainer, module)
    assert log == [
        "report 10.0 best 10.0",
        "checkpoint",
        "report 30.0 best 30.0",
        "checkpoint",
        "report 20.0 best 30.0",
        "checkpoint",
    ]
    assert reporter.reported == [(1000, 10.0), (2000, 30.0), (3000, 20.0)]
    # one log call per evaluation, with the evaluation's, the policy files' and the reporter's metrics
    assert len(module.logged) == 3
    assert list(module.logged[-1]) == [
        "eval/return_mean",
        "eval/return_std",
        "eval/return_min",
        "eval/best_return_mean",
        "tuner/reports",
    ]
    assert module.logged[-1]["eval/best_return_mean"] == 30.0 and evaluation.policies.best_mean == 30.0


def test_every_listeners_state_is_resumed_with_the_evaluation(tmp_path, monkeypatch):
    log: list[str] = []
    evaluation = _evaluation(tmp_path, monkeypatch, [10.0, 30.0], [Reporter(log)])
    module, trainer = FakeModule(), FakeTrainer(log)
    for steps in (1000, 2000):
        module.env_steps = steps
        evaluation.evaluate(trainer, module)
    state = evaluation.state_dict()
    # the keys of the one callback's state, as checkpoints written before the split have them
    assert set(state) == {"next_eval", "history", "eval_time_s", "best_mean", "best_phase", "reported"}

    resumed = _evaluation(tmp_path, monkeypatch, [], [Reporter([])])
    resumed.load_state_dict(state)
    assert resumed.next_eval == 3000 and resumed.history == evaluation.history
    assert resumed.policies.best_mean == 30.0 and resumed.listeners[0].reported == [(1000, 10.0), (2000, 30.0)]


def test_a_listener_state_key_that_clashes_is_refused(tmp_path, monkeypatch):
    class Clash(EvaluationListener):
        def state_dict(self) -> dict:
            return {"best_mean": 1.0}

    with pytest.raises(KeyError, match="best_mean"):
        _evaluation(tmp_path, monkeypatch, [], [Clash()]).state_dict()


@pytest.mark.parametrize("allowed", [True, False])
def test_stop_at_return_waits_for_the_module(tmp_path, monkeypatch, allowed):
    evaluation = _evaluation(tmp_path, monkeypatch, [50.0, 100.0], [StopAtReturn(100.0)])
    module, trainer = FakeModule(), FakeTrainer([])
    module.stop_allowed = allowed
    module.env_steps = 1000
    evaluation.evaluate(trainer, module)
    assert not trainer.should_stop  # below the return
    module.env_steps = 2000
    evaluation.evaluate(trainer, module)
    assert trainer.should_stop is allowed


def test_best_policy_competes_only_within_the_latest_selection_phase(tmp_path, monkeypatch):
    evaluation = _evaluation(tmp_path, monkeypatch, [300.0, 100.0, 50.0])
    module, trainer = FakeModule(), FakeTrainer([])
    module.env_steps = 1000
    evaluation.evaluate(trainer, module)
    module.selection_phase, module.env_steps = 1, 2000  # e.g. pruned: the 300 before does not count
    evaluation.evaluate(trainer, module)
    assert evaluation.policies.best_mean == 100.0 and evaluation.policies.best_phase == 1
    module.env_steps = 3000
    evaluation.evaluate(trainer, module)
    assert evaluation.policies.best_mean == 100.0
