"""Teacher jobs: train a DQN teacher, evaluate it on held-out seeds, write teacher.pt and its reference
(kdrl.reference: the teacher and a random policy on ``eval.reference_episodes`` held-out seeds); and the
on-demand teacher of a cache entry, trained as its own job when the cache lacks it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdrl.callbacks import GreedyEvaluation
from kdrl.checkpoints import BestReturnPolicy, ResumeCheckpoint
from kdrl.envs import EnvSpec, probe_spec
from kdrl.evaluation import eval_seeds, evaluate_policy
from kdrl.io import atomic_write, load_policy
from kdrl.locks import exclusive_lock
from kdrl.modules.dqn import DQN
from kdrl.optim import build_optimizer
from kdrl.reference import ReferenceSettings, compute_reference, store_reference
from kdrl.runs.job import Job, plain, run_job
from kdrl.stopping import StopAtReturn
from kdrl.teachers import cache_entry, cached_teacher_ok, teacher_config
from kdrl.validate import validate_common

log = logging.getLogger("kdrl.teachers")


def build_dqn(cfg: DictConfig, spec: EnvSpec, net_cfg: Any, algo: dict[str, Any]) -> DQN:
    """A DQN module on a net built from ``net_cfg`` (the teacher's, or a scratch baseline's)."""
    net = instantiate(net_cfg, obs_shape=spec.obs_shape, n_actions=spec.n_actions)
    return DQN(
        net,
        spec,
        plain(cfg.env),
        algo,
        build_optimizer(**algo["optimizer"]),
        seed=cfg.seed,
        log_interval=cfg.log_interval,
    )


def build_teacher(cfg: DictConfig) -> tuple[DQN, dict]:
    """The teacher module of a kdrl-train config and its net config."""
    return build_dqn(cfg, probe_spec(plain(cfg.env)), cfg.net, plain(cfg.algo)), plain(cfg.net)


def greedy_evaluation(
    cfg: DictConfig, out: Path, net_cfg: dict, reference: tuple[list[float], list[float]] | None = None
) -> GreedyEvaluation:
    """The periodic evaluation of a teacher or a student: greedy returns (against the teacher
    reference, for a student), the best/last policy files, early stop at ``eval.stop_at_return``
    and the resume checkpoint."""
    ckpt_dir = out / "checkpoints"
    stop = cfg.eval.stop_at_return
    return GreedyEvaluation(
        cfg.env.id,
        plain(cfg.env.kwargs),
        cfg.eval.freq,
        cfg.eval.episodes,
        cfg.eval.seed,
        BestReturnPolicy(ckpt_dir, net_cfg),
        ResumeCheckpoint(ckpt_dir, cfg.checkpoint.keep_last),
        [StopAtReturn(stop)] if stop is not None else [],
        reference=reference,
        epsilon=cfg.eval.epsilon,
    )


class TeacherJob(Job):
    kind = "teacher"

    def validate(self) -> None:
        validate_common(self.cfg)

    def build(self, fields: dict[str, Any]) -> tuple[DQN, GreedyEvaluation]:
        module, net_cfg = build_teacher(self.cfg)
        return module, greedy_evaluation(self.cfg, self.out, net_cfg)

    def finish(self, module: DQN, evaluation: GreedyEvaluation, chosen: Path) -> dict[str, Any]:
        spec, cfg = module.spec, self.cfg
        module.q_net.load_state_dict(load_policy(chosen, spec.env_id, spec.obs_shape, spec.n_actions)["state_dict"])
        module.eval()
        seeds = eval_seeds(cfg.eval.final_seed, cfg.eval.final_episodes)
        returns = evaluate_policy(module.greedy, cfg.env.id, seeds, plain(cfg.env.kwargs), epsilon=cfg.eval.epsilon)
        teacher_path = self.out / "teacher.pt"
        atomic_write(teacher_path, lambda tmp: shutil.copyfile(chosen, tmp))
        # the teacher reference every student's normalised score divides by, stored with teacher.pt
        settings = ReferenceSettings.of(cfg, cfg.env.id, plain(cfg.env.kwargs))
        reference = store_reference(teacher_path, compute_reference(module.greedy, settings, "teacher job"))
        return {
            "params": module.params,
            "episodes": module.collector.episodes,
            "eval_return_mean": float(np.mean(returns)),
            "eval_return_std": float(np.std(returns)),
            "eval_returns": returns,
            "eval_policy": str(cfg.eval.final_policy),
            "best_periodic_eval": evaluation.policies.best_mean,
            "checkpoint": str(teacher_path),
            "reference": reference,
        }

    def summary(self, f: dict[str, Any]) -> str:
        return (
            f"teacher {f['env_id']} seed {f['seed']}: greedy return {f['eval_return_mean']:.1f} ± "
            f"{f['eval_return_std']:.1f} over {len(f['eval_returns'])} held-out episodes ({f['env_steps']} env "
            f"steps, {f['wall_time_s']:.1f} s, {f['sps']:.0f} steps/s); reference {f['reference']['teacher']['mean']:.1f} "
            f"(se {f['reference']['teacher']['se']:.2f}) over {f['reference']['episodes']} episodes"
        )


def train_teacher(cfg: DictConfig, out: Path) -> dict[str, Any]:
    return run_job(TeacherJob(cfg, out))


def obtain_teacher(env: str, seed: int, overrides: list[str], cache_dir: str | Path) -> tuple[Path, dict]:
    """Path to a cached teacher.pt for this teacher config and its results, training it first as its
    own teacher job (in the cache entry, under the entry's lock) when the cache lacks it. ``env`` is a
    conf/env name; ``overrides`` are kdrl-train's (kdrl.teachers.teacher_overrides). Library code only
    loads (kdrl.teachers.cached_teacher); this is the runner's on-demand convenience."""
    tcfg = teacher_config(env, seed, overrides)
    entry = cache_entry(tcfg, cache_dir)
    ckpt, results = entry / "teacher.pt", entry / "results.json"
    with exclusive_lock(entry.with_suffix(".lock")):
        if cached_teacher_ok(entry):
            log.info("reusing cached teacher %s", entry)
        else:
            log.info("training teacher %s (not cached yet)", entry)
            train_teacher(tcfg, entry)
        return ckpt, json.loads(results.read_text())
