"""Callbacks: periodic greedy evaluation with best/last checkpoints (one task, or every task of a
multi-task net as % of its teacher), and an env-step progress bar."""

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
from pytorch_lightning.plugins.io import TorchCheckpointIO
from tqdm.auto import tqdm

from kdrl.evaluation import GreedyFn, eval_seeds, evaluate_policy
from kdrl.io import (
    LAST_CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    atomic_write,
    save_multitask_policy,
    save_policy,
    torch_save_file,
)
from kdrl.scores import mean_pcts, normalized_score, pct_of_teacher, teacher_beats_random


class FileCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing straight into the file it is given.

    Lightning's own writes to a temporary file in the system temp dir (fsspec) and copies it over;
    kdrl's ``atomic_write`` already gives the atomic rename, so this skips the extra copy, and a full
    disk raises ENOSPC for the run dir's own file (``DiskFullError`` naming it) instead of leaving a
    temp file in /tmp. Reading is Lightning's (weights_only as ``trainer.fit`` asks)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        torch_save_file(checkpoint, path)


def save_full_checkpoint(trainer: pl.Trainer, ckpt_dir: Path) -> Path:
    """``last.ckpt`` for resuming, written atomically; the one it replaces stays as ``prev.ckpt``
    until the run finishes (a damaged last.ckpt then still leaves one to resume from)."""
    return atomic_write(
        ckpt_dir / LAST_CHECKPOINT, trainer.save_checkpoint, keep_previous=ckpt_dir / PREVIOUS_CHECKPOINT
    )


