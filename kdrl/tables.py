"""results.json files -> tidy table -> paper-style tables (Markdown, LaTeX) and plots.

Cells report the mean, the interquartile mean (IQM) and a 95% confidence interval of the mean over
seeds (kdrl.statistics.mean_ci: Hall's transformed t, clipped to what the score can take, and flagged
‡ where no interval is reliable); across envs, IQM and mean with stratified-bootstrap CIs, the
probability of improvement and performance profiles (``cross_task``, kdrl-table --aggregate).

The row columns come from the results schema (kdrl.results: the fields marked ``column``); the
geometric mean over tasks is kdrl.scores.geometric_mean. kdrl-table (kdrl.cli.table) and the
multi-task table (kdrl.cli.multitask_table) only parse arguments, call this module and print.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdrl.results import RESULTS_FILE, MultiTaskResult, Record, table_columns
from kdrl.scores import geometric_mean, normalized_bounds, return_range
from kdrl.statistics import (
    FLAG_AT_BOUND,
    MIN_SEEDS,
    UNBOUNDED,
    Bounds,
    aggregate_ci,
    bootstrap_ci,
    iqm,
    mean_ci,
    performance_profile,
    probability_of_improvement,
)

# kdrl-table's row columns, in order (then "method" and the expanded speed / resources /
# generalisation keys). Tables and CSVs are compared bit for bit: the order is the schema's
# ``column`` positions, not the fields' declaration order.
FLAT_FIELDS = table_columns()


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == RESULTS_FILE:
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob(RESULTS_FILE)))
        else:
            raise FileNotFoundError(f"no such results file or directory: {p}")
    # teachers and students both land here; kdrl-table selects by `kind` (--kind)
    return sorted(set(found))


def flatten(res: Mapping[str, Any] | Record) -> dict[str, Any]:
    """One results body -> one row: FLAT_FIELDS (None where absent), the method label, then the
    student's nested speed / resources / generalisation keys as columns."""
    res = res.to_dict() if isinstance(res, Record) else res
    row = {k: res.get(k) for k in FLAT_FIELDS}
    row["method"] = method_name(res)
    budget = budget_env_steps(res)
    for name, hit in (res.get("speed") or {}).items():
        # a run that never reached the level is censored at its budget, never dropped (docs/protocol.md);
        # an early-stopped run's wall time is extrapolated to the budget at its own pace
        row[f"{name}_reached"] = hit is not None
        row[f"{name}_env_steps"] = hit["env_steps"] if hit else budget
        wall, steps = res.get("train_wall_time_s"), res.get("env_steps")
        row[f"{name}_wall_s"] = (
            hit["train_wall_s"] if hit else (wall * budget / steps if wall is not None and steps else np.nan)
        )
    ref = res.get("teacher_reference") or {}  # the score's T and R (kdrl.reference); absent in older results
    row["reference_episodes"] = ref.get("episodes")
    row["reference_teacher_mean"], row["reference_teacher_se"] = ref.get("return_mean"), ref.get("return_se")
    row["reference_random_mean"] = ref.get("random_mean")
    for key, who in (res.get("resources") or {}).items():
        for k, v in who.items():
            row[f"{key}_{k}"] = v
    for name, pair in (res.get("generalisation") or {}).items():
        row[f"gen_{name}_student"], row[f"gen_{name}_teacher"] = pair["student"], pair["teacher"]
    return row


def budget_env_steps(res: Mapping[str, Any]) -> float:
    """The env steps a run was given (a student's distill.total_timesteps, else algo.total_timesteps),
    falling back to the steps it ran when its config does not say."""
    cfg = res.get("config") or {}
    section = cfg.get("distill") if res.get("kind") == "student" else cfg.get("algo")
    budget = (section or {}).get("total_timesteps")
    return float(budget) if budget is not None else float(res.get("env_steps") or np.nan)


def read_result(f: Path) -> dict[str, Any]:
    """A results.json body, or ValueError/OSError naming what is wrong with the file."""
    text = f.read_text()
    if not text.strip():
        raise ValueError("empty file")
    try:
        res = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): truncated?") from exc
    if not isinstance(res, dict) or "kind" not in res or "status" not in res:
        raise ValueError("not a kdrl results file (no kind/status)")
    return res


TIDY_FILE = "results.csv"  # kdrl-table's one row per run; committed with docs/ tables whose runs are not


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per results.json under ``paths``, and the rows of any kdrl-table ``results.csv`` named
    in ``paths`` (so a committed table can be rebuilt without its run dirs; it has no learning curves). A path that does not exist, or a file that cannot
    be read or parsed, becomes a row with status ``unreadable`` and the reason in ``error``: one bad
    file in a sweep of hundreds never costs the table."""
    rows = []
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            rows.append({"status": "unreadable", "error": "no such file or directory", "run_dir": str(p)})
    tidy = [p for p in paths if p.is_file() and p.name == TIDY_FILE]  # a table kdrl-table wrote: its rows again
    frames = [pd.read_csv(p) for p in tidy]
    for f in find_results(p for p in paths if p.exists() and p not in tidy):
        try:
            rows.append(flatten(read_result(f)))
        except (OSError, ValueError) as exc:
            rows.append({"status": "unreadable", "error": str(exc), "run_dir": str(f)})
    return pd.concat([pd.DataFrame(rows), *frames], ignore_index=True) if frames else pd.DataFrame(rows)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """A table file whole or not at all: written beside it, flushed, renamed over it (os.replace); on
    an error (a full disk: kdrl.io.DiskFullError, one line) the previous file is kept."""
    from kdrl.io import atomic_write

    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_csv_atomic(path: str | Path, df: pd.DataFrame) -> Path:
    from kdrl.io import atomic_write

    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


UNFINISHED = "unfinished"  # a run dir Hydra made (.hydra/config.yaml) with no results.json yet: running, or not yet


def job_config(run_dir: Path) -> dict[str, Any]:
    """A run dir's .hydra/config.yaml as plain containers, resolved where it can be."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # an interpolation needing a resolver this process lacks
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def unfinished_row(run_dir: Path) -> dict[str, Any]:
    """The table row a run will have, from its config (as the job runner's jobs fill results.json), with
    status ``unfinished``: it places the run in its cell before it ends."""
    cfg = job_config(run_dir)
    task = cfg.get("task")
    res: dict[str, Any] = {
        "kind": {"teacher": "teacher", "distill": "student"}.get(str(task), str(task)),
        "env_id": (cfg.get("env") or {}).get("id"),
        "seed": cfg.get("seed"),
        "config": cfg,
    }
    if task in ("distill", "multitask"):
        loss, student = cfg.get("loss") or {}, cfg.get("student") or {}
        res.update(
            loss="scratch" if cfg.get("baseline") == "scratch" else loss.get("name"),
            temperature=loss.get("temperature") if isinstance(loss.get("temperature"), int | float) else None,
            width=student.get("width"),
            student_size=student.get("size"),
            depth=student.get("depth"),
            control=str(cfg.get("control")),
            baseline=cfg.get("baseline"),
        )
    row = flatten(res)
    row.update(status=UNFINISHED, run_dir=str(run_dir), error=None)
    return row


