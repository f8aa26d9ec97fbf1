"""The MinAtar teacher table on whatever this machine has (issue 26: "GPU: the same teacher table on it").

Each game with its default recipe (env=minatar_*: minatar_big_batch; Seaquest minatar_seaquest), seeds 1-3, all
runs at once, one process each (one thread; the GPU shared when there is one), each stopped at Young & Tian's
score (eval.stop_at_return) or at --cap-s seconds of wall time, whichever comes first. Prints and writes the
time-to-score table (kdrl.tables, as `kdrl-study study=minatar` writes it on CPU) and each run's env steps per
second.

    python scripts/gpu_teacher_table.py --out /tmp/gpu_table            # every game, seeds 1-3, 7 min cap
    python scripts/gpu_teacher_table.py --games minatar_breakout --seeds 1 --cap-s 120
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"


def young_tian_targets() -> dict[str, tuple[str, float]]:
    """game (conf/env/minatar_*.yaml) -> (env id, Young & Tian (2019)'s DQN score at 5M frames), the targets
    that conf/study/minatar.yaml's teachers_time table declares (one declaration of them)."""
    import yaml

    targets = yaml.safe_load((CONF / "study" / "minatar.yaml").read_text())["tables"]["teachers_time"]["targets"]
    games = {}
    for f in sorted((CONF / "env").glob("minatar_*.yaml")):
        env_id = yaml.safe_load(f.read_text())["env"]["id"]
        if env_id in targets:
            games[f.stem] = (env_id, targets[env_id])
    return games


TARGETS = young_tian_targets()


def csv_progress(run_dir: Path) -> dict[str, float]:
    """What a run's CSV log says: its last env step, best periodic return, median env steps per second."""
    rows = []
    for f in run_dir.glob("csv/**/metrics.csv"):
        with f.open() as fh:
            rows += list(csv.DictReader(fh))
    steps = [float(r["env_steps"]) for r in rows if r.get("env_steps")]
    evals = [float(r["eval/return_mean"]) for r in rows if r.get("eval/return_mean")]
    sps = sorted(float(r["train/sps"]) for r in rows if r.get("train/sps"))
    return {
        "last_env_steps": max(steps, default=math.nan),
        "best_eval": max(evals, default=math.nan),
        "median_sps": sps[len(sps) // 2] if sps else math.nan,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", nargs="+", default=list(TARGETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument(
        "--cap-s", type=float, default=420.0, help="wall-time cap per run (a run stopped there: not reached)"
    )
    ap.add_argument("--out", type=Path, default=Path("outputs/gpu_teacher_table"))
    args = ap.parse_args()
    bad = [g for g in args.games if g not in TARGETS]
    if bad:
        print(f"gpu_teacher_table: unknown game(s) {', '.join(bad)}; one of {', '.join(TARGETS)}", file=sys.stderr)
        return 2

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    print(
        f"device: {device}; torch {torch.__version__}; {os.cpu_count()} CPUs; {len(args.games) * len(args.seeds)} runs at once"
    )
    env = {**os.environ, "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}
    procs = {}
    t0 = time.time()
    for game in args.games:
        for seed in args.seeds:
            run_dir = args.out / "runs" / f"{game}_s{seed}"
            cmd = [
                sys.executable, "-m", "kdrl.cli.train", f"env={game}", f"seed={seed}",
                f"eval.stop_at_return={TARGETS[game][1]}", "logger=csv", "trainer.enable_progress_bar=false",
                "resume=false", f"hydra.run.dir={run_dir}",
            ]  # fmt: skip
            run_dir.mkdir(parents=True, exist_ok=True)
            log = (run_dir / "stdout.log").open("w")
            procs[(game, seed)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), run_dir)
    capped = set()
    while any(p.poll() is None for p, _ in procs.values()):
        if time.time() - t0 > args.cap_s:
            for key, (p, _) in procs.items():
                if p.poll() is None:
                    p.kill()
                    capped.add(key)
            break
        time.sleep(1.0)
    for p, _ in procs.values():
        p.wait()
    wall = time.time() - t0

    from kdrl import tables as T

    targets = {TARGETS[g][0]: TARGETS[g][1] for g in args.games}
    df = T.time_to_score([str(args.out / "runs")], targets)
    text = f"# MinAtar teachers on {device}: time to Young & Tian's score\n\n"
    text += (
        f"{len(procs)} runs at once (one process each, one thread; the GPU shared), each with its game's default "
        f"recipe, stopped at the score or at {args.cap_s:.0f} s. Time: since its process started (imports and "
        f"setup included) until a periodic evaluation (10 episodes, every 25k env steps) first reached the score. "
        f"All runs together: {wall / 60:.1f} min. `python scripts/gpu_teacher_table.py`\n\n"
    )
    text += T.time_to_score_markdown(df) + "\n" if len(df) else "(no run finished)\n"
    lines = ["| run | ended | last env step | best periodic return | median env steps/s |", "|---|---|---|---|---|"]
    for (game, seed), (p, run_dir) in procs.items():
        prog = csv_progress(run_dir)
        ended = f"stopped at the {args.cap_s:.0f} s cap" if (game, seed) in capped else f"exit {p.returncode}"
        lines.append(
            f"| {game} seed {seed} | {ended} | {prog['last_env_steps']:,.0f} | {prog['best_eval']:.1f} | "
            f"{prog['median_sps']:,.0f} |"
        )
    text += "\nPer run (from its CSV log; a capped run has no results.json, so it is not in the table above):\n\n"
    text += "\n".join(lines) + "\n"
    print(text)
    (args.out / "table.md").write_text(text)
    if len(df):
        df.to_csv(args.out / "runs.csv", index=False)
    (args.out / "meta.json").write_text(json.dumps({"device": device, "torch": torch.__version__, "wall_s": wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
