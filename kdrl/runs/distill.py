"""Distillation jobs: a teacher (given, or trained on demand and cached) -> a smaller student, and
the four final evaluations that make the paper's numbers: performance, speed, generalisation and
resources (with action agreement on held-out states)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdrl.callbacks import GreedyEvaluation
from kdrl.data import GreedyFn, greedy_actions
from kdrl.envs import EnvSpec, perturbation_wrappers, probe_spec
from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns, rollout_states
from kdrl.io import atomic_write, load_policy
from kdrl.modules.base import RLModule
from kdrl.modules.student import DistillStudent
from kdrl.optim import build_optimizer
from kdrl.resources import resource_report
from kdrl.runs.job import Job, hydra_choices, plain, run_job, seed_job
from kdrl.runs.teacher import build_dqn, greedy_evaluation
from kdrl.scores import normalized_score
from kdrl.teachers import env_choice, load_teacher_net, obtain_teacher, teacher_overrides
from kdrl.validate import ConfigError, validate_distill


def student_sizes(cfg: DictConfig) -> dict:
    """The student's net overrides: the recipe's ``student_sizes[student.size]`` when a named size
    is given (one sweep axis covers MLP and conv families), else ``student.*`` itself."""
    student = plain(cfg.student)
    size = student.pop("size", None)
    if size is None:
        return student
    sizes = plain(cfg.get("student_sizes") or {})
    if size not in sizes:
        known = ", ".join(sizes) if sizes else "none defined by this recipe"
        raise ConfigError(f"student.size '{size}' is not in the recipe's student_sizes ({known})")
    return dict(sizes[size])


def student_net_cfg(teacher_net_cfg: dict, student: dict) -> dict:
    """The teacher's net config (same family, same _target_) at the student's sizes."""
    cfg = dict(teacher_net_cfg)
    cfg.update({k: v for k, v in student.items() if v is not None or k == "hidden"})
    return cfg


def first_reaching(history: list[dict], level: float) -> dict[str, float] | None:
    hit = next((h for h in history if h["return_mean"] >= level), None)
    return None if hit is None else {"env_steps": hit["env_steps"], "train_wall_s": hit["train_wall_s"]}


def build_student_module(cfg: DictConfig, spec: EnvSpec, teacher_net: torch.nn.Module, net_cfg: dict) -> RLModule:
    """The distilling student, or with ``baseline=scratch`` the same net trained by plain DQN."""
    if cfg.baseline == "scratch":
        algo = plain(cfg.algo)
        algo["total_timesteps"] = int(cfg.distill.total_timesteps)
        return build_dqn(cfg, spec, net_cfg, algo)
    student_net = instantiate(net_cfg, obs_shape=spec.obs_shape, n_actions=spec.n_actions)
    return DistillStudent(
        student_net,
        teacher_net,
        spec,
        plain(cfg.env),
        plain(cfg.distill),
        instantiate(cfg.loss),
        str(cfg.control),
        build_optimizer(**plain(cfg.distill.optimizer)),
        seed=cfg.seed,
        log_interval=cfg.log_interval,
    )


def greedy_of(net: torch.nn.Module) -> GreedyFn:
    return lambda obs: greedy_actions(net, obs, torch.device("cpu"))


def final_evaluation(
    cfg: DictConfig,
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    spec: EnvSpec,
    history: list[dict],
    teacher_periodic: float,
) -> dict[str, Any]:
    """Performance, speed, generalisation and resources of a trained student against its teacher."""
    kwargs = plain(cfg.env.kwargs)
    t_greedy, s_greedy = greedy_of(teacher), greedy_of(student)
    # 1. performance: student, teacher and a uniform-random policy on the same held-out seeds (the
    # random floor makes the normalised score (S - R) / (T - R), since a raw ratio inverts for negative returns)
    final_seeds = eval_seeds(cfg.eval.final_seed, cfg.eval.final_episodes)
    s_returns = evaluate_policy(s_greedy, cfg.env.id, final_seeds, kwargs)
    t_returns = evaluate_policy(t_greedy, cfg.env.id, final_seeds, kwargs)
    s_mean, t_mean = float(np.mean(s_returns)), float(np.mean(t_returns))
    r_mean = float(np.mean(random_returns(cfg.env.id, final_seeds, kwargs)))
    # 2. speed: first periodic evaluation at 90% / 100% of the teacher (same periodic seeds)
    speed = {
        f"to_{int(p * 100)}pct": first_reaching(
            history, p * teacher_periodic if teacher_periodic >= 0 else teacher_periodic / p
        )
        for p in (0.9, 1.0)
    }
    # 3. generalisation: perturbed envs from the env config
    gen_seeds = eval_seeds(cfg.eval.final_seed + 50_000, cfg.eval.generalisation_episodes)
    generalisation = {}
    for pert in plain(cfg.env.get("perturbations") or []):
        wr, pkw = perturbation_wrappers(pert), {**(kwargs or {}), **(pert.get("kwargs") or {})}
        generalisation[pert["name"]] = {
            "teacher": float(np.mean(evaluate_policy(t_greedy, cfg.env.id, gen_seeds, pkw, wr))),
            "student": float(np.mean(evaluate_policy(s_greedy, cfg.env.id, gen_seeds, pkw, wr))),
        }
    # 4. resources and agreement on held-out states (teacher rollouts on unseen seeds)
    states = rollout_states(
        t_greedy, cfg.env.id, eval_seeds(cfg.eval.final_seed + 90_000, 100), int(cfg.eval.agreement_states), kwargs
    )
    with torch.no_grad():
        x = torch.as_tensor(states, dtype=torch.float32)
        agreement = float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())
    resources = {
        "teacher": resource_report(teacher, spec.obs_shape),
        "student": resource_report(student, spec.obs_shape),
    }
    return {
        "params": resources["student"]["params"],
        "teacher_params": resources["teacher"]["params"],
        "param_ratio": resources["student"]["params"] / resources["teacher"]["params"],
        "eval_return_mean": s_mean,
        "eval_return_std": float(np.std(s_returns)),
        "eval_returns": s_returns,
        "teacher_return_mean": t_mean,
        "teacher_returns": t_returns,
        "return_ratio": s_mean / t_mean if t_mean else float("nan"),
        "random_return_mean": r_mean,
        "normalized_return_ratio": normalized_score(s_mean, t_mean, r_mean, strict=False),
        "teacher_periodic_return": teacher_periodic,
        "speed": speed,
        "generalisation": generalisation,
        "resources": resources,
        "action_agreement": agreement,
        "agreement_states": int(len(states)),
    }


class DistillJob(Job):
    kind = "student"

    def __init__(self, cfg: DictConfig, out: Path, choices: dict[str, str | None] | None = None) -> None:
        super().__init__(cfg, out)
        self.choices = hydra_choices() if choices is None else choices

    def fields(self) -> dict[str, Any]:
        cfg = self.cfg
        loss = cfg.loss
        return {
            **super().fields(),
            "loss": "scratch" if cfg.baseline == "scratch" else str(loss.name),
            "temperature": loss.temperature,
            "width": cfg.student.width,
            "student_size": cfg.student.get("size"),
            "depth": cfg.student.depth,
            "control": str(cfg.control),
            "baseline": cfg.baseline,
            "lambda": {k: v for k, v in plain(loss.distill_weight).items() if k != "_target_"}
            if loss.get("td")
            else None,
            "feature_weight": float(loss.get("feature_weight", 0.0)),
        }

    def validate(self) -> None:
        validate_distill(self.cfg)
        student_sizes(self.cfg)  # a named size the recipe lacks fails now, not after a teacher is trained

    def build(self, fields: dict[str, Any]) -> tuple[RLModule, GreedyEvaluation]:
        cfg = self.cfg
        spec = probe_spec(plain(cfg.env))
        if cfg.teacher.checkpoint:
            self.teacher_path, teacher_res = Path(cfg.teacher.checkpoint), None
        else:
            env = self.choices.get("env") or env_choice(cfg.env.id)
            self.teacher_path, teacher_res = obtain_teacher(
                env, int(cfg.teacher.seed), teacher_overrides(cfg, self.choices), cfg.teacher.cache_dir
            )
        self.teacher_wall_time_s = teacher_res.get("wall_time_s") if teacher_res else None
        seed_job(cfg.seed, cfg.torch_threads)  # a teacher trained on demand reseeds; start from the same state
        self.teacher, tstate = load_teacher_net(self.teacher_path, spec.env_id, spec.obs_shape, spec.n_actions)
        self.net_cfg = student_net_cfg(tstate["net"], student_sizes(cfg))
        fields["width"], fields["depth"] = self.net_cfg.get("width"), self.net_cfg.get("depth")  # as built
        module = build_student_module(cfg, spec, self.teacher, self.net_cfg)
        self.teacher_periodic = float(
            np.mean(
                evaluate_policy(
                    greedy_of(self.teacher),
                    cfg.env.id,
                    eval_seeds(cfg.eval.seed, cfg.eval.episodes),
                    plain(cfg.env.kwargs),
                )
            )
        )
        return module, greedy_evaluation(cfg, self.out, self.net_cfg, reference_return=self.teacher_periodic)

    def finish(self, module: RLModule, evaluation: GreedyEvaluation, chosen: Path) -> dict[str, Any]:
        spec, student = module.spec, module.q_net
        student.load_state_dict(load_policy(chosen, spec.env_id, spec.obs_shape, spec.n_actions)["state_dict"])
        student.eval().cpu()
        student_path = self.out / "student.pt"
        atomic_write(student_path, lambda tmp: Path(tmp).write_bytes(Path(chosen).read_bytes()))
        return {
            **final_evaluation(self.cfg, self.teacher, student, spec, evaluation.history, self.teacher_periodic),
            "checkpoint": str(student_path),
            "teacher_checkpoint": str(self.teacher_path),
            "teacher_wall_time_s": self.teacher_wall_time_s,
        }

    def summary(self, f: dict[str, Any]) -> str:
        size = f["student_size"] or f"w{f['width']}"
        return (
            f"student {f['env_id']} {f['loss']} {size} seed {f['seed']}: {f['eval_return_mean']:.1f} vs "
            f"teacher {f['teacher_return_mean']:.1f} (ratio {f['return_ratio']:.3f}), "
            f"{100 * f['param_ratio']:.1f}% params, agreement {f['action_agreement']:.3f}"
        )


def distill_student(cfg: DictConfig, out: Path, choices: dict[str, str | None] | None = None) -> dict[str, Any]:
    return run_job(DistillJob(cfg, out, choices))
