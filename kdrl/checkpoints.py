"""Policy selection and checkpointing: where each periodic evaluation's result is written.

Two listeners of a periodic evaluation (kdrl.callbacks; kdrl.evaluation.EvaluationListener):

- the policy files, ``last_policy.pt`` every evaluation and ``best_policy.pt`` when it is the best
  so far (weights-only Q-network files, kdrl.io): ``BestReturnPolicy`` for one task (the highest
  mean return within the module's latest selection phase), ``BestPctPolicy`` for a multi-task net
  (the highest mean % of teacher);
- ``ResumeCheckpoint``: ``last.ckpt``, the full Lightning state for resuming (with the one it
  replaces kept as ``prev.ckpt``), and with ``keep_last > 1`` numbered older copies. A run that
  finishes drops ``prev.ckpt``, and with ``keep_last`` 1 ``last.ckpt`` too: it is never resumed
  (kdrl.runs.job.drop_resume_checkpoint).

``FileCheckpointIO`` is the checkpoint IO plugin every kdrl trainer uses (built by the job runner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO

from kdrl.evaluation import Evaluated, EvaluationListener
from kdrl.io import (
    LAST_CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    atomic_write,
    save_multitask_policy,
    save_policy,
    torch_save_file,
)


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


class PolicyFiles(EvaluationListener):
    """``last_policy.pt`` and ``best_policy.pt`` in ``ckpt_dir``; ``best_mean`` is the best score so
    far (what the job reports as the best periodic evaluation)."""

    def __init__(self, ckpt_dir: str | Path, net_cfg: dict[str, Any]) -> None:
        self.ckpt_dir, self.net_cfg = Path(ckpt_dir), dict(net_cfg)
        self.best_mean = -np.inf

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best_policy.pt"

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last_policy.pt"

    def state_dict(self) -> dict[str, Any]:
        return {"best_mean": float(self.best_mean)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_mean = float(state["best_mean"])


class BestReturnPolicy(PolicyFiles):
    """One task: best = the highest mean return, among the evaluations of the module's latest
    ``selection_phase`` only (a student's pruning or int8 point starts a new phase: only its
    compressed checkpoints compete). Adds ``eval/best_return_mean`` to the logged metrics."""

    def __init__(self, ckpt_dir: str | Path, net_cfg: dict[str, Any]) -> None:
        super().__init__(ckpt_dir, net_cfg)
        self.best_phase = 0  # the module's selection_phase the best was found in

    def on_evaluation(self, trainer: pl.Trainer, pl_module: Any, result: Evaluated) -> None:
        mean = result.record["return_mean"]
        spec, extra = pl_module.spec, {"env_steps": pl_module.env_steps, "eval_return_mean": mean}
        paths = [self.last_path]
        phase = int(pl_module.selection_phase)
        if phase != self.best_phase:  # e.g. the student was pruned: only its pruned checkpoints compete
            self.best_mean, self.best_phase = -np.inf, phase
        if mean > self.best_mean:
            self.best_mean = mean
            paths.append(self.best_path)
        for path in paths:
            save_policy(path, pl_module.q_net, self.net_cfg, spec.env_id, spec.obs_shape, spec.n_actions, extra=extra)
        result.metrics["eval/best_return_mean"] = self.best_mean

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_phase": self.best_phase}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_phase = int(state.get("best_phase", 0))


class BestPctPolicy(PolicyFiles):
    """A multi-task net: best = the highest mean % of teacher over the tasks whose teacher beats a
    random policy (a task whose teacher does not has no %). Adds ``eval/best_mean_pct_of_teacher``."""

    def on_evaluation(self, trainer: pl.Trainer, pl_module: Any, result: Evaluated) -> None:
        pcts = list(result.record["pct_of_teacher"].values())
        specs = [t.spec for t in pl_module.tasks]
        extra = {"env_steps": pl_module.env_steps, "mean_pct_of_teacher": result.record["mean_pct_of_teacher"]}
        save_multitask_policy(self.last_path, pl_module.q_net, self.net_cfg, pl_module.names, specs, extra)
        finite = [p for p in pcts if np.isfinite(p)]
        score = float(np.mean(finite)) if finite else -np.inf
        if score > self.best_mean or not self.best_path.exists():
            self.best_mean = max(score, self.best_mean)
            save_multitask_policy(self.best_path, pl_module.q_net, self.net_cfg, pl_module.names, specs, extra)
        result.metrics["eval/best_mean_pct_of_teacher"] = self.best_mean


class ResumeCheckpoint(EvaluationListener):
    """``last.ckpt`` after every evaluation (written last: it holds every listener's state as this
    evaluation left it); with ``keep_last`` > 1, ``keep_last - 1`` numbered older copies too."""

    def __init__(self, ckpt_dir: str | Path, keep_last: int = 1) -> None:
        if int(keep_last) < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        self.ckpt_dir, self.keep_last = Path(ckpt_dir), int(keep_last)

    def on_evaluation(self, trainer: pl.Trainer, pl_module: Any, result: Evaluated) -> None:
        save_full_checkpoint(trainer, self.ckpt_dir)
        self.rotate(pl_module.env_steps)

    def rotate(self, env_steps: int) -> None:
        """Keep the last ``keep_last`` full checkpoints: last.ckpt plus numbered older ones."""
        if self.keep_last <= 1:
            return
        numbered = self.ckpt_dir / f"step-{env_steps:010d}.ckpt"
        atomic_write(numbered, lambda tmp: Path(tmp).write_bytes((self.ckpt_dir / LAST_CHECKPOINT).read_bytes()))
        for old in sorted(self.ckpt_dir.glob("step-*.ckpt"))[: -(self.keep_last - 1)]:
            old.unlink(missing_ok=True)
