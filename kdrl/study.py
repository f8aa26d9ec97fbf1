"""Declared studies: conf/study/<name>.yaml -> every job, stage by stage, on any Hydra launcher.

A study declares its stages and its tables (conf/base/study.yaml, STAGE_KEYS, TABLE_KEYS):

    stages:
      teachers: {app: train, envs: [cartpole], seeds: [0, 1, 2, 3, 4]}
      students: {app: distill, experiment: demo, teacher: {stage: teachers}}
    tables:
      main: {stages: [students], rows: method, cols: width}

``plan`` turns it into jobs: each stage's sweep axes (``envs``, ``seeds``, the experiment's
``hydra.sweeper.params``, ``axes``) expand into one job per combination, named by its axis values
(``students/loss=kl,student.width=64,seed=0``, also its run dir under the study dir). A student
names its teacher by the stage that trains it: it gets ``teacher.checkpoint=<that job's run
dir>/teacher.pt`` (a multi-task job ``teacher.checkpoints``), so a student job only loads a file.

The study dir holds ``index.json``: one row per job (config hash, status, run dir, error), so
``status`` reads one file, then looks only at the jobs not marked ok (a job that finished since the
index was written is seen; 10,000 jobs in well under a second). ``run_study`` runs each selected
stage as ONE Hydra multirun of its unfinished jobs on the chosen launcher (``python -m
kdrl.cli.<app> -m launcher=<launcher> hydra/sweeper=kdrl_listed ...``: a subprocess per stage keeps
each stage's Hydra state clean), stages in order (teachers before the students that need them),
shows progress (done, running, failed, ETA), reruns failed jobs on the next call, and rewrites the
tables after each stage (kdrl.tables, as kdrl-table does).

The study process never imports torch: ``status`` costs a JSON read and a few stats.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdrl.errors import KdrlUserError

INDEX_FILE = "index.json"
JOB_LOCK = ".kdrl-job.lock"  # held by a running job in its run dir (the job runner's job_lock)
LOCK_FILE = ".kdrl-study.lock"
APPS = {
    "train": "kdrl.cli.train",
    "distill": "kdrl.cli.distill",
    "multitask": "kdrl.cli.multitask",
    "data": "kdrl.cli.data",
}
STAGE_KINDS = tuple(APPS)
# What a stage may declare (conf/base/study.yaml describes each)
STAGE_KEYS = (
    "app", "envs", "seeds", "experiment", "axes", "overrides", "teacher", "dataset", "tasks", "max_batch_size",
    "published",
)  # fmt: skip
# what a published job keeps (the policy, its reference returns, its results and learning curve): no checkpoints
PUBLISHED_FILES = ("results.json", "teacher.pt", "teacher.pt.reference.json", "csv/metrics.csv", "job.json")
# the file a producing app's job leaves for the stages after it (a teacher stage's policy, a data stage's recording)
PRODUCTS = {"train": "teacher.pt", "data": "dataset.npz"}
TEACHER_KEYS = ("stage", "seed", "checkpoint")
TABLE_KEYS = (
    "title", "stages", "kind", "rows", "cols", "metric", "curve_group", "where", "aggregate", "compare", "plots",
    "reference", "publish", "targets", "note", "x", "groups", "margin", "stage_labels", "exclude", "published_runs",
    "pair_by",
)  # fmt: skip
LAUNCHERS = ("local", "joblib", "submitit_local", "slurm", "ray")
DONE = ("ok", "failed")


class StudyError(KdrlUserError, ValueError):
    """A study declaration or study dir kdrl-study cannot use (said in one line)."""


# ---- the declaration ---------------------------------------------------------------------------------
@contextlib.contextmanager
def hydra_conf() -> Iterator[None]:
    """Hydra's global state on kdrl's conf/ (the package's, so any directory and a wheel install work)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kdrl.config import CONF_DIR

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        yield


def known_studies() -> list[str]:
    from kdrl.config import CONF_DIR

    return sorted(p.stem for p in (Path(CONF_DIR) / "study").glob("*.yaml"))


def load_study(name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """conf/study/<name>.yaml composed with ``overrides`` (Hydra syntax: ``dir=...``,
    ``stages.students.seeds=[0,1]``), resolved to plain containers; a missing required key (``???``)
    or an unknown study is a StudyError."""
    from hydra import compose
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if name not in known_studies():
        raise StudyError(f"no study '{name}' (conf/study/<name>.yaml): have {', '.join(known_studies())}")
    try:
        with hydra_conf():
            cfg = compose(overrides=[f"+study={name}", *overrides])
        body = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        raise StudyError(f"study '{name}': {exc.full_key} is required (??? in conf/base/study.yaml)") from None
    except OmegaConfBaseException as exc:
        raise StudyError(f"study '{name}': {' '.join(str(exc).split())[:300]}") from None
    except Exception as exc:  # Hydra's own override and composition errors
        raise StudyError(f"study '{name}': {' '.join(str(exc).split())[:300]}") from None
    check_declaration(body)
    return body


def check_declaration(study: dict[str, Any]) -> None:
    """Unknown keys, unknown apps and teacher links to missing or later stages, in one line each."""
    name = study["name"]
    stages = study.get("stages") or {}
    if not isinstance(stages, dict) or not stages:
        raise StudyError(f"study '{name}': stages must be a non-empty mapping of stage name -> stage")
    seen: list[str] = []
    for sname, st in stages.items():
        where = f"study '{name}', stage '{sname}'"
        if not isinstance(st, dict):
            raise StudyError(f"{where}: expected a mapping of {', '.join(STAGE_KEYS)}")
        unknown = sorted(set(st) - set(STAGE_KEYS))
        if unknown:
            raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)} (a stage takes {', '.join(STAGE_KEYS)})")
        if st.get("app") not in STAGE_KINDS:
            raise StudyError(f"{where}: app must be one of {', '.join(STAGE_KINDS)}, got {st.get('app')!r}")
        for link, producer in (("teacher", "train"), ("dataset", "data")):
            if st.get(link) is not None:
                check_link(where, sname, st, link, producer, stages, seen)
        seen.append(sname)
    if study.get("wandb") not in (None, "offline", "online", "disabled"):
        raise StudyError(f"study '{name}': wandb must be offline, online, disabled or null, got {study['wandb']!r}")
    for tname, t in (study.get("tables") or {}).items():
        unknown = sorted(set(t or {}) - set(TABLE_KEYS))
        if unknown:
            raise StudyError(f"study '{name}', table '{tname}': unknown key(s) {', '.join(unknown)}")
        for s in (t or {}).get("stages") or []:
            if s not in stages:
                raise StudyError(f"study '{name}', table '{tname}': no stage '{s}'")
        # a table joining published runs may label any of the study's stages (theirs are named in the CSV)
        labelled = stages if (t or {}).get("published_runs") else ((t or {}).get("stages") or stages)
        for s in (t or {}).get("stage_labels") or {}:
            if s not in labelled:
                raise StudyError(f"study '{name}', table '{tname}': stage_labels names '{s}', no stage of the table")
        published_runs = (t or {}).get("published_runs")
        if published_runs is not None:
            if (t or {}).get("kind") in ("time_to_score", "end_slope", "multitask"):
                raise StudyError(
                    f"study '{name}', table '{tname}': published_runs joins runs to a student, teacher, budget or all "
                    f"table (its rows have no learning curves), not to kind {t['kind']}"
                )
            if not isinstance(published_runs, list) or not all(isinstance(p, str) and p for p in published_runs):
                raise StudyError(
                    f"study '{name}', table '{tname}': published_runs takes a list of results.csv paths, "
                    f"got {published_runs!r}"
                )
        exclude = (t or {}).get("exclude") or []
        if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
            raise StudyError(
                f"study '{name}', table '{tname}': exclude takes a list of {{column: [values]}} (runs matching every "
                f"column of one entry are left out), got {exclude!r}"
            )
        pair_by = (t or {}).get("pair_by")
        if pair_by is not None and ((t or {}).get("kind") != "budget" or not isinstance(pair_by, str) or not pair_by):
            raise StudyError(
                f"study '{name}', table '{tname}': pair_by names the column to pair a budget table's runs by (seed), "
                f"for kind budget only, got {pair_by!r} in a {(t or {}).get('kind') or 'student'} table"
            )


LINK_KEYS = {"teacher": TEACHER_KEYS, "dataset": ("stage", "seed")}


def check_link(
    where: str, sname: str, st: dict[str, Any], link: str, producer: str, stages: dict[str, Any], seen: list[str]
) -> None:
    """A stage's ``teacher`` (or ``dataset``) link: its keys, a stage run before it of the producing app
    (train, or data), and the seed rule that picks one of that stage's jobs."""
    value = st[link]
    if not isinstance(value, dict) or set(value) - set(LINK_KEYS[link]):
        raise StudyError(f"{where}: {link} takes {', '.join(LINK_KEYS[link])}, got {value!r}")
    if link == "dataset":
        if st.get("app") != "distill":
            raise StudyError(
                f"{where}: a dataset link is for a distill stage (its students), not app {st.get('app')!r}"
            )
        if not value.get("stage"):
            raise StudyError(f"{where}: dataset names the data stage that records it: dataset: {{stage: <name>}}")
    ref = value.get("stage")
    if ref is not None and ref not in seen:
        later = "a later stage" if ref in stages else "no stage of this study"
        raise StudyError(f"{where}: its {link} stage '{ref}' is {later}: {link}s run first")
    if ref is not None and stages[ref].get("app") != producer:
        raise StudyError(f"{where}: its {link} stage '{ref}' is not a {producer} stage")
    rule = value.get("seed")
    if not (rule is None or rule in ("student", "cycle") or (isinstance(rule, int) and not isinstance(rule, bool))):
        raise StudyError(f"{where}: {link} seed must be null, student, cycle or an integer, got {rule!r}")
    if rule == "cycle" and not (st.get("seeds") and ref and stages[ref].get("seeds")):
        raise StudyError(f"{where}: {link} seed 'cycle' needs seeds declared in this stage and in its {link} stage")


