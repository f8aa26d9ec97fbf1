"""The job's side of a search trial: report periodic evaluations, stop when pruned, tell the outcome.

The sweeper launches each trial as a kdrl job with ``+search.storage=<url> +search.study=<name>
+search.trial=<number>``. ``kdrl.cli.common.run_app`` opens the trial (``open_trial``: the study,
its settings and pruner, a heartbeat thread), the job runner adds ``TrialReporter``
after the periodic evaluation callback, and when the job ends ``run_app`` tells Optuna its outcome:
COMPLETE with the objective's values, PRUNED (the job stopped training at a pruning decision and
wrote results.json with status "pruned", no final evaluation), or FAIL. The job tells, not the
sweeper: a trial whose job runs on a cluster ends in the study even if the sweeper that launched
it was killed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytorch_lightning as pl

from kdrl.search.objective import Objective

log = logging.getLogger("kdrl.search")

HEARTBEAT_ATTR = "kdrl:heartbeat"
PRUNED = "pruned"

_ACTIVE: TrialLink | None = None


def build_pruner(spec: dict[str, Any] | None) -> Any:
    """An Optuna pruner from its config (``_target_`` and arguments); None -> NopPruner."""
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate

    return instantiate(dict(spec))


def search_keys(cfg: Any) -> tuple[str, str, int] | None:
    """(storage, study, trial number) of a trial job's config, None for any other job."""
    search = cfg.get("search") if hasattr(cfg, "get") else None
    if not search or search.get("trial") is None:
        return None
    return str(search.storage), str(search.study), int(search.trial)


