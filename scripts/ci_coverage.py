"""Coverage of kdrl's 95% CI of the mean (kdrl.tables.mean_ci) and of the percentile bootstrap it
replaced, on realistic per-seed normalised-score distributions; prints a Markdown table.

    python scripts/ci_coverage.py [--trials 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from kdrl.tables import bootstrap_ci, mean_ci

# the distributions tests/test_protocol.py checks (true mean second)
DISTRIBUTIONS = {
    "normal(0.8, 0.15)": (lambda r, n: r.normal(0.8, 0.15, n), 0.8),
    "beta(8, 2)": (lambda r, n: r.beta(8, 2, n), 0.8),
    "beta(2, 2)": (lambda r, n: r.beta(2, 2, n), 0.5),
    "1 - gamma(2, 0.1)": (lambda r, n: 1 - r.gamma(2, 0.1, n), 0.8),
    "lognormal(-0.1, 0.25)": (lambda r, n: np.exp(r.normal(-0.1, 0.25, n)), float(np.exp(-0.1 + 0.25**2 / 2))),
}


def coverage(ci, draw, true: float, n: int, trials: int) -> float:
    rng = np.random.default_rng(12345)
    return float(np.mean([lo <= true <= hi for lo, hi in (ci(draw(rng, n)) for _ in range(trials))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000)
    args = ap.parse_args()
    ns = (3, 5, 10)
    print(f"Coverage of nominal 95% CIs of the mean, {args.trials} simulated experiments per cell\n")
    print(
        "| distribution | "
        + " | ".join(f"kdrl n={n}" for n in ns)
        + " | "
        + " | ".join(f"percentile n={n}" for n in ns)
        + " |"
    )
    print("|---" * (1 + 2 * len(ns)) + "|")
    for name, (draw, true) in DISTRIBUTIONS.items():
        ours = [coverage(mean_ci, draw, true, n, args.trials) for n in ns]
        old = [coverage(lambda x: bootstrap_ci(x, reps=1000), draw, true, n, args.trials // 2) for n in ns]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in ours + old) + " |")
    print("\nkdrl: Student's t for n < 5, studentized (bootstrap-t) bootstrap for n >= 5 (kdrl.tables.mean_ci).")


if __name__ == "__main__":
    main()
