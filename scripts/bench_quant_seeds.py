"""int8 vs fp32 over 5 independently trained students per env (docs/protocol.md: n = 5 seeds).

    python scripts/bench_quant_seeds.py

For CartPole and LunarLander, 25% students (rusu_25) on seeds 0-4 distilled from the seed-0 teacher
(trained here when missing); for MinAtar Breakout, the five 25% students of `kdrl-study study=minatar`. Each is exported
as fp32, int8 (kdrl-export onnx_int8) and int8 weights (onnx_int8_weights) and run on 100 held-out
episodes, the same seeds for every file (scripts/bench_quant.py's measure). Per student: the file's
normalised score against its own fp32 (random = 0, fp32 = 1, so negative returns do not invert it)
and its size ratio; per env: mean [95% bootstrap-t CI] over the 5 students, with failed trainings
counted. Writes docs/quantisation_seeds.md and .csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quant import INT8, ROOT, measure, run_distill  # noqa: E402

TEACHERS = {
    "cartpole": ".cache/kdrl/teachers/CartPole-v1-s0-53f7f1030803/teacher.pt",
    "lunarlander": ".cache/kdrl/teachers/LunarLander-v3-s0-c5a016e0b39d/teacher.pt",
}
STUDY = "outputs/study/minatar/compression/env=minatar_breakout,student.size=rusu_25,seed={seed}"  # kdrl-study study=minatar


def students(out: Path, seeds: list[int]) -> dict[str, list[Path | None]]:
    runs: dict[str, list[Path | None]] = {}
    for env, teacher in TEACHERS.items():
        runs[env] = []
        for seed in seeds:
            overrides = [f"env={env}", "student.size=rusu_25", f"seed={seed}", f"teacher.checkpoint={ROOT / teacher}",
                         "logger=csv", "trainer.enable_progress_bar=false"]  # fmt: skip
            try:
                runs[env].append(run_distill(out / f"{env}_rusu_25_t0_s{seed}", overrides))
            except Exception as exc:  # counted as a failure, never dropped
                print(f"{env} seed {seed}: training failed: {exc}", file=sys.stderr)
                runs[env].append(None)
    runs["minatar_breakout"] = [
        ROOT / STUDY.format(seed=s) if (ROOT / STUDY.format(seed=s) / "student.pt").is_file() else None for s in seeds
    ]
    return runs


HEADER = "env,seed,model,params,x_smaller,return_mean,fp32_return_mean,random_return,score_vs_fp32"


def table(rows, seeds: int) -> str:
    """The Markdown table from the CSV rows (one per student and file); a student with no row failed."""
    import pandas as pd

    from kdrl.statistics import mean_ci

    df = pd.DataFrame(rows)
    lines = [
        "| env | file | n students (failed) | params | × smaller than fp32, mean | normalised score vs fp32, "
        "mean [95% CI] | students with score ≥ 0.99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for env, per_env in df.groupby("env", sort=False):
        failed = seeds - per_env["seed"].nunique()
        for model in ("int8", "int8 weights"):
            got = per_env[per_env["model"] == model]
            scores = got["score_vs_fp32"].astype(float).to_numpy()
            cell = mean_ci(scores).text(".3f")
            lines.append(
                f"| {env} | {model} | {len(got)} ({failed}) | {int(got['params'].iloc[0]):,} | "
                f"{got['x_smaller'].astype(float).mean():.2f} | {cell} | {int((scores >= 0.99).sum())} of {len(got) + failed} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "quant_seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "quantisation_seeds")
    ap.add_argument("--report", action="store_true", help="only rebuild the table from the committed CSV")
    args = ap.parse_args()
    if args.report:
        import pandas as pd

        rows = pd.read_csv(args.docs.with_suffix(".csv")).to_dict("records")
    else:
        rows = []
        for env, runs in students(args.out, args.seeds).items():
            for seed, run in zip(args.seeds, runs):
                if run is None:
                    continue
                measured = measure(f"{env}_s{seed}", {"": (run, INT8)}, args.out / "onnx", args.episodes)
                fp32 = measured[0]["return_mean"]
                rows += [{"env": env, "seed": seed, "fp32_return_mean": fp32, **r} for r in measured]
        args.docs.with_suffix(".csv").write_text(
            HEADER + "\n" + "".join(
                f"{r['env']},{r['seed']},{r['model']},{r['params']},{r['x_smaller']:.4f},{r['return_mean']:.3f},"
                f"{r['fp32_return_mean']:.3f},{r['random_return']:.3f},{r['score_vs_fp32']:.4f}\n" for r in rows
            )
        )  # fmt: skip
    text = table(rows, len(args.seeds))
    print(text)
    args.docs.with_suffix(".md").write_text(
        "# int8 vs fp32 over 5 students per env\n\nMade by `python scripts/bench_quant_seeds.py` (`--report` rebuilds the "
        f"table from the CSV): 25% students, {args.episodes} held-out episodes per file (same seeds for every file of a "
        "student); normalised score = (int8 return − random) / (fp32 return − random) on those episodes; CI over the "
        "students: kdrl.statistics.mean_ci (‡: no reliable interval); a failed training counts against the last "
        "column.\n\n" + text + "\n"
    )


if __name__ == "__main__":
    main()