def find_unfinished(paths: Iterable[str | Path]) -> list[Path]:
    """Run dirs under ``paths`` (dirs with .hydra/config.yaml) that have no results.json yet."""
    found = set()
    for p in map(Path, paths):
        if not p.is_dir():
            continue
        for cfg in [p / ".hydra" / "config.yaml", *p.rglob(".hydra/config.yaml")]:
            if cfg.is_file() and not (cfg.parent.parent / RESULTS_FILE).exists():
                found.add(cfg.parent.parent)
    return sorted(found)


def collect_unfinished(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row (status ``unfinished``) per run under ``paths`` that has not written results.json."""
    rows = []
    for run_dir in find_unfinished(paths):
        try:
            rows.append(unfinished_row(run_dir))
        except Exception:  # a config being written right now: the run is left out of the counts
            continue
    return pd.DataFrame(rows)


INCOMPLETE = "⧗"


def incomplete_legend() -> str:
    return (
        f"{INCOMPLETE} n=k of N: an incomplete cell, k of its N runs finished so far (the others still running or "
        "not started): its numbers will change"
    )


def mark_incomplete(table: pd.DataFrame, df: pd.DataFrame, rows: str, cols: str) -> pd.DataFrame:
    """``table`` (pivot()) with every cell that has unfinished runs marked ``⧗ n=k of N`` (k finished
    runs of N, failed ones included); a cell with none finished yet shows the marker alone."""
    todo = df[df["status"] == UNFINISHED]
    if todo.empty:
        return table
    table = table.copy()
    counted = df[df["status"] != "pruned"]
    total = counted.groupby([rows, cols], dropna=False).size()
    waiting = todo.groupby([rows, cols], dropna=False).size()
    # aligned, not looked up: a run without a value in rows or cols (a width-given student has no size) is a nan
    # key, which total[(r, c)] cannot find
    counts = pd.concat({"total": total, "waiting": waiting}, axis=1).dropna(subset=["waiting"])
    for (r, c), n_all, k in zip(counts.index, counts["total"].astype(int), counts["waiting"].astype(int)):
        mark = f"{INCOMPLETE} n={n_all - k} of {n_all}"
        old = table.at[r, c] if r in table.index and c in table.columns else None
        if c not in table.columns:
            table[c] = None
        table.loc[r, c] = f"{old} {mark}" if isinstance(old, str) else mark
    try:
        if cols == "student_size":  # named sizes: pivot()'s largest-first order stays (a-z would put rusu_4 first)
            return table.sort_index()
        return table.sort_index().sort_index(axis=1)
    except TypeError:  # mixed label types
        return table


def is_speed_metric(metric: str) -> bool:
    return metric.startswith("to_") and metric.endswith(("_env_steps", "_wall_s"))


def metric_bounds(grp: pd.DataFrame, metric: str) -> Bounds:
    """What ``metric`` can take over the runs of ``grp``: the env's return range for returns, mapped
    through each run's teacher and random returns for the normalised score (kdrl.scores)."""
    envs = grp["env_id"].dropna().unique() if "env_id" in grp else []
    if len(envs) != 1:
        return UNBOUNDED
    if metric == "normalized_score" and {"teacher_return_mean", "random_return_mean"} <= set(grp):
        # the score divides by the teacher reference where the run has one, else by its 20 final episodes
        teacher, random = grp["teacher_return_mean"], grp["random_return_mean"]
        if "reference_teacher_mean" in grp:
            teacher = grp["reference_teacher_mean"].fillna(teacher)
            random = grp["reference_random_mean"].fillna(random)
        return normalized_bounds(envs[0], teacher, random)
    if metric in ("eval_return_mean", "teacher_return_mean"):
        return return_range(envs[0])
    if metric == "action_agreement":
        return (0.0, 1.0)
    return UNBOUNDED


def aggregate(df: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    """One row per group of ok runs: n, mean (median for censored speed metrics), IQM, CI, flag.

    ``refused`` counts ok runs whose metric is nan (a normalised score refused because the teacher
    did not beat random); they are reported, not silently dropped. Speed metrics carry
    ``reached`` (the fraction of seeds that reached the level; the others count at their budget).
    ``flag`` says why a cell has no interval (kdrl.statistics.mean_ci), ``at_bound`` how many seeds
    sit at a bound of the score.
    """
    ok = df[df["status"] == "ok"]
    speed = is_speed_metric(metric)
    out = []
    for key, grp in ok.groupby(list(by), dropna=False, sort=True):
        vals = grp[metric].dropna().to_numpy(dtype=float)
        bounds = metric_bounds(grp, metric)
        if speed:
            lo, hi = bootstrap_ci(vals, np.median)
            flag = ""
        else:
            _, lo, hi, flag = mean_ci(vals, bounds=bounds)
        key = key if isinstance(key, tuple) else (key,)
        scale = max(float(np.max(np.abs(vals))), 1.0) if len(vals) else 1.0
        row = {
            **dict(zip(by, key)),
            "n": len(vals),
            "refused": int(grp[metric].isna().sum()),
            "mean": float(np.median(vals) if speed else np.mean(vals)) if len(vals) else np.nan,
            "iqm": iqm(vals),
            "ci_low": lo,
            "ci_high": hi,
            "flag": flag,
            "at_bound": max(int((np.abs(vals - b) <= 1e-9 * scale).sum()) for b in bounds if np.isfinite(b))
            if any(np.isfinite(bounds))
            else 0,
            "param_ratio": float(grp["param_ratio"].mean()) if "param_ratio" in grp else np.nan,
        }
        if speed:
            reached = grp.get(metric.rsplit("_", 2)[0] + "_reached")
            row["reached"] = float(reached.astype(float).mean()) if reached is not None else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _cell(r: pd.Series, pct: bool) -> str:
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3g}")
    if r.get("flag"):  # no reliable interval: the mean, and why (kdrl.statistics.ci_flag)
        why = f"{r['at_bound']}/{r['n']} at the bound" if r["flag"] == FLAG_AT_BOUND else r["flag"]
        cell = f"{f(r['mean'])} ‡ ({why})"
    else:
        cell = f"{f(r['mean'])} [{f(r['ci_low'])}, {f(r['ci_high'])}]"
    if "reached" in r and np.isfinite(r.get("reached", np.nan)):
        cell += f" ({round(r['reached'] * (r['n']))}/{r['n']} reached)"
    if r.get("refused", 0):
        cell += f" ({r['refused']} refused)"
    return cell + (" †" if r["n"] < MIN_SEEDS else "")


def pivot(agg: pd.DataFrame, rows: str, cols: str, pct: bool) -> pd.DataFrame:
    if agg.empty:  # no ok run yet (all failed or unfinished): an empty table, the caption says why
        return pd.DataFrame()
    agg = agg.copy()
    agg["cell"] = agg.apply(lambda r: _cell(r, pct), axis=1)
    table = agg.pivot(index=rows, columns=cols, values="cell")
    if cols == "student_size" and "param_ratio" in agg:  # named sizes: largest student first, not a-z
        order = agg.groupby(cols)["param_ratio"].mean().sort_values(ascending=False).index
        table = table[[c for c in order if c in table.columns]]
    return table


def col_label(df: pd.DataFrame, cols: str, value: Any) -> str:
    if cols in ("width", "student_size") and "param_ratio" in df:
        ratio = df.loc[df[cols] == value, "param_ratio"].mean()
        if not np.isfinite(ratio):  # only unfinished runs so far
            return f"{'width ' if cols == 'width' else ''}{value}"
        return f"{'width ' if cols == 'width' else ''}{value} ({100 * ratio:.1f}% params)"
    return f"{cols} {value}"


def to_markdown(table: pd.DataFrame, df: pd.DataFrame, rows: str, cols: str) -> str:
    header = [rows] + [col_label(df, cols, c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for idx, r in table.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) if isinstance(v, str) else "–" for v in r]) + " |")
    return "\n".join(lines)