class TrialLink:
    """One running trial of a study, seen from its job."""

    def __init__(self, url: str, study_name: str, number: int) -> None:
        import optuna

        from kdrl.search.storage import open_storage, study_settings

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url, self.number = url, number
        self.storage = open_storage(url)
        settings = study_settings(optuna.load_study(study_name=study_name, storage=self.storage))
        self.objective = Objective.from_dict(settings["objective"])
        self.heartbeat_s = float(settings.get("heartbeat_s", 30.0))
        self.study = optuna.load_study(
            study_name=study_name,
            storage=self.storage,
            pruner=build_pruner(settings.get("pruner")),
            sampler=optuna.samplers.RandomSampler(),  # never samples here
        )
        study_id = self.storage.get_study_id_from_name(study_name)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self.trial = optuna.trial.Trial(self.study, self.trial_id)
        state = self.storage.get_trial(self.trial_id).state
        self.live = state == optuna.trial.TrialState.RUNNING
        if not self.live:
            log.warning(
                "search: trial %d of %s is %s already; this job will not report to it", number, study_name, state
            )
        self.pruned = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # heartbeat ----------------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        """A daemon thread marks the trial alive every ``heartbeat_s``: a worker resuming the search
        fails as stale only trials that neither their job nor their sweeper keeps alive."""
        if not self.live or self._beat is not None:
            return

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
                except Exception:  # the trial ended (told, or failed as stale): nothing to keep alive
                    return

        self.beat_once()
        self._beat = threading.Thread(target=beat, name="kdrl-trial-heartbeat", daemon=True)
        self._beat.start()

    def beat_once(self) -> None:
        try:
            self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
        except Exception as exc:
            log.warning("search: trial %d: heartbeat not recorded (%s)", self.number, exc)

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)

    # reports ------------------------------------------------------------------------------------
    def report(self, value: float, step: int) -> bool:
        """Report an intermediate value; False when the trial no longer takes reports."""
        if not self.live:
            return False
        try:
            self.trial.report(float(value), int(step))
            return True
        except Exception as exc:  # e.g. failed as stale by a resuming worker
            log.warning("search: trial %d: report at step %d refused (%s); no more reports", self.number, step, exc)
            self.live = False
            return False

    def should_prune(self) -> bool:
        if not self.live:
            return False
        try:
            return bool(self.trial.should_prune())
        except Exception as exc:
            log.warning("search: trial %d: pruning decision failed (%s); training on", self.number, exc)
            return False

    # outcome ------------------------------------------------------------------------------------
    def finish(self, results: dict[str, Any] | None, error: BaseException | None = None) -> str:
        """Tell the trial's outcome (once); returns the state told."""
        import optuna
        from optuna.trial import TrialState

        from kdrl.errors import one_line

        self.stop_heartbeat()
        attrs: dict[str, Any] = {}
        values = None
        if error is not None or results is None:
            state = TrialState.FAIL
            attrs["kdrl:error"] = one_line(error) if error is not None else "no results"
        elif results.get("status") == PRUNED:
            state = TrialState.PRUNED
        else:
            try:
                values = self.objective.values(results)
                state = TrialState.COMPLETE
            except ValueError as exc:
                state, attrs["kdrl:error"] = TrialState.FAIL, str(exc)
        if results is not None:
            attrs.update(
                {
                    "kdrl:status": results.get("status"),
                    "kdrl:env_steps": results.get("env_steps"),
                    "kdrl:fit_s": results.get("wall_time_s"),
                    "kdrl:job_s": results.get("job_wall_time_s"),
                    "kdrl:run_dir": results.get("run_dir"),
                }
            )
        try:
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(self.trial_id, k, v)
            self.study.tell(self.number, values=values, state=state, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        except Exception as exc:
            log.warning("search: trial %d: could not tell %s (%s)", self.number, state.name, one_line(exc))
        self.live = False
        return state.name


def open_trial(cfg: Any) -> TrialLink | None:
    """The trial a job's config names (None for a job outside a search), made the active one."""
    global _ACTIVE
    keys = search_keys(cfg)
    if keys is None:
        _ACTIVE = None
        return None
    _ACTIVE = TrialLink(*keys)
    _ACTIVE.start_heartbeat()
    return _ACTIVE


def close_trial(link: TrialLink | None, results: dict[str, Any] | None, error: BaseException | None = None) -> None:
    global _ACTIVE
    if link is None:
        return
    state = link.finish(results, error)
    log.info("search: trial %d told %s", link.number, state)
    if _ACTIVE is link:
        _ACTIVE = None


def active_trial() -> TrialLink | None:
    return _ACTIVE


class TrialReporter(pl.Callback):
    """After each periodic evaluation (it runs after the evaluation callback): report the trial's
    intermediate value at the evaluation's env step and stop training if the pruner says so."""

    def __init__(self, link: TrialLink, evaluation: Any) -> None:
        self.link, self.evaluation = link, evaluation
        self.seen = 0
        self.pruned = False

    def _total(self, pl_module: Any) -> int:
        stream = getattr(pl_module, "stream", None)
        return int(getattr(stream, "total_timesteps", 0) or 0)

    def _catch_up(self, trainer: pl.Trainer, pl_module: Any) -> None:
        history = list(getattr(self.evaluation, "history", []) or [])
        if len(history) <= self.seen or self.pruned:
            self.seen = max(self.seen, len(history))
            return
        reported = False
        for i in range(self.seen, len(history)):  # a resumed run reports its restored records too
            value = self.link.objective.intermediate(history[: i + 1], self._total(pl_module))
            if value is not None:
                reported = self.link.report(value, int(history[i]["env_steps"])) or reported
        self.seen = len(history)
        if reported and self.link.should_prune():
            self.pruned = self.link.pruned = True
            trainer.should_stop = True
            log.info(
                "search: trial %d pruned at env step %d (value %.4g)",
                self.link.number,
                history[-1]["env_steps"],
                self.link.objective.intermediate(history, self._total(pl_module)),
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._catch_up(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._catch_up(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._catch_up(trainer, pl_module)
        if not self.pruned and self.link.objective.stops_at_target:
            self._fill_after_target(pl_module)

    def _fill_after_target(self, pl_module: Any) -> None:
        """A trial that reached its target stopped early with its final value: that value stands
        at the evaluation steps it skipped, so the pruner compares later trials with it there."""
        history = list(getattr(self.evaluation, "history", []) or [])
        total, freq = self._total(pl_module), int(getattr(self.evaluation, "freq", 0) or 0)
        if not history or freq <= 0 or total <= 0:
            return
        value = self.link.objective.intermediate(history, total)
        last = int(history[-1]["env_steps"])
        if value is None or last >= total:
            return
        for step in [*range((last // freq + 1) * freq, total, freq), total]:
            if self.link.report(value, step):
                self.link.should_prune()  # records the rungs a successive-halving pruner compares


def trial_callbacks(evaluation: Any) -> list[pl.Callback]:
    """The reporter of the active trial (none outside a search, or when its study is not pruned)."""
    link = active_trial()
    if link is None or not link.live or not link.objective.prunable:
        return []
    return [TrialReporter(link, evaluation)]


def trial_pruned(callbacks: list[Any]) -> bool:
    return any(isinstance(c, TrialReporter) and c.pruned for c in callbacks)
