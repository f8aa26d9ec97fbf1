"""The search sweeper: Optuna's ask/tell loop launching each trial as a Hydra job (see kdrl.search).

One process running it is a *worker*. It keeps ``n_jobs`` trials in flight, each in its own thread
that asks Optuna for a trial, launches it as a one-job batch through the configured launcher and,
when the job returns, asks for the next: a pruned trial frees its slot at once (a batch of
``n_jobs`` would hold it until its slowest trial ended). Several workers (processes, nodes) share
one study through its storage; ``n_trials`` is the study's total over all of them.

Before each ask a worker fails, as stale, RUNNING trials that nobody keeps alive (no heartbeat from
their job or their worker for ``stale_after_s``: the worker was killed and took its jobs along),
and enqueues each once more with the same parameters; the retry runs in the stale trial's job dir,
so kdrl resumes its training from the checkpoint there when the sweep dir is the same.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from kdrl.search.objective import TIME_TO_SCORE, Objective
from kdrl.search.space import SearchSpace, parse_space
from kdrl.search.storage import (
    RETRY_OF_ATTR,
    STALE_ATTR,
    WORKER_ATTR,
    create_or_load_study,
    record_settings,
    storage_url,
)
from kdrl.search.trial import HEARTBEAT_ATTR, build_pruner

log = logging.getLogger("kdrl.search")

# the periodic evaluation record's key that tracks an app's optimized_metric (kdrl.callbacks)
PERIODIC_OF = {"normalized_score": "normalized_score", "eval_return_mean": "return_mean"}


class SearchFailed(RuntimeError):
    pass


def plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig | ListConfig) else x


def choose(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The settings of the sampler or pruner called ``name`` among ``options``."""
    if name not in options:
        raise ValueError(f"hydra.sweeper.{kind}={name!r}: not one of {', '.join(options)}")
    return dict(options[name])


_COMPOSE_LOCK = threading.Lock()


