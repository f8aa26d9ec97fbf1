"""Distil teachers trained outside kdrl (issue 15): an SB3 DQN with RL Zoo's CartPole settings, a
CleanRL dqn.py teacher, and the SB3 net as TorchScript, each into a 7%-params student (5 seeds); and
the wrapper-mismatch trap: an SB3 teacher trained behind VecNormalize, loaded into kdrl's raw env.

    python scripts/bench_foreign_teachers.py                 # ~15 min on 2 cores
    python scripts/bench_foreign_teachers.py --seeds 3 --sb3-steps 50000

Prints a table (teacher return in kdrl's env, student normalised score, mean [95% CI] over seeds) and
writes docs/foreign_teachers.md and .csv.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from kdrl.foreign import RL_ZOO_DQN_CARTPOLE as ZOO

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sb3_teacher(out: Path, steps: int, seed: int, normalize: bool) -> Path:
    """Train with SB3 and write an RL Zoo / hub-style folder: the zip and results.json (mean_reward
    over 20 episodes in SB3's own env, as huggingface_sb3 reports it)."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    folder = out / ("sb3_vecnormalize" if normalize else "sb3_zoo") / "dqn-CartPole-v1"
    if (folder / "results.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    if normalize:
        env = VecNormalize(env, norm_obs=True, norm_reward=False)
    model = DQN("MlpPolicy", env, seed=seed, verbose=0, **ZOO)
    model.learn(steps)
    model.save(folder / "dqn-CartPole-v1.zip")
    if normalize:
        env.save(str(folder / "vecnormalize.pkl"))
        env.training = False
    mean, std = evaluate_policy(model, env, n_eval_episodes=20, deterministic=True)
    (folder / "results.json").write_text(json.dumps({"mean_reward": float(mean), "std_reward": float(std)}))
    if not normalize:  # the same net as TorchScript: obs -> Q-values
        import torch

        torch.jit.script(model.q_net.q_net.cpu().eval()).save(str(out / "sb3_q_net.ts"))
    print(f"SB3 teacher{' (VecNormalize)' if normalize else ''}: {mean:.1f} +- {std:.1f} in SB3's env", flush=True)
    del np
    return folder


def cleanrl_teacher(out: Path, steps: int, seed: int) -> Path:
    path = out / "cleanrl" / "dqn.cleanrl_model"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "scripts/plain/cleanrl_dqn_cartpole.py", "--seed", str(seed)]
    res = subprocess.run(
        [*cmd, "--total-timesteps", str(steps), "--save-model", str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    print(
        f"CleanRL teacher: {json.loads(res.stdout.splitlines()[-1])['return_mean']:.1f} (20 held-out episodes)",
        flush=True,
    )
    return path


def distil(name: str, teacher: Path, out: Path, seeds: int) -> Path:
    sweep = out / "students" / name
    if len(list(sweep.glob("*/results.json"))) >= seeds:
        return sweep
    cmd = [
        str(BIN / "kdrl-distill"), "-m", "env=cartpole", f"teacher.checkpoint={teacher}", "student.size=rusu_7",
        f"seed={','.join(map(str, range(seeds)))}", "launcher=joblib", "logger=csv",
        "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "foreign_teachers")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sb3-steps", type=int, default=50_000)
    ap.add_argument("--sb3-seed", type=int, default=1, help="RL Zoo's settings solve CartPole on seeds 1 and 2")
    ap.add_argument("--cleanrl-steps", type=int, default=500_000)
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "foreign_teachers")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    zoo = sb3_teacher(out, args.sb3_steps, args.sb3_seed, normalize=False)
    mismatched = sb3_teacher(out, args.sb3_steps, args.sb3_seed, normalize=True)
    cleanrl = cleanrl_teacher(out, args.cleanrl_steps, 0)
    teachers = {"sb3 (RL Zoo folder)": zoo, "cleanrl": cleanrl, "torchscript": out / "sb3_q_net.ts",
                "sb3 behind VecNormalize (mismatch)": mismatched}  # fmt: skip
    from kdrl.statistics import mean_ci

    rows = ["| teacher | format | teacher in kdrl's env | its files report | student (7%): normalised score, mean [95% CI] | n | warning |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    csv = ["teacher,format,teacher_return,reported,score_mean,ci_low,ci_high,n,failed,warning"]
    for name, path in teachers.items():
        sweep = distil(name.split()[0] + ("_mismatch" if "mismatch" in name else ""), path, out, args.seeds)
        res = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
        ok = [r for r in res if r["status"] == "ok"]
        scores = [r["normalized_score"] for r in ok]
        _, lo, hi, _ = mean_ci(scores)
        mean = sum(scores) / len(scores) if scores else float("nan")
        t = sum(r["teacher_return_mean"] for r in ok) / max(len(ok), 1)
        rep = ok[0].get("teacher_reported_return") if ok else None
        warn = (ok[0].get("teacher_warning") or "") if ok else ""
        fmt = ok[0]["teacher_format"] if ok else "?"
        rows.append(
            f"| {name} | {fmt} | {t:.1f} | {rep if rep is not None else '–'} | {100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
            f"| {len(ok)} ({len(res) - len(ok)} failed) | {warn[:90] + ('…' if len(warn) > 90 else '') or '–'} |"
        )
        csv.append(f'{name},{fmt},{t:.2f},{rep},{mean:.4f},{lo:.4f},{hi:.4f},{len(ok)},{len(res) - len(ok)},"{warn}"')
    table = "\n".join(rows)
    print(table)
    args.docs.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.docs}.md").write_text(
        "# Distilling teachers trained outside kdrl (CartPole-v1)\n\nMade by `python scripts/bench_foreign_teachers.py`. "
        "Student: rusu_7 (7% of the teacher's params, KL tau = 0.01, teacher-driven), 20 held-out episodes per seed.\n\n"
        + table
        + "\n"
    )
    Path(f"{args.docs}.csv").write_text("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