def to_latex(table: pd.DataFrame, df: pd.DataFrame, rows: str, cols: str, caption: str) -> str:
    esc = lambda s: str(s).replace("%", r"\%").replace("_", r"\_")  # noqa: E731
    header = " & ".join([esc(rows)] + [esc(col_label(df, cols, c)) for c in table.columns])
    body = "\n".join(
        " & ".join([esc(i)] + [esc(v) if isinstance(v, str) else "--" for v in r]) + r" \\" for i, r in table.iterrows()
    )
    spec = "l" + "c" * len(table.columns)
    return (
        f"\\begin{{table}}[t]\n\\centering\n\\caption{{{esc(caption)}}}\n\\begin{{tabular}}{{{spec}}}\n\\toprule\n"
        f"{header} \\\\\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n\\end{{table}}\n"
    )


TEMPERED = ("kl", "kl_t1", "kl_rusu", "ce", "hybrid", "qdagger", "feature", "kl_feature")


def method_name(res: Mapping[str, Any]) -> str:
    """A row label: the loss, with its temperature where the loss has one."""
    loss = res.get("loss")
    temp = res.get("temperature")
    if loss in TEMPERED and temp is not None and not (isinstance(temp, float) and np.isnan(temp)):
        return f"{loss} (tau={float(temp):g})"
    return str(loss) if loss is not None else str(res.get("kind"))


