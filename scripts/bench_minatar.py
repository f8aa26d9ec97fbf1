"""MinAtar DQN: kdrl vs a plain-PyTorch CleanRL-style loop with the same net and settings.

    python scripts/bench_minatar.py                        # Breakout, 200k env steps each
    python scripts/bench_minatar.py --steps 50000 --parts plain
    python scripts/bench_minatar.py --steps 25000 --sps 3        # throughput only, interleaved runs

Both sides: MinAtar (sticky actions 0.1) through kdrl.envs.make_env (channels-first uint8), the
Young & Tian (2019) net (16-filter 3x3 conv, 128 hidden; the same nn.Module class), replay 100k,
batch 32, one update per env step, Huber TD, target every 1,000 env steps, eps 1.0 -> 0.1 over
100k steps after 5k, centred RMSProp (lr 2.5e-4, alpha 0.95, eps 0.01), one torch thread.
The plain loop acts in one env with a batch-1 forward per step (as CleanRL does); kdrl acts in 8
envs with one forward and runs the 8 updates then due inside one Lightning step (same updates per
env step). Steps/s = env steps / training wall time, periodic evaluations excluded. Returns: the
*last* policy of each (kdrl's last_policy.pt, so no best-checkpoint advantage), greedy, on the
same 20 held-out seeds with the same evaluation function. The kdrl side is the cached teacher the
distillation studies use (``obtain_teacher``), trained here when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from kdrl.envs import env_spec, make_env
from kdrl.evaluation import eval_seeds, evaluate_policy

ROOT = Path(__file__).resolve().parents[1]

FINAL_SEED, FINAL_EPISODES = 2_000_000, 20  # kdrl's held-out evaluation seeds


def plain_dqn(env_id: str, steps: int, seed: int) -> dict:
    """Young & Tian's settings, one env: scripts/plain/minatar_dqn.py in its own process."""
    res = run_plain_loop("minatar_dqn.py", ["--env", env_id, "--seed", str(seed), "--total-timesteps", str(steps)])
    return {**res, "steps": res["env_steps"], "train_wall_s": res["train_s"]}


def run_plain_loop(script: str, args: list[str]) -> dict:
    """One run of a standalone plain loop in scripts/plain/ (its own process); its JSON line."""
    import subprocess

    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parent / "plain" / script), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def kdrl_dqn(preset: str, steps: int, seed: int, cache: str) -> dict:
    """kdrl's teacher for this preset (the same one the distillation studies use: trained here
    if it is not in the cache yet). Steps/s from its results.json (evaluations excluded); return
    of its *last* policy on the held-out seeds, evaluated here."""
    from kdrl.runs.teacher import obtain_teacher
    from kdrl.teachers import load_teacher_net

    torch.set_num_threads(1)
    path, res = obtain_teacher(preset, seed, ["budget=cpu", f"algo.total_timesteps={steps}"], cache)
    env_id = res["env_id"]
    spec = env_spec(make_env(env_id))
    net, _ = load_teacher_net(path.parent / "checkpoints" / "last_policy.pt", env_id, spec.obs_shape, spec.n_actions)
    greedy = lambda x: net(torch.as_tensor(x)).argmax(1).numpy()  # noqa: E731
    with torch.no_grad():
        returns = evaluate_policy(greedy, env_id, eval_seeds(FINAL_SEED, FINAL_EPISODES), {"max_episode_steps": 10000})
    return {
        "steps": res["env_steps"],
        "train_wall_s": res["train_wall_time_s"],
        "sps": res["env_steps"] / res["train_wall_time_s"],
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "best_policy_return": res["eval_return_mean"],
        "teacher": str(path),
    }


def kdrl_sps(preset: str, steps: int, seed: int, out: Path) -> float:
    """Steps/s of a fresh kdrl-train run (own process, evaluations excluded)."""
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "kdrl.cli.train",
        f"env={preset}",
        f"seed={seed}",
        f"algo.total_timesteps={steps}",
        f"eval.freq={10 * steps}",
        "eval.final_episodes=1",
        "eval.reference_episodes=1",
        "logger=none",
        f"hydra.run.dir={out}",
        "resume=false",
    ]
    subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "KDRL_NO_PROGRESS": "1"},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    res = json.loads((out / "results.json").read_text())
    return res["env_steps"] / res["train_wall_time_s"]


def sps_side_by_side(preset: str, env_id: str, steps: int, repeats: int, out: Path) -> None:
    """Interleaved short runs (plain, kdrl, plain, kdrl, ...) on an otherwise idle machine: the
    per-step cost is stationary after learning starts, so this isolates throughput."""
    sps: dict[str, list[float]] = {"plain": [], "kdrl": []}
    for r in range(repeats):
        sps["plain"].append(plain_dqn(env_id, steps, r)["sps"])
        sps["kdrl"].append(kdrl_sps(preset, steps, r, out / f"sps_{r}"))
        print(f"repeat {r}: plain {sps['plain'][-1]:.0f} steps/s, kdrl {sps['kdrl'][-1]:.0f} steps/s", flush=True)
    med = {k: float(np.median(v)) for k, v in sps.items()}
    print(f"\n{env_id}, {steps} env steps per run (5k before learning), {repeats} interleaved repeats, 1 thread\n")
    print("| loop | steps/s per run | median |\n|---|---|---|")
    for k, v in sps.items():
        print(f"| {k} | {' / '.join(f'{x:.0f}' for x in v)} | {med[k]:.0f} |")
    ratios = [k / p for k, p in zip(sps["kdrl"], sps["plain"])]
    print(
        f"\nkdrl / plain: median {med['kdrl'] / med['plain']:.2f}x; per repeat {' / '.join(f'{x:.2f}' for x in ratios)}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "sps.json").write_text(json.dumps(sps, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="minatar_breakout")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", nargs="+", default=["kdrl", "plain"], choices=["kdrl", "plain"])
    ap.add_argument("--out", default="outputs/bench_minatar")
    ap.add_argument("--cache", default=os.environ.get("KDRL_CACHE", ".cache/kdrl"))
    ap.add_argument(
        "--sps",
        type=int,
        default=0,
        metavar="N",
        help="only throughput: N interleaved short runs of each (--steps each, e.g. 25000)",
    )
    args = ap.parse_args()
    from kdrl.config import compose_config

    env_id = compose_config("train", [f"env={args.preset}"]).env.id
    if args.sps:
        sps_side_by_side(args.preset, env_id, args.steps, args.sps, Path(args.out))
        return
    rows = {}
    for part in args.parts:  # one at a time: two trainings on 2 cores would halve both
        print(f"running {part} ({args.steps} env steps on {env_id}) ...", flush=True)
        if part == "kdrl":
            rows[part] = kdrl_dqn(args.preset, args.steps, args.seed, args.cache)
        else:
            rows[part] = plain_dqn(env_id, args.steps, args.seed)
        print(json.dumps(rows[part]), flush=True)
    print(f"\n{env_id}, {args.steps} env steps, seed {args.seed}, 1 torch thread\n")
    print("| loop | steps/s | train wall (s) | greedy return, 20 held-out episodes (last policy) |")
    print("|---|---|---|---|")
    for part, r in rows.items():
        print(f"| {part} | {r['sps']:.0f} | {r['train_wall_s']:.1f} | {r['return_mean']:.2f} ± {r['return_std']:.2f} |")
    if len(rows) == 2:
        print(f"\nkdrl / plain steps/s: {rows['kdrl']['sps'] / rows['plain']['sps']:.2f}x")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"bench_s{args.seed}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
