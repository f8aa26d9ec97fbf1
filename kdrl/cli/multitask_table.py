"""Multi-task results (kdrl-multitask's results.json) -> a table of % of each teacher per method.

    kdrl-multitask-table outputs/sweeps/multitask [--out docs/multitask]

One row per method (kl (tau=0.01), nll, joint_dqn, ...), one column per task plus the arithmetic
and geometric mean over tasks; each cell is the mean over seeds [95% CI] (kdrl.statistics.mean_ci:
Hall's transformed t, Student's t below 5 seeds, ‡ where no interval is reliable), in % of the teacher (0% = random policy, 100% = teacher; see
kdrl/scores.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kdrl.errors import OutputPathError, writable_dir
from kdrl.tables import collect_multitask, multitask_report

__all__ = ["collect_multitask", "main"]
PROG = "kdrl-multitask-table"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="sweep dirs or results.json files")
    parser.add_argument("--out", help="also write table.md and runs.csv into this dir")
    args = parser.parse_args(argv)
    df = collect_multitask(args.paths)
    for error in df.loc[df["status"] == "unreadable", "error"].dropna():
        sys.stderr.write(f"{PROG}: unreadable: {error}\n")  # counted as failed runs in the table
    if df.empty:
        sys.stderr.write(f"{PROG}: error: no kdrl-multitask results.json under the given paths\n")
        return 2
    try:
        out = writable_dir(args.out, "--out") if args.out else None
    except OutputPathError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    text = multitask_report(df)
    print(text)
    if out is not None:
        (out / "table.md").write_text(text + "\n")
        df.to_csv(out / "runs.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
