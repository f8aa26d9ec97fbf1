"""A run's fingerprint: the numbers it produced, for checking that a refactor or a rerun changes none.

A refactor proves itself by identical outputs: fingerprint a fixed set of short jobs before and
after (scripts/fingerprint_runs.py, scripts/fingerprint_compression_runs.py) and ``diff`` them: every
return, loss value, step count and table cell must match exactly. A published table is checked run by
run: ``table_fingerprint`` reads the runs behind a results.csv, each named by its axes, and
``per_run_rows`` writes one row per run and field (exact, and as the tables print it).

What is an outcome: the learning results of results.json and metrics.csv, never timings, paths or
the composed config. The budgets below spell out every step count (no debug group), so a fingerprint
means the same whatever the debug presets become.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The console scripts (kdrl-train, kdrl-distill, ...) next to this interpreter.
BIN = Path(sys.executable).parent
# Results fields that are outcomes of learning (not timings, paths or the composed config).
OUTCOMES = (
    "eval_returns",
    "teacher_returns",
    "eval_return_mean",
    "teacher_return_mean",
    "random_return_mean",
    "env_steps",
    "grad_steps",
    "episodes",
    "params",
    "teacher_params",
    "action_agreement",
    "teacher_periodic_return",
    "return_ratio",
    "normalized_return_ratio",
    "mean_pct_of_teacher",
    "geomean_pct_of_teacher",
    "optimizer_steps",
    "task_env_steps",
    "best_periodic_eval",
)

# The fingerprinted jobs' budgets, every one spelled out.
QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]
TINY_TEACHER = [
    "algo.total_timesteps=3000",
    "algo.learning_starts=500",
    "algo.buffer_size=5000",
    "eval.freq=1500",
    "eval.episodes=2",
    "eval.final_episodes=3",
    *QUIET,
]
SHORT_STUDENT = [
    "distill.total_timesteps=4000",
    "distill.learning_starts=500",
    "eval.freq=1000",
    "eval.episodes=2",
    "eval.final_episodes=3",
    "eval.generalisation_episodes=3",
    "eval.agreement_states=1000",
    *QUIET,
]
TINY_MULTITASK = [
    "multitask.steps_per_task=1200",
    "multitask.learning_starts=300",
    "multitask.buffer_size=2000",
    "multitask.batch_size=32",
    "eval.freq=600",
    "eval.episodes=2",
    "eval.final_episodes=3",
    *QUIET,
]


def job_env(work: Path) -> dict[str, str]:
    """The environment of a fingerprinted job: no W&B, no progress bars, a teacher cache of its own."""
    return {**os.environ, "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1", "KDRL_CACHE": str(work / "cache")}


def run_job(name: str, argv: list[str], env: dict[str, str]) -> Path:
    """Run one console-script job (``argv[0]`` is its name, the last argument ``hydra.run.dir=<dir>``)
    and return its run dir; exits with the job's stderr when it fails."""
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(argv[-1].split("=", 1)[1])


def record_jobs(
    jobs: list[tuple[str, list[str]]],
    work: Path,
    fingerprint_of: Callable[[Path], dict],
    only: list[str] | None = None,
    note: Callable[[dict], str] = lambda f: f"return {f.get('eval_return_mean')}",
) -> dict[str, dict]:
    """Run ``jobs`` (name, argv; in order, later ones may use earlier ones' files) each in its own
    dir under a fresh ``work``, and return each one's fingerprint by name; one line printed per job."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = job_env(work)
    body: dict[str, dict] = {}
    for name, argv in jobs:
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        body[name] = fingerprint_of(run_job(name, argv, env))
        print(f"{name:20s} {time.perf_counter() - t0:6.1f} s  {note(body[name])}", flush=True)
    return body


def metrics_csv(run_dir: Path) -> dict[str, list[float]]:
    """Every logged column of the run's csv/metrics.csv except speeds and wall times."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    cols: dict[str, list[float]] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if v in ("", None) or k.endswith("sps") or "wall" in k:
                    continue
                cols.setdefault(k, []).append(float(v))
    return cols


