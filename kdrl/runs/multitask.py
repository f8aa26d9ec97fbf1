"""Multi-task jobs: several teachers -> one multi-task student (mode=distill), or the same multi-task
net trained jointly with DQN at the same env-step budget (mode=joint_dqn); every task evaluated on
held-out seeds as % of its teacher. The job only loads its teachers (given files or cached ones); a
missing cached teacher is trained first, as its own job, by ``multitask_job`` (kdrl-multitask's
convenience; a kdrl-study passes teacher.checkpoints instead)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kdrl.callbacks import EvalTask, MultiTaskEvaluation
from kdrl.checkpoints import BestPctPolicy, ResumeCheckpoint
from kdrl.collector import greedy_actions
from kdrl.data import TaskEnv
from kdrl.envs import EnvSpec, probe_spec
from kdrl.errors import one_line
from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns
from kdrl.io import atomic_write, load_multitask_policy
from kdrl.modules.multitask import JointMultiTaskDQN, MultiTaskDistill, MultiTaskModule
from kdrl.nets import MultiTaskQNetwork, build_multitask_net, count_params, task_params
from kdrl.optim import build_optimizer
from kdrl.reference import ReferenceSettings, reference_fields, teacher_reference
from kdrl.runs.job import Job, hydra_choices, plain, read_results_file, run_job, seed_job
from kdrl.runs.teacher import obtain_teacher
from kdrl.scores import mean_pcts, pct_of_teacher, teacher_beats_random
from kdrl.tables import method_name
from kdrl.teachers import (
    TeacherNotTrained,
    cache_entry,
    cached_teacher,
    load_teacher_net,
    looks_cached,
    teacher_config,
    teacher_overrides,
)
from kdrl.validate import validate_multitask

log = logging.getLogger("kdrl.multitask")


@dataclass
class TaskSetup:
    """One task: its env preset's env block, shapes and teacher."""

    name: str
    env: dict[str, Any]
    spec: EnvSpec
    teacher: torch.nn.Module
    teacher_path: Path
    teacher_wall_time_s: float | None
    reference: dict[str, Any]  # the teacher reference (kdrl.reference): T and R of pct_of_teacher


# ---- config ----------------------------------------------------------------------------------------
# validate_multitask lives with the other config checks (kdrl/validate.py); imported here for callers


def logger_cfg(cfg: DictConfig, env_ids: list[str]) -> DictConfig:
    """A copy of cfg with ``env.id`` naming all tasks (build_loggers names W&B runs by env id)."""
    copy = OmegaConf.create(plain(cfg))
    copy.env = {"id": "+".join(env_ids)}
    return copy


# ---- tasks and teachers -----------------------------------------------------------------------------
def task_env(cfg: DictConfig, name: str, choices: dict[str, str | None]) -> dict[str, Any]:
    """A task's env block (id, num_envs, kwargs, ...) as its on-demand teacher sees it."""
    env = plain(teacher_config(name, int(cfg.teacher.seed), teacher_overrides(cfg, choices)).env)
    if cfg.multitask.num_envs is not None:
        env["num_envs"] = int(cfg.multitask.num_envs)
    return env


def load_task(cfg: DictConfig, name: str, choices: dict[str, str | None]) -> TaskSetup:
    env = task_env(cfg, name, choices)
    spec = probe_spec(env)
    given = (cfg.teacher.checkpoints or {}).get(name)
    if given:
        path, res = Path(given), None
    else:
        path, res = cached_teacher(name, int(cfg.teacher.seed), teacher_overrides(cfg, choices), cfg.teacher.cache_dir)
    teacher, _ = load_teacher_net(
        path, spec.env_id, spec.obs_shape, spec.n_actions, trust_code=bool(cfg.teacher.get("trust_code", False))
    )
    settings = ReferenceSettings.of(cfg, spec.env_id, env.get("kwargs"))
    reference = teacher_reference(path, greedy_of(teacher), settings, cfg.teacher.cache_dir)
    return TaskSetup(name, env, spec, teacher, path, res.get("wall_time_s") if res else None, reference)


def build_module(cfg: DictConfig, tasks: list[TaskSetup], net: MultiTaskQNetwork) -> MultiTaskModule:
    envs = [TaskEnv(t.name, t.spec, t.env) for t in tasks]
    data = plain(cfg.multitask)
    opt = build_optimizer(**data["optimizer"])
    common = dict(update=str(cfg.multitask["update"]), seed=int(cfg.seed), log_interval=int(cfg.log_interval))
    if cfg.mode == "joint_dqn":
        return JointMultiTaskDQN(net, envs, data, plain(cfg.dqn), opt, **common)
    return MultiTaskDistill(
        net,
        [t.teacher for t in tasks],
        envs,
        data,
        instantiate(cfg.loss),
        plain(cfg.distill.exploration),
        opt,
        **common,
    )


