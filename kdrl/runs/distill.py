"""Distillation jobs: a teacher (a given file, or the cached on-demand one) -> a smaller student, and
the four final evaluations that make the paper's numbers: performance, speed, generalisation and
resources (with action agreement on held-out states). The student job only loads its teacher; a
missing on-demand teacher is trained first, as its own job, by ``distill_student`` (kdrl-distill's
convenience; a kdrl-study passes teacher.checkpoint instead)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdrl.callbacks import GreedyEvaluation
from kdrl.collector import GreedyFn, greedy_actions
from kdrl.datasets import DATASET_FILE, TeacherDataset, check_dataset, check_teacher, file_sha256, load_dataset
from kdrl.envs import EnvSpec, perturbation_wrappers, probe_spec
from kdrl.errors import one_line
from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns, rollout_states
from kdrl.io import atomic_write, load_policy
from kdrl.modules.base import RLModule
from kdrl.modules.student import DistillStudent
from kdrl.optim import build_optimizer
from kdrl.reference import ReferenceSettings, reference_fields, teacher_reference
from kdrl.resources import resource_report
from kdrl.runs.job import Job, hydra_choices, plain, read_results_file, run_job, seed_job
from kdrl.runs.teacher import build_dqn, greedy_evaluation, obtain_teacher
from kdrl.scores import normalized_score, teacher_beats_random
from kdrl.teachers import (
    TeacherNotTrained,
    cache_entry,
    cached_teacher,
    env_choice,
    load_teacher_net,
    looks_cached,
    mismatch_warning,
    teacher_config,
    teacher_overrides,
)
from kdrl.validate import ConfigError, validate_distill

log = logging.getLogger("kdrl.distill")


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


def teacher_seed(cfg: DictConfig) -> int:
    """``teacher.seed``, or with ``teacher.seed_from_student`` the student's own seed: each student
    seed then distils its own teacher, so the CI over seeds covers teacher variance too."""
    return int(cfg.seed if cfg.teacher.get("seed_from_student") else cfg.teacher.seed)


@dataclass(frozen=True)
class TeacherRequest:
    """The on-demand teacher a distillation job needs: what ``obtain_teacher`` takes."""

    env: str
    seed: int
    overrides: tuple[str, ...]
    cache_dir: str

    def obtain(self) -> tuple[Path, dict]:
        """Train it (as its own teacher job, into the cache) unless cached; its path and results."""
        return obtain_teacher(self.env, self.seed, list(self.overrides), self.cache_dir)

    def load(self) -> tuple[Path, dict]:
        """The cached teacher's path and results; TeacherNotTrained when the cache lacks it."""
        return cached_teacher(self.env, self.seed, list(self.overrides), self.cache_dir)

    def looks_cached(self) -> bool:
        entry = cache_entry(teacher_config(self.env, self.seed, list(self.overrides)), self.cache_dir)
        return looks_cached(entry)


def teacher_request(cfg: DictConfig, choices: dict[str, str | None]) -> TeacherRequest | None:
    """The cached teacher a job trains or reuses; None when ``teacher.checkpoint`` gives one."""
    if cfg.teacher.checkpoint:
        return None
    env = choices.get("env") or env_choice(cfg.env.id)
    overrides = tuple(teacher_overrides(cfg, choices, env))
    return TeacherRequest(env, teacher_seed(cfg), overrides, str(cfg.teacher.cache_dir))


def student_net_cfg(teacher_net_cfg: dict, student: dict) -> dict:
    """The teacher's net config (same family, same _target_) at the student's sizes."""
    cfg = dict(teacher_net_cfg)
    cfg.update({k: v for k, v in student.items() if v is not None or k == "hidden"})
    return cfg


def first_reaching(history: list[dict], level: float) -> dict[str, float] | None:
    """The first periodic evaluation whose normalised score reaches ``level`` (None: censored, the
    run never got there within its budget; tables count it at the budget, never drop it)."""
    hit = next((h for h in history if h.get("normalized_score", float("nan")) >= level), None)
    return None if hit is None else {"env_steps": hit["env_steps"], "train_wall_s": hit["train_wall_s"]}


