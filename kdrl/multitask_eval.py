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

from kdrl.data import GreedyFn
from kdrl.envs import EnvSpec
from kdrl.evaluation import eval_seeds, evaluate_policy
from kdrl.io import CheckpointError, atomic_torch_save, atomic_write, load_checkpoint_file

MULTITASK_FORMAT = "kdrl-multitask/1"
GEOMEAN_FLOOR_PCT = 1.0  # a task at or below 0% would make the geometric mean 0 or undefined


@dataclass(frozen=True)
class EvalTask:
    name: str
    env_id: str
    kwargs: dict[str, Any]


def random_returns(env_id: str, seeds: Sequence[int], kwargs: dict[str, Any] | None = None) -> list[float]:
    """Uniform-random actions on ``seeds`` (evaluate_policy with epsilon = 1)."""
    return evaluate_policy(lambda obs: np.zeros(len(obs), dtype=np.int64), env_id, seeds, kwargs, epsilon=1.0,
                           rng_seed=int(seeds[0]) if len(seeds) else 0)


def pct_of_teacher(student: float, teacher: float, random: float) -> float:
    """100 * (student - random) / (teacher - random); nan when the teacher is no better than random."""
    gap = teacher - random
    return 100.0 * (student - random) / gap if gap > 0 else float("nan")


def mean_pcts(pcts: Sequence[float]) -> tuple[float, float]:
    """Arithmetic and geometric mean % over tasks (the geometric one floored at GEOMEAN_FLOOR_PCT)."""
    x = np.asarray(pcts, dtype=float)
    if len(x) == 0 or not np.all(np.isfinite(x)):
        return float("nan"), float("nan")
    return float(x.mean()), float(np.exp(np.log(np.maximum(x, GEOMEAN_FLOOR_PCT)).mean()))


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
class MultiTaskEvaluation(pl.Callback):
    """Every ``freq`` per-task env steps: each task's head, greedy, on ``episodes`` fixed seeds.

    Logs per-task returns and % of teacher (against the teachers' and a random policy's returns on
    the same seeds), keeps ``last_policy.pt`` and ``best_policy.pt`` (best = highest mean % over
    the tasks whose teacher beats a random policy) and ``last.ckpt`` for resuming, as GreedyEvaluation does for one task.
    """

    def __init__(self, tasks: Sequence[EvalTask], freq: int, episodes: int, seed: int, ckpt_dir: str | Path,
                 net_cfg: dict[str, Any], teacher_returns: Sequence[float], random_returns_: Sequence[float]) -> None:
        if int(freq) < 1 or int(episodes) < 1:
            raise ValueError(f"eval.freq and eval.episodes must be >= 1, got {freq} and {episodes}")
        self.tasks = list(tasks)
        self.freq, self.seeds = int(freq), eval_seeds(seed, episodes)
        self.ckpt_dir, self.net_cfg = Path(ckpt_dir), dict(net_cfg)
        self.teacher_returns, self.random_returns = list(teacher_returns), list(random_returns_)
        self.next_eval = self.freq
        self.history: list[dict[str, Any]] = []
        self.best_mean = -np.inf
        self.eval_time_s = 0.0
        self.resumed_wall_s = 0.0
        self.t_start = time.perf_counter()

    @property
    def best_policy_path(self) -> Path:
        return self.ckpt_dir / "best_policy.pt"

    @property
    def last_policy_path(self) -> Path:
        return self.ckpt_dir / "last_policy.pt"

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.t_start = time.perf_counter() - (self.history[-1]["wall_s"] if self.history else 0.0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.task_env_steps >= self.next_eval:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not self.history or self.history[-1]["env_steps"] != pl_module.env_steps:
            self.evaluate(trainer, pl_module)

    def task_returns(self, greedy: Sequence[GreedyFn]) -> list[float]:
        return [float(np.mean(evaluate_policy(g, t.env_id, self.seeds, t.kwargs))) for g, t in zip(greedy, self.tasks)]

    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:
        pl_module.flush_metrics()  # raises on a non-finite loss before anything is checkpointed
        if not all(bool(p.isfinite().all()) for p in pl_module.q_net.parameters()):
            from kdrl.modules.base import NonFiniteLossError

            raise NonFiniteLossError(f"non-finite network parameters at env step {pl_module.env_steps}; "
                                     "stopped, the last good checkpoint is kept")
        t0 = time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()
        returns = self.task_returns([pl_module.greedy_fn(i) for i in range(len(self.tasks))])
        pl_module.train(was_training)
        self.eval_time_s += time.perf_counter() - t0
        pcts = [pct_of_teacher(r, t, z) for r, t, z in zip(returns, self.teacher_returns, self.random_returns)]
        mean_pct, geo_pct = mean_pcts(pcts)
        wall = time.perf_counter() - self.t_start
        record = {"env_steps": pl_module.env_steps, "task_env_steps": pl_module.task_env_steps,
                  "grad_steps": pl_module.stream.grad_steps, "wall_s": wall, "train_wall_s": wall - self.eval_time_s,
                  "return_mean": {t.name: r for t, r in zip(self.tasks, returns)},
                  "pct_of_teacher": {t.name: p for t, p in zip(self.tasks, pcts)},
                  "mean_pct_of_teacher": mean_pct, "geomean_pct_of_teacher": geo_pct}
        self.history.append(record)
        self.next_eval = (pl_module.task_env_steps // self.freq + 1) * self.freq
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

    def state_dict(self) -> dict[str, Any]:
        return {"next_eval": self.next_eval, "history": self.history, "best_mean": float(self.best_mean),
                "eval_time_s": self.eval_time_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_eval = int(state["next_eval"])
        self.history = list(state["history"])
        self.best_mean = float(state["best_mean"])
        self.eval_time_s = float(state["eval_time_s"])
        self.resumed_wall_s = float(self.history[-1]["wall_s"]) if self.history else 0.0
