"""Multi-task evaluation: per-task greedy returns, % of each teacher, the periodic-evaluation
callback and the weights-only multi-task policy checkpoint.

% of teacher. Rusu et al. report the student's score as a fraction of the teacher's raw score,
which assumes scores >= 0 with 0 meaning "nothing learnt" (Atari). Acrobot's returns are negative
(-500 = never swung up), where the raw ratio inverts (a student at -100 against a teacher at -80
would be "125%"). So the headline is the normalised score

    pct_of_teacher = 100 * (R_student - R_random) / (R_teacher - R_random)

with all three returns measured on the same held-out seeds (random = uniform actions): 0% = a
random policy, 100% = the teacher. For CartPole (random ~ 22, teacher 500) it is within a few
points of the raw ratio, which is reported too (``return_ratio``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from kdrl.callbacks import PeriodicEvaluation
from kdrl.data import GreedyFn
from kdrl.envs import EnvSpec
from kdrl.evaluation import evaluate_policy, random_returns
from kdrl.io import CheckpointError, atomic_torch_save, atomic_write, load_checkpoint_file

MULTITASK_FORMAT = "kdrl-multitask/1"
GEOMEAN_FLOOR_PCT = 1.0  # a task at or below 0% would make the geometric mean 0 or undefined


@dataclass(frozen=True)
class EvalTask:
    name: str
    env_id: str
    kwargs: dict[str, Any]


def pct_of_teacher(student: float, teacher: float, random: float) -> float:
    """100 * (student - random) / (teacher - random); nan when the teacher is no better than random
    (kdrl.scores.normalized_score in %, float for float)."""
    from kdrl.scores import normalized_score

    return normalized_score(student, teacher, random, scale=100.0)


def mean_pcts(pcts: Sequence[float]) -> tuple[float, float]:
    """Arithmetic and geometric mean % over tasks, both nan unless every task has a finite %; the
    geometric one floors each task at GEOMEAN_FLOOR_PCT (kdrl.scores.geometric_mean)."""
    from kdrl.scores import geometric_mean

    x = np.asarray(pcts, dtype=float)
    if len(x) == 0 or not np.all(np.isfinite(x)):
        return float("nan"), float("nan")
    return float(x.mean()), geometric_mean(x, floor=GEOMEAN_FLOOR_PCT)


# ---- weights-only multi-task policy file -----------------------------------------------------------
def save_multitask_policy(path: str | Path, net: torch.nn.Module, net_cfg: dict[str, Any], names: Sequence[str],
                          specs: Sequence[EnvSpec], extra: dict[str, Any] | None = None) -> Path:
    payload = {
        "format": MULTITASK_FORMAT,
        "net": dict(net_cfg),
        "tasks": [{"name": n, "env_id": s.env_id, "obs_shape": list(s.obs_shape), "n_actions": int(s.n_actions)}
                  for n, s in zip(names, specs)],
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": extra or {},
    }
    return atomic_torch_save(path, payload)


def load_multitask_policy(path: str | Path, env_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Load (weights_only) a multi-task policy file, checked against the tasks' env ids in order."""
    obj = load_checkpoint_file(path)
    if obj.get("format") != MULTITASK_FORMAT:
        raise CheckpointError(f"{path} is not a kdrl multi-task policy (format={obj.get('format')!r})")
    if env_ids is not None and [t["env_id"] for t in obj["tasks"]] != list(env_ids):
        raise CheckpointError(f"{path} was trained on {[t['env_id'] for t in obj['tasks']]}, not {list(env_ids)}")
    return obj


# ---- periodic evaluation ------------------------------------------------------------------------------
class MultiTaskEvaluation(PeriodicEvaluation):
    """Every ``freq`` per-task env steps: each task's head, greedy, on ``episodes`` fixed seeds.

    Logs per-task returns and % of teacher (against the teachers' and a random policy's returns on
    the same seeds), keeps ``last_policy.pt`` and ``best_policy.pt`` (best = highest mean % over
    the tasks whose teacher beats a random policy) and ``last.ckpt`` for resuming, as GreedyEvaluation does for one task.
    """

    def __init__(self, tasks: Sequence[EvalTask], freq: int, episodes: int, seed: int, ckpt_dir: str | Path,
                 net_cfg: dict[str, Any], teacher_returns: Sequence[float], random_returns_: Sequence[float]) -> None:
        super().__init__(freq, episodes, seed, ckpt_dir, net_cfg)
        self.tasks = list(tasks)
        self.teacher_returns, self.random_returns = list(teacher_returns), list(random_returns_)

    def progress(self, pl_module: Any) -> int:
        return int(pl_module.task_env_steps)  # per-task env steps: freq means what it means for one task

    def task_returns(self, greedy: Sequence[GreedyFn]) -> list[float]:
        return [float(np.mean(evaluate_policy(g, t.env_id, self.seeds, t.kwargs))) for g, t in zip(greedy, self.tasks)]

    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:
        self.check_finite(pl_module)
        returns = self.timed_greedy(pl_module, lambda: self.task_returns(
            [pl_module.greedy_fn(i) for i in range(len(self.tasks))]))
        pcts = [pct_of_teacher(r, t, z) for r, t, z in zip(returns, self.teacher_returns, self.random_returns)]
        mean_pct, geo_pct = mean_pcts(pcts)
        wall = time.perf_counter() - self.t_start
        record = {"env_steps": pl_module.env_steps, "task_env_steps": pl_module.task_env_steps,
                  "grad_steps": pl_module.stream.grad_steps, "wall_s": wall, "train_wall_s": wall - self.eval_time_s,
                  "return_mean": {t.name: r for t, r in zip(self.tasks, returns)},
                  "pct_of_teacher": {t.name: p for t, p in zip(self.tasks, pcts)},
                  "mean_pct_of_teacher": mean_pct, "geomean_pct_of_teacher": geo_pct}
        self.history.append(record)
        self.schedule_next(pl_module)
        self._save_policies(pl_module, pcts, mean_pct)
        atomic_write(self.ckpt_dir / "last.ckpt", trainer.save_checkpoint)
        metrics = {f"eval/{t.name}/return_mean": r for t, r in zip(self.tasks, returns)}
        metrics.update({f"eval/{t.name}/pct_of_teacher": p for t, p in zip(self.tasks, pcts)})
        metrics.update({"eval/mean_pct_of_teacher": mean_pct, "eval/geomean_pct_of_teacher": geo_pct,
                        "eval/best_mean_pct_of_teacher": self.best_mean})
        pl_module.log_env_metrics(metrics)
        return record

    def _save_policies(self, pl_module: Any, pcts: list[float], mean_pct: float) -> None:
        specs = [t.spec for t in pl_module.tasks]
        extra = {"env_steps": pl_module.env_steps, "mean_pct_of_teacher": mean_pct}
        save_multitask_policy(self.last_policy_path, pl_module.q_net, self.net_cfg, pl_module.names, specs, extra)
        finite = [p for p in pcts if np.isfinite(p)]
        score = float(np.mean(finite)) if finite else -np.inf  # a task whose teacher is no better than random has no %
        if score > self.best_mean or not self.best_policy_path.exists():
            self.best_mean = max(score, self.best_mean)
            save_multitask_policy(self.best_policy_path, pl_module.q_net, self.net_cfg, pl_module.names, specs, extra)
