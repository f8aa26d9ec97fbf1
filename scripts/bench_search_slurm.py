#!/usr/bin/env python
"""Workers sharing one study on a real SLURM (scripts/slurm_up.sh: single node), with pruning, and a
killed search resumed.

Each worker is one sweeper process (``kdrl-distill hparams_search=cartpole_student_optuna
launcher=slurm hydra.sweeper.n_jobs=1``: each of its trials a SLURM job), all on one journal file
(``KDRL_OPTUNA_STORAGE=journal:...``); the study's ``n_trials`` is their total. Trials are debug-size
CartPole students (3,000 env steps, an evaluation every 500) under the median pruner (2 start-up
trials, warm-up 1,000 steps), so that the measurement is about the machinery, not the students.

* ``--workers 2 4``: N workers at once, 3N trials; trials per state, trials per worker, wall time.
* ``--resume``: 2 workers, 8 trials; both sweepers killed (SIGKILL) once 3 trials have ended; their
  SLURM jobs run on and tell their trials; the same 2 commands rerun continue the study to 8 (a
  trial asked but never submitted is failed as stale and retried).

Writes <docs>/search_slurm.csv and prints a Markdown table.

    bash scripts/slurm_up.sh && python scripts/bench_search_slurm.py --workers 2 4 --resume
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def worker_cmd(out: Path, name: str, study: str, n_trials: int, i: int) -> list[str]:
    return [
        str(BIN / "kdrl-distill"),
        "hparams_search=cartpole_student_optuna",
        "debug=fast",
        "launcher=slurm",
        "hydra.launcher.timeout_min=15",
        "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.study_name={study}",
        "hydra.sweeper.heartbeat_s=2",
        "hydra.sweeper.stale_after_s=20",
        "hydra.sweeper.samplers.tpe.n_startup_trials=4",
        "hydra.sweeper.pruners.median.n_startup_trials=2",
        "hydra.sweeper.pruners.median.n_warmup_steps=1000",
        "distill.total_timesteps=3000",
        "eval.freq=500",
        f"teacher.cache_dir={out / 'cache'}",
        f"hydra.sweep.dir={out / name / f'worker{i}'}",
    ]


def start(out: Path, name: str, study: str, n_trials: int, workers: int, env: dict, tag: str) -> list[subprocess.Popen]:
    procs = []
    for i in range(workers):
        log = (out / name / f"worker{i}{tag}.log").open("w")
        cmd = worker_cmd(out, name, study, n_trials, i)
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
    return procs


def summary(journal: Path, study: str) -> dict:
    from kdrl.search.summary import load_study, state_counts

    s = load_study(f"journal:{journal}", study)
    per_worker = Counter(t.system_attrs.get("kdrl:worker", "?") for t in s.trials)
    return {
        "counts": state_counts(s.trials),
        "per_worker": sorted(per_worker.values(), reverse=True),
        "n": len(s.trials),
    }


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    for p in procs:
        p.wait(timeout=max(1.0, deadline - time.time()))
    return [p.returncode for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", nargs="*", type=int, default=[2, 4])
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "search_slurm")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    out = args.out.resolve()
    rows = ["run,workers,n_trials,trials,COMPLETE,PRUNED,FAIL,stale,per_worker,wall_s,note"]
    md = [
        "| run | workers | n_trials | complete / pruned / failed / stale | trials per worker | wall |",
        "|---|---|---|---|---|---|",
    ]

    def record(run: str, workers: int, n_trials: int, s: dict, wall: float, note: str = "") -> None:
        c = s["counts"]
        pw = "/".join(map(str, s["per_worker"]))
        rows.append(
            f"{run},{workers},{n_trials},{s['n']},{c['COMPLETE']},{c['PRUNED']},{c['FAIL']},{c['stale']},{pw},{wall:.0f},{note}"
        )
        md.append(
            f"| {run} | {workers} | {n_trials} | {c['COMPLETE']} / {c['PRUNED']} / {c['FAIL']} / {c['stale']} | {pw} | "
            f"{wall / 60:.1f} min{' (' + note + ')' if note else ''} |"
        )
        print(md[-1], flush=True)

    for n in args.workers:
        name, study, n_trials = f"w{n}", f"slurm_w{n}", 3 * n
        (out / name).mkdir(parents=True, exist_ok=True)
        journal = out / name / "study.journal"
        env = {
            **os.environ,
            "KDRL_OPTUNA_STORAGE": f"journal:{journal}",
            "WANDB_MODE": "disabled",
            "PYTHONWARNINGS": "ignore",
        }
        t0 = time.time()
        rcs = wait_all(start(out, name, study, n_trials, n, env, ""), 3600)
        if any(rcs):
            sys.exit(f"{name}: worker exit codes {rcs}; see {out / name}/worker*.log")
        record(name, n, n_trials, summary(journal, study), time.time() - t0)
    if args.resume:
        name, study, n_trials, n = "resume", "slurm_resume", 8, 2
        (out / name).mkdir(parents=True, exist_ok=True)
        journal = out / name / "study.journal"
        env = {
            **os.environ,
            "KDRL_OPTUNA_STORAGE": f"journal:{journal}",
            "WANDB_MODE": "disabled",
            "PYTHONWARNINGS": "ignore",
        }
        t0 = time.time()
        procs = start(out, name, study, n_trials, n, env, "_first")
        while time.time() - t0 < 3600:
            time.sleep(3)
            if journal.exists():
                c = summary(journal, study)["counts"]
                if c["COMPLETE"] + c["PRUNED"] + c["FAIL"] >= 3:
                    break
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)  # the sweepers die; their SLURM jobs run on
            p.wait()
        at_kill = summary(journal, study)
        record("resume: at the kill", n, n_trials, at_kill, time.time() - t0, f"{at_kill['counts']['RUNNING']} running")
        time.sleep(25)  # past stale_after_s, so a trial nobody runs is seen as stale
        rcs = wait_all(start(out, name, study, n_trials, n, env, "_again"), 3600)
        if any(rcs):
            sys.exit(f"{name}: worker exit codes {rcs}; see {out / name}/worker*_again.log")
        record("resume: rerun", n, n_trials, summary(journal, study), time.time() - t0, "the same study")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "search_slurm.csv").write_text("\n".join(rows) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
