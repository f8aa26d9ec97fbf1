"""``hydra/sweeper=kdrl_listed``: a multirun of exactly the jobs listed in a JSON file.

Hydra's basic sweeper launches the cartesian product of its axes. A study (``kdrl-study``) launches
only the jobs of a stage that are not finished yet (a rerun after three failures is three jobs, not
the whole grid again), each with its own overrides and its own run dir; any Hydra launcher runs
them (joblib, submitit, Ray, the basic one):

    kdrl-train -m launcher=joblib hydra/sweeper=kdrl_listed hydra.sweeper.jobs_file=jobs.json \
        hydra.sweep.dir=outputs/study/teachers

``jobs.json`` is a list of jobs, each a list of override strings (``hydra.sweep.subdir=...`` among
them names its run dir). The command line's task overrides apply to every job, before the job's own.
Unlike the basic sweeper, a job that raises does not stop the multirun with its exception: every
job runs and writes its results.json (status ok or failed), which is what kdrl's tools read; the
multirun exits with code 0 once all jobs have returned.

(No ``from __future__ import annotations`` here: Hydra imports plugin modules without registering
them in sys.modules, and dataclasses then cannot resolve string annotations.)
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class ListedSweeperConf:
    _target_: str = "hydra_plugins.kdrl_sweeper.listed_sweeper.ListedSweeper"
    jobs_file: str = "???"
    max_batch_size: Any = None  # jobs per launcher call (None: all at once)
    params: Any = None  # an experiment's axes (hydra.sweeper.params): the job list already expands them


ConfigStore.instance().store(group="hydra/sweeper", name="kdrl_listed", node=ListedSweeperConf, provider="kdrl")


class ListedSweeper(Sweeper):
    def __init__(self, jobs_file: str, max_batch_size: int | None = None, params: Any = None) -> None:
        super().__init__()
        self.jobs_file = jobs_file
        self.max_batch_size = max_batch_size
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        jobs = json.loads(Path(self.jobs_file).read_text())
        if not isinstance(jobs, list) or not all(isinstance(j, list) for j in jobs):
            raise ValueError(f"{self.jobs_file}: expected a JSON list of override lists")
        batch = [[*arguments, *map(str, job)] for job in jobs]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = int(self.max_batch_size or 0) or max(len(batch), 1)
        returns = []
        for start in range(0, len(batch), size):
            returns.append(self.launcher.launch(batch[start : start + size], initial_job_idx=start))
        for ret in (r for launched in returns for r in (launched or ())):
            report_failure(ret)
        return returns


def report_failure(ret: Any) -> None:
    """One log line (the stage's log) for a job that raised: Hydra keeps its exception in the JobReturn and
    shows it nowhere in a multirun, and a job refused before it wrote results.json (a resume conflict, a
    lock held elsewhere) left no other trace of why."""
    from hydra.core.utils import JobStatus

    if getattr(ret, "status", None) != JobStatus.FAILED:
        return
    from kdrl.errors import one_line

    log.error("a job failed (%s): %s", " ".join(ret.overrides or ()), one_line(ret._return_value))
