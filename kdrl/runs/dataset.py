"""Teacher-dataset jobs (kdrl-data): the teacher plays epsilon-greedily, every transition is stored with
its Q-values (kdrl.datasets), and results.json says what was recorded. No training: the job runner's
skeleton without a fit (completed? -> lock -> recorded job { validate -> seed -> record -> save })."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from kdrl.collector import greedy_actions
from kdrl.datasets import DATASET_FILE, file_sha256, record_dataset, save_dataset
from kdrl.envs import probe_spec
from kdrl.runs.job import Job, Stopwatch, completed_results, job_lock, plain, recorded_job, seed_job
from kdrl.teachers import load_teacher_net
from kdrl.validate import resolved, validate_data

log = logging.getLogger("kdrl.data")


class DataJob(Job):
    kind = "dataset"

    def validate(self) -> None:
        validate_data(self.cfg)


def progress_bar(total: int, enabled: bool):  # noqa: ANN201 (a tqdm bar, or None)
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="recording", unit="step", dynamic_ncols=True)


def record_teacher_data(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """kdrl-data's job: ``dataset.steps`` env steps of the teacher at ``dataset.epsilon`` into
    ``<out>/dataset.npz``."""
    job = DataJob(cfg, Path(out))
    config = resolved(cfg)
    done = completed_results(job.out, cfg)
    if done is not None:
        return done
    with job_lock(job.out):
        fields = {**Job.fields(job), "config": config}
        with recorded_job(job.out, fields):
            job.validate()
            seed_job(cfg.seed, cfg.torch_threads)
            clock = Stopwatch()
            spec = probe_spec(plain(cfg.env))
            teacher, _ = load_teacher_net(
                cfg.teacher.checkpoint, spec.env_id, spec.obs_shape, spec.n_actions, bool(cfg.teacher.trust_code)
            )
            steps = int(cfg.dataset.steps)
            bar = progress_bar(steps, bool(cfg.trainer.get("enable_progress_bar", True)))

            def advance(env_steps: int) -> None:
                if bar is not None:
                    bar.update(min(env_steps, steps) - bar.n)

            try:
                data = record_dataset(
                    plain(cfg.env),
                    spec,
                    teacher,
                    steps,
                    float(cfg.dataset.epsilon),
                    int(cfg.seed),
                    lambda obs: greedy_actions(teacher, obs, torch.device("cpu")),
                    advance,
                )
            finally:
                if bar is not None:
                    bar.close()
            path = save_dataset(job.out / DATASET_FILE, data)
            returns = data.meta["episode_returns"]
            wall = clock()
            fields.update(
                status="ok",
                env_steps=data.env_steps,
                wall_time_s=wall,
                sps=data.env_steps / wall if wall > 0 else None,
                teacher_checkpoint=str(cfg.teacher.checkpoint),
                epsilon=float(cfg.dataset.epsilon),
                num_envs=data.num_envs,
                episodes=int(data.meta["episodes"]),
                episode_return_mean=float(np.mean(returns)) if returns else None,
                dataset={"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size},
            )
            mean = fields["episode_return_mean"]
            log.info(
                "teacher dataset %s seed %s: %d env steps (%d episodes, mean return %s at epsilon %.2f) in %.1f s -> %s",
                spec.env_id,
                cfg.seed,
                data.env_steps,
                fields["episodes"],
                "n/a" if mean is None else f"{mean:.1f}",
                fields["epsilon"],
                wall,
                path,
            )
        return fields
