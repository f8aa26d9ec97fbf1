"""kdrl-study and kdrl-table under faults, with real processes (issue 28): the driver killed mid-stage
and rerun, two drivers on one study dir, a job killed by the kernel (SIGKILL, as the OOM killer does),
a disk that fills while a table is written, and a table of a sweep whose jobs are still running.

Each test runs CartPole teachers at debug=fast sizes (seconds per job on a free core). The figures
(what was killed when, what resumed, what was rerun, what was kept) are printed: pytest -s shows them."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from kdrl.locks import live_holder
from kdrl.study import group_members

ROOT = Path(__file__).resolve().parents[1]
JOB_LOCK = ".kdrl-job.lock"


def env(n_jobs: int) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1", "KDRL_N_JOBS": str(n_jobs)}


def study_cmd(sdir: Path, seeds: str) -> list[str]:
    return [
        sys.executable, "-m", "kdrl.cli.study", "study=debug", f"dir={sdir}", f"stages.teachers.seeds={seeds}",
        "stage=teachers", "poll_s=0.3",
    ]  # fmt: skip


def start(sdir: Path, seeds: str, n_jobs: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        study_cmd(sdir, seeds), cwd=ROOT, env=env(n_jobs), stdout=open(log, "w"), stderr=subprocess.STDOUT
    )


def run(sdir: Path, seeds: str, n_jobs: int, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        study_cmd(sdir, seeds), cwd=ROOT, env=env(n_jobs), capture_output=True, text=True, timeout=timeout
    )


def wait_for(cond, timeout: float = 300, what: str = "", proc: subprocess.Popen | None = None) -> float:
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        assert proc is None or proc.poll() is None, f"the driver ended (code {proc.returncode}) before {what}"
        time.sleep(0.1)
    return time.time() - t0


def job_dirs(sdir: Path) -> list[Path]:
    return sorted(p for p in (sdir / "teachers").glob("env=*") if p.is_dir())


def finished(sdir: Path) -> dict[str, float]:
    """run dir name -> results.json mtime"""
    return {p.parent.name: p.stat().st_mtime for p in (sdir / "teachers").glob("env=*/results.json")}


def running(sdir: Path) -> dict[str, int]:
    """run dir name -> pid of the live process holding its job lock"""
    out = {}
    for d in job_dirs(sdir):
        h = live_holder(d / JOB_LOCK)
        if h is not None and not (d / "results.json").exists():
            out[d.name] = h["pid"]
    return out


def launched(log: Path) -> list[list[str]]:
    """Per multirun the stage's log records: the seeds it launched (Hydra's '#k : ... seed=s' lines)."""
    runs: list[list[str]] = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("# ") and "kdrl.cli.train -m" in line:
            runs.append([])
        elif "\t#" in line and "seed=" in line and runs:
            runs[-1].append(line.split("seed=")[1].split()[0])
    return runs


def index_rows(sdir: Path) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads((sdir / "index.json").read_text())["jobs"]}


# ---- a. the driver killed mid-stage and rerun ------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGKILL])
def test_a_driver_killed_mid_stage_then_rerun_trains_nothing_twice_and_loses_nothing(tmp_path, sig):
    """4 teachers, 2 worker processes. The driver is killed once the first job has finished and the third
    has just started in the freed worker; the rerun waits for the jobs still running in the old
    multirun's workers (not starting them again), runs only the job nobody started, and completes."""
    sdir = tmp_path / "study"
    drv = start(sdir, "[0,1,2,3]", 2, tmp_path / "driver1.log")
    t0 = time.time()
    wait_for(lambda: finished(sdir) and "env=cartpole,seed=2" in running(sdir), what="seed 2 running", proc=drv)
    done_before, running_at_kill = finished(sdir), running(sdir)
    pgid = json.loads((sdir / ".launch" / "teachers.pid").read_text())["pgid"]
    t_kill = time.time() - t0
    drv.send_signal(sig)
    drv.wait(timeout=30)
    print(f"\n[a] killed the driver (signal {sig.name}) at {t_kill:.1f} s: finished {sorted(done_before)}, "
          f"running {sorted(running_at_kill)}")  # fmt: skip
    rerun = run(sdir, "[0,1,2,3]", 2)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert "4/4 ok in stage(s) teachers" in out, out[-3000:]
    after = finished(sdir)
    assert sorted(after) == [f"env=cartpole,seed={s}" for s in range(4)]
    for name, mtime in done_before.items():  # finished before the kill: kept, not rerun
        assert after[name] == mtime, name
    runs = launched(sdir / "logs" / "teachers.log")
    assert len(runs) in (1, 2) and sorted(runs[0]) == ["0", "1", "2", "3"], runs
    relaunched = runs[1] if len(runs) == 2 else []  # none: the old workers had taken every job already
    # a job that was running at the kill ran on in its worker: the rerun did not start it again
    for name in running_at_kill:
        assert name.split("seed=")[1] not in relaunched, (name, relaunched, out[-2000:])
    for name in after:  # every job ran once, from its start to its end: none was cut and resumed
        res = json.loads((sdir / "teachers" / name / "results.json").read_text())
        assert res["status"] == "ok" and res["resumed_from_env_steps"] is None, name
    assert group_members(pgid) == []  # nothing of the killed driver's multirun is left
    assert {r["status"] for r in index_rows(sdir).values() if r["stage"] == "teachers"} == {"ok"}
    waited = "waiting for them to end, not running them twice" in out
    assert waited, out[-3000:]  # seed 2 had just started: it was still running when the rerun began
    print(f"[a] rerun: waited for the old jobs: {waited}; launched seeds {relaunched}; kept {sorted(done_before)}")