def declaration_hash(study: dict[str, Any]) -> str:
    body = {k: v for k, v in study.items() if k != "dir"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---- planning ----------------------------------------------------------------------------------------
@dataclass
class Job:
    """One run: ``app`` with ``overrides``, in ``<study dir>/<stage>/<name>`` (its id)."""

    stage: str
    app: str
    name: str
    overrides: list[str]
    needs: list[str] = field(default_factory=list)  # the ids of the teacher jobs it loads
    hash: str = ""

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.name}"


def quote(value: str) -> str:
    """A Hydra override value as a quoted string (paths, names with = and ,)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def axis_values(key: str, value: Any) -> list[str]:
    """A sweep axis's values as override value strings: a YAML list, or Hydra's sweep syntax
    (``a,b,c``, ``range(0,5)``), as the basic sweeper splits it."""
    if isinstance(value, list | tuple):
        return [hydra_value(v) for v in value]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"{key}={hydra_value(value)}"])
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def flat(items: Any) -> list[str]:
    """An overrides list with nested lists (``[${common}, loss=kl]`` in a study file) flattened."""
    out: list[str] = []
    for item in items or []:
        out.extend(flat(item) if isinstance(item, list | tuple) else [str(item)])
    return out


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def deduplicated(overrides: Sequence[str]) -> list[str]:
    """Later overrides of a key replace earlier ones (Hydra refuses some keys given twice)."""
    last = {override_key(o): o for o in overrides}
    out, done = [], set()
    for o in overrides:
        key = override_key(o)
        if key not in done:
            out.append(last[key])
            done.add(key)
    return out


def job_hash(app: str, overrides: Sequence[str], study_dir: Path) -> str:
    """What identifies a job's config: its app and overrides, the study dir written relative (a moved
    study dir is the same study)."""
    rel = [o.replace(str(study_dir), "<study>") for o in overrides]
    return hashlib.sha256(json.dumps([app, rel]).encode()).hexdigest()[:12]


def safe_name(values: dict[str, str]) -> str:
    name = ",".join(f"{k}={v}" for k, v in values.items()) or "job"
    return name.replace("/", "_").replace(os.sep, "_")


def stage_base(app: str, overrides: list[str]) -> Any:
    """The stage's config as its jobs compose it (hydra node included): the experiment's axes, the
    default env, tasks and teacher seed rules."""
    from hydra import compose

    with hydra_conf():
        try:
            return compose(config_name=app, overrides=overrides, return_hydra_config=True)
        except Exception as exc:
            raise StudyError(f"the {app} config with {' '.join(overrides)} does not compose: {exc}") from None


def stage_overrides(study: dict[str, Any], st: dict[str, Any]) -> list[str]:
    """What every job of a stage gets: the study's overrides, its experiment, its own overrides."""
    fixed = flat(study.get("overrides"))
    if st.get("experiment"):
        fixed.append(f"experiment={st['experiment']}")
    return fixed + flat(st.get("overrides"))


def jobs_wandb(study: dict[str, Any]) -> dict[str, Any]:
    """How the study's W&B run logs: the declaration's ``wandb`` (offline | online | disabled), or
    null: as its jobs' ``logger.wandb`` (kdrl.study_wandb.combined_mode over its stages); and the
    project and tags of its jobs (``wandb.project``, ``wandb.tags``)."""
    from kdrl.study_wandb import combined_mode

    modes, project, tags = [], None, []
    for st in study["stages"].values():
        if st.get("app") not in APPS:
            continue
        base = stage_base(st["app"], deduplicated(stage_overrides(study, st)))
        modes.append(str(base.logger.get("wandb", "disabled")))
        project = project or base.wandb.get("project")
        tags += [str(t) for t in base.wandb.get("tags") or [] if str(t) not in tags]
    mode = study.get("wandb") or combined_mode(modes)
    return {"mode": mode, "project": project or "kdrl", "tags": tags}


def stage_axes(st: dict[str, Any], base: Any) -> dict[str, list[str]]:
    """env first (``envs``), then the experiment's ``hydra.sweeper.params`` and the stage's ``axes``
    (which replace an experiment axis of the same key), seed last (``seeds``)."""
    axes: dict[str, list[str]] = {}
    if st.get("envs"):
        axes["env"] = [hydra_value(e) for e in st["envs"]]
    params = dict(base.hydra.sweeper.get("params") or {}) if st.get("experiment") else {}
    for key, value in [*params.items(), *(st.get("axes") or {}).items()]:
        axes[str(key)] = axis_values(str(key), value)
    if st.get("seeds") is not None:
        axes["seed"] = [hydra_value(s) for s in st["seeds"]]
    if "env" in axes:
        axes = {"env": axes.pop("env"), **axes}
    if "seed" in axes:
        axes["seed"] = axes.pop("seed")
    return axes


def teacher_seed(
    rule: Any, student_seed: int, values: dict[str, str], base: Any, cycle: tuple[list, list] = ([], [])
) -> int:
    """``rule``: an int, ``student`` (the job's own seed), ``cycle`` (``cycle`` = (the stage's seeds, its
    teacher stage's seeds): the i-th student seed takes teacher seed i mod their count, so 5 student seeds
    over 3 teachers spread 2, 2, 1 and the interval covers teacher variance), or null: as the job's config
    says (``teacher.seed_from_student`` -> its seed, else ``teacher.seed``), as kdrl-distill would."""
    if rule == "student":
        return student_seed
    if rule == "cycle":
        students, teachers = [int(s) for s in cycle[0]], [int(s) for s in cycle[1]]
        return teachers[students.index(student_seed) % len(teachers)]
    if rule is not None:
        return int(rule)
    from_student = values.get("teacher.seed_from_student", base.teacher.get("seed_from_student", False))
    if str(from_student).lower() == "true":
        return student_seed
    return int(values.get("teacher.seed", base.teacher.get("seed", 0)))


def linked_job(
    produced: dict[str, dict[tuple[str, int], Job | None]],
    ref: str,
    env: str,
    seed: int,
    what: str,
    sname: str,
    values: dict[str, str],
) -> Job:
    """The job of stage ``ref`` (a train or data stage) for ``env`` and ``seed`` that a link names: its
    ``what`` (teacher or dataset); a StudyError in one line when there is none, or more than one."""
    job = produced[ref].get((env, seed), "missing")
    if job == "missing":
        have = sorted(f"env={e} seed={s}" for e, s in produced[ref])
        verb = "train" if what == "teacher" else "record"
        raise StudyError(
            f"stage '{sname}' job {safe_name(values)} needs a {what} env={env} seed={seed} that "
            f"stage '{ref}' does not {verb} (it has: {', '.join(have)})"
        )
    if job is None:
        raise StudyError(
            f"stage '{ref}' has several jobs for env={env} seed={seed} (axes besides envs and "
            f"seeds): stage '{sname}' cannot name one {what}; split it into stages"
        )
    return job


def plan(study: dict[str, Any], study_dir: Path) -> list[Job]:
    """Every job of every stage, in stage order."""
    jobs: list[Job] = []
    # train and data stages: stage -> (env, seed) -> job (None: ambiguous), what a teacher or dataset link picks
    produced: dict[str, dict[tuple[str, int], Job | None]] = {}
    for sname, st in study["stages"].items():
        app = st["app"]
        fixed = stage_overrides(study, st)
        base = stage_base(app, deduplicated(fixed))
        axes = stage_axes(st, base)
        default_env = base.hydra.runtime.choices.get("env")
        seen: dict[tuple[str, int], Job | None] = {}
        for combo in itertools.product(*axes.values()):
            values = dict(zip(axes, combo))
            seed = int(values.get("seed", base.seed))
            env = values.get("env", default_env)
            overrides = [*fixed, *(f"{k}={v}" for k, v in values.items())]
            needs: list[str] = []
            teacher = st.get("teacher")
            if teacher and teacher.get("checkpoint"):
                key = "teacher.checkpoints" if app == "multitask" else "teacher.checkpoint"
                value = teacher["checkpoint"]
                overrides.append(
                    f"{key}={value if isinstance(value, str) and value.startswith('{') else quote(str(value))}"
                )
            elif teacher and teacher.get("stage"):
                ref = teacher["stage"]
                cycle = (list(st.get("seeds") or []), list(study["stages"][ref].get("seeds") or []))
                tseed = teacher_seed(teacher.get("seed"), seed, values, base, cycle)
                names = list(st.get("tasks") or base.get("tasks") or []) if app == "multitask" else [env]
                found = []
                for task in names:
                    tjob = linked_job(produced, ref, str(task), tseed, "teacher", sname, values)
                    found.append((task, tjob))
                    needs.append(tjob.id)
                paths = {task: str(study_dir / tjob.id / "teacher.pt") for task, tjob in found}
                if app == "multitask":
                    body = ",".join(f"{task}:{quote(p)}" for task, p in paths.items())
                    overrides.append(f"teacher.checkpoints={{{body}}}")
                    if st.get("tasks"):
                        overrides.append(f"tasks=[{','.join(map(str, st['tasks']))}]")
                else:
                    overrides.append(f"teacher.checkpoint={quote(paths[env])}")
            elif app == "multitask" and st.get("tasks"):
                overrides.append(f"tasks=[{','.join(map(str, st['tasks']))}]")
            if st.get("dataset"):
                ref = st["dataset"]["stage"]
                cycle = (list(st.get("seeds") or []), list(study["stages"][ref].get("seeds") or []))
                rule = st["dataset"].get("seed")
                dseed = teacher_seed("student" if rule is None else rule, seed, values, base, cycle)
                djob = linked_job(produced, ref, str(env), dseed, "dataset", sname, values)
                needs.append(djob.id)
                overrides.append(f"distill.dataset={quote(str(study_dir / djob.id / PRODUCTS['data']))}")
            overrides = deduplicated(
                [*overrides, f"wandb.group={study['name']}"]
            )  # every job joins the study's W&B group
            job = Job(sname, app, safe_name(values), overrides, needs)
            job.hash = job_hash(app, overrides, study_dir)
            jobs.append(job)
            if app in ("train", "data"):
                key = (str(env), seed)
                seen[key] = None if key in seen else job
        names = [j.name for j in jobs if j.stage == sname]
        if len(set(names)) != len(names):
            raise StudyError(f"stage '{sname}': two jobs with the same axis values")
        produced[sname] = seen
    return jobs