def learning_curves(
    paths: Iterable[str | Path], group: str, split: str | None = None
) -> dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per group value: (env_steps, mean, ci_low, ci_high) of periodic eval returns over seeds; the band
    stays inside the env's return range, and is left out (nan) where mean_ci flags the point. With
    ``split`` (e.g. env_id) the keys are (split value, group value): returns of different games are not
    averaged together."""
    curves: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {}
    ranges: dict[Any, Bounds] = {}
    for f in find_results(p for p in map(Path, paths) if p.exists() and p.name != TIDY_FILE):
        try:
            res = read_result(f)
        except (OSError, ValueError):
            continue  # counted as unreadable by collect()
        if res.get("status") != "ok" or not res.get("eval_history"):
            continue
        hist = res["eval_history"]
        key = method_name(res) if group == "method" else res.get(group)
        if split is not None:
            key = (res.get(split), key)
        rng = return_range(res.get("env_id"))
        ranges[key] = rng if ranges.get(key, rng) == rng else UNBOUNDED  # mixed envs: no common range
        curves.setdefault(key, []).append(
            (np.array([h["env_steps"] for h in hist]), np.array([h["return_mean"] for h in hist]))
        )
    out = {}
    for key, runs in curves.items():
        grid = np.unique(np.concatenate([s for s, _ in runs]))
        # each seed's curve held constant after its last evaluation (early-stopped runs)
        ys = np.stack([np.interp(grid, s, y, left=np.nan, right=y[-1]) for s, y in runs])
        mean = np.nanmean(ys, axis=0)
        cis = np.array([mean_ci(col[~np.isnan(col)], bounds=ranges[key])[1:3] for col in ys.T])
        out[key] = (grid, mean, cis[:, 0], cis[:, 1])
    return out


# ---- kdrl-table's report -----------------------------------------------------------------------------
def is_fraction_of_teacher(metric: str) -> bool:
    """Metrics shown as % of teacher (normalized_score, raw_return_ratio); others as they are."""
    return metric == "normalized_score" or metric.endswith("return_ratio")


def geomean_row(agg: pd.DataFrame, cols: str, order: list) -> str:
    """Rusu et al. summarise games by the geometric mean of per-game % of teacher: one Markdown row,
    one cell per column in ``order`` (the pivot table's). No floor: a mean <= 0 leaves the cell empty."""
    cells = []
    for col in order:
        g = geometric_mean(agg.loc[agg[cols] == col, "mean"].to_numpy(dtype=float))
        cells.append(f"{100 * g:.1f}" if np.isfinite(g) else "– (a mean <= 0)")
    return "| geometric mean | " + " | ".join(cells) + " |"


@dataclass
class SummaryTable:
    """What kdrl-table writes and prints for one (rows, cols, metric)."""

    caption: str
    markdown: str  # with the geometric-mean row when rows are several envs and the metric a fraction
    latex: str
    cells: pd.DataFrame  # aggregate(): one row per (rows, cols) with n, mean, iqm, CI
    iqm: pd.DataFrame  # rows x cols, in % when the metric is a fraction of the teacher, 1 decimal


CI_NAME = "Hall's transformed-t (Student's t below 5 seeds), clipped to the score's range"


def summary_table(df: pd.DataFrame, rows: str, cols: str, metric: str) -> SummaryTable:
    """Mean [95% CI] over seeds of ``metric`` for each (rows, cols) over the ok runs of ``df`` (aggregate)."""
    agg = aggregate(df, [rows, cols], metric)
    pct = is_fraction_of_teacher(metric)
    pruned = int((df["status"] == "pruned").sum())  # stopped by a search's pruner (kdrl.search): not failures
    unfinished = int((df["status"] == UNFINISHED).sum())  # still running (or not started): not failures
    failed = int((df["status"] != "ok").sum()) - pruned - unfinished
    waiting = f"; {unfinished} run(s) not finished yet ({incomplete_legend()})" if unfinished else ""
    if agg.empty and not unfinished:  # every run failed (or none finished): say so instead of a table
        caption = f"{metric}: no ok runs ({failed} failed)"
        return SummaryTable(caption, f"_{caption}_", f"% {caption}\n", agg, pd.DataFrame())
    if agg.empty:
        caption = f"{metric}: no ok runs yet ({failed} failed){waiting}"
        table = mark_incomplete(pd.DataFrame(), df, rows, cols)
        md = to_markdown(table, df, rows, cols)
        return SummaryTable(caption, md, to_latex(table, df, rows, cols, caption), agg, pd.DataFrame())
    table = mark_incomplete(pivot(agg, rows, cols, pct), df, rows, cols)
    n = sorted(agg["n"].unique().tolist())
    stat = "median (censored at the budget)" if is_speed_metric(metric) else "mean"
    refused = int(agg["refused"].sum())
    caption = (
        f"{metric}{' (% of teacher)' if pct else ''}: {stat} [95% CI] over n = {'/'.join(map(str, n))} seeds; CI: "
        f"{'percentile bootstrap' if is_speed_metric(metric) else CI_NAME}; † n < {MIN_SEEDS}; ‡ no reliable interval "
        f"(most seeds tied at a bound of the score, e.g. CartPole's 500, or no spread); {len(df) - failed - pruned - unfinished} ok runs, "
        f"{failed} failed"
        + (f", {pruned} pruned by a search (stopped early; not in the table)" if pruned else "")
        + (f", {refused} with the score refused (teacher not better than random)" if refused else "")
        + waiting
    )
    caption += reference_note(df)
    md = to_markdown(table, df, rows, cols)
    if pct and rows == "env_id" and agg[rows].nunique() > 1:
        md += "\n" + geomean_row(agg, cols, list(table.columns))
    iqm_table = (
        (agg.pivot(index=rows, columns=cols, values="iqm") * (100 if pct else 1)) if len(agg) else pd.DataFrame()
    )
    return SummaryTable(caption, md, to_latex(table, df, rows, cols, caption), agg, iqm_table.round(1))


def reference_note(df: pd.DataFrame) -> str:
    """The teachers the scores divide by, per env: '; teacher reference (100 held-out episodes): <env>
    T = mean ± se [min-max over teachers]', or that the runs predate it (T from their 20 final episodes)."""
    ok = df[df["status"] == "ok"]
    if "reference_teacher_mean" not in ok or ok["reference_teacher_mean"].isna().all():
        return "; teacher T and random R from each run's own final held-out episodes (no stored teacher reference)"
    parts = []
    for env, grp in ok.dropna(subset=["reference_teacher_mean"]).groupby("env_id"):
        per_teacher = grp.drop_duplicates(["reference_teacher_mean", "reference_teacher_se"])
        cells = ", ".join(
            f"{m:.1f} ± {se:.1f}"
            for m, se in zip(per_teacher["reference_teacher_mean"], per_teacher["reference_teacher_se"])
        )
        parts.append(f"{env} T = {cells} (± se)")
    episodes = "/".join(str(int(e)) for e in sorted(ok["reference_episodes"].dropna().unique()))
    missing = int(ok["reference_teacher_mean"].isna().sum())
    return (
        f"; teacher reference ({episodes} held-out episodes per teacher): "
        + "; ".join(parts)
        + (f"; {missing} runs without one (T from their final episodes)" if missing else "")
    )


def disk_use(paths: Sequence[str | Path]) -> str:
    """How much the runs take on disk, and how much of it is checkpoints."""
    files = [f for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    ckpt = sum(f.stat().st_size for f in files if f.suffix in (".ckpt", ".pt"))
    return f"disk use: {total / 2**20:.1f} MiB in {len(files)} files ({ckpt / 2**20:.1f} MiB checkpoints)"


# ---- plots -----------------------------------------------------------------------------------------------
def plot_all(
    df: pd.DataFrame,
    agg: pd.DataFrame,
    paths: Sequence[str | Path],
    out: Path,
    rows: str,
    cols: str,
    metric: str,
    curve_group: str,
) -> list[Path]:
    """Return vs student size, return vs KL temperature and learning curves, where the runs have them."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if cols in ("width", "student_size") and "param_ratio" in agg:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for key, grp in agg.groupby(rows):
            grp = grp.sort_values("param_ratio")
            x = 100 * grp["param_ratio"].to_numpy()
            ax.errorbar(
                x,
                100 * grp["mean"],
                yerr=_yerr(grp, 100),
                marker="o",
                capsize=3,
                label=str(key),
            )
        ax.axhline(100, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        # one tick per column value (its mean fraction over rows): per-row fractions differ slightly
        ax.set_xticks(sorted(set(np.round(100 * agg.groupby(cols)["param_ratio"].mean().dropna(), 1))))
        ax.set_xlabel("student parameters (% of teacher)")
        ax.set_ylabel(f"{metric} (% of teacher)")
        ax.legend(fontsize=8)
        ax.set_title("Student return vs size (mean, 95% CI over seeds)")
        written += _save(fig, out / "ratio_vs_params")
    kl = df[(df["status"] == "ok") & df["loss"].isin(["kl", "kl_rusu"])] if "loss" in df else df.iloc[0:0]
    if kl["temperature"].nunique() > 1:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for w, grp in kl.groupby("width"):
            g = aggregate(grp, ["temperature"], metric).sort_values("temperature")
            ax.errorbar(
                g["temperature"],
                100 * g["mean"],
                yerr=_yerr(g, 100),
                marker="o",
                capsize=3,
                label=f"width {w}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("temperature tau")
        ax.set_ylabel(f"{metric} (% of teacher)")
        ax.legend(fontsize=8)
        # with tau_S = tau and the tau^2 factor, tau also scales the gradient (~60x from 0.01 to 1)
        ax.set_title("KL (tau_S = tau, x tau^2): tau sets sharpness AND step size", fontsize=9)
        written += _save(fig, out / "ratio_vs_temperature")
    envs = sorted(df.loc[df["status"] == "ok", "env_id"].dropna().unique()) if "env_id" in df else []
    if len(envs) > 1:  # one panel per game: raw returns of different games do not average
        written += plot_curves_by_env(learning_curves(paths, curve_group, split="env_id"), out, curve_group)
        plt.close("all")
        return written
    curves = learning_curves(paths, curve_group)
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for key, (x, mean, lo, hi) in sorted(curves.items(), key=lambda kv: str(kv[0])):
            ax.plot(x, mean, label=str(key))
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy return (periodic eval)")
        ax.legend(fontsize=8, title=curve_group)
        ax.set_title("Learning curves (mean, 95% CI over seeds)")
        written += _save(fig, out / f"curves_by_{curve_group}")
    plt.close("all")
    return written


def plot_curves_by_env(curves: dict[Any, Any], out: Path, curve_group: str) -> list[Path]:
    """Learning curves with one panel per env (keys (env, group value)); a group keeps its colour in
    every panel."""
    import matplotlib.pyplot as plt

    if not curves:
        return []
    envs = sorted({env for env, _ in curves}, key=str)
    groups = sorted({g for _, g in curves}, key=str)
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    ncols = min(3, len(envs))
    nrows = -(-len(envs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        for g in groups:
            if (env, g) not in curves:
                continue
            x, mean, lo, hi = curves[(env, g)]
            ax.plot(x, mean, label=str(g), color=colours[g])
            ax.fill_between(x, lo, hi, alpha=0.2, color=colours[g])
        ax.set_title(str(env), fontsize=9)
        ax.set_xlabel("env steps", fontsize=8)
        ax.set_ylabel("greedy return", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(envs) :]:
        ax.set_visible(False)
    if curve_group != "env_id":  # grouped by the game itself: the panel titles say it
        axes.flat[0].legend(fontsize=7, title=curve_group, title_fontsize=7)
    fig.suptitle("Learning curves per game (periodic eval; mean, 95% CI over seeds)", fontsize=10)
    return _save(fig, out / f"curves_by_{curve_group}")


def _yerr(cells: pd.DataFrame, scale: float) -> list[np.ndarray]:
    """Error bars from a cell's CI; none (0) where the cell is flagged (no reliable interval)."""
    lo = np.nan_to_num(scale * (cells["mean"] - cells["ci_low"]).to_numpy(dtype=float))
    hi = np.nan_to_num(scale * (cells["ci_high"] - cells["mean"]).to_numpy(dtype=float))
    return [lo, hi]


def _save(fig: Any, stem: Path) -> list[Path]:
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=130)
    return paths


# ---- the multi-task table ----------------------------------------------------------------------------------
MULTITASK_SUMMARY_COLUMNS = ("mean over tasks", "geomean over tasks")


def collect_multitask(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, column): run_dir, status, method, seed, column (a task or a mean), pct."""
    rows: list[dict] = []
    for f in find_results(paths):
        try:
            data = read_result(f)
        except (OSError, ValueError) as exc:  # empty, truncated, not JSON, not kdrl's: named, counted, skipped
            rows.append({"run_dir": str(f.parent), "status": "unreadable", "error": f"{f}: {exc}"})
            continue
        if data.get("kind") != MultiTaskResult.KIND:
            continue
        res = MultiTaskResult.from_dict(data)
        base = {"run_dir": str(f.parent), "status": res.status, "method": res.method, "seed": res.seed}
        if res.status != "ok":
            rows.append(base)
            continue
        for name, task in (res.tasks or {}).items():
            rows.append(
                {
                    **base,
                    "column": name,
                    "pct": task.pct_of_teacher,
                    "return": task.eval_return_mean,
                    "teacher_return": task.teacher_return_mean,
                }
            )
        rows.append({**base, "column": MULTITASK_SUMMARY_COLUMNS[0], "pct": res.mean_pct_of_teacher})
        rows.append({**base, "column": MULTITASK_SUMMARY_COLUMNS[1], "pct": res.geomean_pct_of_teacher})
    return pd.DataFrame(
        rows, columns=["run_dir", "status", "method", "seed", "column", "pct", "return", "teacher_return", "error"]
    )


def multitask_cell(values: Sequence[float]) -> str:
    """'mean [lo, hi]' of the finite values (already in %) with mean_ci ('mean ‡ (why)' where it flags), † when fewer than
    MIN_SEEDS, the refused (nan) count when there are any, '–' when there are none."""
    x = np.asarray(values, dtype=float)
    refused = int((~np.isfinite(x)).sum())
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return "–" + (f" ({refused} refused)" if refused else "")
    return mean_ci(x).text(".1f") + (f" ({refused} refused)" if refused else "") + (" †" if len(x) < MIN_SEEDS else "")


def multitask_table(df: pd.DataFrame) -> pd.DataFrame:
    """method x column -> 'mean [lo, hi]' over seeds; columns: the tasks in run order, then the means."""
    ok = df[df["status"] == "ok"].dropna(subset=["column"])
    tasks = [c for c in dict.fromkeys(ok["column"]) if c not in MULTITASK_SUMMARY_COLUMNS]
    columns = [*tasks, *MULTITASK_SUMMARY_COLUMNS]
    out = {}
    for method, grp in ok.groupby("method", sort=True):
        n = grp["run_dir"].nunique()
        out[f"{method} (n={n})"] = {c: multitask_cell(grp.loc[grp["column"] == c, "pct"]) for c in columns}
    return pd.DataFrame.from_dict(out, orient="index", columns=columns)


def multitask_markdown(tab: pd.DataFrame) -> str:
    header = ["method", *tab.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(idx), *map(str, row)]) + " |" for idx, row in tab.iterrows()]
    return "\n".join(lines)


def multitask_report(df: pd.DataFrame) -> str:
    """The heading (what a cell is; ok and failed runs) and the Markdown table."""
    runs = df.drop_duplicates("run_dir")
    failed = int((runs["status"] != "ok").sum())
    head = (
        f"% of each teacher (0 = random policy, 100 = teacher; same held-out seeds): mean [95% CI: {CI_NAME}; "
        f"marked † below {MIN_SEEDS} seeds; ‡ no reliable interval] over n seeds (in each row's label; refused: the teacher "
        f"does not beat random); {int((runs['status'] == 'ok').sum())} ok runs, {failed} failed"
    )
    return head + "\n\n" + multitask_markdown(multitask_table(df))


# ---- across tasks (kdrl-table --aggregate) ------------------------------------------------------------------
@dataclass
class CrossTask:
    """IQM and mean over tasks per method, P(improvement) between methods, performance profiles."""

    markdown: str
    cells: pd.DataFrame  # method, tasks, runs, iqm, iqm_low, iqm_high, mean, mean_low, mean_high
    improvement: pd.DataFrame  # x, y, p, low, high
    profiles: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # method -> taus, frac, lo, hi


def task_scores(df: pd.DataFrame, task: str, method: str, metric: str) -> dict[Any, dict[Any, np.ndarray]]:
    """method -> task -> the finite scores of the ok runs (a refused score is counted by ``aggregate``)."""
    ok = df[(df["status"] == "ok") & np.isfinite(df[metric].astype(float))]
    out: dict[Any, dict[Any, np.ndarray]] = {}
    for (m, t), grp in ok.groupby([method, task], sort=True):
        out.setdefault(m, {})[t] = grp[metric].to_numpy(dtype=float)
    return out


def cross_task(
    df: pd.DataFrame, task: str, method: str, metric: str, compare: Sequence[tuple[Any, Any]] | None = None
) -> CrossTask:
    """The field's aggregates of ``metric`` over the tasks (``task`` column) for each ``method`` value:
    IQM and mean of all runs with stratified-bootstrap 95% CIs, P(X > Y) for each pair in ``compare``
    (every pair of methods when None) and performance profiles (kdrl.statistics)."""
    scores = task_scores(df, task, method, metric)
    if "param_ratio" in df and df["param_ratio"].notna().any():  # student sizes: largest first, not a-z
        ratio = df.groupby(method)["param_ratio"].mean()
        scores = dict(sorted(scores.items(), key=lambda kv: -ratio.get(kv[0], 0.0)))
    pct = 100.0 if is_fraction_of_teacher(metric) else 1.0
    rows = []
    for m, per_task in scores.items():
        i = aggregate_ci(per_task, "iqm")
        a = aggregate_ci(per_task, "mean")
        rows.append(
            {"method": m, "tasks": len(per_task), "runs": sum(map(len, per_task.values())), "iqm": i[0], "iqm_low": i[1],
             "iqm_high": i[2], "mean": a[0], "mean_low": a[1], "mean_high": a[2]}
        )  # fmt: skip
    cells = pd.DataFrame(rows)
    methods = list(scores)
    pairs = list(compare) if compare else [(x, y) for k, x in enumerate(methods) for y in methods[k + 1 :]]
    imp = []
    for x, y in pairs:
        if x not in scores or y not in scores:
            raise ValueError(
                f"--compare: no runs of '{x if x not in scores else y}' (have: {', '.join(map(str, methods))})"
            )
        p, lo, hi = probability_of_improvement(scores[x], scores[y])
        imp.append({"x": x, "y": y, "p": p, "low": lo, "high": hi})
    improvement = pd.DataFrame(imp, columns=["x", "y", "p", "low", "high"])
    top = max((float(np.max(v)) for per in scores.values() for v in per.values()), default=1.0)
    taus = np.linspace(0.0, max(top, 1.0) * 1.02, 101)
    profiles = {m: (taus, *performance_profile(per_task, taus)) for m, per_task in scores.items()}
    f = lambda v: f"{pct * v:.1f}" if pct != 1.0 else f"{v:.3g}"  # noqa: E731
    lines = [
        f"{metric}{' (% of teacher)' if pct != 1.0 else ''} over {task}: IQM of all runs and mean of the per-task means, 95% stratified-bootstrap CI "
        "(runs resampled within each task, 2,000 resamples, seed 0)",
        "",
        f"| {method} | tasks | runs | IQM [95% CI] | mean [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['tasks']} | {r['runs']} | {f(r['iqm'])} [{f(r['iqm_low'])}, {f(r['iqm_high'])}] | "
            f"{f(r['mean'])} [{f(r['mean_low'])}, {f(r['mean_high'])}] |"
        )
    if len(improvement):
        lines += [
            "",
            "P(X > Y): a run of X beats a run of Y on the same task (ties count half), averaged over tasks",
            "",
        ]
        lines += ["| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
        lines += [f"| {r.x} | {r.y} | {r.p:.2f} [{r.low:.2f}, {r.high:.2f}] |" for r in improvement.itertuples()]
    return CrossTask("\n".join(lines), cells, improvement, profiles)


def plot_profiles(ct: CrossTask, out: Path, metric: str) -> list[Path]:
    """Performance profiles: the fraction of runs above each threshold τ, with their 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pct = 100.0 if is_fraction_of_teacher(metric) else 1.0
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m, (taus, frac, lo, hi) in ct.profiles.items():
        ax.plot(pct * taus, frac, label=str(m))
        ax.fill_between(pct * taus, lo, hi, alpha=0.2)
    if pct != 1.0:
        ax.axvline(100, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"{metric}{' (% of teacher)' if pct != 1.0 else ''} threshold τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Performance profiles (95% stratified-bootstrap bands)", fontsize=9)
    paths = _save(fig, out / "profiles")
    plt.close(fig)
    return paths


# ---- time to a score (teachers) --------------------------------------------------------------------------
def first_reach(history: Sequence[Mapping[str, Any]], target: float) -> Mapping[str, Any] | None:
    """The first periodic evaluation whose mean return reaches ``target`` (None: never)."""
    for h in history:
        v = h.get("return_mean")
        if isinstance(v, int | float) and np.isfinite(v) and v >= target:
            return h
    return None


def time_to_score(paths: Iterable[str | Path], targets: Mapping[str, float]) -> pd.DataFrame:
    """One row per teacher run: when its periodic evaluation first reached its env's ``targets``
    score, in seconds since the process started (``process_s``: imports and setup included; older
    runs without it: the fit's wall time plus setup, marked ``approx``) and in env steps, and its
    final held-out return at the budget. A run that never reached the score has NaN times and
    ``reached`` False: it is counted, never dropped."""
    rows = []
    for f in find_results(paths):
        res = json.loads(f.read_text())
        env_id, hist = res.get("env_id"), res.get("eval_history") or []
        if env_id not in targets:
            continue
        hit = first_reach(hist, float(targets[env_id]))
        approx = hit is not None and hit.get("process_s") is None
        secs = (
            np.nan
            if hit is None
            else float(hit["process_s"])
            if not approx
            else float(hit["wall_s"]) + float(res.get("setup_s") or 0.0)
        )
        rows.append({
            "env_id": env_id, "seed": res.get("seed"), "target": float(targets[env_id]), "reached": hit is not None,
            "time_to_score_s": secs, "approx": approx, "steps_to_score": np.nan if hit is None else hit["env_steps"],
            "env_steps": res.get("env_steps"), "final_return": res.get("eval_return_mean"),
            "job_wall_time_s": res.get("job_wall_time_s"), "run_dir": str(f.parent),
        })  # fmt: skip
    return pd.DataFrame(rows)


def median_with_failures(g: pd.DataFrame) -> str:
    """The median time to the score over all of ``g``'s runs, a run that never reached it ranked after
    every run that did (its time is beyond its budget): "not reached" when the median run is one of
    them; with an even count, "> t min" when only the upper of the two middle runs is (t: the lower)."""
    times = sorted(float(t) if r else math.inf for t, r in zip(g["time_to_score_s"], g["reached"], strict=True))
    n = len(times)
    lo, hi = times[(n - 1) // 2], times[n // 2]
    if math.isinf(lo):
        return "not reached"
    approx = " ≈" if bool(g.loc[g["reached"].astype(bool), "approx"].any()) else ""
    if math.isinf(hi):
        return f"> {lo / 60.0:.1f} min{approx}"
    return f"{(lo + hi) / 120.0:.1f} min{approx}"


def time_to_score_markdown(df: pd.DataFrame) -> str:
    """Per env: seeds, how many reached the score, the median time to it over all seeds (a run that never
    reached it counted at its budget, later than every run that did: "> t" when the median falls on one),
    the median time [min–max] over those that did, the env steps to it, and the final held-out return
    (mean [95% CI] over seeds). With a ``stage`` column naming more than one stage (recipes side by
    side), one row per stage and env."""
    by_stage = "stage" in df and df["stage"].nunique() > 1
    head = (
        "| env | target | seeds | reached | time to score, median of all seeds | time to score, median [min–max] "
        "of those that reached it | env steps to score, median [min–max] | final return, mean [95% CI] | "
        "job wall, median |"
    )
    lines = [("| stage " if by_stage else "") + head, "|---" * (9 + by_stage) + "|"]
    keys = ["stage", "env_id"] if by_stage else ["env_id"]
    if by_stage:  # stages in the order given (the study's declaration order), not alphabetical
        df = df.assign(stage=pd.Categorical(df["stage"], list(dict.fromkeys(df["stage"]))))

    def spread(x: pd.Series, fmt: str) -> str:
        x = x.dropna()
        if x.empty:
            return "–"
        return f"{format(x.median(), fmt)} [{format(x.min(), fmt)}–{format(x.max(), fmt)}]"

    for key, g in df.sort_values([*keys, "seed"]).groupby(keys, sort=False, observed=True):
        env_id = key[-1]
        hit = g[g["reached"]]
        t = spread(hit["time_to_score_s"] / 60.0, ".1f") + (" min" if len(hit) else "")
        t += " ≈" if bool(hit["approx"].any()) else ""
        final = mean_ci(g["final_return"].astype(float).to_numpy()).text(".1f")
        lines.append(
            (f"| {key[0]} " if by_stage else "")
            + f"| {env_id} | {g['target'].iloc[0]:g} | {len(g)} ({', '.join(str(s) for s in g['seed'])}) | "
            f"{len(hit)}/{len(g)} | {median_with_failures(g)} | {t} | {spread(hit['steps_to_score'], ',.0f')} | "
            f"{final} | "
            f"{g['job_wall_time_s'].median() / 60.0:.1f} min |"
        )
    return "\n".join(lines)


def plot_time_to_score(df: pd.DataFrame, out: Path) -> Path:
    """Every run's periodic return against env steps (one line per run, one colour per stage), the
    env's target dashed: a score reached by a jump on some seeds and never on others shows as such,
    which a mean over seeds would hide. One panel per env; ``df``: time_to_score's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted(df["env_id"].unique(), key=str)
    stages = list(dict.fromkeys(df["stage"])) if "stage" in df else [None]
    fig, axes = plt.subplots(1, len(envs), figsize=(6.0 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for i, stage in enumerate(stages):
            runs = df[(df["env_id"] == env) & ((df["stage"] == stage) if stage is not None else True)]
            for j, (_, r) in enumerate(runs.sort_values("seed").iterrows()):
                hist = json.loads((Path(r["run_dir"]) / "results.json").read_text()).get("eval_history") or []
                ax.plot([h["env_steps"] for h in hist], [h["return_mean"] for h in hist], color=f"C{i}", lw=1,
                        alpha=0.85, label=None if j else (stage or "runs"))  # fmt: skip
        ax.axhline(float(df.loc[df["env_id"] == env, "target"].iloc[0]), ls="--", color="k", lw=1, label="target")
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy return (periodic eval)")
        ax.set_title(str(env))
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- budgets: has the score stopped rising? --------------------------------------------------------------
def budget_table(
    df: pd.DataFrame,
    groups: Sequence[str],
    x: str = "grad_steps",
    metric: str = "normalized_score",
    margin: float | None = None,
    pair_by: str | None = None,
) -> pd.DataFrame:
    """Per group (e.g. env x student size): the mean score at each budget point (``x``: one value per
    run, e.g. its gradient updates), the slope per doubling over the last third of the sweep with its
    95% interval (kdrl.statistics.plateau), whether it has stopped rising (True: a rise above
    ``margin`` per doubling is ruled out; False: still rising; None: too few runs to tell), and the
    cheapest budget on the plateau. ``pair_by`` (a column, e.g. seed where each seed has its own teacher
    at every budget): slopes within its values (kdrl.statistics.slope_ci's blocks)."""
    from kdrl.statistics import PLATEAU_MARGIN, plateau

    margin = PLATEAU_MARGIN if margin is None else margin
    rows = []
    for key, g in df.groupby(list(groups)):
        key = key if isinstance(key, tuple) else (key,)
        blocks = None if pair_by is None else g[pair_by].tolist()
        last, cheapest = plateau(g[x].astype(float), g[metric].astype(float), margin=margin, blocks=blocks)
        means = g.groupby(x)[metric].agg(["mean", "count"])
        wall = g.groupby(x)["job_wall_time_s"].median() if "job_wall_time_s" in g else None
        rows.append({
            **dict(zip(groups, key)),
            "points": "; ".join(f"{int(b):,}: {m:.3f} (n={int(c)})" for b, (m, c) in means.iterrows()),
            "slope_per_doubling": last.slope, "slope_low": last.low, "slope_high": last.high, "slope_n": last.n,
            "plateau": last.stopped_rising(margin), "cheapest_on_plateau": cheapest,
            "job_wall_s_at_cheapest": None if cheapest is None or wall is None else float(wall.loc[cheapest]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def last_paired_differences(
    g: pd.DataFrame, x: str = "grad_steps", metric: str = "normalized_score", pair_by: str = "seed"
) -> tuple[float, float, pd.Series] | None:
    """One budget curve's runs (``g``): its two largest budgets and, per ``pair_by`` value run at both, the
    difference in ``metric`` per doubling of ``x`` (the paired slope's sample); None below two budgets."""
    budgets = sorted(g[x].unique())
    if len(budgets) < 2:
        return None
    low, high = budgets[-2:]
    wide = g.pivot_table(index=pair_by, columns=x, values=metric)[[low, high]].dropna()
    return float(low), float(high), (wide[high] - wide[low]) / np.log2(high / low)


def budget_markdown(
    tab: pd.DataFrame, groups: Sequence[str], metric: str, margin: float | None = None, pair_by: str | None = None
) -> str:
    from kdrl.statistics import PLATEAU_MARGIN

    margin = PLATEAU_MARGIN if margin is None else margin
    within = "" if pair_by is None else f" within {pair_by}s"
    head = f"| {' | '.join(groups)} | {metric} by budget (mean, n) | slope per doubling{within}, last third [95% CI] | stopped rising (rise ≤ {margin:g} per doubling) | cheapest budget on the plateau | job wall there |"
    lines = [head, "|" + "---|" * (len(groups) + 5)]
    for _, r in tab.iterrows():
        slope = "–" if not np.isfinite(r["slope_per_doubling"]) else (
            f"{r['slope_per_doubling']:+.3f} [{r['slope_low']:+.3f}, {r['slope_high']:+.3f}] (n={r['slope_n']})"
        )  # fmt: skip
        cheap = "–" if pd.isna(r["cheapest_on_plateau"]) else f"{r['cheapest_on_plateau']:,.0f}"
        wall = "–" if pd.isna(r["job_wall_s_at_cheapest"]) else f"{r['job_wall_s_at_cheapest'] / 60:.1f} min"
        keys = " | ".join(str(r[g]) for g in groups)
        said = {True: "yes", False: "no: still rising"}.get(r["plateau"], "can't tell: too few runs")
        lines.append(f"| {keys} | {r['points']} | {slope} | {said} | {cheap} | {wall} |")
    return "\n".join(lines)


def plot_budgets(
    df: pd.DataFrame, panel: str, line: str, x: str, metric: str, out: Path, filename: str = "score_vs_budget.png"
) -> Path:
    """Score against budget (log2 axis): one panel per ``panel`` value, one line per ``line`` value,
    mean and 95% CI over seeds at each budget point (a hollow marker and no band below 3 runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(df[panel].dropna().unique(), key=str)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, p in zip(axes[0], panels):
        sub = df[df[panel] == p]
        for name, g in sorted(sub.groupby(line), key=lambda kv: str(kv[0])):
            pts = sorted(g[x].unique())
            runs = [g.loc[g[x] == b, metric].astype(float).to_numpy() for b in pts]
            runs = [r[np.isfinite(r)] for r in runs]  # a failed run has no score: not one of the runs
            cis = [mean_ci(r) for r in runs]
            m = np.array([c.mean for c in cis])
            # a band only where 3+ runs give one: a 2-run t interval (t = 12.7) would flatten every other line
            few = np.array([len(r) < 3 for r in runs])
            lo = np.array([np.nan if f else (c.low if np.isfinite(c.low) else c.mean) for c, f in zip(cis, few)])
            hi = np.array([np.nan if f else (c.high if np.isfinite(c.high) else c.mean) for c, f in zip(cis, few)])
            (drawn,) = ax.plot(pts, m, marker="o", label=str(name))
            if few.any():  # hollow markers: fewer than 3 runs so far
                ax.plot(np.array(pts)[few], m[few], "o", mfc="white", color=drawn.get_color())
            ax.fill_between(pts, lo, hi, alpha=0.2, color=drawn.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(str(p))
        ax.legend(fontsize=8, title=line)
    fig.tight_layout()
    path = Path(out) / filename
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def end_slope_curves(
    paths: Iterable[str | Path],
    groups: Sequence[str],
    x: str = "env_steps",
    metric: str = "normalized_score",
    kind: str = "student",
) -> pd.DataFrame:
    """One row per periodic evaluation of each ok ``kind`` run under ``paths`` (results.json's
    eval_history): the run's ``groups`` values, seed, ``x`` and ``metric`` there, and its size
    (param_ratio). The normalised score is recomputed from the periodic return with the run's reference
    T and R (its teacher's and a random policy's held-out episodes, as the final score), not the periodic
    one, which divides by the teacher's 10 periodic episodes; nan where the final score is (a teacher that
    does not clearly beat random). A file that cannot be read is left out (as kdrl.tables.learning_curves)."""
    from kdrl.scores import normalized_score

    rows = []
    for f in find_results(paths):
        try:
            res = read_result(f)
        except (OSError, ValueError):
            continue
        if res.get("status") != "ok" or res.get("kind") != kind:
            continue
        flat, ref = flatten(res), res.get("teacher_reference") or {}
        usable = res.get("teacher_beats_random") is not False
        for h in res.get("eval_history") or []:
            y = h.get(metric)
            if metric == "normalized_score" and ref.get("return_mean") is not None:
                y = normalized_score(h["return_mean"], ref["return_mean"], ref["random_mean"]) if usable else np.nan
            rows.append({
                **{g: flat.get(g) for g in groups}, "seed": flat.get("seed"), "param_ratio": flat.get("param_ratio"),
                "run_dir": str(f.parent), x: h.get(x), metric: y,
            })  # fmt: skip
    return pd.DataFrame(rows)


def end_slope_table(
    curves: pd.DataFrame, groups: Sequence[str], x: str = "env_steps", metric: str = "normalized_score",
    margin: float | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per group: were its runs still improving when their budget ended? Each run's slope per doubling of
    ``x`` over the last third of its periodic evaluations, averaged over the runs with a 95% interval
    (kdrl.statistics.end_slope), the verdict under ``margin`` (Slope.stopped_rising), and the mean periodic
    score at the runs' last point (``last_n`` runs have one there). Groups in the curves' order, sizes
    largest first."""
    from kdrl.statistics import PLATEAU_MARGIN, end_slope

    margin = PLATEAU_MARGIN if margin is None else margin
    curves = curves.dropna(subset=[x])  # a point without its x is no point of a curve
    rows = []
    for key, g in curves.groupby(list(groups), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        runs = [(r[x].astype(float), r[metric].astype(float)) for _, r in g.groupby("run_dir")]
        s = end_slope(runs)
        last = g.loc[g.groupby("run_dir")[x].idxmax(), metric].astype(float).dropna()
        rows.append({
            **dict(zip(groups, key)), "param_ratio": g["param_ratio"].astype(float).mean(), "runs": s.n,
            "last_x": float(g[x].max()), "last_mean": float(last.mean()) if len(last) else np.nan,
            "last_n": len(last),
            "slope_per_doubling": s.slope, "slope_low": s.low, "slope_high": s.high,
            "stopped_rising": s.stopped_rising(margin),
        })  # fmt: skip
    tab = pd.DataFrame(rows)
    if tab.empty:
        return tab
    first = list(dict.fromkeys(tab[groups[0]]))
    order = tab.assign(_g=tab[groups[0]].map(first.index)).sort_values(["_g", "param_ratio"], ascending=[True, False])
    return order.drop(columns="_g").reset_index(drop=True)


def end_slope_markdown(
    tab: pd.DataFrame, groups: Sequence[str], x: str, metric: str, margin: float | None = None
) -> str:
    from kdrl.statistics import PLATEAU_MARGIN

    margin = PLATEAU_MARGIN if margin is None else margin
    head = (
        f"| {' | '.join(groups)} | runs | periodic {metric} at the end (mean) | slope per doubling of {x}, "
        f"each run's last third (mean [95% CI] over runs) | stopped rising (rise ≤ {margin:g} per doubling) |"
    )
    lines = [head, "|" + "---|" * (len(groups) + 4)]
    for _, r in tab.iterrows():
        slope = "–" if not np.isfinite(r["slope_per_doubling"]) else f"{r['slope_per_doubling']:+.3f}" + (
            " (no interval)" if not np.isfinite(r["slope_low"])
            else " ‡ (every run the same slope)" if r["slope_low"] == r["slope_high"]
            else f" [{r['slope_low']:+.3f}, {r['slope_high']:+.3f}]"
        )  # fmt: skip
        last = f"{r['last_mean']:.3f}" + ("" if r["last_n"] == r["runs"] else f" (n={r['last_n']})")
        said = {True: "yes", False: "no: still rising"}.get(r["stopped_rising"], "can't tell")
        keys = " | ".join(str(r[g]) for g in groups)
        lines.append(f"| {keys} | {r['runs']} | {last} | {slope} | {said} |")
    n_yes = int((tab["stopped_rising"] == True).sum())  # noqa: E712 (None is neither)
    n_no = int((tab["stopped_rising"] == False).sum())  # noqa: E712
    lines.append(
        f"\n{n_yes} of {len(tab)} cells stopped rising, {n_no} still rising, {len(tab) - n_yes - n_no} can't tell."
    )
    return "\n".join(lines)
