"""A study's own W&B run: its tables and plots as one more run in the group of its jobs.

Every job of a study runs with ``wandb.group=<study name>`` (kdrl/study.py: plan). After a stage, and
at the end of a kdrl-study call, ``log_study_tables`` logs the tables written so far under
``<study dir>/tables/<name>/`` as ONE run of that group (job_type ``study-tables``, name
``<study>-tables``):

- each table's cells (``table_cells.csv``: rows, cols, n, mean, IQM, 95% CI low/high, flag), and its
  ``aggregate.csv`` / multi-task ``runs.csv`` where written, as ``wandb.Table`` (key ``<table>/cells``...);
- each plot (``*.png``) as ``wandb.Image`` (key ``<table>/plots/<file stem>``);
- the declaration in the run's config, the job counts in its summary.

Offline by default: the run lands in ``<study dir>/wandb/offline-run-*``, and ``wandb sync`` uploads
it. ``online`` tries W&B and goes on offline when it cannot be reached; ``disabled`` (or
``WANDB_MODE=disabled``) logs nothing. A logging service never stops a study: a failure is one line.
Tables that have not changed since the last logged run are not logged again (``fingerprint``).

It imports wandb only when it logs (kdrl-study --status never does), and never torch.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

MODES = ("offline", "online", "disabled")
JOB_TYPE = "study-tables"
# table dir file -> the key its wandb.Table gets under <table>/
TABLE_FILES = {"table_cells.csv": "cells", "aggregate.csv": "aggregate", "runs.csv": "runs"}


def combined_mode(modes: Sequence[str]) -> str:
    """The study run's mode from its jobs' ``logger.wandb``: online if any job logs online, offline if
    any logs offline, else disabled."""
    for mode in ("online", "offline"):
        if mode in modes:
            return mode
    return "disabled"


def table_dirs(study_dir: Path, names: Sequence[str]) -> dict[str, Path]:
    """The declared tables written so far (a table.md in <study dir>/tables/<name>/)."""
    dirs = {name: Path(study_dir) / "tables" / name for name in names}
    return {name: d for name, d in dirs.items() if (d / "table.md").is_file()}


def fingerprint(dirs: Mapping[str, Path]) -> str:
    """A hash of what the run would log: each table's text, CSVs and plots."""
    h = hashlib.sha256()
    for name, d in sorted(dirs.items()):
        for f in sorted(d.iterdir()):
            if f.is_file() and (f.name == "table.md" or f.name in TABLE_FILES or f.suffix == ".png"):
                h.update(f"{name}/{f.name}\0".encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def wandb_table(path: Path) -> Any:
    """A CSV as a wandb.Table (NaN as an empty cell: W&B's table JSON has no NaN)."""
    import pandas as pd
    import wandb

    df = pd.read_csv(path)
    data = [[None if isinstance(v, float) and not math.isfinite(v) else v for v in row] for row in df.itertuples(False)]
    return wandb.Table(columns=[str(c) for c in df.columns], data=data)


def start_run(mode: str, study_dir: Path, say: Callable[[str], None], **kwargs: Any) -> Any:
    """wandb.init in ``<study dir>/wandb``; online falls back to offline (and says so) when W&B cannot
    be reached or no account is configured."""
    import wandb

    quiet = dict(silent=True, console="off")
    if mode == "online":
        try:
            timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", 30))
            return wandb.init(
                dir=str(study_dir), mode="online", settings=wandb.Settings(init_timeout=timeout, **quiet), **kwargs
            )
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            say(f"W&B online unreachable ({reason}); the study's tables go to W&B offline instead")
    return wandb.init(dir=str(study_dir), mode="offline", settings=wandb.Settings(**quiet), **kwargs)


def log_study_tables(
    study: dict[str, Any],
    study_dir: Path,
    *,
    mode: str,
    project: str = "kdrl",
    tags: Sequence[str] = (),
    summary: Mapping[str, Any] | None = None,
    last: str | None = None,
    say: Callable[[str], None] = print,
) -> str | None:
    """Log the study's written tables and plots as one W&B run in the group ``study['name']``.

    ``mode``: offline | online | disabled. ``summary``: the job counts (and anything else) for the
    run's summary. ``last``: the fingerprint of the last logged run; unchanged tables are not logged
    again. Returns the fingerprint logged (or ``last`` when nothing was logged)."""
    if mode not in MODES:
        raise ValueError(f"the study's W&B mode must be one of {', '.join(MODES)}, got '{mode}'")
    if mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return last
    dirs = table_dirs(study_dir, list(study.get("tables") or {}))
    if not dirs:
        return last
    stamp = fingerprint(dirs)
    if stamp == last:
        return last
    try:
        import wandb

        name = study["name"]
        run = start_run(
            mode,
            Path(study_dir),
            say,
            project=project,
            group=name,
            job_type=JOB_TYPE,
            name=f"{name}-tables",
            tags=list(dict.fromkeys([*tags, "study", name])),
            config={"study": study, "study_dir": str(study_dir)},
        )
        try:
            data: dict[str, Any] = {}
            for tname, d in dirs.items():
                for fname, key in TABLE_FILES.items():
                    if (d / fname).is_file():
                        data[f"{tname}/{key}"] = wandb_table(d / fname)
                for png in sorted(d.glob("*.png")):
                    data[f"{tname}/plots/{png.stem}"] = wandb.Image(str(png), caption=f"{tname}: {png.stem}")
            run.log(data)
            run.summary.update({**(summary or {}), "tables": sorted(dirs), "tables_fingerprint": stamp})
            offline = run.settings.mode == "offline"
            where = run.dir if not offline else str(Path(run.dir).parent)
        finally:
            run.finish()
    except Exception as exc:  # a logging service never stops a study
        say(f"W&B: the study's tables were not logged ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
        return last
    if offline:
        say(f"W&B: tables {', '.join(dirs)} logged offline in group {name} ({where}; upload: wandb sync {where})")
    else:
        say(f"W&B: tables {', '.join(dirs)} logged in group {name}")
    return stamp
