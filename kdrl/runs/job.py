"""The job runner: the skeleton every kdrl job follows, written once (as lightning-hydra-template's
``train.py`` with ``task_wrapper``).

    completed? -> recorded job { validate -> seed -> build module + evaluation -> trainer -> fit
    (resuming) -> choose best/last policy -> final evaluation -> results } -> results.json

A ``Job`` supplies only what differs: its validation, what it builds and how it evaluates the chosen
policy. Seeding, loggers, the trainer, W&B's lifecycle, resuming and the results file live here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from kdrl.errors import KdrlUserError
from kdrl.resources import set_threads
from kdrl.seeding import seed_ints
from kdrl.validate import resolved

log = logging.getLogger("kdrl")


def plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    # RLModule pulls its own batches (no prefetch) and keeps frozen teachers in eval mode, on purpose
    warnings.filterwarnings("ignore", message=".*Found `dataloader_iter` argument.*")
    warnings.filterwarnings("ignore", message=".*using the `dataloader_iter` step flavor.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    # noise above every run's progress bar, exactly these two: Lightning's hint on any machine with
    # SLURM's client tools (kdrl's SLURM jobs are submitit's; a single-process run has nothing to srun) ...
    warnings.filterwarnings(
        "ignore",
        message="The `srun` command is available on your system but is not used",
        module=r"lightning_fabric\.plugins\.environments\.slurm",
    )
    # ... and torch's deprecation of LeafSpec, met inside Lightning's own pytree helper (not kdrl's code)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )


def seed_job(seed: int, threads: int) -> None:
    """Reset every global RNG and the thread counts (torch's and numpy's BLAS) at the start of each job
    (multirun jobs with the basic launcher share one process, so nothing may leak between them)."""
    set_threads(threads)
    pl.seed_everything(seed_ints(seed, "global")[0], workers=False, verbose=False)


def sweep_name() -> str | None:
    """In a multirun, the sweep directory's name (the W&B group of its jobs)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    except Exception:  # not under a Hydra app (tests, notebooks)
        return None


def build_loggers(cfg: DictConfig, out: Path, job_type: str) -> list:
    loggers: list = []
    if cfg.logger.get("csv", True):
        loggers.append(pl.loggers.CSVLogger(save_dir=str(out), name="csv", version=""))
    if cfg.logger.get("tensorboard", False):  # event files in <run_dir>/tensorboard: `tensorboard --logdir <sweep dir>`
        loggers.append(pl.loggers.TensorBoardLogger(save_dir=str(out), name="tensorboard", version=""))
    mode = str(cfg.logger.get("wandb", "disabled"))
    if mode not in ("offline", "online", "disabled"):
        raise ValueError(f"logger.wandb must be offline, online or disabled, got '{mode}'")
    if mode != "disabled" and os.environ.get("WANDB_MODE") != "disabled":
        from pytorch_lightning.loggers import WandbLogger

        kwargs = dict(
            project=cfg.wandb.project,
            group=cfg.wandb.get("group") or sweep_name(),
            job_type=job_type,
            tags=list(cfg.wandb.get("tags") or []),
            name=f"{job_type}-{cfg.env.id}-s{cfg.seed}",
            config=plain(cfg),
        )
        if mode == "online":
            run = _online_wandb_run(out, kwargs)
            if run is not None:
                loggers.append(WandbLogger(experiment=run, save_dir=str(out)))
                return loggers
        import wandb

        loggers.append(WandbLogger(save_dir=str(out), offline=True, settings=wandb.Settings(mode="offline"), **kwargs))
    return loggers


def _online_wandb_run(out: Path, kwargs: dict[str, Any]) -> Any:
    """Start an online W&B run, or warn once and return None (the caller goes offline) when W&B
    cannot be reached or no account is configured: a logging service never stops a run."""
    import wandb

    try:
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", 30))
        return wandb.init(dir=str(out), mode="online", settings=wandb.Settings(init_timeout=timeout), **kwargs)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        log.warning(
            "W&B online unreachable (%s); continuing with W&B offline in %s/wandb (upload later with `wandb sync`)",
            reason,
            out,
        )
        os.environ["WANDB_MODE"] = "offline"  # WANDB_MODE=online would make the offline fallback log in too
        return None