# ---- b. two drivers on one study dir ------------------------------------------------------------------
def test_b_a_second_driver_refuses_in_one_line_naming_the_first_and_sigterm_stops_the_stage(tmp_path):
    sdir = tmp_path / "study"
    first = start(sdir, "[0,1]", 1, tmp_path / "driver1.log")
    wait_for(lambda: (sdir / ".launch" / "teachers.pid").exists(), what="the first driver's stage", proc=first)
    second = run(sdir, "[0,1]", 1, timeout=120)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert lines[0].startswith(f"kdrl-study: error: another kdrl-study is running {sdir} (pid {first.pid} on ")
    assert "kdrl-study --status" in lines[0] and "Traceback" not in second.stderr
    print(f"\n[b] second driver: {lines[0]}")
    # the first one stopped with SIGTERM: its stage's whole process group goes with it, in one line
    pgid = json.loads((sdir / ".launch" / "teachers.pid").read_text())["pgid"]
    assert group_members(pgid)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 2
    log = (tmp_path / "driver1.log").read_text()
    assert "kdrl-study: error: stopped by SIGTERM: the running stage's jobs were stopped" in log, log[-2000:]
    assert group_members(pgid) == []
    assert not (sdir / ".kdrl-study.lock").exists()
    print("[b] SIGTERM: the driver and its multirun's process group ended; the lock was released")


# ---- c. a job killed by the kernel ------------------------------------------------------------------------
def test_c_a_job_killed_by_sigkill_is_marked_failed_and_the_next_call_reruns_it(tmp_path):
    sdir = tmp_path / "study"
    drv = start(sdir, "[0,1]", 1, tmp_path / "driver1.log")
    victim = sdir / "teachers" / "env=cartpole,seed=0"
    wait_for(lambda: (victim / "csv").is_dir() and live_holder(victim / JOB_LOCK), what="job seed=0 running", proc=drv)
    pid = live_holder(victim / JOB_LOCK)["pid"]
    os.kill(pid, signal.SIGKILL)  # as the OOM killer does
    assert drv.wait(timeout=300) == 1
    out = (tmp_path / "driver1.log").read_text()
    assert (
        "failed teachers/env=cartpole,seed=0: killed, lost or refused: its process ended without writing results.json (killed"
        in out
    ), out
    rows = index_rows(sdir)
    row = rows["teachers/env=cartpole,seed=0"]
    assert row["status"] == "failed" and "was killed by SIGKILL" in row["error"], row
    status = subprocess.run(
        [sys.executable, "-m", "kdrl.cli.study", "--status", str(sdir)], capture_output=True, text=True, env=env(1)
    )
    assert (
        "teachers/env=cartpole,seed=0: killed, lost or refused: its process ended without writing results.json"
        in status.stdout
    )
    assert "failed (" in status.stdout and "rerun by the next kdrl-study call" in status.stdout
    print(f"\n[c] SIGKILL to job pid {pid}; --status: {status.stdout.splitlines()[0]}")
    rerun = run(sdir, "[0,1]", 1)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert "2/2 ok in stage(s) teachers" in rerun.stdout
    res = json.loads((victim / "results.json").read_text())
    assert res["status"] == "ok"
    runs = launched(sdir / "logs" / "teachers.log")
    print(f"[c] multiruns launched: {runs}; seed=0 resumed from env step {res['resumed_from_env_steps']}")
    assert "0" in runs[-1]


# ---- d. the disk fills while a table is written ------------------------------------------------------------
RUNS = ROOT / "docs" / "minatar" / "runs" / "asterix"
TABLE_ARGS = ["--rows", "method", "--cols", "student_size", "--no-plots"]


