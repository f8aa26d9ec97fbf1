"""Hydra callbacks for multiruns: train a sweep's distinct teachers first, and index its job dirs.

Teachers first: in a cold sweep every student job needs a teacher that is not cached yet; the
first job to ask trains it while every other worker waits on the cache lock (one core idle for
the teacher's whole training on a 2-worker sweep). Before any job starts, ``TeachersFirst`` lists
the distinct teachers the sweep's jobs will ask for (composing each job's config as the job will)
and trains the missing ones in parallel, one per worker; then the students fan out on a warm
cache. It acts for launchers that run jobs on this machine (joblib); on SLURM and Ray the jobs
share the cache through its lock as before (a login node is no place to train).

Index: a sweep of thousands of jobs puts thousands of numbered dirs side by side;
``SweepIndex`` writes ``index.csv`` in the sweep dir (job number, status, its overrides), so a
reader finds a job by its overrides without listing the dir.

Shared study: several Optuna sweepers (one per node, hparams_search presets) on one SQL storage
all create its tables and its study when they start; two at once collide ("UNIQUE constraint
failed: alembic_version"). ``SharedStudy`` creates both under a lock next to an SQLite file before
the sweeper starts, so the others find them. kdrl's own sweeper (kdrl.search, the hparams_search
presets) creates its study itself, the same way (kdrl.search.storage.create_or_load_study); this
callback stays for an Optuna study made before any other sweeper starts.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("kdrl.sweep")

# Override roots that never change which teacher a distillation job distils (the student's own
# settings): jobs differing only in these share one composition when listing teachers.
STUDENT_ONLY_ROOTS = ("loss", "student", "control", "baseline", "distill", "wandb", "logger", "trainer")


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, in the basic sweeper's order (its ``params`` then the command line).
    Other sweepers (Optuna) choose their jobs as they go: their command line's fixed overrides stand
    for every trial (their ``params`` search the student's settings, not the teacher's)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "basic_sweeper" not in str(config.hydra.sweeper.get("_target_", "")).lower():
        return [list(config.hydra.overrides.task)]
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def local_workers(config: DictConfig) -> int:
    """Parallel jobs the launcher runs on this machine (joblib's n_jobs); 0 for other launchers."""
    target = str(config.hydra.launcher.get("_target_", ""))
    if "joblib" not in target.lower():
        return 0
    n_jobs = int(config.hydra.launcher.get("n_jobs", -1))
    cores = os.cpu_count() or 1
    return cores + 1 + n_jobs if n_jobs < 0 else n_jobs  # joblib: -1 = all cores, -2 = all but one


def teacher_requests(config_name: str, jobs: list[list[str]]) -> list[Any]:
    """The distinct teachers ``jobs`` need and the cache does not hold yet (in first-use order), each
    composed as its job will compose it."""
    from hydra import compose

    from kdrl.runs.distill import teacher_request
    from kdrl.teachers import cache_entry, looks_cached, teacher_config

    def teacher_relevant(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        return key.split(".", 1)[0].split("@", 1)[0] not in STUDENT_ONLY_ROOTS

    seen_jobs: set[tuple[str, ...]] = set()
    by_key: dict[str, Any] = {}
    for job in jobs:
        relevant = tuple(o for o in job if teacher_relevant(o))
        if relevant in seen_jobs:
            continue
        seen_jobs.add(relevant)
        cfg = compose(config_name=config_name, overrides=list(job), return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        request = teacher_request(cfg, choices)
        if request is None:
            continue
        entry = cache_entry(teacher_config(request.env, request.seed, list(request.overrides)), request.cache_dir)
        by_key.setdefault(str(entry), request)
    return [request for entry, request in by_key.items() if not looks_cached(Path(entry))]


def obtain_in_worker(request: Any) -> float:
    """Train (or find cached) one teacher in a worker process; its wall time in seconds."""
    t0 = time.perf_counter()
    request.obtain()
    return time.perf_counter() - t0


class TeachersFirst(Callback):
    """Train a local multirun's distinct, uncached teachers in parallel before its jobs start."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        workers = local_workers(config)
        if workers < 2:
            return  # one worker trains each teacher in its first job anyway; remote launchers share the lock
        try:
            jobs = sweep_job_overrides(config)
            requests = teacher_requests(str(config.hydra.job.config_name), jobs)
        except Exception as exc:  # the jobs compose themselves and report their own errors
            log.warning("teachers first: could not list the sweep's teachers (%s); jobs will train them", exc)
            return
        if len(requests) == 0:
            return  # all cached
        log.info("teachers first: %d distinct teacher(s) for %d jobs, on %d workers", len(requests), len(jobs), workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(requests)), mp_context=context) as pool:
            futures = {pool.submit(obtain_in_worker, r): r for r in requests}
            for future in as_completed(futures):
                request = futures[future]
                try:
                    log.info("teachers first: %s seed %d ready (%.1f s)", request.env, request.seed, future.result())
                except Exception as exc:  # its jobs retry it and record the failure in their results
                    log.warning("teachers first: %s seed %d failed: %s", request.env, request.seed, exc)


class SweepIndex(Callback):
    """``index.csv`` in the sweep dir: one row per job (number, status, overrides), written when the
    multirun ends (and readable by kdrl-table; job dirs stay where Hydra puts them)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if sweep.is_dir():
            write_sweep_index(sweep)


def write_sweep_index(sweep: Path) -> Path:
    import json

    from kdrl.io import atomic_write

    rows = []
    for job_dir in sweep.iterdir():
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            continue
        try:
            status = json.loads((job_dir / "results.json").read_text()).get("status", "unknown")
        except (OSError, ValueError):
            status = "missing"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) or []
        rows.append((job_dir.name, status, " ".join(map(str, overrides))))
    rows.sort(key=lambda r: (len(r[0]), r[0]))  # numeric job dirs in number order
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["job", "status", "overrides"])
    writer.writerows(rows)
    return atomic_write(sweep / "index.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))


class SharedStudy(Callback):
    """Create the sweeper's Optuna study (and its storage's tables) once, under a lock, before the
    sweeper starts: concurrent sweepers on one storage then all load it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = OmegaConf.select(config, "hydra.sweeper") or {}
        storage = sweeper.get("storage")
        if not storage:
            return  # in-memory study: nothing shared
        import optuna

        def create() -> None:
            optuna.create_study(
                study_name=sweeper.get("study_name"),
                storage=str(storage),
                direction=str(sweeper.get("direction", "minimize")),
                load_if_exists=True,
            )

        db = sqlite_path(str(storage))
        if db is None:  # a database server serialises its own schema creation
            create()
            return
        from kdrl.locks import exclusive_lock

        with exclusive_lock(db.with_name(db.name + ".lock"), poll_s=0.2):
            create()


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///path`` URL (None for other databases or in-memory SQLite)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(url[len(prefix) :])
