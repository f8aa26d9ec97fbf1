"""Multirun through real launchers: joblib on this machine, and a real single-node SLURM
(started by scripts/slurm_up.sh when not running; CI runs as root) via submitit."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.zygote import run_app

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [
    sys.executable,
    "-m",
    "kdrl.cli.train",
    "-m",
    "debug=fast",
    "algo.total_timesteps=1000",
    "eval.freq=1000",
    "eval.final_episodes=2",
]


def _results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    env = {**os.environ, "KDRL_N_JOBS": "2"}
    proc = subprocess.run(
        TRAIN + ["launcher=joblib", "seed=0,1,2", f"hydra.sweep.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(tmp_path)
    assert sorted(r["seed"] for r in res) == [0, 1, 2] and all(r["status"] == "ok" for r in res)
    assert len({r["run_dir"] for r in res}) == 3


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    # num_envs=0 is invalid: that job fails, the others still run and land
    proc = subprocess.run(
        TRAIN + ["env.num_envs=0,2", f"hydra.sweep.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode != 0  # Hydra re-raises the failure once all jobs have run
    res = _results(tmp_path)
    assert sorted(r["status"] for r in res) == ["failed", "ok"]
    failed = next(r for r in res if r["status"] == "failed")
    assert "env.num_envs must be an integer >= 1, got 0" in failed["error"]


def test_a_local_sweep_trains_each_on_demand_teacher_once_and_writes_an_index(tmp_path):
    # 2 students of each of 2 teachers (student seed s distils teacher seed s) on 2 workers: each
    # teacher is trained once, as its own teacher job in the cache, by the first job needing it; the
    # others wait on its lock and load it (a study trains its teachers as a stage first: test_study.py)
    env = {**os.environ, "KDRL_N_JOBS": "2", "KDRL_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "kdrl.cli.distill", "-m", "launcher=joblib", "debug=fast"]
    cmd += ["teacher.seed_from_student=true", "seed=0,1", "loss=kl,nll", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count("training teacher") == 2 and "teachers first" not in log
    assert len(list((tmp_path / "cache" / "teachers").glob("*/teacher.pt"))) == 2
    index = (tmp_path / "sweep" / "index.csv").read_text().splitlines()
    assert index[0] == "job,status,overrides" and [r.split(",")[:2] for r in index[1:]] == [
        [str(i), "ok"] for i in range(4)
    ]
    assert "seed=1 loss=nll" in index[4]


def test_sweep_through_real_slurm(slurm, tmp_path):
    proc = subprocess.run(
        TRAIN
        + ["launcher=slurm", "env.num_envs=0,1,2", f"hydra.sweep.dir={tmp_path}", "hydra.launcher.timeout_min=10"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    res = _results(tmp_path)
    assert len(res) == 3, proc.stderr[-3000:]
    assert sorted(r["status"] for r in res) == ["failed", "ok", "ok"]
    # the jobs ran under SLURM (submitit logs per job id), not in this process
    assert list((tmp_path / ".submitit").glob("*/*_log.out"))
    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdrl.cli.table",
            str(tmp_path),
            "--kind",
            "teacher",
            "--rows",
            "env_id",
            "--cols",
            "seed",
            "--metric",
            "eval_return_mean",
            "--no-plots",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert table.returncode == 0, table.stderr
    assert "2 ok runs, 1 failed" in table.stdout


def test_basic_launcher_jobs_in_one_process_do_not_leak_state(tmp_path):
    # the same seed twice in one process (basic launcher): identical runs only if seeds, RNGs,
    # thread settings and loggers are reset per job; output dirs must differ
    proc = subprocess.run(
        TRAIN + ["seed=3,3", "torch_threads=1", f"hydra.sweep.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _results(tmp_path)
    assert a["run_dir"] != b["run_dir"]
    assert (
        a["eval_returns"] == b["eval_returns"]
        and a["eval_history"][-1]["return_mean"] == b["eval_history"][-1]["return_mean"]
    )
    losses = [(Path(r["run_dir"]) / "csv" / "metrics.csv").read_text().splitlines()[1:] for r in (a, b)]
    td = [[line.split(",")[-1] for line in ls] for ls in losses]
    assert td[0] == td[1]


def test_sweep_through_a_local_ray(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KDRL_RAY_ADDRESS"}
    proc = subprocess.run(
        TRAIN + ["launcher=ray", "env.num_envs=0,2", f"hydra.sweep.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=env,
    )
    res = _results(tmp_path)
    assert len(res) == 2, (proc.stdout + proc.stderr)[-3000:]
    assert sorted(r["status"] for r in res) == ["failed", "ok"]
    ok = next(r for r in res if r["status"] == "ok")
    assert ok["env_steps"] == 1000


def test_debug_sweep_preset_trains_the_teacher_once_and_tables(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdrl.cli.distill",
            "-m",
            "experiment=debug_sweep",
            f"hydra.sweep.dir={sweep}",
            f"teacher.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    # trained once (its own teacher job, in the first student's process); every student job then loads it
    assert log.count("training teacher") == 1 and log.count("reusing cached teacher") == 4
    res = _results(sweep)
    assert sorted((r["loss"], r["seed"]) for r in res) == [("kl", 0), ("kl", 1), ("nll", 0), ("nll", 1)]
    table = run_app("table", [str(sweep), "--out", str(tmp_path / "t")], timeout=120)
    assert table.returncode == 0, table.stderr
    assert "4 ok runs, 0 failed" in table.stdout and (tmp_path / "t" / "table.tex").exists()


def test_an_unreachable_slurm_controller_is_one_line(tmp_path):
    """issue: `kdrl-train -m launcher=slurm seed=0,1` with the controller down ended in submitit's
    traceback (FailedJobError: sbatch: error: ... Unable to contact slurm controller). An sbatch that
    fails that way stands in for the cluster here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)' >&2\nexit 1\n"
    )
    sbatch.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("KDRL_DEBUG", None)
    proc = subprocess.run(
        TRAIN + ["launcher=slurm", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in said, said[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kdrl-train: error:")]
    assert len(errors) == 1, said[-3000:]
    assert "launcher=slurm" in errors[0] and "Unable to contact slurm controller" in errors[0], errors[0]
    assert not _results(tmp_path / "sweep")  # no job ran
