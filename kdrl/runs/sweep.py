"""Hydra callbacks for multiruns: index a sweep's job dirs, and share one Optuna study.

(Training a study's teachers before its students is kdrl-study's: a teacher stage runs before the
stages that load its files, kdrl/study.py. A plain ``kdrl-distill -m`` sweep shares each on-demand
teacher through the cache's lock: the first job to need it trains it.)

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
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kdrl.search.storage import sqlite_path

log = logging.getLogger("kdrl.sweep")


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