def finish_wandb(out: Path) -> None:
    """End this job's W&B run (so the next multirun job gets its own) and say how to sync it."""
    try:
        import sys

        if "wandb" not in sys.modules:
            return
        import wandb

        if wandb.run is not None:
            offline = wandb.run.settings.mode == "offline" if hasattr(wandb.run, "settings") else False
            wandb.finish()
            if offline:
                log.info("W&B offline run saved; upload with: wandb sync %s/wandb/offline-run-*", out)
    except Exception as exc:  # a logging service must never fail the run
        log.warning("W&B finish failed: %s", exc)


def make_trainer(cfg: DictConfig, loggers: list, callbacks: list, out: Path) -> pl.Trainer:
    kwargs = dict(plain(cfg.trainer))
    enable_bar = bool(kwargs.pop("enable_progress_bar", True))
    if enable_bar:
        from kdrl.callbacks import EnvStepProgressBar

        callbacks = [*callbacks, EnvStepProgressBar()]
    if os.environ.get("SLURM_JOB_ID"):
        # One owner of SIGUSR2, the time-limit signal: submitit (launcher=slurm, max_num_timeout)
        # requeues preempted or timed-out jobs, and the requeued job resumes from checkpoints/last.ckpt.
        # Lightning's own auto-requeue handler is switched off so the two do not both act on the signal.
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        kwargs.setdefault("plugins", [SLURMEnvironment(auto_requeue=False)])
    kwargs["plugins"] = with_checkpoint_io(kwargs.get("plugins"))
    return pl.Trainer(
        max_epochs=1,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(out),
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_progress_bar=enable_bar,
        **kwargs,
    )


def with_checkpoint_io(plugins: Any) -> list:
    """``plugins`` plus kdrl's FileCheckpointIO (unless a checkpoint IO is given): checkpoints are
    written into the run dir's own temporary file, so a full disk is reported for that file."""
    from pytorch_lightning.plugins.io import CheckpointIO

    from kdrl.callbacks import FileCheckpointIO

    plugins = list(plugins) if isinstance(plugins, list | tuple) else [] if plugins is None else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(FileCheckpointIO())
    return plugins


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