def kdrl_table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdrl.cli.table", *args], capture_output=True, text=True, env=env(1), timeout=300
    )


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(point)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield point
    subprocess.run(["umount", str(point)], check=False)


def fill(point: Path) -> None:
    with open(point / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_d_kdrl_table_on_a_full_disk_keeps_the_previous_table(tmpfs):
    assert RUNS.is_dir()
    out = tmpfs / "table"
    ok = kdrl_table(str(RUNS), *TABLE_ARGS, "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "table.md" in before and b"kl_rusu" in before["table.md"]
    fill(tmpfs)
    full = kdrl_table(str(RUNS), *TABLE_ARGS, "--out", str(out))
    errors = full.stderr.strip().splitlines()
    assert full.returncode == 1 and len(errors) == 1, full.stderr
    assert errors[0].startswith(f"kdrl-table: error: no space left on device writing {out}/"), errors
    assert "the previous file, if any, is kept" in errors[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # every file as it was, no temp file
    print(f"\n[d] full tmpfs: {errors[0]}")


def test_d_a_study_table_on_a_full_disk_keeps_the_previous_table(tmp_path, monkeypatch):
    """kdrl-study's table writer (kdrl.study.write_table): the disk fills half way through table.md."""
    import pathlib

    from kdrl.study import Index, Runner

    sdir = tmp_path / "study"
    names = sorted(p.name for p in RUNS.iterdir() if (p / "results.json").is_file())[:6]
    rows = {}
    for n in names:
        shutil.copytree(RUNS / n, sdir / "students" / n)
        rows[f"students/{n}"] = {
            "id": f"students/{n}", "stage": "students", "app": "distill", "name": n, "hash": "x",
            "run_dir": f"students/{n}", "overrides": [f"seed={n[-1]}"], "needs": [], "status": "ok", "since": 0.0,
        }  # fmt: skip
    study = {
        "name": "full", "stages": {"students": {"app": "distill"}},
        "tables": {"main": {"rows": "method", "cols": "student_size", "plots": False}},
    }  # fmt: skip
    index = Index(sdir / "index.json", {"study": "full"}, rows)
    index.save()
    runner = Runner(study, sdir, say=lambda s: None)
    (text,) = runner.write_tables()
    table = sdir / "tables" / "main" / "table.md"
    before = table.read_bytes()
    assert b"kl_rusu" in before and "complete" in text
    real = pathlib.Path.write_text

    def half_then_full(self, data, *a, **k):
        if self.name.startswith(".table.md."):
            real(self, data[: len(data) // 2], *a, **k)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full)
    (text,) = runner.write_tables()
    assert text.startswith(f"table main: not rewritten: no space left on device writing {table} "), text
    assert table.read_bytes() == before
    assert not list((sdir / "tables").rglob("*.tmp"))


# ---- e. kdrl-table on a sweep whose jobs are still running ------------------------------------------------
def test_e_kdrl_table_of_a_running_sweep_shows_n_per_cell_and_marks_incomplete_cells(tmp_path):
    sdir = tmp_path / "study"
    drv = start(sdir, "[0,1,2]", 1, tmp_path / "driver1.log")
    try:
        wait_for(lambda: len(finished(sdir)) == 1 and running(sdir), what="one job finished and one running", proc=drv)
        # the driver and its jobs frozen while kdrl-table reads them: on a loaded machine the last jobs would
        # otherwise finish before it does (the sweep is then complete, and the race is the test's, not kdrl's)
        frozen = [psutil.Process(drv.pid), *psutil.Process(drv.pid).children(recursive=True)]
        for p in frozen:
            p.suspend()
        try:
            proc = kdrl_table(
                str(sdir / "teachers"), "--kind", "teacher", "--rows", "env_id", "--cols", "kind",
                "--metric", "eval_return_mean", "--no-plots", "--out", str(tmp_path / "table"),
            )  # fmt: skip
            n_done, n_running = len(finished(sdir)), len(running(sdir))
        finally:
            for p in frozen:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.resume()
    finally:
        drv.send_signal(signal.SIGTERM)
        drv.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "table" / "table.md").read_text()
    print(f"\n[e] {n_done} finished, {n_running} running:\n{table}")
    row = next(line for line in table.splitlines() if line.startswith("| CartPole-v1 |"))
    # k of N finished, k < N: how far the jobs got while kdrl-table read them depends on the machine's load
    marks = [(int(k), int(n)) for k, n in re.findall(r"⧗ n=(\d+) of (\d+)", row)]
    assert len(marks) == 1 and 1 <= marks[0][0] < marks[0][1] <= 3, row
    assert "not finished yet (⧗ n=k of N: an incomplete cell" in table
    assert "0 failed" in table  # a running job is not a failure
