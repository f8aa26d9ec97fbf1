"""A teacher's return on its final held-out episodes (eval.final_episodes, what every normalised score
divided by before the teacher reference) next to its reference (eval.reference_episodes), with
standard errors: how much noise the old denominator carried.

    python scripts/reference_vs_final.py outputs/teacher/CartPole-v1/.../   # teacher run dirs or cache entries

Reads each dir's results.json (``eval_returns``, ``reference``); a teacher from before the reference
has none (a student computes it next to teacher.pt: teacher.pt.reference.json, read here too).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def se(x: list[float]) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def row(run: Path) -> str:
    res = json.loads((run / "results.json").read_text())
    ref = res.get("reference")
    if ref is None and (run / "teacher.pt.reference.json").is_file():
        ref = json.loads((run / "teacher.pt.reference.json").read_text())["references"][0]
    final = res["eval_returns"]
    if ref is None:
        return f"| {run} | {np.mean(final):.2f} ± {se(final):.2f} ({len(final)}) | – | – | – |"
    t, r = ref["teacher"], ref["random"]
    gap = (np.mean(final) - t["mean"]) / (t["mean"] - r["mean"]) if t["mean"] != r["mean"] else float("nan")
    return (
        f"| {run} | {np.mean(final):.2f} ± {se(final):.2f} ({len(final)}) | {t['mean']:.2f} ± {t['se']:.2f} "
        f"({ref['episodes']}) | {r['mean']:.2f} ± {r['se']:.2f} | {100 * gap:+.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="teacher run dirs (holding results.json)")
    args = parser.parse_args()
    print(
        "| teacher | final episodes: mean ± se (n) | reference: mean ± se (n) | random (reference) | "
        "T_final − T_ref, in units of T_ref − R |"
    )
    print("|---|---|---|---|---|")
    for run in args.runs:
        print(row(run))


if __name__ == "__main__":
    main()
