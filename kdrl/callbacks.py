"""Callbacks: the periodic greedy evaluation (one task, or every task of a multi-task net as % of
its teacher), and an env-step progress bar.

A periodic evaluation only evaluates: on its schedule it measures the module, records the result in
its history and hands it to its listeners (kdrl.evaluation.EvaluationListener), composed by the job:

- the policy files (kdrl.checkpoints: ``BestReturnPolicy``, ``BestPctPolicy``): policy selection;
- any others, in order (kdrl.stopping: ``StopAtReturn``; a tuner's reporter);
- the resume checkpoint (kdrl.checkpoints: ``ResumeCheckpoint``), last, so ``last.ckpt`` holds
  every listener's state as the evaluation left it.

What it asks of the module is declared on ``RLModule`` (kdrl.modules.base): ``greedy``,
``flush_metrics``, ``log_env_metrics``, ``evaluate_at_start``, ``on_greedy_evaluation``,
``selection_phase`` (read by the policy selection) and ``may_stop_early`` (by the early stop).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from tqdm.auto import tqdm

from kdrl.checkpoints import FileCheckpointIO as FileCheckpointIO  # (the job runner imports it from here)
from kdrl.checkpoints import PolicyFiles, ResumeCheckpoint
from kdrl.evaluation import Evaluated, EvaluationListener, GreedyFn, eval_seeds, evaluate_policy
from kdrl.modules.base import NonFiniteLossError
from kdrl.resources import job_age_s
from kdrl.scores import mean_pcts, normalized_score, pct_of_teacher, teacher_beats_random


class PeriodicEvaluation(pl.Callback):
    """Shared schedule, timing, history, listeners and resume state of the evaluation callbacks.

    Subclasses implement ``measure`` (evaluate the module now: its history record and metrics);
    ``progress`` is the env-step counter the schedule follows. ``policies`` writes the policy files
    the job chooses from (``best_policy_path``, ``last_policy_path``), ``checkpoint`` the resume
    checkpoint, and ``listeners`` run between the two (``add_listener`` appends one).
    """

    def __init__(
        self,
        freq: int,
        episodes: int,
        seed: int,
        policies: PolicyFiles,
        checkpoint: ResumeCheckpoint,
        listeners: Sequence[EvaluationListener] = (),
    ) -> None:
        if int(freq) < 1 or int(episodes) < 1:
            raise ValueError(f"eval.freq and eval.episodes must be >= 1, got {freq} and {episodes}")
        self.freq, self.seeds = int(freq), eval_seeds(seed, episodes)
        self.policies, self.checkpoint = policies, checkpoint
        self.listeners = list(listeners)
        self.next_eval = self.freq
        self.history: list[dict[str, Any]] = []
        self.eval_time_s = 0.0
        self.resumed_wall_s = 0.0  # wall time of the run before a resume (0 for a fresh run)
        self.t_start = time.perf_counter()

    def add_listener(self, listener: EvaluationListener) -> None:
        """Told of every evaluation after the policy files and the listeners before it, before the checkpoint."""
        self.listeners.append(listener)

    def progress(self, pl_module: Any) -> int:
        return int(pl_module.env_steps)

    def measure(self, pl_module: Any) -> Evaluated:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def best_policy_path(self) -> Path:
        return self.policies.best_path

    @property
    def last_policy_path(self) -> Path:
        return self.policies.last_path

    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:
        """Measure, record, tell the listeners (policy files, others, resume checkpoint), log."""
        self.check_finite(pl_module)
        result = self.measure(pl_module)
        self.history.append(result.record)
        self.schedule_next(pl_module)
        for listener in self._parts():
            listener.on_evaluation(trainer, pl_module, result)
        pl_module.log_env_metrics(result.metrics)
        return result.record

    def _parts(self) -> list[EvaluationListener]:
        return [self.policies, *self.listeners, self.checkpoint]

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.t_start = time.perf_counter() - (self.history[-1]["wall_s"] if self.history else 0.0)
        if not self.history and pl_module.evaluate_at_start:  # e.g. after QDagger's offline phase
            self.evaluate(trainer, pl_module)

    def due(self, pl_module: Any) -> bool:
        """An evaluation is due (the module ends its Lightning step here, see RLModule.training_step)."""
        return self.progress(pl_module) >= self.next_eval

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.due(pl_module):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not self.history or self.history[-1]["env_steps"] != pl_module.env_steps:
            self.evaluate(trainer, pl_module)

    def check_finite(self, pl_module: Any) -> None:
        """Flush metrics (raises on a non-finite loss) and check the weights, before anything is saved."""
        pl_module.flush_metrics()
        if not all(bool(p.isfinite().all()) for p in pl_module.q_net.parameters()):
            raise NonFiniteLossError(
                f"non-finite network parameters at env step {pl_module.env_steps}; "
                "stopped, the last good checkpoint is kept"
            )

    def timed_greedy(self, pl_module: Any, run: Callable[[], Any]) -> Any:
        """Run an evaluation with the module in eval mode; its time goes to ``eval_time_s``."""
        t0 = time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()
        try:
            return run()
        finally:
            pl_module.train(was_training)
            self.eval_time_s += time.perf_counter() - t0

    def schedule_next(self, pl_module: Any) -> None:
        self.next_eval = (self.progress(pl_module) // self.freq + 1) * self.freq

    def state_dict(self) -> dict[str, Any]:
        """The schedule, history and timing, and every listener's state (flat keys, as one callback's)."""
        state: dict[str, Any] = {"next_eval": self.next_eval, "history": self.history, "eval_time_s": self.eval_time_s}
        for part in self._parts():
            own = part.state_dict()
            clash = set(own) & set(state)
            if clash:
                raise KeyError(f"{type(part).__name__}'s state reuses the keys {sorted(clash)}")
            state.update(own)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_eval = int(state["next_eval"])
        self.history = list(state["history"])
        self.eval_time_s = float(state["eval_time_s"])
        self.resumed_wall_s = float(self.history[-1]["wall_s"]) if self.history else 0.0
        for part in self._parts():
            part.load_state_dict(state)


class GreedyEvaluation(PeriodicEvaluation):
    """Every ``freq`` env steps: greedy returns on ``episodes`` fixed seeds (``epsilon``-greedy if
    set), logged; the listeners write the policy files and the checkpoint and may stop the run. Time
    spent evaluating is kept apart (``eval_time_s``) so training wall time can be reported without it.

    ``reference`` (students): the teacher's and a random policy's returns on the same seeds. Each
    evaluation then records the normalised score (S - R) / (T - R), the measure of speed and of
    QDagger's lambda (``RLModule.on_greedy_evaluation``), under the final score's rule: refused (nan,
    the hook not called) unless the teacher clearly beats random on them (kdrl.scores.teacher_beats_random).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict | None,
        freq: int,
        episodes: int,
        seed: int,
        policies: PolicyFiles,
        checkpoint: ResumeCheckpoint,
        listeners: Sequence[EvaluationListener] = (),
        reference: tuple[Sequence[float], Sequence[float]] | None = None,
        epsilon: float = 0.0,
    ) -> None:
        super().__init__(freq, episodes, seed, policies, checkpoint, listeners)
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.reference: tuple[float, float] | None = None  # (teacher, random policy) mean returns
        self.reference_beats_random = False
        if reference is not None:
            teacher, random = reference
            self.reference = float(np.mean(teacher)), float(np.mean(random))
            self.reference_beats_random = teacher_beats_random(teacher, random)
        self.epsilon = float(epsilon)

    def measure(self, pl_module: Any) -> Evaluated:
        returns = self.timed_greedy(
            pl_module,
            lambda: evaluate_policy(pl_module.greedy, self.env_id, self.seeds, self.env_kwargs, epsilon=self.epsilon),
        )
        mean, std = float(np.mean(returns)), float(np.std(returns))
        wall = time.perf_counter() - self.t_start
        record = {
            "env_steps": pl_module.env_steps,
            "grad_steps": pl_module.stream.grad_steps,
            "wall_s": wall,
            "train_wall_s": wall - self.eval_time_s,
            "process_s": job_age_s(),  # since a process running this job alone started: imports, setup too
            "return_mean": mean,
            "return_std": std,
        }
        metrics = {"eval/return_mean": mean, "eval/return_std": std, "eval/return_min": float(np.min(returns))}
        if self.reference is not None:
            teacher, random = self.reference
            record.update(teacher_return=teacher, random_return=random)
            usable = self.reference_beats_random  # else nan: speed is not reached, QDagger's lambda keeps its start
            score = normalized_score(mean, teacher, random) if usable else float("nan")
            record["normalized_score"] = metrics["eval/normalized_score"] = score
            if usable:
                pl_module.on_greedy_evaluation(mean, teacher, random)
        return Evaluated(record, metrics)


