"""kdrl-train: train a DQN teacher, evaluate it on held-out seeds, write teacher.pt and results.json."""

from __future__ import annotations

import logging
import sys
import shutil
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdrl.callbacks import GreedyEvaluation
from kdrl.cli.common import (CONF_DIR, Stopwatch, build_loggers, completed_results, make_trainer, plain,
                             preflight_output_dirs, quiet_lightning, recorded_job, resume_checkpoint, run_app,
                             seed_job)
from kdrl.envs import env_spec, make_env
from kdrl.evaluation import eval_seeds, evaluate_policy
from kdrl.io import atomic_write, load_policy
from kdrl.modules.teacher import DQNTeacher
from kdrl.optim import build_optimizer
from kdrl.validate import validate_common

log = logging.getLogger("kdrl.train")


def build_teacher(cfg: DictConfig) -> tuple[DQNTeacher, dict]:
    probe = make_env(cfg.env.id, plain(cfg.env.kwargs))
    spec = env_spec(probe)
    probe.close()
    net_cfg = plain(cfg.net)
    net = instantiate(cfg.net, obs_shape=spec.obs_shape, n_actions=spec.n_actions)
    algo = plain(cfg.algo)
    module = DQNTeacher(net, spec, plain(cfg.env), algo, build_optimizer(**algo["optimizer"]), seed=cfg.seed,
                        log_interval=cfg.log_interval)
    return module, net_cfg


def final_evaluation(module: DQNTeacher, cfg: DictConfig, policy_path: Path) -> list[float]:
    """Greedy returns of the chosen checkpoint on held-out seeds."""
    spec = module.spec
    state = load_policy(policy_path, spec.env_id, spec.obs_shape, spec.n_actions)
    module.q_net.load_state_dict(state["state_dict"])
    module.eval()
    return evaluate_policy(module.greedy, cfg.env.id, eval_seeds(cfg.eval.final_seed, cfg.eval.final_episodes),
                           plain(cfg.env.kwargs))


def train_teacher(cfg: DictConfig, out: Path) -> dict[str, Any]:
    quiet_lightning()
    done = completed_results(out, cfg)
    if done is not None:
        return done
    fields: dict[str, Any] = {"kind": "teacher", "status": "failed", "env_id": cfg.env.id, "seed": cfg.seed,
                              "run_dir": str(out), "resumed_from_env_steps": None, "config": plain(cfg)}
    job_clock = Stopwatch()
    with recorded_job(out, fields):
        validate_common(cfg)
        seed_job(cfg.seed, cfg.torch_threads)
        module, net_cfg = build_teacher(cfg)
        evaluation = GreedyEvaluation(cfg.env.id, plain(cfg.env.kwargs), cfg.eval.freq, cfg.eval.episodes,
                                      cfg.eval.seed, out / "checkpoints", net_cfg, cfg.eval.stop_at_return,
                                      keep_last=cfg.checkpoint.keep_last)
        trainer = make_trainer(cfg, build_loggers(cfg, out, "teacher"), [evaluation], out)
        fields["setup_s"] = job_clock()  # job start -> fit: config, envs, teacher, trainer, loggers
        fit_clock = Stopwatch()
        trainer.fit(module, ckpt_path=resume_checkpoint(cfg, out), weights_only=True)
        fit_s = fit_clock() + evaluation.resumed_wall_s  # a resumed run counts its time before the kill
        fields["resumed_from_env_steps"] = getattr(module, "resumed_from_env_steps", None)
        choice = str(cfg.eval.final_policy)
        if choice not in ("best", "last"):
            raise ValueError(f"eval.final_policy must be 'best' or 'last', got '{choice}'")
        chosen = evaluation.best_policy_path if choice == "best" else evaluation.last_policy_path
        returns = final_evaluation(module, cfg, chosen)
        teacher_path = out / "teacher.pt"
        atomic_write(teacher_path, lambda tmp: shutil.copyfile(chosen, tmp))
        fields.update({
            "status": "ok",
            "params": module.params,
            "env_steps": module.env_steps,
            "grad_steps": module.stream.grad_steps,
            "episodes": module.collector.episodes,
            "wall_time_s": fit_s,
            "train_wall_time_s": fit_s - evaluation.eval_time_s,
            "sps": module.env_steps / fit_s,
            "eval_return_mean": float(np.mean(returns)),
            "eval_return_std": float(np.std(returns)),
            "eval_returns": returns,
            "eval_policy": choice,
            "eval_history": evaluation.history,
            "best_periodic_eval": evaluation.best_mean,
            "checkpoint": str(teacher_path),
        })
        log.info("teacher %s seed %d: greedy return %.1f ± %.1f over %d held-out episodes (%d env steps, %.1f s, %.0f steps/s)",
                 cfg.env.id, cfg.seed, fields["eval_return_mean"], fields["eval_return_std"], len(returns),
                 module.env_steps, fit_s, fields["sps"])
        return fields


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _app(cfg: DictConfig) -> float:
    return run_app("kdrl-train", train_teacher, cfg)["eval_return_mean"]


def main() -> None:
    preflight_output_dirs("kdrl-train", sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
