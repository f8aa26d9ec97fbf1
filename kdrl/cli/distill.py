"""kdrl-distill: distil a teacher into a student; evaluate performance, speed, generalisation and
resources; write student.pt and results.json."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdrl.callbacks import GreedyEvaluation
from kdrl.cli.common import (CONF_DIR, Stopwatch, build_loggers, completed_results, make_trainer, plain,
                             preflight_output_dirs, quiet_lightning, recorded_job, resume_checkpoint, run_app,
                             seed_job)
from kdrl.data import greedy_actions
from kdrl.envs import env_spec, make_env, perturbation_wrappers
from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns, rollout_states
from kdrl.io import atomic_write, load_policy
from kdrl.modules.student import DistillStudent
from kdrl.modules.teacher import DQNTeacher
from kdrl.optim import build_optimizer
from kdrl.validate import ConfigError, validate_distill
from kdrl.resources import resource_report
from kdrl.teachers import load_teacher_net, obtain_teacher

log = logging.getLogger("kdrl.distill")


def student_sizes(cfg: DictConfig) -> dict:
    """The student's net overrides: ``env.student_sizes[student.size]`` when a named size is
    given (one sweep axis covers MLP and conv families), else ``student.*`` itself."""
    student = plain(cfg.student)
    size = student.pop("size", None)
    if size is None:
        return student
    sizes = plain(cfg.env.get("student_sizes") or {})
    if size not in sizes:
        known = ", ".join(sizes) if sizes else "none defined for this env"
        raise ConfigError(f"student.size '{size}' is not in env.student_sizes ({known})")
    return dict(sizes[size])


def student_net_cfg(teacher_net_cfg: dict, student: dict) -> dict:
    """The teacher's net config (same family, same _target_) at the student's sizes."""
    cfg = dict(teacher_net_cfg)
    cfg.update({k: v for k, v in student.items() if v is not None or k == "hidden"})
    return cfg


def first_reaching(history: list[dict], level: float) -> dict[str, float] | None:
    hit = next((h for h in history if h["return_mean"] >= level), None)
    return None if hit is None else {"env_steps": hit["env_steps"], "train_wall_s": hit["train_wall_s"]}


def build_student_module(cfg: DictConfig, spec, teacher_net, student_net) -> torch.nn.Module:
    if cfg.baseline is not None and cfg.baseline != "scratch":
        raise ValueError(f"unknown baseline '{cfg.baseline}' (expected scratch or null)")
    if cfg.baseline == "scratch":
        algo = plain(cfg.algo)
        algo["total_timesteps"] = int(cfg.distill.total_timesteps)
        return DQNTeacher(student_net, spec, plain(cfg.env), algo, build_optimizer(**algo["optimizer"]),
                          seed=cfg.seed, log_interval=cfg.log_interval)
    return DistillStudent(student_net, teacher_net, spec, plain(cfg.env), plain(cfg.distill), plain(cfg.loss),
                          str(cfg.control), build_optimizer(**plain(cfg.distill.optimizer)), seed=cfg.seed,
                          log_interval=cfg.log_interval)


def distill_student(cfg: DictConfig, out: Path) -> dict[str, Any]:
    quiet_lightning()
    done = completed_results(out, cfg)
    if done is not None:
        return done
    loss_name = "scratch" if cfg.baseline == "scratch" else str(cfg.loss.name)
    fields: dict[str, Any] = {
        "kind": "student", "status": "failed", "env_id": cfg.env.id, "seed": cfg.seed, "run_dir": str(out), "resumed_from_env_steps": None,
        "loss": loss_name, "temperature": cfg.loss.temperature, "width": cfg.student.width,
        "student_size": cfg.student.get("size"),
        "depth": cfg.student.depth, "control": str(cfg.control), "baseline": cfg.baseline,
        "lambda": plain(cfg.loss.get("lambda")) if cfg.loss.get("hybrid") else None,
        "feature_weight": float(cfg.loss.get("feature_weight", 0.0)), "config": plain(cfg)}
    job_clock = Stopwatch()
    with recorded_job(out, fields):
        validate_distill(cfg)
        seed_job(cfg.seed, cfg.torch_threads)
        probe = make_env(cfg.env.id, plain(cfg.env.kwargs))
        spec = env_spec(probe)
        probe.close()
        if cfg.teacher.checkpoint:
            teacher_path, teacher_res = Path(cfg.teacher.checkpoint), None
        else:
            teacher_path, teacher_res = obtain_teacher(cfg.env.preset, int(cfg.teacher.seed),
                                                       [f"budget={cfg.budget}", *cfg.teacher.overrides],
                                                       cfg.teacher.cache_dir)
        teacher_net, tstate = load_teacher_net(teacher_path, spec.env_id, spec.obs_shape, spec.n_actions)
        net_cfg = student_net_cfg(tstate["net"], student_sizes(cfg))
        fields["width"], fields["depth"] = net_cfg.get("width"), net_cfg.get("depth")  # as built (student.size)
        student_net = instantiate(net_cfg, obs_shape=spec.obs_shape, n_actions=spec.n_actions)
        module = build_student_module(cfg, spec, teacher_net, student_net)
        kwargs = plain(cfg.env.kwargs)
        teacher_greedy = lambda obs: greedy_actions(teacher_net, obs, torch.device("cpu"))  # noqa: E731
        teacher_periodic = float(np.mean(evaluate_policy(teacher_greedy, cfg.env.id,
                                                         eval_seeds(cfg.eval.seed, cfg.eval.episodes), kwargs)))
        evaluation = GreedyEvaluation(cfg.env.id, kwargs, cfg.eval.freq, cfg.eval.episodes, cfg.eval.seed,
                                      out / "checkpoints", net_cfg, cfg.eval.stop_at_return,
                                      reference_return=teacher_periodic, keep_last=cfg.checkpoint.keep_last)
        trainer = make_trainer(cfg, build_loggers(cfg, out, "student"), [evaluation], out)
        fields["setup_s"] = job_clock()  # job start -> fit: config, envs, teacher, trainer, loggers
        fit_clock = Stopwatch()
        trainer.fit(module, ckpt_path=resume_checkpoint(cfg, out), weights_only=True)
        fit_s = fit_clock() + evaluation.resumed_wall_s  # a resumed run counts its time before the kill
        fields["resumed_from_env_steps"] = getattr(module, "resumed_from_env_steps", None)

        # 1. performance: student and teacher on the same held-out seeds
        chosen = evaluation.best_policy_path if cfg.eval.final_policy == "best" else evaluation.last_policy_path
        student_net.load_state_dict(load_policy(chosen, spec.env_id, spec.obs_shape, spec.n_actions)["state_dict"])
        student_net.eval().cpu()
        student_greedy = lambda obs: greedy_actions(student_net, obs, torch.device("cpu"))  # noqa: E731
        final_seeds = eval_seeds(cfg.eval.final_seed, cfg.eval.final_episodes)
        s_returns = evaluate_policy(student_greedy, cfg.env.id, final_seeds, kwargs)
        t_returns = evaluate_policy(teacher_greedy, cfg.env.id, final_seeds, kwargs)
        s_mean, t_mean = float(np.mean(s_returns)), float(np.mean(t_returns))
        # uniform-random policy on the same seeds: the floor for a normalised score, since a raw
        # ratio inverts for negative returns (Acrobot, Pong): (S - R) / (T - R)
        r_mean = float(np.mean(random_returns(cfg.env.id, final_seeds, kwargs)))
        # 2. speed: first periodic evaluation at 90% / 100% of the teacher (same periodic seeds)
        speed = {f"to_{int(p * 100)}pct": first_reaching(evaluation.history, p * teacher_periodic
                                                         if teacher_periodic >= 0 else teacher_periodic / p)
                 for p in (0.9, 1.0)}
        # 3. generalisation: perturbed envs from the env config
        gen_seeds = eval_seeds(cfg.eval.final_seed + 50_000, cfg.eval.generalisation_episodes)
        generalisation = {}
        for pert in plain(cfg.env.get("perturbations") or []):
            wr, pkw = perturbation_wrappers(pert), {**(kwargs or {}), **(pert.get("kwargs") or {})}
            generalisation[pert["name"]] = {
                "teacher": float(np.mean(evaluate_policy(teacher_greedy, cfg.env.id, gen_seeds, pkw, wr))),
                "student": float(np.mean(evaluate_policy(student_greedy, cfg.env.id, gen_seeds, pkw, wr)))}
        # 4. resources and agreement on held-out states (teacher rollouts on unseen seeds)
        states = rollout_states(teacher_greedy, cfg.env.id, eval_seeds(cfg.eval.final_seed + 90_000, 100),
                                int(cfg.eval.agreement_states), kwargs)
        with torch.no_grad():
            x = torch.as_tensor(states, dtype=torch.float32)
            agreement = float((student_net(x).argmax(1) == teacher_net(x).argmax(1)).float().mean())
        resources = {"teacher": resource_report(teacher_net, spec.obs_shape),
                     "student": resource_report(student_net, spec.obs_shape)}
        student_path = out / "student.pt"
        atomic_write(student_path, lambda tmp: Path(tmp).write_bytes(Path(chosen).read_bytes()))
        fields.update({
            "status": "ok",
            "params": resources["student"]["params"], "teacher_params": resources["teacher"]["params"],
            "param_ratio": resources["student"]["params"] / resources["teacher"]["params"],
            "env_steps": module.env_steps, "grad_steps": module.stream.grad_steps,
            "wall_time_s": fit_s, "train_wall_time_s": fit_s - evaluation.eval_time_s, "sps": module.env_steps / fit_s,
            "eval_return_mean": s_mean, "eval_return_std": float(np.std(s_returns)), "eval_returns": s_returns,
            "teacher_return_mean": t_mean, "teacher_returns": t_returns,
            "return_ratio": s_mean / t_mean if t_mean else float("nan"),
            "random_return_mean": r_mean,
            "normalized_return_ratio": (s_mean - r_mean) / (t_mean - r_mean) if t_mean != r_mean else float("nan"),
            "teacher_periodic_return": teacher_periodic,
            "speed": speed, "generalisation": generalisation, "resources": resources,
            "action_agreement": agreement, "agreement_states": int(len(states)),
            "eval_history": evaluation.history, "checkpoint": str(student_path),
            "teacher_checkpoint": str(teacher_path),
            "teacher_wall_time_s": teacher_res.get("wall_time_s") if teacher_res else None,
        })
        log.info("student %s %s w%s seed %d: %.1f vs teacher %.1f (ratio %.3f), %.1f%% params, agreement %.3f",
                 cfg.env.id, loss_name, cfg.student.width, cfg.seed, s_mean, t_mean, fields["return_ratio"],
                 100 * fields["param_ratio"], agreement)
        return fields


@hydra.main(config_path=CONF_DIR, config_name="distill", version_base="1.3")
def _app(cfg: DictConfig) -> float:
    return run_app("kdrl-distill", distill_student, cfg)["return_ratio"]


def main() -> None:
    preflight_output_dirs("kdrl-distill", sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