def fitted_to_budget(algo: dict[str, Any], total: int) -> dict[str, Any]:
    """The teacher's DQN settings with their schedules fitted to a scratch baseline's shorter budget.

    Copying ``algo`` and changing only ``total_timesteps`` left Atari's baseline at budget=cpu with
    learning_starts 80k > its 50k budget (no update at all) and MinAtar's with epsilon still 0.6 at
    the end. The schedules are scaled by budget / teacher budget, then capped so that learning
    starts within the first 10% of the run and epsilon reaches its end value by half of it
    (CleanRL's exploration_fraction 0.5).
    """
    scale = min(1.0, total / int(algo["total_timesteps"]))
    expl = dict(algo["exploration"])
    delay = min(round(int(expl.get("delay_steps", 0)) * scale), total // 10)
    decay = min(round(int(expl["decay_steps"]) * scale), total // 2 - delay)
    learning_starts = min(round(int(algo["learning_starts"]) * scale), total // 10)
    return {
        **algo,
        "total_timesteps": total,
        "learning_starts": learning_starts,
        "exploration": {**expl, "delay_steps": delay, "decay_steps": max(decay, 0)},
    }


def build_student_module(
    cfg: DictConfig, spec: EnvSpec, teacher_net: torch.nn.Module, net_cfg: dict, dataset: TeacherDataset | None = None
) -> RLModule:
    """The distilling student (on a teacher ``dataset``'s transitions when given), or with
    ``baseline=scratch`` the same net trained by plain DQN with the teacher's settings fitted to the
    student's budget."""
    if cfg.baseline == "scratch":
        return build_dqn(cfg, spec, net_cfg, fitted_to_budget(plain(cfg.algo), int(cfg.distill.total_timesteps)))
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
        dataset=dataset,
    )


def teacher_dataset(
    cfg: DictConfig, spec: EnvSpec, teacher: torch.nn.Module
) -> tuple[TeacherDataset | None, dict | None]:
    """``distill.dataset`` loaded and checked against the env, the budget and the teacher (its stored
    Q-values must be this teacher's), with what results.json records of it; (None, None) without one."""
    source = cfg.distill.get("dataset")
    if not source:
        return None, None
    path = Path(str(source))
    path = path / DATASET_FILE if path.is_dir() else path
    data = load_dataset(path)
    check_dataset(data, spec, int(cfg.distill.total_timesteps), str(path))
    q_diff = check_teacher(data, teacher, str(path))
    meta = data.meta
    return data, {
        "path": str(path),
        "sha256": file_sha256(path),
        "env_steps": data.env_steps,
        "num_envs": data.num_envs,
        "epsilon": meta["epsilon"],
        "seed": meta["seed"],
        "max_q_difference": q_diff,
    }


def greedy_of(net: torch.nn.Module) -> GreedyFn:
    return lambda obs: greedy_actions(net, obs, torch.device("cpu"))


def final_evaluation(
    cfg: DictConfig,
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    spec: EnvSpec,
    history: list[dict],
    reference: dict[str, Any],
) -> dict[str, Any]:
    """Performance, speed, generalisation and resources of a trained student against its teacher
    (docs/protocol.md): every number on episodes that selected nothing. ``reference``: the teacher
    reference (kdrl.reference), the normalised score's T and R."""
    kwargs, eps = plain(cfg.env.kwargs), float(cfg.eval.epsilon)
    t_greedy, s_greedy = greedy_of(teacher), greedy_of(student)
    # 1. performance: student, teacher and a uniform-random policy on the same held-out seeds; the
    # normalised score (S - R) / (T - R) takes T and R from the teacher reference (the teacher and a
    # random policy on reference_episodes >= final_episodes held-out seeds, these first), and is
    # refused (nan) unless the teacher clearly beats random on those episodes
    final_seeds = eval_seeds(cfg.eval.final_seed, cfg.eval.final_episodes)
    s_returns = evaluate_policy(s_greedy, cfg.env.id, final_seeds, kwargs, epsilon=eps)
    t_returns = evaluate_policy(t_greedy, cfg.env.id, final_seeds, kwargs, epsilon=eps)
    r_returns = random_returns(cfg.env.id, final_seeds, kwargs)
    s_mean, t_mean, r_mean = (float(np.mean(x)) for x in (s_returns, t_returns, r_returns))
    t_ref, r_ref = reference["teacher"], reference["random"]
    beats_random = teacher_beats_random(t_ref["returns"], r_ref["returns"])
    if not beats_random:
        log.warning(
            "the teacher (%.1f) does not clearly beat a random policy (%.1f) on the %d held-out episodes of its "
            "reference: normalised score refused",
            t_ref["mean"],
            r_ref["mean"],
            reference["episodes"],
        )
    # 2. speed: the first periodic evaluation at 90% / 100% of the teacher on the normalised scale
    speed = {f"to_{int(p * 100)}pct": first_reaching(history, p) for p in (0.9, 1.0)}
    # 3. generalisation: perturbed envs from the env config
    gen_seeds = eval_seeds(cfg.eval.final_seed + 50_000, cfg.eval.generalisation_episodes)
    generalisation = {}
    for pert in plain(cfg.env.get("perturbations") or []):
        wr, pkw = perturbation_wrappers(pert), {**(kwargs or {}), **(pert.get("kwargs") or {})}
        generalisation[pert["name"]] = {
            who: float(np.mean(evaluate_policy(g, cfg.env.id, gen_seeds, pkw, wr, epsilon=eps)))
            for who, g in (("teacher", t_greedy), ("student", s_greedy))
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
        "random_return_mean": r_mean,
        "random_returns": r_returns,
        "teacher_reference": reference_fields(reference),
        "teacher_beats_random": beats_random,
        "normalized_score": normalized_score(s_mean, t_ref["mean"], r_ref["mean"]) if beats_random else float("nan"),
        "raw_return_ratio": s_mean / t_ref["mean"] if t_ref["mean"] else float("nan"),
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
        self.teacher_error: BaseException | None = None  # the on-demand teacher job's failure

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
            "feature_weight": float(loss.get("feature_weight") or 0.0),  # null: off, as StudentLoss reads it
        }

    def validate(self) -> None:
        validate_distill(self.cfg)
        student_sizes(self.cfg)  # a named size the recipe lacks fails now, not after a teacher is trained

    def build(self, fields: dict[str, Any]) -> tuple[RLModule, GreedyEvaluation]:
        cfg = self.cfg
        spec = probe_spec(plain(cfg.env))
        request = teacher_request(cfg, self.choices)
        if request is None:
            self.teacher_path, teacher_res = Path(cfg.teacher.checkpoint), None
        elif self.teacher_error is not None:
            raise TeacherNotTrained(f"its on-demand teacher's job failed: {one_line(self.teacher_error)}")
        else:
            self.teacher_path, teacher_res = request.load()
        self.teacher_wall_time_s = teacher_res.get("wall_time_s") if teacher_res else None
        seed_job(cfg.seed, cfg.torch_threads)  # a teacher trained on demand reseeds; start from the same state
        self.teacher, tstate = load_teacher_net(
            self.teacher_path,
            spec.env_id,
            spec.obs_shape,
            spec.n_actions,
            trust_code=bool(cfg.teacher.get("trust_code", False)),
        )
        self.teacher_format, self.teacher_reported = tstate["format"], tstate.get("reported_return")
        if tstate["net"] is None and float(cfg.loss.get("feature_weight", 0.0) or 0.0) > 0:
            raise ConfigError("feature distillation needs the teacher's hidden layer: a TorchScript teacher has none")
        # a TorchScript teacher names no net family: the student is the job's own `net` at student sizes
        self.net_cfg = student_net_cfg(tstate["net"] or plain(cfg.net), student_sizes(cfg))
        fields["width"], fields["depth"] = self.net_cfg.get("width"), self.net_cfg.get("depth")  # as built
        dataset, self.dataset_fields = teacher_dataset(cfg, spec, self.teacher)
        module = build_student_module(cfg, spec, self.teacher, self.net_cfg, dataset)
        # the teacher and a random policy on the student's periodic seeds (which never selected the
        # teacher's checkpoint): the reference of speed thresholds and QDagger's lambda
        seeds, kwargs = eval_seeds(cfg.eval.seed, cfg.eval.episodes), plain(cfg.env.kwargs)
        teacher = evaluate_policy(greedy_of(self.teacher), cfg.env.id, seeds, kwargs, epsilon=float(cfg.eval.epsilon))
        rand = random_returns(cfg.env.id, seeds, kwargs)
        self.reference = float(np.mean(teacher)), float(np.mean(rand))
        # the teacher reference of the final score: stored with the teacher, computed here only once per teacher
        settings = ReferenceSettings.of(cfg, cfg.env.id, kwargs)
        self.teacher_reference = teacher_reference(
            self.teacher_path, greedy_of(self.teacher), settings, cfg.teacher.cache_dir
        )
        self.teacher_warning = mismatch_warning(self.teacher_format, *self.reference, self.teacher_reported)
        if self.teacher_warning:
            log.warning(self.teacher_warning)
        evaluation = greedy_evaluation(cfg, self.out, self.net_cfg, reference=(teacher, rand))
        if not evaluation.reference_beats_random:
            log.warning(
                "the teacher (%.1f) does not clearly beat a random policy (%.1f) on the %d periodic episodes: "
                "periodic normalised score refused (speed not reached; QDagger's lambda stays at its start)",
                *self.reference,
                len(seeds),
            )
        return module, evaluation

    def finish(self, module: RLModule, evaluation: GreedyEvaluation, chosen: Path) -> dict[str, Any]:
        spec, student = module.spec, module.q_net
        student.load_state_dict(load_policy(chosen, spec.env_id, spec.obs_shape, spec.n_actions)["state_dict"])
        student.eval().cpu()
        student_path = self.out / "student.pt"
        atomic_write(student_path, lambda tmp: Path(tmp).write_bytes(Path(chosen).read_bytes()))
        return {
            **final_evaluation(self.cfg, self.teacher, student, spec, evaluation.history, self.teacher_reference),
            "teacher_periodic_return": self.reference[0],
            "random_periodic_return": self.reference[1],
            "checkpoint": str(student_path),
            "teacher_checkpoint": str(self.teacher_path),
            "teacher_seed": None if self.cfg.teacher.checkpoint else teacher_seed(self.cfg),
            "teacher_wall_time_s": self.teacher_wall_time_s,
            "dataset": self.dataset_fields,
            "pretrain": module.pretrain_report if isinstance(module, DistillStudent) else None,
            "prune": self.prune_fields(module, student),
            "quantize": self.quantize_fields(module, student),
            "teacher_format": self.teacher_format,
            "teacher_reported_return": self.teacher_reported,
            "teacher_warning": self.teacher_warning,
        }

    @staticmethod
    def prune_fields(module: RLModule, student: torch.nn.Module) -> dict[str, float] | None:
        report = module.pruning.report if isinstance(module, DistillStudent) and module.pruning else None
        if report is None:
            return None
        from kdrl.prune import nonzero_params

        return {**report, "nonzero_params": float(nonzero_params(student))}  # of the chosen (pruned) policy

    @staticmethod
    def quantize_fields(module: RLModule, student: torch.nn.Module) -> dict[str, Any] | None:
        report = module.int8.report if isinstance(module, DistillStudent) and module.int8 else None
        if report is None:
            return None
        from kdrl.quantize import is_int8_representable

        return {**report, "int8_representable": is_int8_representable(student)}  # of the chosen policy

    def summary(self, f: dict[str, Any]) -> str:
        size = f["student_size"] or f"w{f['width']}"
        return (
            f"student {f['env_id']} {f['loss']} {size} seed {f['seed']}: {f['eval_return_mean']:.1f} vs "
            f"teacher {f['teacher_reference']['return_mean']:.1f} over {f['teacher_reference']['episodes']} episodes "
            f"(normalised score {f['normalized_score']:.3f}), "
            f"{100 * f['param_ratio']:.1f}% params, agreement {f['action_agreement']:.3f}"
        )


def missing_teacher(job: DistillJob) -> TeacherRequest | None:
    """The on-demand teacher ``job`` needs and the cache lacks, if ``job`` will run: None for a job
    given teacher.checkpoint, one whose config it refuses (it fails in its own run, before any
    teacher is trained) or one already complete in its run dir (skip_completed)."""
    cfg = job.cfg
    try:
        if cfg.teacher.checkpoint:
            return None
        job.validate()
        request = teacher_request(cfg, job.choices)
        done = read_results_file(job.out / "results.json", quiet=True)
        if cfg.get("skip_completed", True) and done and done.get("status") == "ok" and done.get("config") == plain(cfg):
            return None
    except Exception:  # the job reports it, in its own results.json
        return None
    return None if request is None or request.looks_cached() else request


def distill_student(cfg: DictConfig, out: Path, choices: dict[str, str | None] | None = None) -> dict[str, Any]:
    """kdrl-distill's job. On demand: a teacher the job needs and the cache lacks is trained first, as
    its own teacher job into the cache entry (obtain_teacher); then the student job loads it. A
    teacher job that fails makes the student's results.json say so (status failed)."""
    job = DistillJob(cfg, out, choices)
    request = missing_teacher(job)
    if request is not None:
        try:
            request.obtain()
        except Exception as exc:
            log.error("the on-demand teacher (env=%s seed=%d) failed: %s", request.env, request.seed, one_line(exc))
            job.teacher_error = exc
    return run_job(job)