class PeriodicEvaluation(pl.Callback):
    """Shared schedule, timing, checkpoint paths and resume state of the evaluation callbacks.

    Subclasses implement ``evaluate``; ``progress`` is the env-step counter the schedule follows.
    """

    def __init__(self, freq: int, episodes: int, seed: int, ckpt_dir: str | Path, net_cfg: dict) -> None:
        if int(freq) < 1 or int(episodes) < 1:
            raise ValueError(f"eval.freq and eval.episodes must be >= 1, got {freq} and {episodes}")
        self.freq, self.seeds = int(freq), eval_seeds(seed, episodes)
        self.ckpt_dir, self.net_cfg = Path(ckpt_dir), dict(net_cfg)
        self.next_eval = self.freq
        self.history: list[dict[str, Any]] = []
        self.best_mean = -np.inf
        self.best_phase = 0  # the module's selection_phase the best was found in (pruning starts a new one)
        self.eval_time_s = 0.0
        self.resumed_wall_s = 0.0  # wall time of the run before a resume (0 for a fresh run)
        self.t_start = time.perf_counter()

    def progress(self, pl_module: Any) -> int:
        return int(pl_module.env_steps)

    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def best_policy_path(self) -> Path:
        return self.ckpt_dir / "best_policy.pt"

    @property
    def last_policy_path(self) -> Path:
        return self.ckpt_dir / "last_policy.pt"

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.t_start = time.perf_counter() - (self.history[-1]["wall_s"] if self.history else 0.0)
        if not self.history and getattr(pl_module, "evaluate_at_start", False):  # e.g. after QDagger's offline phase
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
            from kdrl.modules.base import NonFiniteLossError

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
        return {
            "next_eval": self.next_eval,
            "history": self.history,
            "best_mean": float(self.best_mean),
            "best_phase": self.best_phase,
            "eval_time_s": self.eval_time_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_eval = int(state["next_eval"])
        self.history = list(state["history"])
        self.best_mean = float(state["best_mean"])
        self.best_phase = int(state.get("best_phase", 0))
        self.eval_time_s = float(state["eval_time_s"])
        self.resumed_wall_s = float(self.history[-1]["wall_s"]) if self.history else 0.0


class GreedyEvaluation(PeriodicEvaluation):
    """Every ``freq`` env steps: greedy returns on ``episodes`` fixed seeds, logged and checkpointed.

    Writes ``last.ckpt`` (full Lightning state, for resuming), ``last_policy.pt`` and
    ``best_policy.pt`` (weights-only Q-network files). ``stop_at_return`` ends training early once
    the evaluation mean reaches it. Time spent evaluating is kept apart (``eval_time_s``) so
    training wall time can be reported without it.

    ``reference`` (students): the teacher's and a random policy's returns on the same seeds. Each
    evaluation then records the normalised score (S - R) / (T - R), the measure of speed and of
    QDagger's lambda (``on_greedy_evaluation``), under the final score's rule: refused (nan, the hook
    not called) unless the teacher clearly beats random on them (kdrl.scores.teacher_beats_random).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict | None,
        freq: int,
        episodes: int,
        seed: int,
        ckpt_dir: str | Path,
        net_cfg: dict,
        stop_at_return: float | None = None,
        reference: tuple[Sequence[float], Sequence[float]] | None = None,
        keep_last: int = 1,
        epsilon: float = 0.0,
    ) -> None:
        super().__init__(freq, episodes, seed, ckpt_dir, net_cfg)
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.stop_at_return = stop_at_return
        self.reference: tuple[float, float] | None = None  # (teacher, random policy) mean returns
        self.reference_beats_random = False
        if reference is not None:
            teacher, random = reference
            self.reference = float(np.mean(teacher)), float(np.mean(random))
            self.reference_beats_random = teacher_beats_random(teacher, random)
        self.epsilon = float(epsilon)
        if int(keep_last) < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        self.keep_last = int(keep_last)

    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, float]:
        self.check_finite(pl_module)
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
            hook = getattr(pl_module, "on_greedy_evaluation", None)
            if hook is not None and usable:
                hook(mean, teacher, random)
        self.history.append(record)
        self.schedule_next(pl_module)
        spec, extra = pl_module.spec, {"env_steps": pl_module.env_steps, "eval_return_mean": mean}
        paths = [self.last_policy_path]
        phase = int(getattr(pl_module, "selection_phase", 0))
        if phase != self.best_phase:  # e.g. the student was pruned: only its pruned checkpoints compete
            self.best_mean, self.best_phase = -np.inf, phase
        if mean > self.best_mean:
            self.best_mean = mean
            paths.append(self.best_policy_path)
        for path in paths:
            save_policy(path, pl_module.q_net, self.net_cfg, spec.env_id, spec.obs_shape, spec.n_actions, extra=extra)
        save_full_checkpoint(trainer, self.ckpt_dir)
        self._rotate(pl_module.env_steps)
        metrics["eval/best_return_mean"] = self.best_mean
        pl_module.log_env_metrics(metrics)
        if self.stop_at_return is not None and mean >= float(self.stop_at_return):
            if pl_module.may_stop_early():  # e.g. not while a student's pruning is still to come
                trainer.should_stop = True
        return record

    def _rotate(self, env_steps: int) -> None:
        """Keep the last ``keep_last`` full checkpoints: last.ckpt plus numbered older ones."""
        if self.keep_last <= 1:
            return
        numbered = self.ckpt_dir / f"step-{env_steps:010d}.ckpt"
        atomic_write(numbered, lambda tmp: Path(tmp).write_bytes((self.ckpt_dir / LAST_CHECKPOINT).read_bytes()))
        for old in sorted(self.ckpt_dir.glob("step-*.ckpt"))[: -(self.keep_last - 1)]:
            old.unlink(missing_ok=True)


@dataclass(frozen=True)
class EvalTask:
    """One task as the multi-task evaluation plays it: its name and env."""

    name: str
    env_id: str
    kwargs: dict[str, Any]


class MultiTaskEvaluation(PeriodicEvaluation):
    """Every ``freq`` per-task env steps: each task's head, greedy, on ``episodes`` fixed seeds.

    Logs per-task returns and % of teacher (against the teachers' and a random policy's returns on
    the same seeds), keeps ``last_policy.pt`` and ``best_policy.pt`` (best = highest mean % over
    the tasks whose teacher beats a random policy) and ``last.ckpt`` for resuming, as GreedyEvaluation does for one task.
    """

    def __init__(
        self,
        tasks: Sequence[EvalTask],
        freq: int,
        episodes: int,
        seed: int,
        ckpt_dir: str | Path,
        net_cfg: dict[str, Any],
        teacher_returns: Sequence[float],
        random_returns_: Sequence[float],
    ) -> None:
        super().__init__(freq, episodes, seed, ckpt_dir, net_cfg)
        self.tasks = list(tasks)
        self.teacher_returns, self.random_returns = list(teacher_returns), list(random_returns_)

    def progress(self, pl_module: Any) -> int:
        return int(pl_module.task_env_steps)  # per-task env steps: freq means what it means for one task

    def task_returns(self, greedy: Sequence[GreedyFn]) -> list[float]:
        return [float(np.mean(evaluate_policy(g, t.env_id, self.seeds, t.kwargs))) for g, t in zip(greedy, self.tasks)]

    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:
        self.check_finite(pl_module)
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
        self.history.append(record)
        self.schedule_next(pl_module)
        self._save_policies(pl_module, pcts, mean_pct)
        save_full_checkpoint(trainer, self.ckpt_dir)
        metrics = {f"eval/{t.name}/return_mean": r for t, r in zip(self.tasks, returns)}
        metrics.update({f"eval/{t.name}/pct_of_teacher": p for t, p in zip(self.tasks, pcts)})
        metrics.update(
            {
                "eval/mean_pct_of_teacher": mean_pct,
                "eval/geomean_pct_of_teacher": geo_pct,
                "eval/best_mean_pct_of_teacher": self.best_mean,
            }
        )
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