def greedy_of(net: torch.nn.Module):
    return lambda obs: greedy_actions(net, obs, torch.device("cpu"))


def reference_returns(
    tasks: list[TaskSetup], seeds: list[int], epsilon: float
) -> tuple[list[list[float]], list[list[float]]]:
    """Each teacher's and a random policy's returns on ``seeds`` (the % of teacher denominators)."""
    teacher = [
        evaluate_policy(greedy_of(t.teacher), t.spec.env_id, seeds, t.env.get("kwargs"), epsilon=epsilon) for t in tasks
    ]
    rand = [random_returns(t.spec.env_id, seeds, t.env.get("kwargs")) for t in tasks]
    return teacher, rand


# ---- results ---------------------------------------------------------------------------------------
def task_result(
    t: TaskSetup, module: MultiTaskModule, i: int, s_ret: list[float], t_ret: list[float], r_ret: list[float]
) -> dict[str, Any]:
    s, te, r = float(np.mean(s_ret)), float(np.mean(t_ret)), float(np.mean(r_ret))
    # the score's T and R, and whether it is refused, come from the teacher reference (docs/protocol.md)
    t_ref, r_ref = t.reference["teacher"], t.reference["random"]
    beats = teacher_beats_random(t_ref["returns"], r_ref["returns"])
    return {
        "env_id": t.spec.env_id,
        "obs_shape": list(t.spec.obs_shape),
        "n_actions": t.spec.n_actions,
        "eval_return_mean": s,
        "eval_return_std": float(np.std(s_ret)),
        "eval_returns": s_ret,
        "teacher_return_mean": te,
        "teacher_returns": t_ret,
        "random_return_mean": r,
        "random_returns": r_ret,
        "teacher_reference": reference_fields(t.reference),
        "teacher_beats_random": beats,
        # refused (nan) unless the teacher clearly beats random on the reference episodes
        "pct_of_teacher": pct_of_teacher(s, t_ref["mean"], r_ref["mean"]) if beats else float("nan"),
        # Rusu et al.'s raw ratio: positive returns only
        "raw_return_ratio": s / t_ref["mean"] if t_ref["mean"] > 0 else float("nan"),
        "env_steps": module.collectors[i].env_steps,
        "episodes": module.collectors[i].episodes,
        "params": task_params(module.q_net, i),
        "teacher_params": count_params(t.teacher),
        "teacher_checkpoint": str(t.teacher_path),
        "teacher_wall_time_s": t.teacher_wall_time_s,
    }


def final_evaluation(
    cfg: DictConfig, tasks: list[TaskSetup], module: MultiTaskModule, chosen: Path
) -> dict[str, dict[str, Any]]:
    """The chosen checkpoint, every teacher and a random policy on the same held-out seeds."""
    state = load_multitask_policy(chosen, [t.spec.env_id for t in tasks])
    module.q_net.load_state_dict(state["state_dict"])
    module.q_net.eval().cpu()
    seeds = eval_seeds(cfg.eval.final_seed, cfg.eval.final_episodes)
    t_rets, r_rets = reference_returns(tasks, seeds, float(cfg.eval.epsilon))
    out = {}
    for i, t in enumerate(tasks):
        s_ret = evaluate_policy(
            greedy_of(module.views[i]), t.spec.env_id, seeds, t.env.get("kwargs"), epsilon=float(cfg.eval.epsilon)
        )
        out[t.name] = task_result(t, module, i, s_ret, t_rets[i], r_rets[i])
    return out


