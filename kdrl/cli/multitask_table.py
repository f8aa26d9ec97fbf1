"""Multi-task results (kdrl-multitask's results.json) -> a table of % of each teacher per method.

    python -m kdrl.cli.multitask_table outputs/sweeps/multitask [--out docs/multitask]

One row per method (kl (tau=0.01), nll, joint_dqn, ...), one column per task plus the arithmetic
and geometric mean over tasks; each cell is the mean over seeds [95% percentile-bootstrap CI]
(kdrl.tables.bootstrap_ci), in % of the teacher (0% = random policy, 100% = teacher; see
kdrl/multitask_eval.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from kdrl.tables import bootstrap_ci, find_results

SUMMARY_COLUMNS = ("mean over tasks", "geomean over tasks")


def collect_multitask(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, column): run_dir, status, method, seed, column (a task or a mean), pct."""
    rows: list[dict] = []
    for f in find_results(paths):
        try:
            res = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            rows.append({"run_dir": str(f.parent), "status": "unreadable"})
            continue
        if res.get("kind") != "multitask":
            continue
        base = {"run_dir": str(f.parent), "status": res.get("status"), "method": res.get("method"), "seed": res.get("seed")}
        if res.get("status") != "ok":
            rows.append(base)
            continue
        for name, task in res["tasks"].items():
            rows.append({**base, "column": name, "pct": task["pct_of_teacher"],
                         "return": task["eval_return_mean"], "teacher_return": task["teacher_return_mean"]})
        rows.append({**base, "column": SUMMARY_COLUMNS[0], "pct": res["mean_pct_of_teacher"]})
        rows.append({**base, "column": SUMMARY_COLUMNS[1], "pct": res["geomean_pct_of_teacher"]})
    return pd.DataFrame(rows, columns=["run_dir", "status", "method", "seed", "column", "pct", "return",
                                       "teacher_return"])


def cell(values: Sequence[float]) -> str:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return "–"
    lo, hi = bootstrap_ci(x)
    return f"{x.mean():.1f} [{lo:.1f}, {hi:.1f}]"


def table(df: pd.DataFrame) -> pd.DataFrame:
    """method x column -> 'mean [lo, hi]' over seeds; columns: the tasks in run order, then the means."""
    ok = df[df["status"] == "ok"].dropna(subset=["column"])
    tasks = [c for c in dict.fromkeys(ok["column"]) if c not in SUMMARY_COLUMNS]
    columns = [*tasks, *SUMMARY_COLUMNS]
    out = {}
    for method, grp in ok.groupby("method", sort=True):
        n = grp["run_dir"].nunique()
        out[f"{method} (n={n})"] = {c: cell(grp.loc[grp["column"] == c, "pct"]) for c in columns}
    return pd.DataFrame.from_dict(out, orient="index", columns=columns)


def to_markdown(tab: pd.DataFrame) -> str:
    header = ["method", *tab.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(idx), *map(str, row)]) + " |" for idx, row in tab.iterrows()]
    return "\n".join(lines)


def report(df: pd.DataFrame) -> str:
    runs = df.drop_duplicates("run_dir")
    failed = int((runs["status"] != "ok").sum())
    head = (f"% of each teacher (0 = random policy, 100 = teacher; same held-out seeds): mean [95% bootstrap CI] "
            f"over seeds; {int((runs['status'] == 'ok').sum())} ok runs, {failed} failed")
    return head + "\n\n" + to_markdown(table(df))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multitask_table", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="sweep dirs or results.json files")
    parser.add_argument("--out", help="also write table.md and runs.csv into this dir")
    args = parser.parse_args(argv)
    df = collect_multitask(args.paths)
    if df.empty:
        sys.stderr.write("multitask_table: error: no kdrl-multitask results.json under the given paths\n")
        return 2
    text = report(df)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text + "\n")
        df.to_csv(out / "runs.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