# ---- the index -----------------------------------------------------------------------------------------
@dataclass
class Index:
    """``<study dir>/index.json``: the study's jobs, one row each, in stage order."""

    path: Path
    meta: dict[str, Any]
    rows: dict[str, dict[str, Any]]  # job id -> row

    @property
    def study_dir(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, study_dir: Path) -> Index:
        path = Path(study_dir) / INDEX_FILE
        try:
            body = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path, {}, {})
        except (OSError, ValueError) as exc:
            raise StudyError(
                f"{path} cannot be read ({' '.join(str(exc).split())[:120]}): delete it to re-plan"
            ) from None
        rows = {r["id"]: r for r in body.pop("jobs", [])}
        return cls(path, body, rows)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {**self.meta, "updated": time.time(), "jobs": list(self.rows.values())}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (a full disk) the previous index stays whole
            raise

    def merge(self, jobs: list[Job], study: dict[str, Any]) -> None:
        """Rows for the planned jobs: a known job keeps its status while its config hash holds; a
        changed one is pending again (results written before the change no longer count)."""
        now = time.time()
        rows = {}
        for job in jobs:
            old = self.rows.get(job.id)
            row = {
                "id": job.id,
                "stage": job.stage,
                "app": job.app,
                "name": job.name,
                "hash": job.hash,
                "run_dir": job.id,
                "overrides": job.overrides,
                "needs": job.needs,
                "status": "pending",
                "since": 0.0,
            }
            if old is not None and old.get("hash") == job.hash:
                row.update({k: v for k, v in old.items() if k not in row or k in ("status", "since")})
            elif old is not None:
                row["since"] = now  # its old results.json (another config) does not count
            rows[job.id] = row
        self.rows = rows
        self.meta.update(study=study["name"], declaration=declaration_hash(study), stages=list(study["stages"]))
        self.meta["tables"] = study.get("tables") or {}
        self.meta["title"] = study.get("description")

    def refresh(self, rows: list[dict[str, Any]] | None = None, check_ok: bool = False) -> int:
        """Re-read the results of ``rows`` (default: all) not marked ok (and of ok ones with
        ``check_ok``: a deleted run dir is pending again). Returns how many rows changed."""
        changed = 0
        for row in self.rows.values() if rows is None else rows:
            if row["status"] == "ok" and not check_ok:
                continue
            before = (row["status"], row.get("mtime"))
            update_row(self.study_dir, row)
            changed += before != (row["status"], row.get("mtime"))
        return changed


def update_row(study_dir: Path, row: dict[str, Any]) -> None:
    run_dir = study_dir / row["run_dir"]
    try:
        mtime = os.stat(run_dir / "results.json").st_mtime
    except OSError:
        if row.get("lost") and row["status"] == "failed":
            return  # killed or lost by its launcher (mark_lost): failed until it runs again
        row["status"] = "started" if run_dir.is_dir() else "pending"
        row.pop("mtime", None)
        return
    if mtime < float(row.get("since") or 0.0):
        if not (row["status"] == "failed" and row.get("lost")):
            row["status"] = "started"  # results of an earlier config: the new one has not finished
        return
    row.pop("lost", None)
    if row["status"] in DONE and row.get("mtime") == mtime:
        return
    try:
        res = json.loads((run_dir / "results.json").read_text())
        status = "ok" if res.get("status") == "ok" else "failed"
        error = None if status == "ok" else str(res.get("error") or "failed").splitlines()[0][:300]
    except (OSError, ValueError, AttributeError) as exc:
        res, status, error = {}, "failed", f"unreadable results.json: {' '.join(str(exc).split())[:200]}"
    row.update(status=status, mtime=mtime, error=error)
    wall = res.get("job_wall_time_s") if isinstance(res, dict) else None
    row["wall_s"] = float(wall) if isinstance(wall, int | float) else None


def mark_lost(rows: list[dict[str, Any]], returncode: int | None, log_path: Path) -> None:
    """After a stage's multirun has exited, its jobs that never wrote results.json were killed (scancel,
    a SIGKILLed Ray worker, the OOM killer) or lost by their launcher: failed, so the study lists them
    and the next kdrl-study call reruns them (resuming from their checkpoints), instead of counting
    them pending forever. ``lost`` keeps them failed while their run dir still has no results.json."""
    for row in rows:
        if row["status"] in DONE:
            continue
        started = row["status"] == "started"  # its run dir exists
        row["status"], row["lost"] = "failed", True
        what = (
            "killed, lost or refused: its process ended without writing results.json (killed: out of memory, a "
            "signal? refused: a job that could not start says why in the stage's log)"
            if started
            else "never started"
        )
        row["error"] = f"{what}; its stage's multirun {describe_exit(returncode)} (log {log_path})"


# the files a job is pointed at, named after the study dir it runs in (which files they are is the stage's
# `teacher` and `dataset` links, the same in every study dir)
STUDY_DIR_FILE_KEYS = ("teacher.checkpoint", "teacher.checkpoints", "distill.dataset")


def run_shaping(overrides: Sequence[str]) -> list[str]:
    """The overrides that shape a job's run: all but its W&B group (a teacher published by one study
    serves another) and the paths of its files in the study dir (a data job published from one study dir
    stands for the same job of another)."""
    return [o for o in overrides if not o.startswith("wandb.group=") and override_key(o) not in STUDY_DIR_FILE_KEYS]


# config keys a published job may differ in and still stand for the declared job: the recipe's label (a recipe
# renamed or restated under another name with the same settings) and the files a job was pointed at
PUBLISHED_FREE_KEYS = ("recipe_for", *STUDY_DIR_FILE_KEYS)