class MultiTaskJob(Job):
    kind = "multitask"

    def __init__(self, cfg: DictConfig, out: Path, choices: dict[str, str | None] | None = None) -> None:
        super().__init__(cfg, out)
        # the teachers are composed per task (env=<task>), with this job's debug preset
        choices = hydra_choices() if choices is None else choices
        self.choices = {"debug": choices.get("debug")}
        self.teacher_error: BaseException | None = None  # an on-demand teacher job's failure

    def fields(self) -> dict[str, Any]:
        cfg = self.cfg
        loss = "joint_dqn" if cfg.mode == "joint_dqn" else str(cfg.loss.name)
        temp = None if cfg.mode == "joint_dqn" else cfg.loss.temperature
        return {
            **super().fields(),
            "mode": str(cfg.mode),
            "task_names": list(cfg.tasks),
            "loss": loss,
            "temperature": temp,
            "method": method_name({"loss": loss, "temperature": temp}),
            "width": cfg.student.width,
            "depth": cfg.student.depth,
            "adapter": str(cfg.student.adapter),
            "update": str(cfg.multitask["update"]),
        }

    def validate(self) -> None:
        validate_multitask(self.cfg)

    def build(self, fields: dict[str, Any]) -> tuple[MultiTaskModule, MultiTaskEvaluation]:
        cfg = self.cfg
        if self.teacher_error is not None:
            raise TeacherNotTrained(f"an on-demand teacher's job failed: {one_line(self.teacher_error)}")
        self.tasks = tasks = [load_task(cfg, name, self.choices) for name in cfg.tasks]
        fields["env_id"] = "+".join(t.spec.env_id for t in tasks)
        seed_job(cfg.seed, cfg.torch_threads)  # training a teacher on demand reseeds; start from the same state
        net_cfg = plain(cfg.student)
        module = build_module(cfg, tasks, build_multitask_net(net_cfg, [t.spec for t in tasks]))
        periodic_t, periodic_r = reference_returns(
            tasks, eval_seeds(cfg.eval.seed, cfg.eval.episodes), float(cfg.eval.epsilon)
        )
        evaluation = MultiTaskEvaluation(
            [EvalTask(t.name, t.spec.env_id, t.env.get("kwargs") or {}) for t in tasks],
            cfg.eval.freq,
            cfg.eval.episodes,
            cfg.eval.seed,
            BestPctPolicy(self.out / "checkpoints", net_cfg),
            ResumeCheckpoint(self.out / "checkpoints"),
            [float(np.mean(x)) for x in periodic_t],
            [float(np.mean(x)) for x in periodic_r],
            epsilon=float(cfg.eval.epsilon),  # as the teachers' reference above was played
        )
        return module, evaluation

    def logger_cfg(self) -> DictConfig:
        return logger_cfg(self.cfg, [t.spec.env_id for t in self.tasks])

    def finish(self, module: MultiTaskModule, evaluation: MultiTaskEvaluation, chosen: Path) -> dict[str, Any]:
        per_task = final_evaluation(self.cfg, self.tasks, module, chosen)
        mean_pct, geo_pct = mean_pcts([r["pct_of_teacher"] for r in per_task.values()])
        student_path = self.out / "student.pt"
        atomic_write(student_path, lambda tmp: Path(tmp).write_bytes(Path(chosen).read_bytes()))
        params, t_params = count_params(module.q_net), sum(count_params(t.teacher) for t in self.tasks)
        return {
            "tasks": per_task,
            "mean_pct_of_teacher": mean_pct,
            "geomean_pct_of_teacher": geo_pct,
            "normalized_score": mean_pct / 100,  # the mean normalised score over tasks, as a fraction
            "params": params,
            "teacher_params": t_params,
            "param_ratio": params / t_params,
            "task_env_steps": module.task_env_steps,
            "optimizer_steps": module.optimizer_steps,
            "checkpoint": str(student_path),
        }

    def summary(self, f: dict[str, Any]) -> str:
        tasks = ", ".join(
            f"{n} {r['eval_return_mean']:.1f} vs {r['teacher_reference']['return_mean']:.1f} ({r['pct_of_teacher']:.1f}%)"
            for n, r in f["tasks"].items()
        )
        return (
            f"multitask {f['mode']} {f['method']} seed {f['seed']}: {tasks}; mean {f['mean_pct_of_teacher']:.1f}%, "
            f"geomean {f['geomean_pct_of_teacher']:.1f}% of teacher ({f['params']} params = "
            f"{100 * f['param_ratio']:.1f}% of teachers)"
        )


def missing_teachers(job: MultiTaskJob) -> list[str]:
    """The tasks whose cached teacher ``job`` needs and the cache lacks, if ``job`` will run (none for
    a config it refuses or a run already complete in its run dir)."""
    cfg = job.cfg
    try:
        job.validate()
        done = read_results_file(job.out / "results.json", quiet=True)
        if cfg.get("skip_completed", True) and done and done.get("status") == "ok" and done.get("config") == plain(cfg):
            return []
        given = cfg.teacher.checkpoints or {}
        overrides = teacher_overrides(cfg, job.choices)
        seed, cache = int(cfg.teacher.seed), cfg.teacher.cache_dir
        return [
            name
            for name in cfg.tasks
            if not given.get(name) and not looks_cached(cache_entry(teacher_config(name, seed, overrides), cache))
        ]
    except Exception:  # the job reports it, in its own results.json
        return []


def multitask_job(cfg: DictConfig, out: Path, choices: dict[str, str | None] | None = None) -> dict[str, Any]:
    """kdrl-multitask's job. On demand: each cached teacher the job needs and the cache lacks is
    trained first, as its own teacher job (obtain_teacher); then the multi-task job loads them."""
    job = MultiTaskJob(cfg, out, choices)
    for name in missing_teachers(job):
        try:
            obtain_teacher(name, int(cfg.teacher.seed), teacher_overrides(cfg, job.choices), cfg.teacher.cache_dir)
        except Exception as exc:
            log.error("the on-demand teacher of task %s failed: %s", name, one_line(exc))
            job.teacher_error = exc
            break
    return run_job(job)
