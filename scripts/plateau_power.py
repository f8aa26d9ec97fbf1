"""Why a budget sweep's plateau test cannot decide, and what would: per curve, the last two budgets'
per-seed differences split into evaluation error and training noise, and the seeds a paired test needs.

    python scripts/plateau_power.py docs/minatar/student_budget_plateau/results.csv --episodes 100
    python scripts/plateau_power.py docs/minatar/student_budget/results.csv --episodes 20

Reads a budget table's results.csv (kdrl-study kind: budget; one row per student run). Per group (env x
size), at the two largest budgets, for the seeds run at both:
  - the per-seed difference per doubling (the paired slope) and its spread sd;
  - evaluation error: a run's held-out score is a mean over --episodes episodes, so it carries
    eval_return_std / sqrt(episodes) / (T - R) of normalised score by itself;
  - training noise: what is left of a run's variance, sd^2 / 2 - evaluation error^2 (a seed's difference
    holds two runs' noise; its teacher cancels);
  - seeds needed for the 95% interval to rule out a rise above --margin if the true slope is 0, at this
    evaluation and with evaluation error removed (kdrl.statistics.seeds_to_rule_out).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from kdrl.scores import normalized_score
from kdrl.statistics import PLATEAU_MARGIN, seeds_to_rule_out, slope_ci
from kdrl.tables import last_paired_differences


def curve_rows(df: pd.DataFrame, episodes: int, margin: float) -> list[dict]:
    rows = []
    for (env, size), g in df.groupby(["env_id", "student_size"]):
        pairs = last_paired_differences(g)
        if pairs is None:  # one budget so far: nothing to pair
            continue
        low, high, diff = pairs
        runs = g[g["grad_steps"].isin([low, high]) & g["seed"].isin(diff.index)]
        # a run's evaluation error in normalised score: its return's standard error over the score's scale
        err = [
            normalized_score(r.random_return_mean + r.eval_return_std / math.sqrt(episodes), r.teacher_return_mean,
                             r.random_return_mean)
            for r in runs.itertuples()
        ]  # fmt: skip
        eval_sd = float(np.sqrt(np.mean(np.square(err))))
        sd = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
        slope = slope_ci(np.log2(runs["grad_steps"]), runs["normalized_score"], blocks=runs["seed"].tolist()).slope
        run_var = sd**2 * math.log2(high / low) ** 2 / 2  # a difference holds two runs' noise
        train_sd = math.sqrt(max(run_var - eval_sd**2, 0.0))
        exact = math.sqrt(2) * train_sd / math.log2(high / low)
        rows.append({
            "env": env.split("/")[-1], "size": size, "budgets": f"{low:,.0f} -> {high:,.0f}", "seeds": len(diff),
            "slope": slope, "sd": sd, "eval_error": eval_sd, "train_sd": train_sd,
            "seeds_needed": seeds_to_rule_out(sd, margin), "seeds_needed_exact_eval": seeds_to_rule_out(exact, margin),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a budget table's results.csv")
    ap.add_argument("--episodes", type=int, required=True, help="held-out episodes per run (eval.final_episodes)")
    ap.add_argument("--margin", type=float, default=PLATEAU_MARGIN, help="the largest rise per doubling ruled out")
    args = ap.parse_args(argv)
    df = pd.read_csv(args.results)
    df = df[(df["kind"] == "student") & (df["status"] == "ok")]
    print(
        f"| game | size | budgets | seeds | slope per doubling (paired mean) | sd of the differences | evaluation error "
        f"a run ({args.episodes} episodes) | training noise a run | seeds to rule out +{args.margin:g} if flat | "
        "the same, evaluation exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    said = lambda n: "> 10,000" if n is None else f"{n:,}"  # noqa: E731
    for r in curve_rows(df, args.episodes, args.margin):
        print(
            f"| {r['env']} | {r['size']} | {r['budgets']} | {r['seeds']} | {r['slope']:+.3f} | {r['sd']:.3f} | "
            f"{r['eval_error']:.3f} | {r['train_sd']:.3f} | {said(r['seeds_needed'])} | "
            f"{said(r['seeds_needed_exact_eval'])} |"
        )


if __name__ == "__main__":
    main()