def is_timing(key: str) -> bool:
    """An eval-history field that is a clock reading (wall_s, train_wall_s, process_s), not an outcome."""
    return "wall" in key or key == "process_s"


def fingerprint(run_dir: Path) -> dict:
    """A run dir's outcomes: results.json's OUTCOMES and status, its eval history without wall
    times, per-task outcomes of a multi-task run, and its metrics.csv."""
    res = json.loads((run_dir / "results.json").read_text())
    out = {k: res[k] for k in OUTCOMES if k in res}
    out["status"] = res.get("status")
    out["eval_history"] = [{k: v for k, v in h.items() if not is_timing(k)} for h in res.get("eval_history") or []]
    if "tasks" in res:
        out["tasks"] = {n: {k: t[k] for k in OUTCOMES if k in t} for n, t in res["tasks"].items()}
    out["metrics"] = metrics_csv(run_dir)
    return out


def weights_hash(path: Path) -> str:
    """sha256 over a policy file's contents, tensors by their bytes (not the zip's layout)."""
    import torch

    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        else:
            h.update(repr(x).encode())

    walk(torch.load(path, weights_only=False, map_location="cpu"))
    return h.hexdigest()


def diff(a, b, where: str = "") -> list[str]:
    """Every difference between two fingerprints, one line each (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'after' if k not in a else 'before'}")
            else:
                out += diff(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


# A table run's identity (the axes a study sweeps) and its outcome columns (not timings or paths).
TABLE_KEYS = ("kind", "env_id", "loss", "temperature", "width", "student_size", "control", "baseline", "seed")
TABLE_OUTCOMES = (
    "status",
    "params",
    "teacher_params",
    "env_steps",
    "grad_steps",
    "eval_return_mean",
    "eval_return_std",
    "teacher_return_mean",
    "random_return_mean",
    "raw_return_ratio",
    "normalized_score",
    "action_agreement",
)
# How the tables print a field: normalized_score and raw ratios as % with one decimal, returns with one.
PRINTED = {"normalized_score": (100, 1), "raw_return_ratio": (100, 1), "action_agreement": (100, 1)}


def table_value(v: str):
    if v in ("", None):
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "e" not in v.lower() else f


def table_fingerprint(results_csv: Path) -> dict:
    """{run name: its outcomes} for every run of a results.csv (one row per run, kdrl-table's columns).
    Raises ValueError when two rows name the same run."""
    body: dict = {}
    with open(results_csv) as fh:
        for row in csv.DictReader(fh):
            # 256 and 256.0 name the same run (pandas writes an int column holding a NaN as floats)
            name = ",".join(f"{k}={table_value(row[k])}" for k in TABLE_KEYS if row.get(k) not in ("", None))
            if name in body:
                raise ValueError(f"{results_csv}: two runs named {name}")
            body[name] = {k: table_value(row[k]) for k in TABLE_OUTCOMES if k in row}
    return body


def printed(field: str, v):
    """``v`` as the tables print ``field``."""
    if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return v
    scale, digits = PRINTED.get(field, (1, 1))
    return f"{v * scale:.{digits}f}"


def per_run_rows(a: dict, b: dict) -> list[dict]:
    """One row per run and field of two table fingerprints: before, after, |difference|, equal
    exactly, equal as printed."""
    rows = []
    for run in sorted(set(a) | set(b)):
        ra, rb = a.get(run) or {}, b.get(run) or {}
        for field in sorted(set(ra) | set(rb)):
            x, y = ra.get(field), rb.get(field)
            num = all(isinstance(v, (int, float)) for v in (x, y))
            rows.append(
                {
                    "run": run,
                    "field": field,
                    "before": x,
                    "after": y,
                    "abs_diff": abs(x - y) if num else "",
                    "identical": not diff(x, y),
                    "identical_printed": printed(field, x) == printed(field, y),
                }
            )
    return rows


def rerun_cells(published: Any, rerun: Any, rows: str, cols: str, metric: str, scale: float = 100.0) -> str:
    """Did a rerun reproduce a published table within what its seeds can tell? (Runs on another CPU are
    not bit-identical: docs/studies_reproduction.md.) Markdown: per cell (``rows`` x ``cols``), the
    published and the rerun mean [95% CI] as the tables compute them (kdrl.tables.aggregate), whether the
    rerun's mean lies inside the published interval, and P(rerun > published) with its CI (0.5: no
    difference); then per column, over the rows both have, the geometric means and P(rerun > published)."""
    import numpy as np  # numpy, pandas and scipy: only for this comparison
    import pandas as pd

    from kdrl.scores import geometric_mean
    from kdrl.statistics import probability_of_improvement
    from kdrl.tables import aggregate

    by = [rows, cols]
    ok = {"published": published[published["status"] == "ok"], "rerun": rerun[rerun["status"] == "ok"]}
    agg = {k: {tuple(r[by]): r for _, r in aggregate(d, by, metric).iterrows()} for k, d in ok.items()}
    runs_of_both = pd.concat([published, rerun], ignore_index=True)

    def order(col: str) -> list:  # first seen; student sizes largest first, as the tables print them
        if col == "student_size" and "params" in runs_of_both:
            return list(runs_of_both.groupby(col)["params"].median().sort_values(ascending=False).index)
        return list(dict.fromkeys(runs_of_both[col]))

    keys = [(r, c) for r in order(rows) for c in order(cols) if (r, c) in agg["published"] or (r, c) in agg["rerun"]]

    def runs(which: str, r: Any, c: Any):
        d = ok[which]
        return d.loc[(d[rows] == r) & (d[cols] == c), metric].dropna().to_numpy(float)

    def text(which: str, key: tuple) -> str:
        a = agg[which].get(key)
        if a is None:
            return "–"
        m, lo, hi = (a[k] * scale for k in ("mean", "ci_low", "ci_high"))
        ci = f"[{lo:.1f}, {hi:.1f}]" if math.isfinite(lo) else f"‡ ({a['flag']})"
        return f"{m:.1f} {ci} (n = {a['n']})"

    lines = [
        f"| {rows} | {cols} | published | rerun | rerun mean inside the published CI | P(rerun > published) [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    shared = [k for k in keys if k in agg["published"] and k in agg["rerun"]]
    inside = 0
    for key in keys:
        if key not in shared:
            lines.append(f"| {key[0]} | {key[1]} | {text('published', key)} | {text('rerun', key)} | – | – |")
            continue
        p, r = agg["published"][key], agg["rerun"][key]
        ins = bool(p["ci_low"] <= r["mean"] <= p["ci_high"])
        inside += ins
        pi, lo, hi = probability_of_improvement({"c": runs("rerun", *key)}, {"c": runs("published", *key)})
        lines.append(
            f"| {key[0]} | {key[1]} | {text('published', key)} | {text('rerun', key)} | {'yes' if ins else '**no**'} "
            f"| {pi:.2f} [{lo:.2f}, {hi:.2f}] |"
        )
    lines += ["", f"Rerun means inside the published 95% CI: {inside} of {len(shared)} cells.", ""]
    lines += [
        f"| {cols} | {rows} | published geometric mean | rerun geometric mean | P(rerun > published) [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for c in order(cols):
        in_both = [r for r, c2 in shared if c2 == c]  # the rows both tables have in this column
        if not in_both:
            continue
        g = {w: geometric_mean(np.array([agg[w][(r, c)]["mean"] * scale for r in in_both])) for w in agg}
        pi, lo, hi = probability_of_improvement(
            {r: runs("rerun", r, c) for r in in_both}, {r: runs("published", r, c) for r in in_both}
        )
        lines.append(
            f"| {c} | {len(in_both)} | {g['published']:.1f} | {g['rerun']:.1f} | {pi:.2f} [{lo:.2f}, {hi:.2f}] |"
        )
    return "\n".join(lines)
