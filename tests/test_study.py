"""kdrl-study: declared studies (conf/study/*.yaml) planned, run stage by stage as Hydra multiruns on a
real launcher, resumed (finished jobs skipped, failed ones rerun), and their status read fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdrl.study import Index, StudyError, known_studies, load_study, plan, status_report

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1", "KDRL_N_JOBS": "2"}


def study(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdrl.cli.study", *map(str, args)],
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


# ---- declarations ------------------------------------------------------------------------------------
def test_every_declared_study_plans_its_jobs_with_teachers_first_and_one_wandb_group():
    sizes = {}
    for name in known_studies():
        decl = load_study(name)
        jobs = plan(decl, Path("/S"))
        ids = {j.id: j for j in jobs}
        sizes[name] = {s: sum(j.stage == s for j in jobs) for s in decl["stages"]}
        for job in jobs:
            assert f"wandb.group={name}" in job.overrides  # every job joins the study's W&B group
            for need in job.needs:  # a student loads a file of an earlier (train) stage's job
                assert ids[need].app == "train" and jobs.index(ids[need]) < jobs.index(job)
                assert any(f"/S/{need}/teacher.pt" in o for o in job.overrides)
    assert sizes["demo"] == {"teachers": 5, "students": 40}
    assert sizes["cartpole_losses"] == {"teachers": 5, "students": 60}
    assert sizes["control"] == {"teachers": 5, "students": 15}
    assert sizes["lunarlander"] == {"teachers": 1, "students": 10}
    assert sizes["multitask"] == {"teachers": 2, "distill": 10, "joint_dqn": 5}
    assert sizes["rusu2016"] == {"teachers": 4, "losses": 45, "compression": 60}
    assert sizes["minatar"]["teachers"] == 5 and sizes["minatar"]["compression"] == 75
    # student seed s distils teacher seed s where the experiment says so (the scripts' seed_from_student)
    for name in ("demo", "cartpole_losses", "control"):
        for job in plan(load_study(name), Path("/S")):
            if job.needs:
                seed = next(o for o in job.overrides if o.startswith("seed="))[5:]
                assert job.needs == [f"teachers/env=cartpole,seed={seed}"], (name, job.id)
    minatar = {j.id: j for j in plan(load_study("minatar"), Path("/S"))}
    assert "recipe=minatar_fast" in minatar["teachers/env=minatar_asterix,seed=0"].overrides
    multi = next(j for j in plan(load_study("multitask"), Path("/S")) if j.stage == "joint_dqn")
    assert multi.needs == ["teachers/env=cartpole,seed=0", "teachers/env=acrobot,seed=0"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("+stages.students.bogus=1", "unknown key(s) bogus"),
        ("stages.students.teacher.stage=nowhere", "its teacher stage 'nowhere' is no stage of this study"),
        ("stages.students.app=fit", "app must be one of train, distill, multitask, data"),
        ("name=???", "name is required"),
        ("stages.students.seeds=[7]", "needs a teacher env=cartpole seed=7 that stage 'teachers' does not train"),
    ],
)
def test_a_bad_declaration_is_one_line(tmp_path, override, message):
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decl = load_study("debug", [override, f"dir={tmp_path}"])
        plan(decl, tmp_path)


def test_the_cli_refuses_an_unknown_study_in_one_line(tmp_path):
    proc = study("study=nope", cwd=tmp_path)
    assert proc.returncode == 2 and "kdrl-study: error: no study 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- status --------------------------------------------------------------------------------------------
def test_status_of_a_10000_job_study_takes_under_5_s_and_sees_jobs_finished_since(tmp_path):
    """One index file, the jobs not marked ok looked at again: a job that finished (ok or failed) after
    the index was written counts as such; no run dir of an ok job is read."""
    rows = []
    for i in range(10_000):
        stage = "teachers" if i < 100 else "students"
        name = f"env=cartpole,seed={i}" if i < 100 else f"loss=kl,width={i % 7},seed={i}"
        rows.append(
            {"id": f"{stage}/{name}", "stage": stage, "app": "train" if i < 100 else "distill", "name": name,
             "hash": f"{i:012x}", "run_dir": f"{stage}/{name}", "overrides": [f"seed={i}", "loss=kl", "debug=fast"],
             "needs": [] if i < 100 else [f"teachers/env=cartpole,seed={i % 100}"], "status": "ok", "since": 0.0}
        )  # fmt: skip
    for r in rows[-30:-10]:
        r["status"] = "pending"
    for r in rows[-10:]:  # failed jobs: their results.json says so
        r["status"], r["error"] = "failed", "ValueError: boom"
        (tmp_path / r["run_dir"]).mkdir(parents=True)
        (tmp_path / r["run_dir"] / "results.json").write_text(
            json.dumps({"status": "failed", "error": "ValueError: boom"})
        )
    index = Index(tmp_path / "index.json", {"study": "synthetic"}, {r["id"]: r for r in rows})
    index.save()
    # after the index was written: one pending job finished ok, one failed, one started (its dir exists)
    for r, status in ((rows[-30], "ok"), (rows[-29], "failed")):
        (tmp_path / r["run_dir"]).mkdir(parents=True)
        (tmp_path / r["run_dir"] / "results.json").write_text(json.dumps({"status": status, "error": "late"}))
    (tmp_path / rows[-28]["run_dir"]).mkdir(parents=True)
    t0 = time.perf_counter()
    proc = study("--status", tmp_path, cwd=tmp_path)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert wall < 5.0, f"--status took {wall:.1f} s"
    out = proc.stdout
    assert "10000 jobs: 9971/10000 ok, 11 failed, 18 pending" in out, out  # no runner: a started job is pending
    assert "stage students (distill): 9871/9900 ok, 11 failed, 18 pending" in out
    assert "failed (11; rerun by the next kdrl-study call):" in out and "ValueError: boom" in out
    text, not_ok = status_report(tmp_path)
    assert not_ok == 29 and text.splitlines()[0] == out.splitlines()[0]


def test_status_before_any_run_plans_the_study(tmp_path):
    proc = study("study=debug", f"dir={tmp_path / 's'}", "--status", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "study debug" in proc.stdout and "4 jobs: 0/4 ok, 2 pending, 2 waiting" in proc.stdout
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert [r["id"] for r in index["jobs"]] == [
        "teachers/env=cartpole,seed=0", "teachers/env=cartpole,seed=1", "students/seed=0", "students/seed=1",
    ]  # fmt: skip


# ---- running -------------------------------------------------------------------------------------------
def mtimes(study_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(study_dir)): p.stat().st_mtime for p in study_dir.glob("*/*/results.json")}


@pytest.mark.slow
def test_debug_study_runs_teachers_first_skips_finished_jobs_and_reruns_failed_ones(tmp_path):
    """conf/study/debug.yaml on launcher=joblib: the teacher stage, then the students loading its files
    (a student made to fail by a damaged teacher file is listed by --status and rerun by the next
    call once the file is whole again); a call on a finished study runs nothing."""
    sdir = tmp_path / "study"
    elsewhere = tmp_path / "elsewhere"  # configs come from the package, not the current directory
    elsewhere.mkdir()
    teachers = study("study=debug", f"dir={sdir}", "launcher=joblib", "stage=teachers", cwd=elsewhere)
    assert teachers.returncode == 0, teachers.stdout + teachers.stderr
    assert sorted(mtimes(sdir)) == [
        "teachers/env=cartpole,seed=0/results.json",
        "teachers/env=cartpole,seed=1/results.json",
    ]
    # damage teacher 1's file: its student fails to load it
    t1 = sdir / "teachers" / "env=cartpole,seed=1" / "teacher.pt"
    shutil.copy2(t1, tmp_path / "teacher1.pt")
    t1.write_bytes(t1.read_bytes()[:100])
    first = study("study=debug", f"dir={sdir}", "launcher=joblib", cwd=elsewhere)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "stage teachers: all 2 jobs ok, nothing to run" in first.stdout
    assert "1 failed job(s): the next kdrl-study call reruns them" in first.stdout
    ok, bad = results(sdir / "students" / "seed=0"), results(sdir / "students" / "seed=1")
    assert ok["status"] == "ok" and bad["status"] == "failed"
    assert ok["teacher_checkpoint"] == str(sdir / "teachers" / "env=cartpole,seed=0" / "teacher.pt")
    assert ok["config"]["wandb"]["group"] == "debug"
    status = study("study=debug", f"dir={sdir}", "--status", cwd=elsewhere)
    assert "4 jobs: 3/4 ok, 1 failed" in status.stdout, status.stdout
    assert "students/seed=1: " in status.stdout and "teacher.pt" in status.stdout
    assert (sdir / "tables" / "main" / "table.md").is_file()
    # the damaged file whole again: only the failed job runs
    shutil.copy2(tmp_path / "teacher1.pt", t1)
    before = mtimes(sdir)
    second = study("study=debug", f"dir={sdir}", "launcher=joblib", cwd=elsewhere)
    assert second.returncode == 0, second.stdout + second.stderr
    after = mtimes(sdir)
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == ["students/seed=1/results.json"]
    assert "study debug: 4/4 ok" in second.stdout
    table = (sdir / "tables" / "main" / "table.md").read_text()
    assert table.startswith("# debug study") and "complete. Regenerate: `kdrl-study study=debug`" in table
    assert "2 ok runs, 0 failed" in table and "| kl (tau=0.01) |" in table
    assert "| kl (tau=0.01) |" in second.stdout  # printed, as make demo prints its table
    # a finished study: nothing runs, nothing is rewritten
    third = study("study=debug", f"dir={sdir}", "launcher=joblib", cwd=elsewhere)
    assert third.returncode == 0 and mtimes(sdir) == after
    assert "0 to run" in third.stdout and "multirun" not in third.stdout
    index = json.loads((sdir / "index.json").read_text())
    assert {r["status"] for r in index["jobs"]} == {"ok"} and all(len(r["hash"]) == 12 for r in index["jobs"])


@pytest.mark.slow
def test_debug_study_on_a_real_slurm(slurm, tmp_path):
    sdir = tmp_path / "study"
    proc = study("study=debug", f"dir={sdir}", "launcher=slurm", "hydra.launcher.timeout_min=10", timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "study debug: 4/4 ok" in proc.stdout
    assert list((sdir / "students" / ".submitit").glob("*/*_log.out"))  # the jobs ran under SLURM
    assert (sdir / "tables" / "main" / "table.md").is_file()


@pytest.mark.slow
def test_debug_study_on_a_local_ray(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    env = {k: v for k, v in ENV.items() if k != "KDRL_RAY_ADDRESS"}
    sdir = tmp_path / "study"
    proc = study("study=debug", f"dir={sdir}", "launcher=ray", env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "study debug: 4/4 ok" in proc.stdout and (sdir / "tables" / "main" / "table.md").is_file()
