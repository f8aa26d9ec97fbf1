"""results.json files -> tidy table -> paper-style tables (Markdown, LaTeX) and plots.

Cells report the mean, the interquartile mean (IQM) and a 95% bootstrap confidence interval of the
mean over seeds (percentile bootstrap, resampling seeds with replacement: for one task this is
rliable's stratified bootstrap with a single stratum).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from kdrl.results import RESULTS_FILE

FLAT_FIELDS = ("kind", "status", "env_id", "seed", "loss", "temperature", "width", "student_size", "depth", "control", "baseline",
               "params", "teacher_params", "param_ratio", "env_steps", "grad_steps", "wall_time_s",
               "train_wall_time_s", "sps", "eval_return_mean", "eval_return_std", "teacher_return_mean",
               "return_ratio", "normalized_return_ratio", "random_return_mean", "action_agreement", "teacher_wall_time_s", "error", "run_dir", "job_wall_time_s")


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


def flatten(res: dict[str, Any]) -> dict[str, Any]:
    row = {k: res.get(k) for k in FLAT_FIELDS}
    row["method"] = method_name(res)
    for name, hit in (res.get("speed") or {}).items():
        row[f"{name}_env_steps"] = hit["env_steps"] if hit else np.nan
        row[f"{name}_wall_s"] = hit["train_wall_s"] if hit else np.nan
    for key, who in (res.get("resources") or {}).items():
        for k, v in who.items():
            row[f"{key}_{k}"] = v
    for name, pair in (res.get("generalisation") or {}).items():
        row[f"gen_{name}_student"], row[f"gen_{name}_teacher"] = pair["student"], pair["teacher"]
    return row


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    rows = []
    for f in find_results(paths):
        try:
            res = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            rows.append({"status": "unreadable", "error": str(exc), "run_dir": str(f.parent)})
            continue
        rows.append(flatten(res))
    return pd.DataFrame(rows)


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end, fractional weights)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = len(x)
    if n == 0:
        return float("nan")
    lo, hi = 0.25 * n, 0.75 * n
    weights = np.clip(np.minimum(np.arange(1, n + 1), hi) - np.maximum(np.arange(n), lo), 0, 1)
    return float((weights * x).sum() / weights.sum())


def bootstrap_ci(x: Sequence[float], stat=np.mean, reps: int = 5000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, len(x), size=(reps, len(x)))]
    stats = np.apply_along_axis(stat, 1, samples) if stat is not np.mean else samples.mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def aggregate(df: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    out = []
    for key, grp in ok.groupby(list(by), dropna=False, sort=True):
        vals = grp[metric].dropna().to_numpy(dtype=float)
        lo, hi = bootstrap_ci(vals)
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key)), "n": len(vals), "mean": float(np.mean(vals)) if len(vals) else np.nan,
                    "iqm": iqm(vals), "ci_low": lo, "ci_high": hi,
                    "param_ratio": float(grp["param_ratio"].mean()) if "param_ratio" in grp else np.nan})
    return pd.DataFrame(out)


def _cell(r: pd.Series, pct: bool) -> str:
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3g}")
    return f"{f(r['mean'])} [{f(r['ci_low'])}, {f(r['ci_high'])}]"


def pivot(agg: pd.DataFrame, rows: str, cols: str, pct: bool) -> pd.DataFrame:
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
    body = "\n".join(" & ".join([esc(i)] + [esc(v) if isinstance(v, str) else "--" for v in r]) + r" \\"
                     for i, r in table.iterrows())
    spec = "l" + "c" * len(table.columns)
    return (f"\\begin{{table}}[t]\n\\centering\n\\caption{{{esc(caption)}}}\n\\begin{{tabular}}{{{spec}}}\n\\toprule\n"
            f"{header} \\\\\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n\\end{{table}}\n")


TEMPERED = ("kl", "kl_rusu", "ce", "hybrid", "qdagger", "kl_feature")


def method_name(res: dict[str, Any]) -> str:
    """A row label: the loss, with its temperature where the loss has one."""
    loss = res.get("loss")
    temp = res.get("temperature")
    if loss in TEMPERED and temp is not None and not (isinstance(temp, float) and np.isnan(temp)):
        return f"{loss} (tau={float(temp):g})"
    return str(loss) if loss is not None else str(res.get("kind"))


def learning_curves(paths: Iterable[str | Path], group: str) -> dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per group value: (env_steps, mean, ci_low, ci_high) of periodic eval returns over seeds."""
    curves: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {}
    for f in find_results(paths):
        res = json.loads(f.read_text())
        if res.get("status") != "ok" or not res.get("eval_history"):
            continue
        hist = res["eval_history"]
        key = method_name(res) if group == "method" else res.get(group)
        curves.setdefault(key, []).append(
            (np.array([h["env_steps"] for h in hist]), np.array([h["return_mean"] for h in hist])))
    out = {}
    for key, runs in curves.items():
        grid = np.unique(np.concatenate([s for s, _ in runs]))
        # each seed's curve held constant after its last evaluation (early-stopped runs)
        ys = np.stack([np.interp(grid, s, y, left=np.nan, right=y[-1]) for s, y in runs])
        mean = np.nanmean(ys, axis=0)
        cis = np.array([bootstrap_ci(col[~np.isnan(col)], reps=1000) for col in ys.T])
        out[key] = (grid, mean, cis[:, 0], cis[:, 1])
    return out
