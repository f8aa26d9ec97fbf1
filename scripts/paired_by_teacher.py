"""Two published tables' students compared within teachers: what a change of budget did on the same teachers.

Two tables whose students distil different teacher seeds (one cycling 5 students over teachers 1, 2, 3, 1, 2,
the other student s on teacher s) differ in their teachers as well as in what was changed: a harder teacher
seed lowers a cell whatever the budget. So each student is put in the block of its (game, size, teacher), the
blocks both tables have, and the score's slope per doubling of updates is taken within blocks
(kdrl.statistics.slope_ci with blocks: each teacher's level out; at two budgets the paired t interval, a
teacher with two students at one budget counted by least squares).

    python scripts/paired_by_teacher.py docs/minatar/second_round/compression/results.csv \\
        docs/minatar/converged/compression/results.csv --teachers-a 0:1,1:2,2:3,3:1,4:2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kdrl.statistics import slope_ci


def teacher_map(text: str | None) -> dict[int, int] | None:
    """``0:1,1:2`` -> {0: 1, 1: 2}; None: each student's teacher is its own seed."""
    if not text:
        return None
    try:
        return {int(a): int(b) for a, b in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        sys.exit(f"--teachers takes student:teacher pairs like 0:1,1:2, got {text!r}")


def students(path: Path, teachers: dict[int, int] | None, sizes: list[str]) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = {"status", "env_id", "student_size", "seed", "grad_steps", "normalized_score"} - set(df)
    if missing:
        sys.exit(f"{path}: not a student table's results.csv (no {', '.join(sorted(missing))})")
    df = df[(df["status"] == "ok") & df["student_size"].isin(sizes)].copy()
    df["teacher"] = df["seed"] if teachers is None else df["seed"].map(teachers)
    if df["teacher"].isna().any():
        sys.exit(f"{path}: seeds {sorted(set(df.loc[df['teacher'].isna(), 'seed']))} have no teacher in the map")
    return df


def within_teachers(df: pd.DataFrame) -> tuple[float, float, float, int]:
    """(slope per doubling, lo, hi, blocks with both budgets) of normalized_score on log2(grad_steps)."""
    both = df.groupby(["env_id", "student_size", "teacher"])["grad_steps"].transform("nunique") == 2
    df = df[both]
    blocks = list(zip(df["env_id"], df["student_size"], df["teacher"], strict=True))
    s = slope_ci(np.log2(df["grad_steps"].to_numpy(float)), df["normalized_score"].to_numpy(float), blocks=blocks)
    return s.slope, s.low, s.high, len(set(blocks))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="one table's results.csv")
    ap.add_argument("b", type=Path, help="the other's, at another budget")
    ap.add_argument("--teachers-a", help="student seed:teacher seed pairs of a (default: the student's own seed)")
    ap.add_argument("--teachers-b", help="the same for b")
    ap.add_argument("--sizes", default="rusu_25,rusu_7,rusu_4")
    args = ap.parse_args(argv)
    sizes = args.sizes.split(",")
    df = pd.concat(
        [students(args.a, teacher_map(args.teachers_a), sizes), students(args.b, teacher_map(args.teachers_b), sizes)]
    )
    budgets = sorted(df["grad_steps"].unique())
    print(f"normalised score per doubling of updates ({' -> '.join(f'{b:,}' for b in budgets)}), within teachers:")
    print("| students | teachers with both | slope per doubling [95% CI] |")
    print("|---|---|---|")
    parts = [(f"size {s}", df[df["student_size"] == s]) for s in sizes]
    parts += [(env.split("/")[-1], g) for env, g in df.groupby("env_id")] + [("all", df)]
    for label, part in parts:
        slope, lo, hi, k = within_teachers(part)
        print(f"| {label} | {k} | {slope:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
