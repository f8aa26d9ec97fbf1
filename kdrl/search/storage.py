"""Where a search's study lives, and its creation by concurrent workers.

A storage is given as a string (``hydra.sweeper.storage``, or ``KDRL_OPTUNA_STORAGE`` in the
presets):

* ``journal:<path>`` (or a path ending in ``.journal``): Optuna's JournalStorage on an append-only
  file, the default (``<sweep dir>/optuna.journal``). Writers serialise through a lock file that
  Optuna takes with ``link`` (atomic on local disks and on NFSv2+ and Lustre, no ``flock``) and
  breaks after a grace period if its holder died; every process replays the file. This is what
  holds on a cluster's shared file system without a database server.
* an SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://...``, ``mysql://...``): Optuna's RDB
  storage. SQLite on a shared file system is not safe for many writers (its locks rely on
  ``fcntl``); use it on one machine, or a database server on a cluster.

The study carries its search settings (objective, directions, what jobs report, the pruner) as the
user attribute ``kdrl``, so a job can report to it and prune without being told them, and a worker
that joins (or resumes) with other settings is refused in one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("kdrl.search")

JOURNAL_PREFIX = "journal:"
DEFAULT_JOURNAL = "optuna.journal"
SETTINGS_ATTR = "kdrl"
# a trial's user attributes, written by the sweeper and read by the report (kdrl.search.summary)
STALE_ATTR = "kdrl:stale"
RETRY_OF_ATTR = "kdrl:retry_of"
WORKER_ATTR = "kdrl:worker"
COMPARED = ("objective", "pruner")


class SearchSettingsError(ValueError):
    """A worker's settings differ from those its study was created with."""


def storage_url(storage: str | None, sweep_dir: str | Path | None = None) -> str:
    """The storage string in its canonical form: ``journal:<absolute path>`` or an RDB URL with an
    absolute SQLite path. None or "" -> a journal file in ``sweep_dir``."""
    if storage is None or str(storage).strip() in ("", "null", "None"):
        if sweep_dir is None:
            raise ValueError("no storage given and no sweep dir to keep the default journal file in")
        return JOURNAL_PREFIX + str((Path(sweep_dir) / DEFAULT_JOURNAL).resolve())
    storage = str(storage).strip()
    if storage.startswith(JOURNAL_PREFIX):
        return JOURNAL_PREFIX + str(Path(storage[len(JOURNAL_PREFIX) :]).expanduser().resolve())
    if "://" not in storage:
        if storage.endswith((".journal", ".log")):
            return JOURNAL_PREFIX + str(Path(storage).expanduser().resolve())
        raise ValueError(
            f"storage {storage!r}: give journal:<file>, a path ending in .journal, or an SQLAlchemy URL "
            "(sqlite:///<file>, postgresql://...)"
        )
    db = sqlite_path(storage)
    return f"sqlite:///{db.expanduser().resolve()}" if db is not None else storage


def open_storage(url: str) -> Any:
    """The Optuna storage object of a canonical ``storage_url``."""
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len(JOURNAL_PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))  # its default lock: link(2), NFS-safe
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # writers wait instead of "database is locked"
    return optuna.storages.RDBStorage(url, **kwargs)


def create_or_load_study(url: str, name: str, directions: list[str], sampler: Any = None, pruner: Any = None) -> Any:
    """Create the study (and, for SQLite, its tables under a lock next to the file, as
    the SharedStudy callback does) or load it when another worker already did."""
    import optuna

    storage = open_storage(url)

    def create() -> Any:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=list(directions),
            load_if_exists=True,
        )

    db = sqlite_path(url)
    if db is None:  # the journal serialises its own writes; a database server its schema
        study = create()
    else:
        from kdrl.locks import exclusive_lock

        with exclusive_lock(db.with_name(db.name + ".lock"), poll_s=0.2):
            study = create()
    wanted = [optuna.study.StudyDirection[d.upper()] for d in directions]
    if list(study.directions) != wanted:
        raise SearchSettingsError(
            f"study {name!r} in {url} optimises {[d.name.lower() for d in study.directions]}, this search "
            f"{list(directions)}: give another study_name or storage"
        )
    return study


def canonical(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def record_settings(study: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Store ``settings`` in the study (first worker), or check that they are the study's."""
    settings = canonical(settings)
    held = study.user_attrs.get(SETTINGS_ATTR)
    if held is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
        return settings
    held = canonical(held)
    # what a trial is judged by must agree; liveness settings (heartbeat_s) may differ per worker
    diff = sorted(k for k in COMPARED if held.get(k) != settings.get(k))
    if diff:
        parts = "; ".join(f"{k}: study {held.get(k)!r}, this worker {settings.get(k)!r}" for k in diff)
        raise SearchSettingsError(
            f"study {study.study_name!r} was created with other search settings ({parts}); resume or join it "
            "with the same preset and overrides, or give another study_name"
        )
    return held


def study_settings(study: Any) -> dict[str, Any]:
    settings = study.user_attrs.get(SETTINGS_ATTR)
    if settings is None:
        raise SearchSettingsError(f"study {study.study_name!r} holds no kdrl search settings (not made by kdrl)")
    return settings


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///path`` URL (None for other databases or in-memory SQLite)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(url[len(prefix) :])