@contextmanager
def recorded_job(out: Path, fields: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Whatever happens inside, write ``fields`` as results.json through the results schema (status
    stays 'failed' unless the body set 'ok'; the error and traceback are recorded) and end the
    job's W&B run."""
    from kdrl.errors import one_line
    from kdrl.results import RunResult, write_results

    clock = Stopwatch()
    failed = False
    try:
        yield fields
    except BaseException as exc:
        failed = True
        fields["error"] = f"{type(exc).__name__}: {exc}"
        fields["traceback"] = traceback.format_exc()
        raise
    finally:
        fields["job_wall_time_s"] = clock()
        result = RunResult.from_dict(fields)
        if result.extra:  # a writer and kdrl/results.py disagree: the table tools will not see these
            log.warning("results keys outside the schema (kdrl/results.py): %s", ", ".join(sorted(result.extra)))
        try:
            write_results(out, result)
        except Exception as exc:
            if not failed:
                raise
            # e.g. the disk that stopped a checkpoint is still full: the job's own error is the news
            log.warning("could not record the failure in %s/results.json: %s", out, one_line(exc))
        finally:
            finish_wandb(out)


def read_results_file(path: Path, quiet: bool = False) -> dict[str, Any] | None:
    """The body of a results.json, or None when there is none or it cannot be used (empty,
    truncated, not JSON, not an object): said in one warning line naming the file unless ``quiet``."""
    import json

    if not path.exists():
        return None
    try:
        res = json.loads(path.read_text())
        why = None if isinstance(res, dict) else f"a JSON {type(res).__name__}, not an object"
    except OSError as exc:
        res, why = None, exc.strerror or str(exc)
    except ValueError as exc:  # JSONDecodeError, bad encoding
        res, why = None, f"not valid JSON, truncated? ({' '.join(str(exc).split())[:120]})"
    if why is not None:
        if not quiet:
            log.warning("ignoring unreadable %s: %s; the run counts as unfinished", path, why)
        return None
    return res


def completed_results(out: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The results of an earlier run of this exact config in ``out`` if it finished ok (re-running
    a sweep with the same sweep dir then skips its completed jobs)."""
    if not cfg.get("skip_completed", True):
        return None
    res = read_results_file(out / "results.json")
    if res is not None and res.get("status") == "ok" and res.get("config") == plain(cfg):
        log.info("skipping: %s already holds complete results for this config", out)
        return res
    return None


def checkpoint_candidates(ckpt_dir: Path) -> list[Path]:
    """The full checkpoints a run could resume from, newest first: last.ckpt, the prev.ckpt it
    replaced, then numbered ones (checkpoint.keep_last > 1)."""
    from kdrl.io import LAST_CHECKPOINT, PREVIOUS_CHECKPOINT

    named = [ckpt_dir / LAST_CHECKPOINT, ckpt_dir / PREVIOUS_CHECKPOINT]
    numbered = sorted(ckpt_dir.glob("step-*.ckpt"), reverse=True) if ckpt_dir.is_dir() else []
    return [p for p in [*named, *numbered] if p.exists()]


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """The newest whole checkpoint of an unfinished run in this run dir (a run that finished,
    whatever its config, is not resumed: a new config in its dir starts afresh).

    Each candidate is checked before Lightning reads it (``kdrl.io.file_problem``: empty, truncated,
    checksum mismatch, not a checkpoint); a damaged one is set aside as ``<name>.corrupt`` with one
    warning line naming it, the reason and what happens instead: the previous checkpoint is
    resumed, or, with none left, the run starts afresh."""
    ckpt_dir = out / "checkpoints"
    res = read_results_file(out / "results.json", quiet=True)
    finished = res is not None and res.get("status") == "ok"
    candidates = checkpoint_candidates(ckpt_dir)
    if not cfg.get("resume", True) or finished or not candidates:
        return None
    from kdrl.io import file_problem, remove_interrupted_writes, set_aside

    for d in (out, ckpt_dir):  # a kill during a checkpoint or results write leaves its temp file
        remove_interrupted_writes(d)
    damaged: list[tuple[Path, str]] = []
    chosen = None
    for ckpt in candidates:
        problem = file_problem(ckpt)
        if problem is None:
            chosen = ckpt
            break
        damaged.append((ckpt, problem))
    then = f"resuming from {chosen.name} instead" if chosen is not None else "no whole checkpoint left: starting afresh"
    for ckpt, problem in damaged:
        try:
            where = f"set aside as {set_aside(ckpt).name}"
        except OSError as exc:
            where = f"could not be set aside ({exc.strerror or exc})"
        log.warning("unusable checkpoint %s: %s; %s; %s", ckpt, problem, where, then)
    if chosen is None:
        return None
    log.info("resuming from %s", chosen)
    return str(chosen)


# ---- resuming only the config that started the run ---------------------------------------------------
CONFIG_IN_CHECKPOINT = "kdrl_config"  # the run's resolved config, in every full checkpoint (RunConfigStamp)

# Keys that say how a run executes or reports, not what it computes: a resume may change them (a
# requeue on a GPU node, another logger, more threads). Every other key of the resolved config shapes
# the run (env, nets, algorithm, replay, budgets, schedules, evaluation and checkpoint selection,
# seeds, the teacher): an unfinished run is resumed only by a config that agrees with it on all of
# them. When unsure, a key shapes the run: env.actor and env.vectorization, trainer.precision and
# trainer.devices do.
RESUME_FREE_KEYS = (
    "resume",  # whether to resume at all
    "skip_completed",  # whether a finished run is run again
    "optimized_metric",  # which results.json key a sweeper reads
    "torch_threads",  # CPU threads: speed
    "log_interval",  # gradient steps between metric flushes: logging only
    "logger",  # csv, tensorboard, wandb
    "wandb",  # W&B project, group, tags
    "search",  # a search trial's identity (storage, study, trial number): a stale trial is retried under a new number
    "trainer.enable_progress_bar",
    "trainer.accelerator",  # cpu | gpu | auto: where it runs (a requeue may land elsewhere)
    "checkpoint.keep_last",  # how many full checkpoints stay on disk
    "teacher.cache_dir",  # where on-demand teachers are cached (the cache key names the teacher)
    "teacher.trust_code",  # a permission (a TorchScript teacher may run), not what the run computes
)
# ... and by task, the keys a job of that task never reads. A teacher's budget is its resolved
# algo.total_timesteps; the students' blocks (distill, student_sizes, env.perturbations) and the
# reference's episode count (computed afresh at the end) do not reach it. Jobs sharing a teacher
# cache entry (kdrl.teachers.teacher_key) agree on every other key, so they resume each other's.
TASK_RESUME_FREE_KEYS = {
    "teacher": ("budget", "budgets", "distill", "student_sizes", "env.perturbations", "eval.reference_episodes"),
}


class ResumeConflict(KdrlUserError, RuntimeError):
    """A run dir holding an unfinished run of another config (refused before anything is written)."""


class RunConfigStamp(pl.Callback):
    """Writes the run's resolved config into every full checkpoint, so a resume can tell whether the
    checkpoint it would load was written by the same config (``check_resumable``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_IN_CHECKPOINT] = self.config


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT: Any = _Absent()


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, sub in node.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every leaf that shapes the run (all but RESUME_FREE_KEYS and
    the task's TASK_RESUME_FREE_KEYS) and differs; ``(absent)`` where one config lacks the key."""
    free = [*RESUME_FREE_KEYS, *TASK_RESUME_FREE_KEYS.get(str(new.get("task")), ())]
    # of the student size presets only the ones the two runs name shape them: a preset added by a newer
    # kdrl (or changed, and used by neither) leaves this run as it was
    used = {str((c.get("student") or {}).get("size")) for c in (old, new) if isinstance(c.get("student"), dict)}
    free += [
        f"student_sizes.{name}"
        for name in {**(old.get("student_sizes") or {}), **(new.get("student_sizes") or {})}
        if name not in used
    ]
    a, b = _leaves(old), _leaves(new)

    def differ(x: Any, y: Any) -> bool:  # a key a newer kdrl added as null (off) is the setting the run had
        return not ((x is _ABSENT and y is None) or (x is None and y is _ABSENT)) and x != y

    return [
        (k, a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in sorted(set(a) | set(b))
        if not any(k == f or k.startswith(f + ".") for f in free) and differ(a.get(k, _ABSENT), b.get(k, _ABSENT))
    ]


def unfinished_run_config(out: Path) -> dict[str, Any] | None:
    """The resolved config the unfinished run in ``out`` was started with: from its newest full
    checkpoint that loads (``kdrl_config``), else from the results.json a failed attempt wrote; None
    when there is no unfinished run or it does not say (checkpoints of kdrl before the stamp)."""
    res = read_results_file(out / "results.json", quiet=True)
    if res is not None and res.get("status") == "ok":
        return None  # a finished run is not resumed (resume_checkpoint)
    candidates = checkpoint_candidates(out / "checkpoints")
    if not candidates:
        return None
    for ckpt in candidates:
        try:  # mmap: the structure is read, the tensors (a replay may be GBs) are not
            state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            continue  # damaged: resume_checkpoint sets it aside and says so
        stamped = state.get(CONFIG_IN_CHECKPOINT) if isinstance(state, dict) else None
        if isinstance(stamped, dict):
            return stamped
        break
    config = res.get("config") if res is not None else None
    return config if isinstance(config, dict) else None


def check_resumable(cfg: DictConfig | dict[str, Any], out: Path, dir_key: str = "hydra.run.dir") -> None:
    """Refuse, before anything in ``out`` is written, to resume an unfinished run started by a
    config that differs on a key shaping the run (RESUME_FREE_KEYS are the exceptions): Lightning
    would load its checkpoint into nets of another size ("size mismatch for q_net..."), or worse,
    into nets of the same size and go on with other settings. One line names the keys (old -> new)
    and the two ways out."""
    config = resolved(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    if not config.get("resume", True):
        return
    old = unfinished_run_config(Path(out))
    if old is None:
        return
    diffs = config_differences(old, config)
    if not diffs:
        return
    shown = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in diffs[:6])
    more = f"; and {len(diffs) - 6} more" if len(diffs) > 6 else ""
    raise ResumeConflict(
        f"{out} holds an unfinished run of another config ({shown}{more}); resuming it with this one would load "
        f"its checkpoint into another run, so nothing there was changed: give another {dir_key}, or resume=false "
        "to start this config afresh in that dir (its checkpoints are then overwritten)"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def forget_previous_checkpoint(out: Path) -> None:
    """A finished run needs no fallback checkpoint: drop prev.ckpt (a full copy of the state)."""
    from kdrl.io import PREVIOUS_CHECKPOINT

    (out / "checkpoints" / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)


def drop_resume_checkpoint(out: Path, keep_last: int = 1) -> None:
    """A finished run is never resumed, so its last.ckpt (the whole trainer state: a 400k-step replay
    is 0.3-0.6 GB of it) only fills the disk of a study with hundreds of runs: drop it. Numbered
    checkpoints (checkpoint.keep_last > 1) were asked for, so they stay, with last.ckpt beside them."""
    from kdrl.io import LAST_CHECKPOINT

    if keep_last <= 1:
        (out / "checkpoints" / LAST_CHECKPOINT).unlink(missing_ok=True)


def hydra_choices() -> dict[str, str | None]:
    """The config-group choices of the running Hydra app ({} outside one: tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices)
    except Exception:
        return {}


class Job:
    """One kdrl job. Subclasses set ``kind`` and implement ``fields``, ``validate``, ``build``,
    ``finish`` and ``summary``; ``run_job`` does the rest, in the same order for every job."""

    kind: str = "job"

    def __init__(self, cfg: DictConfig, out: Path) -> None:
        self.cfg, self.out = cfg, Path(out)

    def fields(self) -> dict[str, Any]:
        """What results.json says before anything ran (status 'failed' until the job ends ok)."""
        cfg = self.cfg
        return {
            "kind": self.kind,
            "status": "failed",
            "env_id": cfg.env.id if "env" in cfg else None,
            "seed": cfg.seed,
            "run_dir": str(self.out),
            "resumed_from_env_steps": None,
        }

    def validate(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def build(self, fields: dict[str, Any]) -> tuple[Any, Any]:  # pragma: no cover - abstract
        """(module, periodic evaluation callback), after seeding."""
        raise NotImplementedError

    def finish(self, module: Any, evaluation: Any, chosen: Path) -> dict[str, Any]:  # pragma: no cover
        """The final evaluation of the chosen policy file: the job's headline numbers."""
        raise NotImplementedError

    def summary(self, fields: dict[str, Any]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def logger_cfg(self) -> DictConfig:
        return self.cfg


def validate_job(job: Job, fields: dict[str, Any]) -> None:
    """``job.validate()``, then the job's own ``fields()``: they read config values, so they are read
    once validation has passed (for a config it refuses, as far as they can be read)."""
    try:
        job.validate()
    except Exception:
        with contextlib.suppress(Exception):
            fields.update(job.fields())
        raise
    fields.update(job.fields())


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` once; returns its results (those of an identical finished run when there is one)."""
    cfg, out = job.cfg, job.out
    quiet_lightning()
    config = resolved(cfg)  # an interpolation that cannot be resolved is a ConfigError naming its key
    done = completed_results(out, cfg)
    if done is not None:
        return done
    # another config's unfinished run in this dir: refused before results.json or anything else is written
    check_resumable(config, out, "hydra.sweep.dir" if sweep_name() else "hydra.run.dir")
    with job_lock(out):  # one process per run dir: a second one (a rerun driver, a requeue) refuses
        return _run_job(job, config)


JOB_LOCK = ".kdrl-job.lock"


@contextmanager
def job_lock(out: Path) -> Iterator[None]:
    """Hold ``<run dir>/.kdrl-job.lock`` while the job runs (kdrl.locks: heartbeat, works across hosts);
    a live holder elsewhere is refused in one line. kdrl-study reads it to wait for a job still
    running rather than start it twice."""
    from kdrl.locks import LockTimeout, exclusive_lock, live_holder

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive_lock(Path(out) / JOB_LOCK, timeout_s=0.0, poll_s=0.1))
    except LockTimeout:
        h = live_holder(Path(out) / JOB_LOCK) or {}
        raise KdrlUserError(
            f"another process is running the job in {out} (pid {h.get('pid', '?')} on host {h.get('host', '?')}): "
            "wait for it to end, or stop it and rerun"
        ) from None
    with stack:
        yield


def _run_job(job: Job, config: dict[str, Any]) -> dict[str, Any]:
    cfg, out = job.cfg, job.out
    fields = {**Job.fields(job), "config": config}  # every job's identity; its own fields once validated
    job_clock = Stopwatch()
    from kdrl.resources import start_job_clock

    start_job_clock()  # the eval history's process_s: this process's imports + this job's time
    with recorded_job(out, fields):
        validate_job(job, fields)
        seed_job(cfg.seed, cfg.torch_threads)
        module, evaluation = job.build(fields)
        lcfg = job.logger_cfg()
        from kdrl.search.trial import trial_callbacks, trial_pruned

        # a search trial reports each evaluation
        callbacks = [evaluation, RunConfigStamp(config), *trial_callbacks(evaluation)]
        trainer = make_trainer(lcfg, build_loggers(lcfg, out, job.kind), callbacks, out)
        fields["setup_s"] = job_clock()  # job start -> fit: config, envs, teacher, trainer, loggers
        fit_clock = Stopwatch()
        trainer.fit(module, ckpt_path=resume_checkpoint(cfg, out), weights_only=True)
        fit_s = fit_clock() + evaluation.resumed_wall_s  # a resumed run counts its time before the kill
        fields["resumed_from_env_steps"] = getattr(module, "resumed_from_env_steps", None)
        forget_previous_checkpoint(out)
        run = {
            "env_steps": module.env_steps,
            "grad_steps": module.stream.grad_steps,
            "wall_time_s": fit_s,
            "train_wall_time_s": fit_s - evaluation.eval_time_s,
            "sps": module.env_steps / fit_s,
            "eval_history": evaluation.history,
        }
        if trial_pruned(callbacks):  # stopped by the search's pruner: no final evaluation (kdrl.search.trial)
            fields.update({"status": "pruned", **run})
            log.info("%s pruned at env step %d (%.1f s)", job.kind, module.env_steps, fit_s)
            return fields
        chosen = evaluation.best_policy_path if cfg.eval.final_policy == "best" else evaluation.last_policy_path
        fields.update(job.finish(module, evaluation, chosen))
        fields.update({"status": "ok", **run})
        log.info(job.summary(fields))
    # results.json now says ok, so the run is never resumed (resume_checkpoint)
    drop_resume_checkpoint(out, int((cfg.get("checkpoint") or {}).get("keep_last", 1)))
    return fields
