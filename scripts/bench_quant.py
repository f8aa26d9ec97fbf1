"""fp32 vs int8 vs pruned students (issue 15): params, bytes on disk, batch-1 latency, held-out return
and greedy agreement with the fp32 student, on CartPole, LunarLander and a MinAtar game.

    python scripts/bench_quant.py                         # trains the CartPole/LunarLander students it lacks
    python scripts/bench_quant.py \
        --student minatar_breakout=outputs/study_minatar/breakout/kl_rusu-rusu_7-teacher_s0 \
        --size-row "minatar_breakout 25%=outputs/study_minatar/breakout/kl_rusu-rusu_25-teacher_s0" \
        --size-row "cartpole teacher=.cache/kdrl/teachers/CartPole-v1-s0-53f7f1030803"

Each student is a kdrl-distill run dir (student.pt inside); its pruned twin is the same run with
distill.prune.amount (trained here when missing). ``--size-row`` adds larger trained nets (a run dir
with student.pt or teacher.pt) to show how the int8 size ratio grows with the net. Every model is run
through onnxruntime (one thread): fp32 ONNX, int8 ONNX (kdrl-export --formats onnx_int8: dynamic
for MLPs, static QDQ for conv nets), int8-weights ONNX (onnx_int8_weights: float activations), and the
same three of the pruned student. Returns: ``--episodes`` held-out episodes (seeds 2,000,000+),
the same seeds for every model of an env, so int8 - fp32 is a paired difference (its 95% CI:
kdrl.tables.mean_ci over episodes). Agreement: greedy actions equal to the fp32 student's on states the
fp32 student visits (other seeds). Bytes: the .onnx file, and gzip -9 of it (where pruning's zeros
show). Writes docs/quantisation.md and .csv.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
DEFAULT_ENVS = {"cartpole": "CartPole-v1", "lunarlander": "LunarLander-v3"}


def distil(env: str, out: Path, prune: float) -> Path:
    run = out / f"{env}_prune{prune:g}"
    if (run / "student.pt").is_file():
        return run
    cmd = [str(BIN / "kdrl-distill"), f"env={env}", "student.size=rusu_7", "seed=0", "logger=csv",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"]  # fmt: skip
    if prune:
        cmd += [f"distill.prune.amount={prune}", "distill.prune.at=0.5"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return run


def greedy_of(runner):
    return lambda obs: runner(np.asarray(obs, dtype=np.float32))[1]


def latency_us(runner, obs: np.ndarray, n: int = 2000) -> float:
    one = obs[:1]
    for _ in range(100):
        runner(one)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        runner(one)
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def policy_file(run: Path) -> Path:
    """A distill run's student.pt, or a teacher run's teacher.pt."""
    for name in ("student.pt", "teacher.pt"):
        if (run / name).is_file():
            return run / name
    raise SystemExit(f"bench_quant: no student.pt or teacher.pt in {run}")


def measure(name: str, fp32_run: Path, pruned_run: Path | None, out: Path, episodes: int) -> list[dict]:
    from kdrl.evaluation import eval_seeds, evaluate_policy, rollout_states
    from kdrl.export import export_policy, onnx_runner
    from kdrl.io import load_policy
    from kdrl.prune import nonzero_params
    from kdrl.tables import mean_ci
    from kdrl.teachers import load_teacher_net

    policy = load_policy(policy_file(fp32_run))
    results = fp32_run / "results.json"
    kwargs = json.loads(results.read_text())["config"]["env"].get("kwargs") if results.is_file() else None
    env_id, stem = policy["env_id"], name.replace(" ", "_").replace("%", "pct")
    models, sources = {}, {}
    for kind, run in (("", fp32_run), ("pruned ", pruned_run)):
        if run is None:
            continue
        res = export_policy(
            policy_file(run),
            out / stem,
            ["onnx", "onnx_int8", "onnx_int8_weights"],
            name=f"{stem}_{kind.strip() or 'dense'}",
            min_agreement=0.0,  # measured and reported here, not a gate
        )
        for fmt, label in (("onnx", "fp32"), ("onnx_int8", "int8"), ("onnx_int8_weights", "int8 weights")):
            models[kind + label], sources[kind + label] = res.files[fmt], policy_file(run)
    runners = {k: onnx_runner(p) for k, p in models.items()}
    greedy = {k: greedy_of(r) for k, r in runners.items()}
    states = rollout_states(greedy["fp32"], env_id, eval_seeds(2_100_000, 50), 3000, kwargs)
    ref = greedy["fp32"](states)
    seeds = eval_seeds(2_000_000, episodes)
    rows, base = [], None
    for kind, path in models.items():
        returns = np.asarray(evaluate_policy(greedy[kind], env_id, seeds, kwargs), dtype=float)
        base = returns if kind == "fp32" else base
        lo, hi = mean_ci(returns - base)  # paired: the same episode seeds for every model
        net, _ = load_teacher_net(sources[kind], env_id, tuple(policy["obs_shape"]), int(policy["n_actions"]))
        fp32_bytes = models["fp32"].stat().st_size
        rows.append({
            "env": name, "model": kind, "params": sum(p.numel() for p in net.parameters()),
            "nonzero": nonzero_params(net), "bytes": path.stat().st_size,
            "gzip_bytes": len(gzip.compress(path.read_bytes(), 9)),
            "x_smaller": fp32_bytes / path.stat().st_size,
            "latency_us": latency_us(runners[kind], states), "episodes": len(returns),
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "pct_of_fp32": 100 * returns.mean() / base.mean() if base.mean() else float("nan"),
            "diff_vs_fp32": float((returns - base).mean()), "diff_ci_lo": lo, "diff_ci_hi": hi,
            "agreement": float((greedy[kind](states) == ref).mean()), "n_states": len(states),
        })  # fmt: skip
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| env | model | params (non-zero) | bytes (gzip -9) | × smaller than fp32 | batch-1 latency (µs) | "
        "held-out return | % of fp32 | − fp32, paired [95% CI] | agreement with fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['model']} | {r['params']:,} ({r['nonzero']:,}) | {r['bytes']:,} ({r['gzip_bytes']:,}) | "
            f"{r['x_smaller']:.2f} | {r['latency_us']:.1f} | {r['return_mean']:.1f} ± {r['return_std']:.1f} "
            f"(n = {r['episodes']}) | {r['pct_of_fp32']:.1f} | {r['diff_vs_fp32']:+.2f} [{r['diff_ci_lo']:+.2f}, "
            f"{r['diff_ci_hi']:+.2f}] | {100 * r['agreement']:.1f}% of {r['n_states']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "quant")
    ap.add_argument("--student", action="append", default=[], help="NAME=RUN_DIR (its student.pt); repeatable")
    ap.add_argument("--size-row", action="append", default=[], help="NAME=RUN_DIR of a larger net; repeatable")
    ap.add_argument("--prune", type=float, default=0.5, help="pruned twins of the trained students (0: none)")
    ap.add_argument("--episodes", type=int, default=100, help="held-out episodes per model (paired seeds)")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "quantisation")
    args = ap.parse_args()
    runs: dict[str, tuple[Path, Path | None]] = {}
    for env in DEFAULT_ENVS:
        runs[env] = (distil(env, args.out, 0.0), distil(env, args.out, args.prune) if args.prune else None)
    for item in args.student + args.size_row:
        name, path = item.split("=", 1)
        runs[name] = (Path(path), None)
    rows = [
        r
        for name, (fp32, pruned) in runs.items()
        for r in measure(name, fp32, pruned, args.out / "onnx", args.episodes)
    ]
    table = markdown_table(rows)
    print(table)
    args.docs.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.docs}.md").write_text(
        "# fp32 vs int8 vs pruned students\n\nMade by `python scripts/bench_quant.py` (command in its docstring); "
        "onnxruntime, one thread.\n\n" + table + "\n"
    )
    keys = list(rows[0])
    Path(f"{args.docs}.csv").write_text(
        "\n".join([",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]) + "\n"
    )


if __name__ == "__main__":
    main()
