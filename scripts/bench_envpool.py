"""EnvPool vs gymnasium on Atari (issue 15): env steps/s through kdrl's vector-env interface (random
actions, SAME_STEP autoreset, final_obs), and the return of a random policy on each backend.

    python scripts/bench_envpool.py                       # Pong, 8 envs, 20k steps per backend, 3 repeats
    python scripts/bench_envpool.py --env ALE/Breakout-v5 --num-envs 1 8

Both backends run kdrl's preprocessing (kdrl.envs: 84x84 grey, skip 4, stack 4, no-ops, sticky 0.25).
Prints a table and writes docs/envpool_bench.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def steps_per_s(env_id: str, backend: str, num_envs: int, steps: int) -> float:
    from kdrl.envs import make_vector_env, transition_next_obs

    envs = make_vector_env(env_id, num_envs, seed=0, vectorization=backend)
    rng = np.random.default_rng(0)
    n_actions = int(envs.single_action_space.n)
    t0 = time.perf_counter()
    for _ in range(steps // num_envs):
        obs, _, term, trunc, infos = envs.step(rng.integers(n_actions, size=num_envs))
        transition_next_obs(obs, infos, term | trunc)
    rate = (steps // num_envs) * num_envs / (time.perf_counter() - t0)
    envs.close()
    return rate


def random_returns(env_id: str, backend: str, num_envs: int, episodes: int) -> list[float]:
    from kdrl.envs import make_vector_env

    envs = make_vector_env(env_id, num_envs, seed=1, vectorization=backend)
    rng = np.random.default_rng(1)
    n_actions = int(envs.single_action_space.n)
    ret, out = np.zeros(num_envs), []
    while len(out) < episodes:
        _, rew, term, trunc, _ = envs.step(rng.integers(n_actions, size=num_envs))
        ret += rew
        for i in np.flatnonzero(term | trunc):
            out.append(float(ret[i]))
            ret[i] = 0.0
    envs.close()
    return out[:episodes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="ALE/Pong-v5")
    ap.add_argument("--num-envs", type=int, nargs="+", default=[8])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "envpool_bench.md")
    args = ap.parse_args()
    lines = ["| backend | envs | env steps/s (median of repeats, interleaved) | runs |", "|---|---|---|---|"]
    for n in args.num_envs:
        rates: dict[str, list[float]] = {"sync": [], "envpool": []}
        for _ in range(args.repeats):  # interleaved: machine drift hits both alike
            for backend in rates:
                rates[backend].append(steps_per_s(args.env, backend, n, args.steps))
        for backend, r in rates.items():
            lines.append(f"| {backend} | {n} | {np.median(r):,.0f} | {', '.join(f'{x:,.0f}' for x in r)} |")
        lines.append(f"| envpool / sync | {n} | **{np.median(rates['envpool']) / np.median(rates['sync']):.2f}×** | |")
    rets = {b: random_returns(args.env, b, 8, args.episodes) for b in ("sync", "envpool")}
    lines += ["", "| backend | random-policy return (mean ± std, episodes) |", "|---|---|"]
    for b, r in rets.items():
        lines.append(f"| {b} | {np.mean(r):.2f} ± {np.std(r):.2f} (n = {len(r)}) |")
    table = "\n".join(lines)
    print(table)
    args.out.write_text(
        f"# EnvPool vs gymnasium, {args.env}\n\nMade by `python scripts/bench_envpool.py` on this machine "
        f"({args.steps:,} random-action steps per run; one process, EnvPool's default threads).\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