def serialise_sweep_config_composition() -> None:
    """Launchers compose each job's config (``load_sweep_config``) in the calling thread (submitit,
    Ray; joblib in its worker processes); with several slots launching at once, one composition at a
    time: Hydra's config loader was written for one thread. Patched on the class, so no lock travels
    with a pickled loader."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = ConfigLoaderImpl.load_sweep_config
    if getattr(original, "_kdrl_serialised", False):
        return

    def load_sweep_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _COMPOSE_LOCK:
            return original(self, *args, **kwargs)

    load_sweep_config._kdrl_serialised = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]


def suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial.suggest_*`` for an Optuna distribution (an enqueued trial gets its fixed value)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"{name}: unsupported distribution {dist!r}")


class OptunaSearch:
    def __init__(
        self,
        *,
        sampler: str = "tpe",
        samplers: Any = None,
        pruner: str = "none",
        pruners: Any = None,
        study_name: str,
        storage: str | None = None,
        direction: Any = "maximize",
        objective: Any = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        heartbeat_s: float = 30.0,
        stale_after_s: float = 300.0,
        max_failure_rate: float = 1.0,
        params: Any = None,
        enqueue: Any = None,
    ) -> None:
        self.sampler_cfg = choose("sampler", sampler, plain(samplers) or {})
        self.pruner_cfg = choose("pruner", pruner, plain(pruners) or {}) if pruner not in (None, "none") else None
        self.study_name, self.storage = str(study_name), storage
        directions = plain(direction)
        self.directions = [str(d) for d in (directions if isinstance(directions, list) else [directions])]
        self.objective_cfg = plain(objective) or {}
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.heartbeat_s, self.stale_after_s = float(heartbeat_s), float(stale_after_s)
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ValueError(f"stale_after_s ({stale_after_s}) must exceed two heartbeats ({heartbeat_s} s each)")
        self.max_failure_rate = float(max_failure_rate)
        self.params = plain(params) or {}
        self.enqueue = [dict(p) for p in plain(enqueue) or []]
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # trial id -> number, of this worker
        self._stop = threading.Event()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.ran: list[str] = []  # states of the trials this worker ran

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        serialise_sweep_config_composition()

    # settings -----------------------------------------------------------------------------------
    def objective(self) -> Objective:
        assert self.config is not None
        o = self.objective_cfg
        metrics = o.get("metrics") or [str(self.config.optimized_metric)]
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        periodic = o.get("periodic", "auto")
        if periodic == "auto":
            first = metrics[0]
            periodic = "return_mean" if first == TIME_TO_SCORE else PERIODIC_OF.get(first)
        target = o.get("target")
        if target is None and o.get("targets"):
            env = OmegaConf.select(self.config, "hydra.runtime.choices.env")
            if env not in o["targets"]:
                raise ValueError(f"objective.targets has no score for env {env!r} (has {', '.join(o['targets'])})")
            target = o["targets"][env]
        return Objective(
            metrics=tuple(metrics),
            directions=tuple(self.directions),
            periodic=periodic if len(metrics) == 1 else None,
            report=str(o.get("report", "best")),
            target=None if target is None else float(target),
        )

    def settings(self, objective: Objective) -> dict[str, Any]:
        pruner = self.pruner_cfg if objective.prunable else None
        return {"objective": objective.to_dict(), "pruner": pruner, "heartbeat_s": self.heartbeat_s}

    # the loop -----------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from hydra.utils import instantiate

        assert self.config is not None and self.launcher is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.url = storage_url(self.storage, sweep_dir)
        space = parse_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        objective = self.objective()
        if not objective.prunable and self.pruner_cfg:
            log.warning("search: a multi-objective study is not pruned (Optuna's pruners compare one value)")
        settings = self.settings(objective)
        sampler = instantiate(self.sampler_cfg) if self.sampler_cfg else None
        self.study = create_or_load_study(
            self.url, self.study_name, self.directions, sampler, build_pruner(settings["pruner"])
        )
        record_settings(self.study, settings)
        if self.enqueue and not self.study.trials:  # a new study: the known points first (a resumed one has them)
            for point in self.enqueue:
                self.study.enqueue_trial(point)
        self.storage_obj = self.study._storage
        self.study_id = self.storage_obj.get_study_id_from_name(self.study_name)
        extra = [f"eval.stop_at_return={objective.target}"] if objective.stops_at_target else []
        n_jobs = self.slots()
        log.info(
            "search: study %s in %s; %s %s; sampler %s, pruner %s; %d trial(s) in all, %d at a time in this worker (%s)",
            self.study_name,
            self.url,
            "/".join(self.directions),
            ",".join(objective.metrics),
            type(sampler).__name__,
            type(self.study.pruner).__name__,
            self.n_trials,
            n_jobs,
            self.worker,
        )
        beat = threading.Thread(target=self._heartbeat, name="kdrl-search-heartbeat", daemon=True)
        beat.start()
        try:
            with ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="kdrl-search-slot") as pool:
                futures = [pool.submit(self._slot, space, extra) for _ in range(n_jobs)]
                errors = [f.exception() for f in futures]
        finally:
            self._stop.set()
            beat.join(timeout=5)
        self.write_results(sweep_dir, objective)
        raised = [e for e in errors if e is not None]
        if raised:
            raise raised[0]
        if self.ran and all(s == "FAIL" for s in self.ran):
            raise SearchFailed(f"search: all {len(self.ran)} trial(s) of this worker failed (see their job dirs)")

    def slots(self) -> int:
        name = type(self.launcher).__name__
        if self.n_jobs > 1 and name == "BasicLauncher":
            log.warning("search: the basic launcher runs jobs in this process, one at a time: n_jobs=1")
            return 1
        if self.n_jobs > 1 and name == "RayLauncher":  # start Ray once, before the slots' launches race to
            from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

            self.launcher.ray_cfg.init.setdefault("object_store_memory", 78643200)  # as the launcher does
            start_ray(self.launcher.ray_cfg.init)
        return self.n_jobs

    def _slot(self, space: SearchSpace, extra: list[str]) -> None:
        while not self._stop.is_set():
            with self._lock:
                self.reap_stale()
                if self.counted() >= self.n_trials and not self.waiting():
                    return
                trial = self.ask(space)
                trial_id = self.storage_obj.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
                self._inflight[trial_id] = trial.number
                self.storage_obj.set_trial_system_attr(trial_id, WORKER_ATTR, self.worker)
                self.storage_obj.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            try:
                state = self.run_trial(trial, trial_id, space, extra)
            finally:
                with self._lock:
                    self._inflight.pop(trial_id, None)
            with self._lock:
                self.ran.append(state)
                failed = sum(s == "FAIL" for s in self.ran)
                if len(self.ran) >= 3 and failed / len(self.ran) > self.max_failure_rate:
                    self._stop.set()
                    raise SearchFailed(
                        f"search: {failed} of {len(self.ran)} trials failed (max_failure_rate {self.max_failure_rate})"
                    )

    def ask(self, space: SearchSpace) -> Any:
        """A new trial (or an enqueued retry) with its parameters. With a sampler seed, trial N is
        sampled by a sampler seeded ``seed + N``: a search is reproducible on one worker, and workers
        started at once do not propose the same random start-up trials (one seeded sampler per
        worker would)."""
        from hydra.utils import instantiate

        trial = self.study.ask()
        if self.sampler_cfg.get("seed") is not None:
            self.study.sampler = instantiate({**self.sampler_cfg, "seed": int(self.sampler_cfg["seed"]) + trial.number})
        for name, dist in space.distributions.items():
            suggest(trial, name, dist)
        return trial

    def run_trial(self, trial: Any, trial_id: int, space: SearchSpace, extra: list[str]) -> str:
        import optuna
        from optuna.trial import TrialState

        from kdrl.errors import one_line

        job_idx = int(trial.user_attrs.get(RETRY_OF_ATTR, trial.number))  # a retry: the stale trial's job dir
        overrides = [
            *space.trial_overrides(trial.params),
            *extra,
            f"+search.storage='{self.url}'",
            f"+search.study={self.study_name}",
            f"+search.trial={trial.number}",
        ]
        log.info("search: trial %d (job %d): %s", trial.number, job_idx, " ".join(space.trial_overrides(trial.params)))
        error = None
        try:
            (ret,) = self.launcher.launch([overrides], initial_job_idx=job_idx)
        except Exception as exc:  # the launcher itself failed (a submission refused, ...)
            ret, error = None, exc
        frozen = self.storage_obj.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING:  # the job told its outcome
            log.info("search: trial %d %s %s", trial.number, frozen.state.name, frozen.values or "")
            return frozen.state.name
        # the job could not tell (it died, or is not a kdrl job): the worker does
        values, state = None, TrialState.FAIL
        if ret is not None:
            try:
                value = float(ret.return_value)  # raises the job's own exception if it failed
                if len(self.directions) == 1 and value == value:
                    values, state = [value], TrialState.COMPLETE
                else:
                    error = RuntimeError(f"job returned {value!r}, not the study's values")
            except Exception as exc:
                error = exc
        if error is not None:
            self.storage_obj.set_trial_user_attr(trial_id, "kdrl:error", one_line(error))
            log.warning("search: trial %d failed: %s", trial.number, one_line(error))
        try:
            self.study.tell(trial.number, values=values, state=state, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            return self.storage_obj.get_trial(trial_id).state.name
        return state.name

    # liveness -----------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                ids = list(self._inflight)
            for trial_id in ids:
                try:
                    self.storage_obj.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
                except Exception:  # told meanwhile
                    pass

    def counted(self) -> int:
        """Trials that count towards n_trials: all but the stale ones (whose retries count)."""
        trials = self.study.get_trials(deepcopy=False)
        return sum(1 for t in trials if not t.system_attrs.get(STALE_ATTR))

    def waiting(self) -> int:
        """Enqueued trials (retries of stale ones, or given by hand): run even once n_trials is reached."""
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def reap_stale(self) -> list[int]:
        """Fail RUNNING trials nobody keeps alive and enqueue each once more; their numbers."""
        from optuna.trial import TrialState

        now, reaped = time.time(), []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id in self._inflight:
                continue
            last = t.system_attrs.get(HEARTBEAT_ATTR) or t.datetime_start.timestamp()
            if now - float(last) <= self.stale_after_s:
                continue
            try:
                self.storage_obj.set_trial_system_attr(t._trial_id, STALE_ATTR, True)
                self.storage_obj.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except Exception:  # another worker reaped it first, or it just ended
                continue
            origin = int(t.user_attrs.get(RETRY_OF_ATTR, t.number))
            self.study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF_ATTR: origin})
            log.warning(
                "search: trial %d was left running by %s (no heartbeat for %.0f s): failed as stale, retried",
                t.number,
                t.system_attrs.get(WORKER_ATTR, "a worker"),
                now - float(last),
            )
            reaped.append(t.number)
        return reaped

    # results ------------------------------------------------------------------------------------
    def write_results(self, sweep_dir: Path, objective: Objective) -> Path:
        from kdrl.search.summary import state_counts

        trials = self.study.get_trials(deepcopy=False)
        out: dict[str, Any] = {
            "name": "kdrl-optuna",
            "study_name": self.study_name,
            "storage": self.url,
            "objective": objective.to_dict(),
            "trials": state_counts(trials),
        }
        try:
            if len(self.directions) == 1:
                best = self.study.best_trial
                out.update(best_params=best.params, best_value=best.value, best_trial=best.number)
                log.info(
                    "search: best trial %d: %s = %s, %s", best.number, objective.metrics[0], best.value, best.params
                )
            else:
                out["solutions"] = [
                    {"number": t.number, "params": t.params, "values": t.values} for t in self.study.best_trials
                ]
        except ValueError:  # no complete trial yet
            log.warning("search: no complete trial in study %s yet", self.study_name)
        path = sweep_dir / "optimization_results.yaml"
        OmegaConf.save(OmegaConf.create(out), path)
        return path