@dataclass(frozen=True)
class EvalTask:
    """One task as the multi-task evaluation plays it: its name and env."""

    name: str
    env_id: str
    kwargs: dict[str, Any]


class MultiTaskEvaluation(PeriodicEvaluation):
    """Every ``freq`` per-task env steps: each task's head, greedy (``epsilon``-greedy if set, as its
    teachers' reference is played), on ``episodes`` fixed seeds.

    Logs per-task returns and % of teacher (against the teachers' and a random policy's returns on
    the same seeds); its policy files (kdrl.checkpoints.BestPctPolicy) keep the best mean % over
    the tasks whose teacher beats a random policy.
    """

    def __init__(
        self,
        tasks: Sequence[EvalTask],
        freq: int,
        episodes: int,
        seed: int,
        policies: PolicyFiles,
        checkpoint: ResumeCheckpoint,
        teacher_returns: Sequence[float],
        random_returns_: Sequence[float],
        listeners: Sequence[EvaluationListener] = (),
        epsilon: float = 0.0,
    ) -> None:
        super().__init__(freq, episodes, seed, policies, checkpoint, listeners)
        self.tasks = list(tasks)
        self.teacher_returns, self.random_returns = list(teacher_returns), list(random_returns_)
        self.epsilon = float(epsilon)

    def progress(self, pl_module: Any) -> int:
        return int(pl_module.task_env_steps)  # per-task env steps: freq means what it means for one task

    def task_returns(self, greedy: Sequence[GreedyFn]) -> list[float]:
        return [
            float(np.mean(evaluate_policy(g, t.env_id, self.seeds, t.kwargs, epsilon=self.epsilon)))
            for g, t in zip(greedy, self.tasks)
        ]

    def measure(self, pl_module: Any) -> Evaluated:
        returns = self.timed_greedy(
            pl_module, lambda: self.task_returns([pl_module.greedy_fn(i) for i in range(len(self.tasks))])
        )
        pcts = [pct_of_teacher(r, t, z) for r, t, z in zip(returns, self.teacher_returns, self.random_returns)]
        mean_pct, geo_pct = mean_pcts(pcts)
        wall = time.perf_counter() - self.t_start
        record = {
            "env_steps": pl_module.env_steps,
            "task_env_steps": pl_module.task_env_steps,
            "grad_steps": pl_module.stream.grad_steps,
            "wall_s": wall,
            "train_wall_s": wall - self.eval_time_s,
            "return_mean": {t.name: r for t, r in zip(self.tasks, returns)},
            "pct_of_teacher": {t.name: p for t, p in zip(self.tasks, pcts)},
            "mean_pct_of_teacher": mean_pct,
            "geomean_pct_of_teacher": geo_pct,
        }
        metrics = {f"eval/{t.name}/return_mean": r for t, r in zip(self.tasks, returns)}
        metrics.update({f"eval/{t.name}/pct_of_teacher": p for t, p in zip(self.tasks, pcts)})
        metrics.update({"eval/mean_pct_of_teacher": mean_pct, "eval/geomean_pct_of_teacher": geo_pct})
        return Evaluated(record, metrics)