def published_drift(pub: Path, app: str, overrides: Sequence[str]) -> str:
    """How the config a published job ran with (its results.json) differs from what its overrides
    compose today ("" when it does not): the same overrides stand for another run once a default they
    leave open has changed (an env's default recipe, say), and that run's files must not be taken."""
    from hydra import compose
    from omegaconf import OmegaConf

    from kdrl.runs.job import config_differences

    try:
        ran = json.loads((pub / "results.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its results.json does not say"
    with hydra_conf():
        now = OmegaConf.to_container(compose(config_name=app, overrides=list(overrides)), resolve=True)
    diffs = [
        (k, a, b)
        for k, a, b in config_differences(ran, now)  # type: ignore[arg-type]
        if not any(k == f or k.startswith(f + ".") for f in PUBLISHED_FREE_KEYS)
    ]
    shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, a, b in diffs[:4])
    return shown + (f"; {len(diffs) - 4} more" if len(diffs) > 4 else "")


def product_sha256(run_dir: Path) -> str | None:
    """The sha256 a job's results.json gives its product file (a data job's ``dataset.sha256``), or None."""
    try:
        res = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    sha = (res.get("dataset") or {}).get("sha256") if isinstance(res, dict) else None
    return sha if isinstance(sha, str) else None


def resolve_published(where: str) -> Path:
    """A stage's ``published`` dir: absolute, else under the current dir if it is there, else under
    the source checkout that holds conf/ (docs/minatar/teachers from any directory)."""
    path = Path(where)
    if path.is_absolute() or path.exists():
        return path
    from kdrl.config import CONF_DIR

    return Path(CONF_DIR).parent / path


def slurm_lost_tasks(stage_dir: Path, since: float) -> list[str]:
    """The SLURM array tasks a stage's multirun submitted (submitit's folders under
    ``<stage dir>/.submitit``, written since ``since``) that never returned a result although SLURM
    no longer queues or runs any of them: [] while one still exists, or squeue cannot answer.
    (Submitit learns that a job ended without a result only from sacct: on a cluster without
    accounting it waits for a killed job forever.)"""
    tasks = []
    for folder in (stage_dir / ".submitit").glob("*"):
        submitted = list(folder.glob("*_submitted.pkl"))
        with contextlib.suppress(OSError):
            if submitted and submitted[0].stat().st_mtime >= since - 1.0:
                tasks.append((folder.name, not any(folder.glob("*_result.pkl"))))
    waiting = [name for name, no_result in tasks if no_result]
    if not waiting:
        return []
    try:
        queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if queue.returncode != 0:
        return []
    live = set(queue.stdout.split())
    if any(name in live for name, _ in tasks):
        return []
    return sorted(waiting)


# ---- status ----------------------------------------------------------------------------------------------
def runner_alive(study_dir: Path) -> dict[str, Any] | None:
    """The kdrl-study process running this study now (from its lock file), or None."""
    path = Path(study_dir) / LOCK_FILE
    try:
        holder = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except (OSError, KeyError, ValueError):
            return None
        return holder
    return holder if age < 600 else None


def job_state(row: dict[str, Any], rows: dict[str, dict[str, Any]], running: bool) -> str:
    """ok | failed | running | pending | waiting (its teacher is not done) | blocked (its teacher failed)."""
    status = row["status"]
    if status in DONE:
        return status
    if status == "started":
        return "running" if running else "pending"
    needs = [rows.get(n, {}).get("status") for n in row.get("needs") or []]
    if any(s == "failed" for s in needs):
        return "blocked"
    if any(s != "ok" for s in needs):
        return "waiting"
    return "pending"


STATES = ("ok", "failed", "running", "pending", "waiting", "blocked")


def counts(rows: list[dict[str, Any]], all_rows: dict[str, dict[str, Any]], running: bool) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for row in rows:
        out[job_state(row, all_rows, running)] += 1
    return out


def fmt_counts(c: dict[str, int]) -> str:
    total = sum(c.values())
    parts = [f"{c['ok']}/{total} ok"] + [f"{c[s]} {s}" for s in STATES[1:] if c[s]]
    return ", ".join(parts)


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def published_elsewhere(study: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The jobs among ``rows`` that ran ok on another machine and whose results this checkout holds: job id ->
    {"wall_s", "source"}. A stage's ``published`` dir holds a job when its job.json names the same app and
    run-shaping overrides (as ``publish_jobs`` checks). A published table's results.csv (each table's ``publish``
    dir and its ``published_runs``) holds a job by its run dir's last two parts (<stage>/<name>), ok rows only:
    a table records no config, so those match by name, not by config. Reads CSV and JSON only (no pandas)."""
    import csv

    wanted = {r["id"]: r for r in rows}
    found: dict[str, dict[str, Any]] = {}
    for row in wanted.values():
        where = study["stages"].get(row["stage"], {}).get("published")
        if not where:
            continue
        pub = resolve_published(str(where)) / row["name"]
        try:
            meta = json.loads((pub / "job.json").read_text())
            res = json.loads((pub / "results.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or not isinstance(res, dict):  # JSON, but not what a job writes
            continue
        same = meta.get("app") == row["app"] and run_shaping(meta.get("overrides") or []) == run_shaping(
            row["overrides"]
        )
        if same and res.get("status") == "ok":
            wall = res.get("job_wall_time_s")
            found[row["id"]] = {"wall_s": wall if isinstance(wall, int | float) else None, "source": str(where)}
    csvs = [spec.get("publish") for spec in (study.get("tables") or {}).values()]
    csvs = [f"{d}/results.csv" for d in csvs if d] + [
        p for spec in (study.get("tables") or {}).values() for p in spec.get("published_runs") or []
    ]
    for where in dict.fromkeys(csvs):
        if len(found) == len(wanted):
            break
        path = resolve_published(where)
        try:
            with path.open(newline="") as f:
                table_rows = list(csv.DictReader(f))
        except OSError:
            continue
        for t in table_rows:
            job_id = "/".join(Path(t.get("run_dir") or "").parts[-2:])
            if job_id in wanted and job_id not in found and t.get("status") == "ok":
                try:
                    wall: float | None = float(t.get("job_wall_time_s") or "nan")
                except ValueError:
                    wall = None
                found[job_id] = {"wall_s": wall if wall == wall else None, "source": str(Path(where).parent)}
    return found


def status_report(study_dir: Path, max_failed: int = 50, study: dict[str, Any] | None = None) -> tuple[str, int]:
    """The study's status from its index, with the jobs not marked ok looked at again; and the number
    of jobs not ok. Reads one file and stats only unfinished jobs' run dirs. With the ``study`` declaration,
    the jobs not ok here are looked up among its published results (``published_elsewhere``)."""
    index = Index.load(study_dir)
    if not index.rows:
        raise StudyError(f"{study_dir} has no {INDEX_FILE}: not a study dir, or no kdrl-study call has planned it yet")
    index.refresh()
    runner = runner_alive(study_dir)
    all_c = counts(list(index.rows.values()), index.rows, runner is not None)
    lines = [f"study {index.meta.get('study', '?')} ({study_dir}): {len(index.rows)} jobs: {fmt_counts(all_c)}"]
    elsewhere = (
        {} if study is None else published_elsewhere(study, [r for r in index.rows.values() if r["status"] != "ok"])
    )
    if runner is not None:
        lines.append(f"runner: kdrl-study pid {runner.get('pid')} on {runner.get('host')}")
        if index.meta.get("progress"):
            lines.append(f"progress: {index.meta['progress']}")
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for row in index.rows.values():
        by_stage.setdefault(row["stage"], []).append(row)
    total_s = 0.0
    for stage, rows in by_stage.items():
        c = counts(rows, index.rows, runner is not None)
        walls = [r["wall_s"] for r in rows if r["status"] == "ok" and r.get("wall_s")]
        total_s += sum(walls)
        # core-hours: the ok jobs' walls summed (one core a job; a published job counts its own run's wall)
        mean = f"; {fmt_duration(sum(walls) / len(walls))} per job, {sum(walls) / 3600:.2f} core-h" if walls else ""
        pub = [elsewhere[r["id"]] for r in rows if r["id"] in elsewhere]
        if pub:
            pub_s = sum(p["wall_s"] or 0.0 for p in pub)
            sources = ", ".join(dict.fromkeys(p["source"] for p in pub))
            mean += f"; published: {len(pub)} more ok ({pub_s / 3600:.2f} core-h; {sources})"
        lines.append(f"  stage {stage} ({rows[0]['app']}): {fmt_counts(c)}{mean}")
    if total_s:
        lines.insert(1, f"ok jobs' walls: {total_s / 3600:.2f} core-hours in all")
    if study is not None:
        pub_s = sum(p["wall_s"] or 0.0 for p in elsewhere.values())
        nowhere: dict[str, int] = {}
        for r in index.rows.values():
            if r["status"] != "ok" and r["id"] not in elsewhere:
                nowhere[r["stage"]] = nowhere.get(r["stage"], 0) + 1
        lines.insert(
            1 + bool(total_s),
            f"ok here or published: {all_c['ok'] + len(elsewhere)}/{len(index.rows)} jobs; the {len(elsewhere)} "
            f"published ran elsewhere, their walls {pub_s / 3600:.2f} core-hours (a published table's jobs match "
            "by run dir name, not by config)",
        )
        if nowhere:
            lines.insert(
                2 + bool(total_s),
                f"neither ok here nor published: {sum(nowhere.values())} jobs ("
                + ", ".join(f"{s} {n}" for s, n in nowhere.items())
                + ")",
            )
    failed = [r for r in index.rows.values() if r["status"] == "failed"]
    if failed:
        lines.append(f"failed ({len(failed)}; rerun by the next kdrl-study call):")
        for r in failed[:max_failed]:
            lines.append(f"  {r['id']}: {r.get('error') or 'failed'}  [{study_dir / r['run_dir']}]")
        if len(failed) > max_failed:
            lines.append(f"  ... and {len(failed) - max_failed} more (index: {index.path})")
    blocked = [r for r in index.rows.values() if job_state(r, index.rows, runner is not None) == "blocked"]
    if blocked:
        lines.append(f"blocked ({len(blocked)}): their teacher failed, they run once it is ok")
    return "\n".join(lines), sum(v for k, v in all_c.items() if k != "ok")


# ---- a stage's multirun: its own process group ------------------------------------------------------------
# Each stage's multirun runs in a session (process group) of its own, recorded in .launch/<stage>.pid:
# a stopped kdrl-study (SIGTERM, SIGHUP, Ctrl-C) stops the whole group (joblib's worker processes
# included); a killed one (SIGKILL) takes its multirun along (PR_SET_PDEATHSIG), and the next call
# waits for any job of the old group still running before it launches anything, so no job runs twice.
HOST = socket.gethostname()


def proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, process group, start time in ticks) of a local process from /proc, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return (fields[0], int(fields[2]), fields[19]) if len(fields) > 19 else None


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid`` on this host."""
    out = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if entry.name.isdigit():
            st = proc_stat(int(entry.name))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return out


def stop_group(pgid: int, grace_s: float = 30.0) -> None:
    """SIGTERM to the group, then SIGKILL to what is left after ``grace_s``."""
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.time() + grace_s
    while group_members(pgid) and time.time() < deadline:
        time.sleep(0.2)
    if group_members(pgid):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def die_with_parent() -> None:
    """In the multirun child (preexec_fn): SIGTERM when the kdrl-study that started it dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def launch_record(study_dir: Path, stage: str) -> Path:
    return Path(study_dir) / ".launch" / f"{stage}.pid"


def leftover_multiruns(study_dir: Path) -> list[dict[str, Any]]:
    """Multiruns an earlier kdrl-study started on this host whose process group still has live
    processes (its driver was killed; a job in a worker process may still be running)."""
    out = []
    for path in sorted((Path(study_dir) / ".launch").glob("*.pid")):
        try:
            rec = json.loads(path.read_text())
            pgid = int(rec["pgid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if rec.get("host") == HOST and rec.get("driver") != os.getpid() and group_members(pgid):
            out.append({**rec, "path": str(path)})
    return out


class StudyStopped(KdrlUserError, RuntimeError):
    """kdrl-study was stopped by a signal (SIGTERM, SIGHUP, Ctrl-C): its stage's multirun was stopped too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return (
            f"stopped by {signal.Signals(self.signum).name}: the running stage's jobs were stopped, finished ones "
            "are kept; rerun the same kdrl-study command to go on (unfinished jobs resume from their checkpoints)"
        )


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT (Ctrl-C) raise StudyStopped in the main thread: the stage's multirun is
    stopped and the user reads one line, not a KeyboardInterrupt traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise StudyStopped(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


# ---- running ---------------------------------------------------------------------------------------------
@dataclass
class Runner:
    """One kdrl-study call on one study dir."""

    study: dict[str, Any]
    study_dir: Path
    launcher: str = "joblib"
    hydra_args: Sequence[str] = ()
    poll_s: float = 2.0
    table_every_s: float = 120.0
    slurm_check_s: float = 10.0  # launcher=slurm: how often squeue is asked whether the stage's jobs still exist
    slurm_grace_s: float = 20.0  # ... and how long none may exist, some without a result, before the multirun ends
    say: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise StudyError(f"launcher must be one of {', '.join(LAUNCHERS)}, got '{self.launcher}'")
        self.index = Index.load(self.study_dir)
        self.saved_at = 0.0
        self.wandb: dict[str, Any] | None = None  # jobs_wandb(study), once it is needed
        # published jobs run again for their file (adopt_published): job id -> the published file's sha256
        self.regenerated: dict[str, str | None] = {}

    def save(self, force: bool = True) -> None:
        if force or time.time() - self.saved_at > 10:
            self.index.save()
            self.saved_at = time.time()

    def plan_only(self) -> None:
        """Plan the study and write its index (statuses from the run dirs) without running a job."""
        self.index.merge(plan(self.study, self.study_dir), self.study)
        self.index.refresh(check_ok=True)
        if runner_alive(self.study_dir) is None:  # a running kdrl-study owns the index
            self.save()

    def run(self, stages: Sequence[str] | None = None, publish: bool = False) -> int:
        from kdrl.locks import LockTimeout, exclusive_lock

        selected = list(stages or self.study["stages"])
        unknown = [s for s in selected if s not in self.study["stages"]]
        if unknown:
            raise StudyError(
                f"no stage {', '.join(unknown)} in study '{self.study['name']}' (has: {', '.join(self.study['stages'])})"
            )
        self.study_dir.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive_lock(self.study_dir / LOCK_FILE, timeout_s=0.0, poll_s=0.1), signals_raise():
                return self._run(selected, publish)
        except LockTimeout:
            holder = runner_alive(self.study_dir) or {}
            raise StudyError(
                f"another kdrl-study is running {self.study_dir} (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}): kdrl-study --status {self.study_dir} shows its progress"
            ) from None

    def _run(self, selected: list[str], publish: bool) -> int:
        t0 = time.time()
        jobs = plan(self.study, self.study_dir)
        self.index.merge(jobs, self.study)
        self.index.refresh(check_ok=True)
        self.save()
        (self.study_dir / "study.json").write_text(json.dumps(self.study, indent=1))
        todo = [r for r in self.index.rows.values() if r["stage"] in selected and r["status"] != "ok"]
        c = counts(list(self.index.rows.values()), self.index.rows, False)
        self.say(
            f"study {self.study['name']}: {len(self.index.rows)} jobs in {len(self.study['stages'])} stages "
            f"({fmt_counts(c)}); {len(todo)} to run in stage(s) {', '.join(selected)} on launcher={self.launcher} "
            f"-> {self.study_dir}"
        )
        self.wait_for_leftovers()
        for stage in selected:
            self.adopt_published(stage)
            self.run_stage(stage)
            self.check_regenerated(stage)
            self.write_tables()
            self.log_tables()  # the study's W&B run, once a stage is done (unchanged tables: none)
        texts = self.write_tables(publish=publish)
        if publish:
            for stage in selected:
                self.publish_jobs(stage)
        for text in texts:
            self.say("\n" + text)
        self.log_tables()
        rows = [r for r in self.index.rows.values() if r["stage"] in selected]
        c = counts(rows, self.index.rows, False)
        self.index.meta["progress"] = None
        self.save()
        self.say(
            f"\nstudy {self.study['name']}: {fmt_counts(c)} in stage(s) {', '.join(selected)} ({fmt_duration(time.time() - t0)})"
        )
        failed = [r for r in rows if r["status"] == "failed"]
        for r in failed[:50]:
            self.say(f"  failed {r['id']}: {r.get('error')}  [{self.study_dir / r['run_dir']}]")
        if failed:
            self.say(f"  {len(failed)} failed job(s): the next kdrl-study call reruns them")
        return 0 if c["ok"] == len(rows) else 1

    def published_dir(self, stage: str) -> Path | None:
        where = self.study["stages"][stage].get("published")
        return None if not where else resolve_published(str(where))

    def adopt_published(self, stage: str) -> None:
        """A stage with ``published: <dir>`` takes each unfinished job from <dir>/<job name>/ when the
        published job was the same app (its job.json) and ran with the config the job's overrides compose
        today (its results.json; ``published_drift``): the files are copied into the run dir, so the
        students load the published teachers and nothing is trained again. A published job without its
        product (a data stage's recording is published as its results only: 1.4-3.4 MB a MinAtar recording,
        regenerated in seconds) runs again, and ``check_regenerated`` compares what it writes with the
        published file's sha256."""
        src = self.published_dir(stage)
        if src is None:
            return
        adopted, rerun = [], []
        for row in self.index.rows.values():
            if row["stage"] != stage or row["status"] == "ok":
                continue
            pub = src / row["name"]
            try:
                meta = json.loads((pub / "job.json").read_text())
            except (OSError, ValueError):
                continue
            if meta.get("app") != row["app"]:
                self.say(f"stage {stage}: published {pub} was a {meta.get('app')} job, not {row['app']}: not used")
                continue
            drift = published_drift(pub, row["app"], row["overrides"])
            if drift:
                self.say(f"stage {stage}: published {pub} was run with another config ({drift}): not used")
                continue
            dest = self.study_dir / row["run_dir"]
            if (dest / "results.json").exists():
                continue  # a run of its own (failed, or another config): the study reruns it
            product = PRODUCTS.get(row["app"])
            if product is not None and not (pub / product).is_file():
                self.regenerated[row["id"]] = product_sha256(pub)
                rerun.append(row)
                continue
            for name in PUBLISHED_FILES:
                if (pub / name).is_file():
                    (dest / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(pub / name, dest / name)
            adopted.append(row)
        if adopted:
            self.index.refresh(adopted)
            self.save()
            ok = sum(r["status"] == "ok" for r in adopted)
            self.say(f"stage {stage}: {ok} job(s) taken from the published {src}")
        if rerun:
            checked = any(self.regenerated[r["id"]] for r in rerun)
            self.say(
                f"stage {stage}: {len(rerun)} published job(s) in {src} hold their results but not their "
                f"{PRODUCTS[rerun[0]['app']]}: they run again here"
                + (", checked against the published sha256" if checked else "")
            )

    def check_regenerated(self, stage: str) -> None:
        """Did each job that ran again for its file (``adopt_published``) write the published file, byte for
        byte? Said in one line for the stage, and one per job that did not: students distilled here from a
        file that differs are not the published runs."""
        ids = [i for i in self.regenerated if self.index.rows[i]["stage"] == stage]
        same, differ = 0, []
        for job_id in ids:
            row = self.index.rows[job_id]
            now = product_sha256(self.study_dir / row["run_dir"]) if row["status"] == "ok" else None
            if now is None:
                continue  # not ok: the stage's own lines say so
            if now == self.regenerated[job_id]:
                same += 1
            else:
                differ.append((job_id, self.regenerated[job_id], now))
        if same or differ:
            self.say(
                f"stage {stage}: {same} of {same + len(differ)} regenerated file(s) identical to the published "
                "ones (sha256)"
            )
        for job_id, then, now in differ:
            self.say(
                f"stage {stage}: {job_id} wrote another file than the published one (sha256 {str(then)[:12]} "
                f"published, {now[:12]} here): the students distilled from it here are not the published runs"
            )

    def publish_jobs(self, stage: str) -> None:
        """``publish=true``: copy the stage's finished jobs (PUBLISHED_FILES, no checkpoints) to its
        ``published`` dir, with job.json (app, overrides) to match them against a later declaration."""
        dest_root = self.published_dir(stage)
        if dest_root is None:
            return
        rows = [r for r in self.index.rows.values() if r["stage"] == stage and r["status"] == "ok"]
        for row in rows:
            src, dest = self.study_dir / row["run_dir"], dest_root / row["name"]
            try:  # already published as this job (e.g. taken from there by another study): leave it as it is
                meta = json.loads((dest / "job.json").read_text())
                if meta.get("app") == row["app"] and run_shaping(meta.get("overrides") or []) == run_shaping(
                    row["overrides"]
                ):
                    continue
            except (OSError, ValueError):
                pass
            for name in PUBLISHED_FILES[:-1]:
                if (src / name).is_file():
                    (dest / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src / name, dest / name)
            (dest / "job.json").write_text(json.dumps({"app": row["app"], "overrides": row["overrides"]}, indent=1))
        if rows:
            self.say(f"stage {stage}: {len(rows)} job(s) published to {dest_root}")

    def running_elsewhere(self) -> dict[str, dict[str, Any]]:
        """Unfinished jobs whose run dir lock (the job runner's job_lock) has a live holder: still running
        in a process this call did not start (a killed kdrl-study's multirun, a cluster job)."""
        from kdrl.locks import live_holder

        out = {}
        for r in self.index.rows.values():
            if r["status"] not in DONE:
                holder = live_holder(self.study_dir / r["run_dir"] / JOB_LOCK)
                if holder is not None:
                    out[r["id"]] = holder
        return out

    def wait_for_leftovers(self) -> None:
        """Jobs of an earlier kdrl-study's multirun may still run (it was killed): wait for them to end
        (their results count) rather than start them a second time; then stop what is left of its
        process group on this host (idle worker processes)."""
        live = self.running_elsewhere()
        if live:
            first, h = next(iter(live.items()))
            self.say(
                f"{len(live)} job(s) of this study still run in another process ({first}: pid {h.get('pid')} on "
                f"{h.get('host')}), left by a kdrl-study that was stopped: waiting for them to end, not running them twice"
            )
            t0 = time.time()
            while live:
                time.sleep(self.poll_s)
                live = self.running_elsewhere()
            self.index.refresh()
            self.say(f"the earlier job(s) ended ({fmt_duration(time.time() - t0)})")
        for rec in leftover_multiruns(self.study_dir):
            stop_group(int(rec["pgid"]), grace_s=10.0)
            Path(rec["path"]).unlink(missing_ok=True)
        self.save()

    def run_stage(self, stage: str) -> None:
        rows = [r for r in self.index.rows.values() if r["stage"] == stage]
        todo = [r for r in rows if r["status"] != "ok"]
        if not todo:
            self.say(f"stage {stage}: all {len(rows)} jobs ok, nothing to run")
            return
        ready = [r for r in todo if job_state({**r, "status": "pending"}, self.index.rows, False) == "pending"]
        held = [r for r in todo if r not in ready]
        for r in held:
            teachers = ", ".join(n for n in r["needs"] if self.index.rows[n]["status"] != "ok")
            r["error"] = f"its teacher is not ok: {teachers}"
        if held:
            self.say(f"stage {stage}: {len(held)} job(s) held back: their teacher is not ok (kdrl-study --status)")
        if not ready:
            return
        app = rows[0]["app"]
        launch = self.study_dir / ".launch" / f"{stage}.json"
        launch.parent.mkdir(parents=True, exist_ok=True)
        launch.write_text(json.dumps([[*r["overrides"], f"hydra.sweep.subdir={quote(r['name'])}"] for r in ready]))
        cmd = [
            sys.executable, "-m", APPS[app], "-m", f"launcher={self.launcher}", "hydra/sweeper=kdrl_listed",
            f"hydra.sweeper.jobs_file={launch}", f"hydra.sweep.dir={self.study_dir / stage}", *self.hydra_args,
        ]  # fmt: skip
        batch = self.study["stages"][stage].get("max_batch_size")
        if batch:
            cmd.append(f"hydra.sweeper.max_batch_size={int(batch)}")
        log_path = self.study_dir / "logs" / f"{stage}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for r in ready:  # a failed job's old results.json must not count as this run's
            if r["status"] == "failed":
                r["since"] = now
            r["status"], r["error"] = "pending", None
            r.pop("lost", None)
        self.say(
            f"stage {stage}: {len(ready)} job(s) as one kdrl-{app} multirun on launcher={self.launcher} (log: {log_path})"
        )
        t0 = time.time()
        with open(log_path, "a") as log:
            log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
            log.flush()
            env = {**os.environ, "KDRL_NO_PROGRESS": "1"}
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=die_with_parent
            )
            record = launch_record(self.study_dir, stage)
            body = {"stage": stage, "pgid": proc.pid, "host": HOST, "driver": os.getpid(), "started": time.time()}
            record.write_text(json.dumps(body))
            try:
                self.monitor(stage, proc, ready, t0)
            except BaseException:
                stop_group(proc.pid)  # the multirun and its worker processes: no job goes on unwatched
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
                self.index.refresh(ready)
                self.save()
                raise
        deadline = time.time() + 5.0  # idle worker processes left by the multirun
        while group_members(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        if group_members(proc.pid):
            stop_group(proc.pid, grace_s=10.0)
        record.unlink(missing_ok=True)
        self.index.refresh(ready)
        mark_lost(ready, proc.returncode, log_path)
        c = counts(ready, self.index.rows, False)
        self.say(f"stage {stage}: {fmt_counts(c)} ({fmt_duration(time.time() - t0)})")
        if proc.returncode != 0:
            self.say(f"stage {stage}: the multirun exited with code {proc.returncode}; its log ends:")
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            self.say("\n".join("    " + line for line in tail))
        self.index.meta["progress"] = None
        self.save()

    def monitor(self, stage: str, proc: subprocess.Popen, rows: list[dict[str, Any]], t0: float) -> None:
        """Progress while the stage's multirun runs: done, running, failed and an ETA from the pace so far."""
        last_state, last_print, last_table, finished_before = None, 0.0, time.time(), 0
        last_slurm_check, orphaned_since = 0.0, None
        while True:
            done = proc.poll() is not None
            if self.launcher == "slurm" and not done and time.time() - last_slurm_check > self.slurm_check_s:
                last_slurm_check = time.time()
                lost = slurm_lost_tasks(self.study_dir / stage, since=t0)
                orphaned_since = (orphaned_since or time.time()) if lost else None
                if lost and time.time() - orphaned_since >= self.slurm_grace_s:
                    self.say(
                        f"stage {stage}: SLURM runs none of its jobs any more and {len(lost)} never returned "
                        f"(killed? {', '.join(lost)}): ending the multirun, which would wait for them forever "
                        "(submitit sees a job's end through sacct, and this cluster may keep no accounting)"
                    )
                    proc.terminate()
                    orphaned_since = None
            self.index.refresh(rows)
            c = counts(rows, self.index.rows, True)
            finished = c["ok"] + c["failed"]
            elapsed = time.time() - t0
            left = len(rows) - finished
            eta = f", ETA {fmt_duration(elapsed / finished * left)}" if finished and left else ""
            line = f"[{stage} {fmt_duration(elapsed)}] {finished}/{len(rows)} done ({c['ok']} ok, {c['failed']} failed), {c['running']} running{eta}"
            self.index.meta["progress"] = line
            state = (c["ok"], c["failed"], c["running"])
            if state != last_state or time.time() - last_print > 60:  # counts changed, or a minute passed
                if not done:
                    self.say(line)
                last_state, last_print = state, time.time()
                self.save(force=False)
            if finished > finished_before and time.time() - last_table > self.table_every_s:
                self.write_tables()
                last_table, finished_before = time.time(), finished
            if done:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):  # back at once when the multirun ends
                proc.wait(timeout=self.poll_s)

    def write_tables(self, publish: bool = False, names: Sequence[str] | None = None) -> list[str]:
        """Every declared table (or those in ``names``) from the jobs finished so far; each table's text
        (a table that cannot be written yet says why and never stops the study)."""
        declared = self.study.get("tables") or {}
        unknown = [n for n in names or () if n not in declared]
        if unknown:
            raise StudyError(
                f"no table {', '.join(unknown)} in study '{self.study['name']}' (has: {', '.join(declared) or 'none'})"
            )
        texts = []
        for name, spec in declared.items():
            if names is not None and name not in names:
                continue
            try:
                text = write_table(self.study, self.index, name, spec or {}, publish)
            except OSError as exc:  # a full disk: each file is written whole or not at all (kdrl.io.atomic_write)
                from kdrl.errors import one_line

                text = f"table {name}: not rewritten: {one_line(exc)[:300]}"
            except Exception as exc:
                text = f"table {name}: not written yet ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            if text:
                texts.append(text)
        return texts

    def log_tables(self) -> None:
        """The tables written so far as one W&B run in the study's group (kdrl.study_wandb), as its jobs
        log (offline by default; the declaration's ``wandb`` decides when set); not again while they
        are unchanged (the fingerprint of the last logged run is kept in the index)."""
        if os.environ.get("WANDB_MODE") == "disabled" or self.study.get("wandb") == "disabled":
            return
        from kdrl.study_wandb import log_study_tables

        if self.wandb is None:
            self.wandb = jobs_wandb(self.study)
        if self.wandb["mode"] == "disabled":
            return
        rows = list(self.index.rows.values())
        summary = {f"jobs/{k}": v for k, v in counts(rows, self.index.rows, False).items()}
        summary["jobs/total"] = len(rows)
        for stage in self.study["stages"]:
            c = counts([r for r in rows if r["stage"] == stage], self.index.rows, False)
            summary.update({f"jobs/{stage}/{k}": v for k, v in c.items()})
        logged = log_study_tables(
            self.study,
            self.study_dir,
            mode=self.wandb["mode"],
            project=self.wandb["project"],
            tags=self.wandb["tags"],
            summary=summary,
            last=self.index.meta.get("wandb_tables"),
            say=self.say,
        )
        self.index.meta["wandb_tables"] = logged  # saved with the index (kdrl-study --tables: unless a runner owns it)


# ---- tables ----------------------------------------------------------------------------------------------
def table_jobs(study: dict[str, Any], index: Index, spec: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    stages = list(spec.get("stages") or [s for s, st in study["stages"].items() if st["app"] not in ("train", "data")])
    return stages, [r for r in index.rows.values() if r["stage"] in stages]


def write_table(study: dict[str, Any], index: Index, name: str, spec: dict[str, Any], publish: bool) -> str:
    """One declared table into <study dir>/tables/<name>/ (table.md/.tex, cells and runs CSV, plots),
    from the finished jobs of its stages; with ``publish`` also copied to its ``publish`` dir."""
    import pandas as pd

    from kdrl import tables as T

    stages, rows = table_jobs(study, index, spec)
    finished = [r for r in rows if r["status"] in DONE]
    out = index.study_dir / "tables" / name
    title = spec.get("title") or f"{study['name']}: {name}"

    def headed(n_finished: int, n_jobs: int) -> str:
        state = "complete" if n_finished == n_jobs else f"PARTIAL: {n_finished} of {n_jobs} jobs finished"
        line = f"# {title}\n\n{state}. Regenerate: `kdrl-study study={study['name']}`"
        return line + (f" (`publish=true` copies it to {spec['publish']})" if spec.get("publish") else "") + ".\n\n"

    published = published_table_runs(study, spec, stages, name)  # finished runs, each counted as a job
    n_finished = len(finished) + len(published)
    n_jobs = len(rows) + len(published)
    head = headed(n_finished, n_jobs)
    if not n_finished:
        return ""
    out.mkdir(parents=True, exist_ok=True)
    write_text, write_csv = T.write_text_atomic, T.write_csv_atomic  # a full disk keeps the previous files
    files = {s: [index.study_dir / r["run_dir"] / "results.json" for r in finished if r["stage"] == s] for s in stages}
    if spec.get("kind") == "time_to_score":  # teachers: when each reached its env's score (issue 26)
        frames = [T.time_to_score(fs, spec.get("targets") or {}).assign(stage=s) for s, fs in files.items() if fs]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if df.empty:
            return ""
        df.to_csv(out / "runs.csv", index=False)
        note = spec.get("note", "")
        text = head + (f"{note}\n\n" if note else "") + T.time_to_score_markdown(df) + "\n"
        if spec.get("plots", True):
            with contextlib.suppress(Exception):  # a plot never costs the table
                T.plot_time_to_score(df, out)
    elif spec.get("kind") == "budget":  # students over a budget sweep: where the score stops rising (issue 26)
        # its own stages' runs, then the published runs of other stages (their final scores: all a budget needs)
        frames = [T.collect(fs).assign(stage=s) for s, fs in files.items() if fs]
        parts = [*frames, *([published] if len(published) else [])]
        if not parts:
            return ""
        df = pd.concat(parts, ignore_index=True)
        df = df[df["kind"] == "student"]
        for entry in spec.get("exclude") or []:  # as on a student table: a budget table's runs, then its where
            df = df[~excluded(df, entry, name)]
        for key, values in (spec.get("where") or {}).items():
            df = df[matching(df, key, values, name)]
        groups = list(spec.get("groups") or ["env_id", "student_size"])
        x, metric = spec.get("x") or "grad_steps", spec.get("metric") or "normalized_score"
        if df.empty:
            return ""
        df.to_csv(out / "results.csv", index=False)
        margin = float(spec["margin"]) if spec.get("margin") is not None else None  # None: the statistics default
        pair_by = spec.get("pair_by")
        if pair_by is not None and pair_by not in df:
            raise StudyError(f"table {name}: no column {pair_by!r} in the results (pair_by)")
        tab = T.budget_table(df, groups, x, metric, margin, pair_by)
        tab.to_csv(out / "budget.csv", index=False)
        note = noted(spec.get("note", ""), published, df)
        text = head + (f"{note}\n\n" if note else "") + T.budget_markdown(tab, groups, metric, margin, pair_by) + "\n"
        if spec.get("plots", True):
            with contextlib.suppress(Exception):  # a plot never costs the table
                T.plot_budgets(df, groups[0], groups[-1], x, metric, out)
    elif spec.get("kind") == "end_slope":  # students: still improving when their budget ended? (issue 27)
        groups = list(spec.get("groups") or ["env_id", "student_size"])
        x, metric = spec.get("x") or "env_steps", spec.get("metric") or "normalized_score"
        ok = [index.study_dir / r["run_dir"] / "results.json" for r in finished if r["status"] == "ok"]
        curves = T.end_slope_curves(ok, groups, x, metric)
        if curves.empty:
            return ""
        margin = float(spec["margin"]) if spec.get("margin") is not None else None
        tab = T.end_slope_table(curves, groups, x, metric, margin)
        write_csv(out / "curves.csv", curves.drop(columns="run_dir"))
        write_csv(out / "end_slope.csv", tab)
        note = spec.get("note", "")
        text = head + (f"{note}\n\n" if note else "") + T.end_slope_markdown(tab, groups, x, metric, margin) + "\n"
        if spec.get("plots", True):
            with contextlib.suppress(Exception):  # a plot never costs the table
                T.plot_budgets(curves, groups[0], groups[-1], x, metric, out, filename="score_vs_env_steps.png")
    elif spec.get("kind") == "multitask":
        # a stage's label names its method (two joint_dqn stages at different budgets are two rows)
        labels = dict(spec.get("stage_labels") or {})
        frames = [
            T.collect_multitask(fs).assign(**({"method": labels[st]} if st in labels else {}))
            for st, fs in files.items()
            if fs
        ]
        df = pd.concat(frames, ignore_index=True) if frames else T.collect_multitask([])
        body = T.multitask_report(df)
        write_csv(out / "runs.csv", df)
        text = head + body + "\n"
        if spec.get("aggregate") or spec.get("compare"):  # across the tasks, each task's % of its own teacher
            per_task = df[(df["status"] == "ok") & ~df["column"].isin(T.MULTITASK_SUMMARY_COLUMNS)]
            per_task = per_task.rename(columns={"column": "task"}).assign(normalized_score=per_task["pct"] / 100.0)
            text += aggregate_section(per_task, "task", "method", "normalized_score", spec, out)
    else:
        frames = []
        for stage, fs in files.items():
            if fs:
                df = T.collect(fs)
                df["stage"] = stage
                frames.append(df)
        df = pd.concat([*frames, published] if len(published) else frames, ignore_index=True)
        rows_key, cols_key = spec.get("rows") or "method", spec.get("cols") or "width"
        pending = unfinished_rows(index, [r for r in rows if r["status"] not in DONE], df, rows_key, cols_key)
        if len(pending):
            df = pd.concat([df, pending], ignore_index=True)
        # runs another stage of the table replaces (one stage's game, rerun over more teachers by another),
        # matched on the stages' own names, before their labels
        for entry in spec.get("exclude") or []:
            left_out = excluded(df, entry, name)
            n_finished -= int((df.loc[left_out, "status"] != T.UNFINISHED).sum())
            n_jobs -= int(left_out.sum())
            # the table's jobs are those it shows: exact once its stages are done (before, a job not started
            # whose cell has no run yet is not known to match)
            head = headed(n_finished, n_jobs)
            df = df[~left_out]
        # one column for stages that differ only in their teachers' stage (compression, compression_seaquest)
        if spec.get("stage_labels"):  # the stages' own names kept beside their labels (a later published_runs join)
            df["study_stage"] = df.get("study_stage", df["stage"]).fillna(df["stage"])
            df["stage"] = df["stage"].replace(dict(spec["stage_labels"]))
        kind = spec.get("kind") or "student"
        if kind != "all":
            df = df[df["kind"] == kind]
        for key, values in (spec.get("where") or {}).items():
            df = df[matching(df, key, values, name)]
        rows_key, cols_key = spec.get("rows") or "method", spec.get("cols") or "width"
        metric = spec.get("metric") or "normalized_score"
        if df.empty:
            return ""
        for col in (rows_key, cols_key, metric):
            if col not in df:
                raise StudyError(f"table {name}: no column '{col}' in the results")
        write_csv(out / "results.csv", df)
        summary = T.summary_table(df, rows_key, cols_key, metric)
        write_text(out / "table.tex", summary.latex)
        write_csv(out / "table_cells.csv", summary.cells)
        note = noted(spec.get("note", ""), published, df)
        text = head + (f"{note}\n\n" if note else "") + f"{summary.caption}\n\n{summary.markdown}\n"  # as kdrl-table
        ref = spec.get("reference")
        if ref:
            text += "\n" + reference_lines(ref, summary.cells, rows_key, cols_key, metric) + "\n"
        if spec.get("aggregate") or spec.get("compare"):
            text += aggregate_section(df, rows_key, cols_key, metric, spec, out)
        if spec.get("plots", True):
            group = spec.get("curve_group") or "method"
            paths = [] if group == "stage" else [f for fs in files.values() for f in fs]
            try:
                T.plot_all(df, summary.cells, paths, out, rows_key, cols_key, metric, group)
                if group == "stage":
                    plot_stage_curves(labelled_stage_files(files, spec.get("stage_labels")), out)
            except Exception as exc:  # e.g. every score refused: nothing to put on a log axis
                text += f"\n(plots not written: {type(exc).__name__}: {' '.join(str(exc).split())[:160]})\n"
    write_text(out / "table.md", text)
    if publish and spec.get("publish"):
        dest = Path(spec["publish"])
        if n_finished < n_jobs and published_complete(dest):  # a study dir holding part of the study's stages
            return text + (
                f"\n(not published: {n_finished} of {n_jobs} jobs finished here, and {dest} holds the complete "
                "table: publish it from a study dir that has them all)\n"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for f in out.iterdir():
            if f.is_file():
                shutil.copy2(f, dest / f.name)
        text += f"\n(published to {dest})\n"
    return text


def published_complete(dest: Path) -> bool:
    """Whether ``dest`` holds a table published complete (its table.md's state line): a partial rebuild,
    e.g. from a study dir that ran only some of the study's stages, must not replace it."""
    try:
        lines = (dest / "table.md").read_text().splitlines()
    except OSError:
        return False
    return len(lines) > 2 and lines[2].startswith("complete.")


def aggregate_section(df: Any, rows_key: str, cols_key: str, metric: str, spec: dict[str, Any], out: Path) -> str:
    """A table's cross-task aggregates (IQM, mean, P(X > Y) for its ``compare`` pairs, else every pair;
    performance profiles) as Markdown, written beside it (aggregate.md/.csv, profiles plot)."""
    from kdrl import tables as T

    names = {str(v): v for v in df[cols_key].dropna().unique()}
    pairs = [tuple(str(c).split(",")) for c in spec.get("compare") or []]
    try:
        ct = T.cross_task(df, rows_key, cols_key, metric, [(names.get(x, x), names.get(y, y)) for x, y in pairs])
    except ValueError as exc:  # e.g. no finite scores of a compared column yet
        return f"\n(aggregates not written yet: {exc})\n"
    T.write_text_atomic(out / "aggregate.md", ct.markdown + "\n")
    T.write_csv_atomic(out / "aggregate.csv", ct.cells)
    if spec.get("plots", True):
        with contextlib.suppress(Exception):  # a plot never costs the table
            T.plot_profiles(ct, out, metric)
    return "\n" + ct.markdown + "\n"


def unfinished_rows(index: Index, todo: list[dict[str, Any]], done: Any, rows_key: str, cols_key: str) -> Any:
    """Table rows (status ``unfinished``) for the study's jobs not finished yet, so their cells show
    ``n=k of N`` and are marked incomplete: a started job from its run dir's config; one not started
    from a job of its stage that differs only in its seed (a finished one's row, else a started one's)."""
    import pandas as pd

    from kdrl import tables as T

    def group(row: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        return row["stage"], tuple(o for o in row["overrides"] if not o.startswith("seed="))

    templates: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    out, not_started = [], []
    for row in todo:
        run_dir = index.study_dir / row["run_dir"]
        if (run_dir / ".hydra" / "config.yaml").is_file():
            try:
                body = T.unfinished_row(run_dir)
            except Exception:
                body = None
            if body is not None:
                templates.setdefault(group(row), body)
                out.append({**body, "stage": row["stage"]})
                continue
        not_started.append(row)
    needed = {group(r) for r in not_started} - set(templates)
    if needed and "run_dir" in done:  # a finished job's row stands for its group
        by_dir = {str(Path(r)): i for i, r in enumerate(done["run_dir"])}
        for row in index.rows.values():
            key = group(row)
            if key in needed and key not in templates:
                i = by_dir.get(str(index.study_dir / row["run_dir"]))
                if i is not None:
                    templates[key] = done.iloc[i].to_dict()
    for row in not_started:
        t = templates.get(group(row))
        if t is not None:
            run_dir = str(index.study_dir / row["run_dir"])
            out.append({**t, "status": T.UNFINISHED, "run_dir": run_dir, "error": None, "stage": row["stage"]})
    return pd.DataFrame(out)


def published_table_runs(study: dict[str, Any], spec: dict[str, Any], stages: list[str], table: str) -> Any:
    """The runs a table joins from ``published_runs`` (results.csv files a published table of this study wrote,
    one row per run with its stage), but those of the table's own stages: those come from this study's run
    dirs. So a table whose stages ran on another machine is rebuilt here from the committed CSV, beside new
    stages. Its kind and where apply here, so that the header counts the runs the table can show; a stage
    taken from two files, or a stage name this study does not declare (a labelled table's labels), is refused."""
    import pandas as pd

    from kdrl import tables as T

    frames, source = [], {}
    labels = dict(spec.get("stage_labels") or {})
    kind = spec.get("kind") or "student"
    kind = "student" if kind == "budget" else kind  # a budget table's runs are students
    for where in spec.get("published_runs") or []:
        path = resolve_published(where)
        if not path.is_file():
            raise StudyError(f"table {table}: published_runs: no file {path}")
        df = pd.read_csv(path)
        if "stage" not in df or "status" not in df or "kind" not in df:
            raise StudyError(f"table {table}: published_runs: {path} is not a study table's results.csv (no stage)")
        if "study_stage" in df:  # a table with stage_labels wrote its labels in stage, the stages' names here
            df["stage"] = df["study_stage"].fillna(df["stage"])
        unknown = sorted(set(df["stage"].astype(str)) - set(study["stages"]))
        if unknown:
            raise StudyError(
                f"table {table}: published_runs: {path} has runs of {', '.join(unknown)}, no stage of study "
                f"'{study['name']}' (a table's labels in place of its stages' names?)"
            )
        df = df[~df["stage"].isin(stages) & (df["status"] != T.UNFINISHED)]
        for stage in sorted(set(df["stage"])):
            if source.setdefault(stage, where) != where:
                raise StudyError(f"table {table}: published_runs: stage {stage} is in both {source[stage]} and {where}")
        if kind != "all":
            df = df[df["kind"] == kind]
        for key, values in (spec.get("where") or {}).items():  # as on the table's own runs, stage by its label
            shown = df.assign(stage=df["stage"].replace(labels)) if key == "stage" else df
            df = df[matching(shown, key, values, table)]
        # study_stage: the stage's own name, kept when a label replaces it (as on the table's own runs)
        frames.append(df.assign(published_from=where, study_stage=df["stage"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["stage", "status"])


def published_note(published: Any, shown: Any) -> str:
    """One line naming the joined published runs the table shows: how many, of which stages, from where."""
    kept = shown["published_from"].notna()
    if not kept.any():
        return f"None of the {len(published)} published runs joined is shown (exclude and where leave them all out)."
    stages = sorted(set(shown.loc[kept, "study_stage"]))
    sources = sorted(set(shown.loc[kept, "published_from"]))
    return (
        f"{int(kept.sum())} of these runs (stages {', '.join(stages)}) are published runs joined from "
        f"{', '.join(sources)}: their results as published there, without their learning curves."
    )


def noted(note: str, published: Any, shown: Any) -> str:
    """A table's note, and after it the line naming the published runs it joined, when it joined any."""
    if not len(published):
        return note
    line = published_note(published, shown)
    return f"{note}\n\n{line}" if note else line


def matching(df: Any, key: str, values: Any, table: str) -> Any:  # (a DataFrame -> a boolean Series)
    """Which runs have ``key`` among ``values`` (one value or a list, compared as text): a table's where
    and exclude."""
    if key not in df:
        raise StudyError(f"table {table}: no column '{key}' in the results (where / exclude)")
    wanted = {str(v) for v in (values if isinstance(values, list) else [values])}
    return df[key].astype(str).isin(wanted)


def excluded(df: Any, entry: dict[str, Any], table: str) -> Any:  # (a DataFrame -> a boolean Series)
    """Which runs one ``exclude`` entry of a table leaves out: those matching every column it names."""
    import pandas as pd

    return pd.concat([matching(df, key, values, table) for key, values in entry.items()], axis=1).all(axis=1)


def labelled_stage_files(files: dict[str, list[Path]], labels: dict[str, str] | None) -> dict[str, list[Path]]:
    """The stages' run files under the table's ``stage_labels`` (stages sharing a label share a curve), in
    the stages' order: the curves' legend names what the table's columns name."""
    out: dict[str, list[Path]] = {}
    for stage, fs in files.items():
        out.setdefault(str((labels or {}).get(stage, stage)), []).extend(fs)
    return out


def plot_stage_curves(files: dict[str, list[Path]], out: Path) -> None:
    """Learning curves (mean, 95% CI over seeds) with one line per stage (curve_group: stage), one panel
    per game where the stages span several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdrl.tables import learning_curves, plot_curves_by_env

    curves = {
        (env, stage): curve
        for stage, fs in files.items()
        for (env, _), curve in learning_curves(fs, "kind", split="env_id").items()
    }
    if len({env for env, _ in curves}) > 1:
        plot_curves_by_env(curves, out, "stage")
        plt.close("all")
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (_, stage), (x, mean, lo, hi) in curves.items():
        ax.plot(x, mean, label=stage)
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("greedy return (periodic eval)")
    ax.legend(fontsize=8, title="stage")
    ax.set_title("Learning curves (mean, 95% CI over seeds)")
    fig.tight_layout()
    fig.savefig(out / "curves_by_stage.png", dpi=110)
    plt.close(fig)


def reference_lines(ref: dict[str, Any], cells: Any, rows: str, cols: str, metric: str) -> str:
    """The paper's numbers beside ours: ``values`` keyed by a ``cols`` value (``by: cols``, ours the
    ``stat`` over rows of the cell means: geomean or mean) or by a ``rows`` value (``by: rows``, ours
    the mean over cols)."""
    import numpy as np

    from kdrl.scores import geometric_mean
    from kdrl.tables import is_fraction_of_teacher

    by = ref.get("by", "cols")
    scale = 100.0 if is_fraction_of_teacher(metric) else 1.0
    other = rows if by == "cols" else cols
    key = cols if by == "cols" else rows
    stat = ref.get("stat", "geomean" if by == "cols" else "mean")
    label = ref.get("label", "reference")
    head = f"| {key} | ours ({stat} over {other}) | {label} |"
    lines = [f"Beside the paper: {ref.get('note', label)}", "", head, "|---|---|---|"]
    for value, theirs in (ref.get("values") or {}).items():
        means = cells.loc[cells[key].astype(str) == str(value), "mean"].to_numpy(dtype=float)
        if len(means) == 0:
            ours = "–"
        else:
            v = geometric_mean(means) if stat == "geomean" else float(np.mean(means))
            ours = f"{scale * v:.1f}" if np.isfinite(v) else "–"
        lines.append(f"| {value} | {ours} | {theirs} |")
    return "\n".join(lines)