class EnvStepProgressBar(pl.callbacks.ProgressBar):
    """A tqdm bar over env steps showing SPS, epsilon and the latest returns (refreshed ~4x/s)."""

    def __init__(self, refresh_s: float = 0.25) -> None:
        super().__init__()
        self.refresh_s = refresh_s
        self._enabled = True
        self.bar: tqdm | None = None
        self._last = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._enabled and trainer.is_global_zero:
            self.bar = tqdm(
                total=pl_module.stream.total_timesteps,
                initial=pl_module.env_steps,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                smoothing=0.1,
                disable=os.environ.get("KDRL_NO_PROGRESS") == "1",
            )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.bar is None:
            return
        now = time.perf_counter()
        if now - self._last < self.refresh_s:
            return
        self._last = now
        self._update(pl_module)

    def _update(self, pl_module: Any) -> None:
        assert self.bar is not None
        self.bar.update(pl_module.env_steps - self.bar.n)
        recent = pl_module.collector.recent_returns
        post = {"sps": f"{pl_module.sps:,.0f}", "eps": f"{pl_module.collector.epsilon:.3f}"}
        if recent:
            post["ret100"] = f"{np.mean(recent):.1f}"
        evals = [c for c in pl_module.trainer.callbacks if isinstance(c, GreedyEvaluation)]
        if evals and evals[0].history:
            post["eval"] = f"{evals[0].history[-1]['return_mean']:.1f}"
        self.bar.set_postfix(post, refresh=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.bar is not None:
            self._update(pl_module)
            self.bar.close()
            self.bar = None
