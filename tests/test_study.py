"""kdrl-study: declared studies (conf/study/*.yaml) planned, run stage by stage as Hydra multiruns on a
real launcher, resumed (finished jobs skipped, failed ones rerun), and their status read fast."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kdrl.study import Index, StudyError, check_declaration, known_studies, load_study, plan, status_report

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


@functools.cache
def planned(name: str) -> tuple[dict, list]:
    """A declared study and its jobs planned under /S, once per test process: planning minatar composes ~100
    configs (seconds). The tests that read them share an xdist group, so one worker plans each study once."""
    decl = load_study(name)
    return decl, plan(decl, Path("/S"))


# the tests that read every declared study's jobs: on one worker, sharing `planned`
PLANS = pytest.mark.xdist_group("plans")


# ---- declarations ------------------------------------------------------------------------------------
@PLANS
def test_every_declared_study_plans_its_jobs_with_teachers_first_and_one_wandb_group():
    sizes = {}
    for name in known_studies():
        decl, jobs = planned(name)
        ids = {j.id: j for j in jobs}
        sizes[name] = {s: sum(j.stage == s for j in jobs) for s in decl["stages"]}
        for job in jobs:
            assert f"wandb.group={name}" in job.overrides  # every job joins the study's W&B group
            for need in job.needs:  # a job loads a file of an earlier (train or data) stage's job
                assert ids[need].app in ("train", "data") and jobs.index(ids[need]) < jobs.index(job)
                produced = "teacher.pt" if ids[need].app == "train" else "dataset.npz"
                assert any(f"/S/{need}/{produced}" in o for o in job.overrides)
    assert sizes["demo"] == {"teachers": 5, "students": 40}
    assert sizes["cartpole_losses"] == {"teachers": 5, "students": 60}
    assert sizes["control"] == {"teachers": 5, "students": 15}
    assert sizes["lunarlander"] == {"teachers": 1, "students": 10}
    assert sizes["multitask"] == {"teachers": 2, "distill": 10, "joint_dqn": 5}
    assert sizes["rusu2016"] == {"teachers": 4, "losses": 45, "compression": 60}
    assert sizes["minatar"]["teachers"] + sizes["minatar"]["teachers_seaquest"] == 15
    # 5 sizes (100/50/25/7/4%) x 5 games x 5 seeds
    assert sizes["minatar"]["compression"] + sizes["minatar"]["compression_seaquest"] == 125
    # losses (nll, mse) and who acts (student, mixed) at 7% on the 5 games x 5 seeds (kl / teacher-acts: compression's)
    assert sizes["minatar"]["losses"] + sizes["minatar"]["losses_seaquest"] == 50
    assert sizes["minatar"]["control"] + sizes["minatar"]["control_seaquest"] == 50
    # student seed s distils teacher seed s where the experiment says so (the scripts' seed_from_student)
    for name in ("demo", "cartpole_losses", "control"):
        for job in planned(name)[1]:
            if job.needs:
                seed = next(o for o in job.overrides if o.startswith("seed="))[5:]
                assert job.needs == [f"teachers/env=cartpole,seed={seed}"], (name, job.id)
    minatar = {j.id: j for j in planned("minatar")[1]}
    assert "recipe=minatar_big_batch" in minatar["teachers/env=minatar_asterix,seed=1"].overrides
    # student seeds 0-4 distil teacher seeds 1, 2, 3, 1, 2 (seed: cycle), Seaquest's from its own recipe's teachers
    for seed, tseed in zip(range(5), (1, 2, 3, 1, 2)):
        student = minatar[f"compression/env=minatar_asterix,student.size=rusu_7,seed={seed}"]
        assert student.needs == [f"teachers/env=minatar_asterix,seed={tseed}"]
        student = minatar[f"compression_seaquest/env=minatar_seaquest,student.size=rusu_4,seed={seed}"]
        assert student.needs == [f"teachers_seaquest/env=minatar_seaquest,seed={tseed}"]
        student = minatar[f"control_seaquest/env=minatar_seaquest,control=mixed,seed={seed}"]
        assert student.needs == [f"teachers_seaquest/env=minatar_seaquest,seed={tseed}"]
    assert "algo.exploration.eps_end=0.1" in minatar["teachers_seaquest/env=minatar_seaquest,seed=2"].overrides
    multi = next(j for j in planned("multitask")[1] if j.stage == "joint_dqn")
    assert multi.needs == ["teachers/env=cartpole,seed=0", "teachers/env=acrobot,seed=0"]


@PLANS
def test_the_converged_core_table_is_the_plateau_studys_jobs_with_a_teacher_each():
    """issue 27's converged table: student seed s (1-5) distils teacher seed s on all five games, and its Asterix and
    SpaceInvaders students compose the very configs of minatar_student_budget's plateau jobs at 4 updates per 4
    env steps (its 95k-update point), teachers included: one run each, whichever study ran it."""
    from kdrl.runs.job import config_differences
    from kdrl.study import hydra_conf

    minatar = {j.id: j for j in planned("minatar")[1]}
    budget = {j.id: j for j in planned("minatar_student_budget")[1]}
    stages = {
        "converged": 60,
        "converged_seaquest": 15,
        "converged_seaquest_190k": 15,
        "converged_space_invaders_7": 5,
        "teachers5": 20,
        "teachers5_seaquest": 5,
    }
    assert {s: sum(j.stage == s for j in minatar.values()) for s in stages} == stages
    for seed in range(1, 6):
        for game, teachers in (("minatar_breakout", "teachers5"), ("minatar_seaquest", "teachers5_seaquest")):
            stage = "converged_seaquest" if game == "minatar_seaquest" else "converged"
            job = minatar[f"{stage}/env={game},student.size=rusu_4,seed={seed}"]
            assert job.needs == [f"{teachers}/env={game},seed={seed}"]
            assert "distill.gradient_steps=4" in job.overrides and "eval.final_episodes=100" in job.overrides

    def composed(job) -> dict:
        from hydra import compose
        from omegaconf import OmegaConf

        shaping = [o for o in job.overrides if not o.startswith(("wandb.group=", "teacher.checkpoint="))]
        with hydra_conf():
            return OmegaConf.to_container(compose(config_name=job.app, overrides=shaping), resolve=True)

    pairs = [
        ("converged/env=minatar_asterix,student.size=rusu_25,seed=2",
         "plateau_asterix/env=minatar_asterix,student.size=rusu_25,distill.gradient_steps=4,seed=2"),
        ("converged/env=minatar_space_invaders,student.size=rusu_4,seed=5",
         "plateau_space_invaders_25_4/env=minatar_space_invaders,student.size=rusu_4,distill.gradient_steps=4,seed=5"),
        ("converged_space_invaders_7/env=minatar_space_invaders,seed=3",
         "plateau_space_invaders/env=minatar_space_invaders,student.size=rusu_7,distill.gradient_steps=16,seed=3"),
    ]  # fmt: skip
    for ours, theirs in pairs:
        assert minatar[ours].needs[0].split("/")[1] == budget[theirs].needs[0].split("/")[1]  # the same teacher job
        assert config_differences(composed(budget[theirs]), composed(minatar[ours])) == []
    # and a 47.5k-update student of the compression stage is not one of them
    old = minatar["compression/env=minatar_asterix,student.size=rusu_25,seed=2"]
    new = minatar["converged/env=minatar_asterix,student.size=rusu_25,seed=2"]
    assert ("distill.gradient_steps", 2, 4) in config_differences(composed(old), composed(new))


@pytest.mark.parametrize(
    "override, message",
    [
        ("+stages.students.bogus=1", "unknown key(s) bogus"),
        ("stages.students.teacher.stage=nowhere", "its teacher stage 'nowhere' is no stage of this study"),
        ("stages.students.app=fit", "app must be one of train, distill, multitask, data"),
        ("name=???", "name is required"),
        ("stages.students.seeds=[7]", "needs a teacher env=cartpole seed=7 that stage 'teachers' does not train"),
        ("stages.teachers.seeds=null", "teacher seed 'cycle' needs seeds declared in this stage and in its teacher"),
        ("stages.students.teacher.seed=cylce", "teacher seed must be null, student, cycle or an integer, got 'cylce'"),
        ("+tables.t={stages: [students], stage_labels: {studnets: x}}", "stage_labels names 'studnets', no stage"),
        ("+tables.t={stages: [students], exclude: {stage: students}}", "exclude takes a list of"),
        ("+tables.t={stages: [students], exclude: [{}]}", "exclude takes a list of"),
        ("+tables.t={stages: [students], pair_by: seed}", "pair_by names the column to pair a budget table's runs"),
        ("+tables.t={stages: [students], kind: budget, pair_by: ''}", "for kind budget only, got '' in a budget table"),
    ],
)
def test_a_bad_declaration_is_one_line(tmp_path, override, message):
    extra = ["stages.students.teacher.seed=cycle"] if message.startswith("teacher seed 'cycle'") else []
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decl = load_study("debug", [override, *extra, f"dir={tmp_path}"])
        plan(decl, tmp_path)


def test_cycled_teacher_seeds_spread_the_student_seeds_over_every_teacher(tmp_path):
    """issue 27: 5 student seeds over 3 teacher seeds (teacher: {seed: cycle}) take teachers 4, 5, 6, 4, 5
    in the order of the students' seeds, so the interval over students covers teacher variance."""
    decl = load_study(
        "debug", ["stages.teachers.seeds=[4,5,6]", "stages.students.seeds=[9,1,2,3,0]", "stages.students.teacher.seed=cycle"]
    )  # fmt: skip
    needs = {j.id: j.needs for j in plan(decl, tmp_path) if j.stage == "students"}
    assert needs == {
        f"students/seed={s}": [f"teachers/env=cartpole,seed={t}"] for s, t in [(9, 4), (1, 5), (2, 6), (3, 4), (0, 5)]
    }


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
        if i < 100:
            rows[-1]["wall_s"] = 36.0 + (i % 2)  # the teachers: 100 jobs, 3,650 s of one core
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
    # the ok jobs' walls summed, per stage and in all (the students here record none)
    assert "stage teachers (train): 100/100 ok; 36s per job, 1.01 core-h" in out, out
    assert out.splitlines()[1] == "ok jobs' walls: 1.01 core-hours in all"
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


def test_status_counts_the_jobs_not_ok_here_whose_results_are_published_and_only_those(tmp_path):
    """A study run on several machines: --status with the declaration (study= or the study dir's study.json)
    looks the jobs not ok here up in the stages' published dirs (job.json: same app and overrides) and in the
    published tables' results.csv (ok rows, by run dir <stage>/<name>), and counts their walls apart."""
    sdir, docs = tmp_path / "study", tmp_path / "docs"
    rows = {}
    for stage, app, names in (
        ("teachers", "train", ["seed=0", "seed=1", "seed=2"]),
        ("students", "distill", ["seed=0", "seed=1", "seed=2"]),
    ):
        for name in names:
            rows[f"{stage}/{name}"] = {
                "id": f"{stage}/{name}", "stage": stage, "app": app, "name": name, "hash": "x",
                "run_dir": f"{stage}/{name}", "overrides": [name, "wandb.group=s"], "needs": [], "status": "pending",
                "since": 0.0,
            }  # fmt: skip
    (sdir / "students" / "seed=2").mkdir(parents=True)  # ok here: its own results, not a published row
    (sdir / "students" / "seed=2" / "results.json").write_text(json.dumps({"status": "ok", "job_wall_time_s": 60}))
    Index(sdir / "index.json", {"study": "multi"}, rows).save()
    for name, overrides in (("seed=0", ["seed=0", "wandb.group=other"]), ("seed=1", ["seed=1", "debug=fast"])):
        (docs / "teachers" / name).mkdir(parents=True)  # seed=1 ran with another config: not this job
        (docs / "teachers" / name / "job.json").write_text(json.dumps({"app": "train", "overrides": overrides}))
        (docs / "teachers" / name / "results.json").write_text(json.dumps({"status": "ok", "job_wall_time_s": 1800}))
    (docs / "teachers" / "seed=2").mkdir()  # JSON, but not the objects a job writes: not counted, no traceback
    (docs / "teachers" / "seed=2" / "job.json").write_text(json.dumps({"app": "train", "overrides": ["seed=2"]}))
    (docs / "teachers" / "seed=2" / "results.json").write_text(json.dumps(["ok", 1800]))
    (docs / "table").mkdir()
    (docs / "table" / "results.csv").write_text(
        "kind,status,run_dir,job_wall_time_s\n"
        "student,ok,/elsewhere/outputs/multi/students/seed=0,3600\n"
        "student,failed,/elsewhere/outputs/multi/students/seed=1,10\n"
        "student,ok,/elsewhere/outputs/multi/students/seed=2,99999\n"
        "student,ok,/elsewhere/outputs/multi/other_stage/seed=1,10\n"
    )
    decl = {"name": "multi", "stages": {"teachers": {"app": "train", "published": str(docs / "teachers")},
            "students": {"app": "distill"}}, "tables": {"t": {"publish": str(docs / "table")}}}  # fmt: skip
    text, not_ok = status_report(sdir, study=decl)
    lines = text.splitlines()
    assert not_ok == 5 and lines[0].endswith("6 jobs: 1/6 ok, 5 pending"), text
    assert lines[2].startswith(
        "ok here or published: 3/6 jobs; the 2 published ran elsewhere, their walls 1.50 core-hours"
    )
    assert lines[3] == "neither ok here nor published: 3 jobs (teachers 2, students 1)"
    assert f"stage teachers (train): 0/3 ok, 3 pending; published: 1 more ok (0.50 core-h; {docs / 'teachers'})" in text
    assert (
        f"stage students (distill): 1/3 ok, 2 pending; 1m00s per job, 0.02 core-h; published: 1 more ok (1.00 core-h; {docs / 'table'})"
        in text
    )
    assert (
        status_report(sdir)[0].splitlines()[1] == "ok jobs' walls: 0.02 core-hours in all"
    )  # no declaration: here only
    (sdir / "study.json").write_text(json.dumps(decl))  # the study dir alone: its last run's declaration
    proc = study("--status", sdir, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == text, proc.stdout + proc.stderr


def test_every_job_of_the_minatar_converged_core_table_is_published(tmp_path):
    """issue 27's --status on a fresh checkout: the converged core table's 100 jobs (25 teachers, 75 students)
    and its Seaquest budget test are all in the committed docs, so a reviewer sees them ok without running any; the
    wide teachers of the 400k Rusu-regime students are committed as policies."""
    proc = study("study=minatar", f"dir={tmp_path / 's'}", "--status", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for stage, n in (("teachers5", 20), ("teachers5_seaquest", 5), ("converged", 60), ("converged_seaquest", 15),
                     ("converged_seaquest_190k", 15)):  # fmt: skip
        assert (
            f"stage {stage} " in proc.stdout
            and f": 0/{n} ok" in proc.stdout.split(f"stage {stage} ")[1].splitlines()[0]
        )
        assert f"published: {n} more ok" in proc.stdout.split(f"stage {stage} ")[1].splitlines()[0], proc.stdout
    # the wide teachers of Breakout's, SpaceInvaders' and Seaquest's 400k Rusu-regime students: their policies, not
    # only their results (a wide teacher retrained on another CPU is another draw, docs/protocol.md)
    for stage, n in (("teachers_rusu_breakout", 3), ("teachers_rusu_space_invaders", 3), ("teachers_rusu_seaquest", 1)):
        line = proc.stdout.split(f"stage {stage} ")[1].splitlines()[0]
        assert f"published: {n} more ok" in line and "docs/minatar/published_wide_teachers)" in line, line


def test_every_committed_teacher_policy_is_the_file_its_reference_was_measured_on():
    """A published teacher.pt (docs/minatar/...) is what its students load in place of training: its bytes must be
    those its stored reference returns were measured on (sha256), and its job must have ended ok. A truncated
    copy, a Git LFS pointer or a file swapped for another draw fails here, not as a shifted normalised score."""
    from kdrl.reference import content_digest  # the digest a reference is stored under

    policies = sorted((ROOT / "docs").rglob("teacher.pt"))
    assert len(policies) >= 54, len(policies)  # 47 of Young & Tian's net, 7 wide ones
    for pt in policies:
        ref = json.loads(pt.with_name("teacher.pt.reference.json").read_text())
        assert content_digest(pt) == ref["teacher_sha256"], pt
        assert json.loads(pt.with_name("results.json").read_text())["status"] == "ok", pt


# ---- running -------------------------------------------------------------------------------------------
def mtimes(study_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(study_dir)): p.stat().st_mtime for p in study_dir.glob("*/*/results.json")}


def test_debug_study_runs_teachers_first_skips_finished_jobs_and_reruns_failed_ones(tmp_path):
    """conf/study/debug.yaml on launcher=local (joblib: tests/test_study_wandb.py): the teacher stage, then the students loading its files
    (a student made to fail by a damaged teacher file is listed by --status and rerun by the next
    call once the file is whole again); a call on a finished study runs nothing."""
    sdir = tmp_path / "study"
    elsewhere = tmp_path / "elsewhere"  # configs come from the package, not the current directory
    elsewhere.mkdir()
    teachers = study("study=debug", f"dir={sdir}", "launcher=local", "stage=teachers", cwd=elsewhere)
    assert teachers.returncode == 0, teachers.stdout + teachers.stderr
    assert sorted(mtimes(sdir)) == [
        "teachers/env=cartpole,seed=0/results.json",
        "teachers/env=cartpole,seed=1/results.json",
    ]
    # damage teacher 1's file: its student fails to load it
    t1 = sdir / "teachers" / "env=cartpole,seed=1" / "teacher.pt"
    shutil.copy2(t1, tmp_path / "teacher1.pt")
    t1.write_bytes(t1.read_bytes()[:100])
    first = study("study=debug", f"dir={sdir}", "launcher=local", cwd=elsewhere)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "stage teachers: all 2 jobs ok, nothing to run" in first.stdout
    assert "1 failed job(s): the next kdrl-study call reruns them" in first.stdout
    ok, bad = results(sdir / "students" / "seed=0"), results(sdir / "students" / "seed=1")
    assert ok["status"] == "ok" and bad["status"] == "failed"
    assert ok["teacher_checkpoint"] == str(sdir / "teachers" / "env=cartpole,seed=0" / "teacher.pt")
    assert ok["config"]["wandb"]["group"] == "debug"
    status, _ = status_report(sdir)  # what --status prints (the command itself: test_status_of_a_10000_job_study...)
    assert "4 jobs: 3/4 ok, 1 failed" in status, status
    assert "students/seed=1: " in status and "teacher.pt" in status
    assert (sdir / "tables" / "main" / "table.md").is_file()
    # the damaged file whole again: only the failed job runs
    shutil.copy2(tmp_path / "teacher1.pt", t1)
    before = mtimes(sdir)
    second = study("study=debug", f"dir={sdir}", "launcher=local", cwd=elsewhere)
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
    third = study("study=debug", f"dir={sdir}", "launcher=local", cwd=elsewhere)
    assert third.returncode == 0 and mtimes(sdir) == after
    assert "0 to run" in third.stdout and "multirun" not in third.stdout
    index = json.loads((sdir / "index.json").read_text())
    assert {r["status"] for r in index["jobs"]} == {"ok"} and all(len(r["hash"]) == 12 for r in index["jobs"])


# ---- a killed job on a real cluster -------------------------------------------------------------------
# The students stage made long enough to be killed mid-way (a stage-level override of the declaration:
# the same on the rerun, so the jobs' config hashes, and their checkpoints' configs, still agree).
LONG_STUDENTS = "stages.students.overrides=[loss=kl,distill.total_timesteps=16000,eval.freq=2000]"
KILLED = "students/seed=1"  # the last job of its stage's multirun: the launchers collect results in order


def job_processes(run_dir: Path) -> list:
    """The processes running a job: those with a file of its run dir open (its Hydra job log, its
    metrics), the kdrl-study driver and its stage multirun excluded."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "kdrl.cli.study" in " ".join(p.info["cmdline"] or []):
                continue
            if any(f.path.startswith(str(run_dir) + os.sep) for f in p.open_files()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    master = [p for p in found if " -m " in " ".join(p.cmdline()) and "kdrl.cli." in " ".join(p.cmdline())]
    return [p for p in found if p not in master] or found


def checkpoint_env_steps(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["kdrl_stream"]["env_steps"])


def started_at(run_dir: Path) -> float:
    """When the job started: the time of the first line of its log (``[2026-12-03 12:34:14,863][...``)."""
    first = next(iter(sorted(run_dir.glob("*.log")))).read_text().splitlines()[0]
    stamp, ms = first[1:24].split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def kill_mid_way_then_resume(tmp_path: Path, launcher: str, kill: Callable[[Path, list], str],
                             hydra_args: Sequence[str] = (), env: dict | None = None) -> dict:  # fmt: skip
    """``kdrl-study study=debug`` on ``launcher`` with long students; once students/seed=1 has written
    a checkpoint past its first evaluation, ``kill`` kills it (the run dir and its processes; returns
    what it did); the call reports the job failed. A second call resumes that job from its checkpoint,
    runs nothing else and writes the table. Returns the figures."""
    sdir = tmp_path / "study"
    args = ["study=debug", f"dir={sdir}", f"launcher={launcher}", LONG_STUDENTS, "poll_s=0.5", *hydra_args]
    log = open(tmp_path / "first.log", "w")
    t0 = time.perf_counter()
    first = subprocess.Popen([sys.executable, "-m", "kdrl.cli.study", *args], cwd=ROOT, env=env or ENV,
                             stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    run_dir = sdir / KILLED
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    killed_at, how = None, None
    deadline = time.time() + 900
    try:
        while first.poll() is None and time.time() < deadline:
            if ckpt.exists():
                try:
                    steps = checkpoint_env_steps(ckpt)
                except Exception:  # being replaced right now
                    steps = 0
                if steps >= 4000:
                    procs = job_processes(run_dir)
                    if procs:
                        killed_at, how = steps, kill(run_dir, procs)
                        break
            time.sleep(0.2)
        assert killed_at is not None, (tmp_path / "first.log").read_text()[-3000:]
        first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    first_wall = time.perf_counter() - t0
    out = (tmp_path / "first.log").read_text()
    assert first.returncode == 1, out
    assert not (run_dir / "results.json").exists()  # killed: it never wrote its results
    assert f"failed {KILLED}: killed, lost or refused" in out and "the next kdrl-study call reruns them" in out, out
    index = {r["id"]: r for r in json.loads((sdir / "index.json").read_text())["jobs"]}
    assert index[KILLED]["status"] == "failed"
    assert {i: r["status"] for i, r in index.items() if i != KILLED} == dict.fromkeys(
        ["teachers/env=cartpole,seed=0", "teachers/env=cartpole,seed=1", "students/seed=0"], "ok"
    )
    status = study("--status", sdir)
    assert "4 jobs: 3/4 ok, 1 failed" in status.stdout and f"{KILLED}: killed, lost or refused" in status.stdout, (
        status.stdout
    )
    # stages in order: both teachers had finished before either student started
    teachers_done = max((sdir / t / "results.json").stat().st_mtime for t in index if t.startswith("teachers/"))
    students_started = min(started_at(sdir / s) for s in index if s.startswith("students/"))
    assert teachers_done < students_started
    # the rerun: only the killed job runs, from its checkpoint
    before = mtimes(sdir)
    t1 = time.perf_counter()
    second = study(*args, env=env, timeout=900)
    second_wall = time.perf_counter() - t1
    assert second.returncode == 0, second.stdout + second.stderr
    assert "study debug: 4/4 ok" in second.stdout and "stage teachers: all 2 jobs ok, nothing to run" in second.stdout
    assert "stage students: 1 job(s)" in second.stdout  # only the killed one was launched
    after = mtimes(sdir)
    assert sorted(k for k in after if after.get(k) != before.get(k)) == [f"{KILLED}/results.json"]
    res = results(run_dir)
    assert res["status"] == "ok" and res["env_steps"] >= 16000
    assert 0 < res["resumed_from_env_steps"] <= res["env_steps"]
    assert res["resumed_from_env_steps"] >= killed_at  # the newest whole checkpoint at the kill, or a later one
    table = (sdir / "tables" / "main" / "table.md").read_text()
    assert "complete. Regenerate: `kdrl-study study=debug`" in table and "2 ok runs, 0 failed" in table
    figures = {
        "launcher": launcher, "killed": KILLED, "how": how, "killed_at_env_steps": killed_at,
        "resumed_from_env_steps": res["resumed_from_env_steps"], "env_steps": res["env_steps"],
        "first_call_s": round(first_wall, 1), "rerun_s": round(second_wall, 1),
    }  # fmt: skip
    print("FIGURES", json.dumps(figures))
    (tmp_path.parent / f"figures_{launcher}.json").write_text(json.dumps(figures))
    return figures


@pytest.mark.slow
def test_debug_study_on_a_real_slurm_resumes_a_job_killed_mid_way(slurm, tmp_path):
    """The debug study on a real single-node SLURM (array jobs via submitit): teachers first; the
    student students/seed=1 is killed mid-way (SIGKILL to its process: no results.json, no submitit result); kdrl-study
    lists it as failed, and the rerun resumes it from its checkpoint and writes the table."""

    def kill(run_dir: Path, procs: list) -> str:
        env = procs[0].environ()
        for p in procs:
            p.send_signal(signal.SIGKILL)
        task = f"{env.get('SLURM_ARRAY_JOB_ID')}_{env.get('SLURM_ARRAY_TASK_ID')}"
        return f"SIGKILL to pid(s) {', '.join(str(p.pid) for p in procs)} of SLURM job {env['SLURM_JOB_ID']} (array task {task})"

    kill_mid_way_then_resume(tmp_path, "slurm", kill, ["hydra.launcher.timeout_min=10"])
    assert list((tmp_path / "study" / "students" / ".submitit").glob("*/*_log.out"))  # the jobs ran under SLURM


@pytest.mark.slow
def test_debug_study_on_a_local_ray_resumes_a_job_killed_mid_way(tmp_path):
    """The same on a local Ray (started per stage by the launcher): the Ray worker running
    students/seed=1 is SIGKILLed (Ray's task retries off, so the kill reaches kdrl-study; with Ray's
    default retries the task reruns at once and resumes from the same checkpoint)."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    env = {k: v for k, v in ENV.items() if k != "KDRL_RAY_ADDRESS"}

    def kill(run_dir: Path, procs: list) -> str:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        return "SIGKILL to Ray worker(s) " + ", ".join(f"{p.pid} ({p.name()})" for p in procs)

    kill_mid_way_then_resume(tmp_path, "ray", kill, ["+hydra.launcher.ray.remote.max_retries=0"], env=env)


# ---- killed jobs: failed, not pending forever ----------------------------------------------------------------
def test_a_job_that_never_wrote_results_is_failed_until_it_runs_again(tmp_path):
    """After a stage's multirun has exited, a job without results.json was killed or lost: failed (so
    --status lists it and the next call reruns it), and it stays failed on later reads of the index."""
    from kdrl.study import mark_lost, update_row

    (tmp_path / "students" / "seed=1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "students" / "seed=0").mkdir(parents=True)
    (tmp_path / "students" / "seed=0" / "results.json").write_text(json.dumps({"status": "ok"}))
    rows = [
        {"id": f"students/seed={s}", "run_dir": f"students/seed={s}", "status": "pending", "since": 0.0} for s in (0, 1)
    ]
    for r in rows:
        update_row(tmp_path, r)
    assert [r["status"] for r in rows] == ["ok", "started"]
    mark_lost(rows, 1, tmp_path / "logs" / "students.log")
    assert [r["status"] for r in rows] == ["ok", "failed"] and rows[1]["error"].startswith("killed, lost or refused")
    update_row(tmp_path, rows[1])
    assert rows[1]["status"] == "failed"  # still no results.json: still failed
    never = {"id": "students/seed=2", "run_dir": "students/seed=2", "status": "pending", "since": 0.0}
    mark_lost([never], 1, tmp_path / "logs" / "students.log")  # e.g. the multirun refused its overrides
    assert never["status"] == "failed" and never["error"].startswith("never started")
    (tmp_path / "students" / "seed=1" / "results.json").write_text(json.dumps({"status": "ok"}))
    update_row(tmp_path, rows[1])
    assert rows[1]["status"] == "ok"  # it finished after all (a rerun, or a job its launcher lost sight of)


def test_slurm_tasks_that_no_longer_exist_without_a_result_are_lost(tmp_path, monkeypatch):
    """Submitit's folders of this multirun's array tasks against squeue: lost only when SLURM queues
    none of them and some never returned a result; older tasks (an earlier call's) do not count."""
    from kdrl.study import slurm_lost_tasks

    sub = tmp_path / "students" / ".submitit"
    for name, result in (("7_0", True), ("7_1", False)):
        (sub / name).mkdir(parents=True)
        (sub / name / f"{name}_submitted.pkl").write_bytes(b"")
        if result:
            (sub / name / f"{name}_0_result.pkl").write_bytes(b"")
    old = sub / "3_1"
    old.mkdir()
    (old / "3_1_submitted.pkl").write_bytes(b"")
    os.utime(old / "3_1_submitted.pkl", (time.time() - 3600, time.time() - 3600))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    since = time.time() - 60
    squeue.write_text("#!/bin/sh\necho 7_1\necho 99_0\n")
    squeue.chmod(0o755)
    assert slurm_lost_tasks(tmp_path / "students", since) == []  # 7_1 still runs
    squeue.write_text("#!/bin/sh\necho 99_0\n")
    assert slurm_lost_tasks(tmp_path / "students", since) == ["7_1"]  # gone without a result
    squeue.write_text("#!/bin/sh\nexit 1\n")
    assert slurm_lost_tasks(tmp_path / "students", since) == []  # squeue cannot answer: nothing is lost
    (sub / "7_1" / "7_1_0_result.pkl").write_bytes(b"")
    squeue.write_text("#!/bin/sh\n")
    assert slurm_lost_tasks(tmp_path / "students", since) == []  # every task returned


def test_hydra_overrides_that_add_a_key_go_to_the_stages_multiruns():
    from kdrl.cli.study import parse

    args = parse(["study=debug", "+hydra.launcher.ray.remote.max_retries=0", "hydra.launcher.timeout_min=10", "seed=1"])
    assert args["hydra"] == ["+hydra.launcher.ray.remote.max_retries=0", "hydra.launcher.timeout_min=10"]
    assert args["overrides"] == ["seed=1"]


def test_published_jobs_serve_a_new_study_dir_teachers_taken_and_recordings_made_again_and_checked(tmp_path):
    """issue 24: a stage's published jobs (publish=true writes them: policy, results, job.json, no
    checkpoints) are copied into a fresh study dir and count as done when app and overrides match; a
    published job of other overrides is not used. A data stage publishes its jobs' results, not their
    recordings (1.4-3.4 MB each on MinAtar): --status counts them published, and a run records them again
    (seconds) and compares each recording's sha256 with the published one, naming one that differs."""
    from kdrl.study import Runner

    pub_t, pub_d = tmp_path / "pub_teachers", tmp_path / "pub_data"
    published = [f"+stages.teachers.published={pub_t}", f"+stages.data.published={pub_d}"]
    first = study(
        "study=debug_data", f"dir={tmp_path / 'a'}", "launcher=local", "stage=[teachers,data]", "publish=true",
        *published,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stage teachers: 2 job(s) published to" in first.stdout
    assert "stage data: 2 job(s) published to" in first.stdout, first.stdout
    t0 = pub_t / "env=cartpole,seed=0"
    assert sorted(p.name for p in t0.iterdir()) == [
        "csv", "job.json", "results.json", "teacher.pt", "teacher.pt.reference.json",
    ]  # fmt: skip
    assert json.loads((t0 / "job.json").read_text())["app"] == "train"
    d0, d1 = pub_d / "env=cartpole,seed=0", pub_d / "env=cartpole,seed=1"
    assert sorted(p.name for p in d0.iterdir()) == ["job.json", "results.json"]  # no recording
    decl = load_study("debug_data", published)  # --status of a fresh dir, in this process
    Runner(decl, tmp_path / "fresh").plan_only()
    text, _ = status_report(tmp_path / "fresh", study=decl)
    assert "ok here or published: 4/10 jobs" in text and "neither ok here nor published: 6 jobs (dataset 3" in text, (
        text
    )
    # one published recording's hash as if the play had changed since it was published
    res1 = results(d1)
    res1["dataset"]["sha256"] = "0" * 64
    (d1 / "results.json").write_text(json.dumps(res1))
    b = tmp_path / "b"
    second = study("study=debug_data", f"dir={b}", "launcher=local", "stage=[teachers,data,dataset]", *published)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "stage teachers: 2 job(s) taken from the published" in second.stdout
    assert "stage teachers: all 2 jobs ok, nothing to run" in second.stdout, second.stdout
    assert not (b / "teachers" / "env=cartpole,seed=0" / "checkpoints").exists()  # not trained
    assert "stage data: 2 published job(s) in" in second.stdout
    assert "hold their results but not their dataset.npz: they run again here, checked against" in second.stdout
    assert "stage data: 1 of 2 regenerated file(s) identical to the published ones (sha256)" in second.stdout
    assert "data/env=cartpole,seed=1 wrote another file than the published one (sha256 000000000000" in second.stdout
    recording = b / "data" / "env=cartpole,seed=0" / "dataset.npz"
    assert recording.read_bytes() == (tmp_path / "a" / "data" / "env=cartpole,seed=0" / "dataset.npz").read_bytes()
    student = results(b / "dataset" / "env=cartpole,seed=0")
    assert student["status"] == "ok" and student["dataset"]["sha256"] == results(d0)["dataset"]["sha256"]
    assert student["teacher_checkpoint"] == str(b / "teachers" / "env=cartpole,seed=0" / "teacher.pt")
    # another teacher config: the published files do not stand for it (the decision a run makes before its
    # first job, here in process: the run itself would train both teachers)
    said: list[str] = []
    other = load_study("debug_data", [*published, "+stages.teachers.overrides=['algo.optimizer.lr=0.002']"])
    runner = Runner(other, tmp_path / "c", say=said.append)
    runner.plan_only()
    runner.adopt_published("teachers")
    assert sum("was run with another config (algo.optimizer.lr: " in line for line in said) == 2, said
    assert not any("taken from the published" in line for line in said), said
    assert not (tmp_path / "c" / "teachers" / "env=cartpole,seed=0" / "teacher.pt").exists()


def test_a_stage_monitor_returns_when_its_multirun_ends_not_after_its_poll_period(tmp_path):
    """kdrl-study goes on as soon as a stage's multirun exits: the monitor waits on the process between its
    progress checks instead of sleeping out poll_s (60 s here)."""
    from kdrl.study import Runner

    runner = Runner(load_study("debug"), tmp_path / "study", poll_s=60.0, say=lambda _: None)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    t0 = time.time()
    runner.monitor("teachers", proc, [], t0)
    assert proc.returncode == 0 and time.time() - t0 < 15


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_stops_a_study_as_sigterm_does_in_one_line(sig):
    """Ctrl-C (SIGINT) raised a KeyboardInterrupt traceback out of kdrl-study's wait on its stage; now
    SIGINT, like SIGTERM and SIGHUP, raises StudyStopped there, which stops the stage's process group
    (test_b_... in tests/test_study_faults.py) and reads as one line. The handlers are put back after."""
    from kdrl.errors import one_line
    from kdrl.study import StudyStopped, signals_raise

    before = signal.getsignal(sig)
    with pytest.raises(StudyStopped) as stopped, signals_raise():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
    assert one_line(stopped.value).startswith(f"stopped by {sig.name}: the running stage's jobs were stopped")
    assert signal.getsignal(sig) is before


def test_a_published_job_stands_for_the_config_it_ran_with_not_for_its_overrides(tmp_path):
    """The same overrides stand for another run once a default they leave open changes (Seaquest's default
    recipe did, under the published big_batch runs): published_drift names each key whose value the job's
    overrides compose today differs from the one it ran with, and only those; overrides spelled otherwise
    that compose the run's config stand for it."""
    from hydra import compose
    from omegaconf import OmegaConf

    from kdrl.study import hydra_conf, published_drift

    overrides = ["env=cartpole", "seed=3", "debug=fast", "wandb.group=x"]
    with hydra_conf():
        ran = OmegaConf.to_container(compose(config_name="train", overrides=overrides), resolve=True)
    pub = tmp_path / "env=cartpole,seed=3"
    pub.mkdir()
    (pub / "results.json").write_text(json.dumps({"config": ran}))
    assert published_drift(pub, "train", overrides) == ""
    lr = ran["algo"]["optimizer"]["lr"]
    assert published_drift(pub, "train", [*overrides, f"algo.optimizer.lr={lr}"]) == ""  # the same run
    # what only labels the run or points at files named after another study dir does not count
    ran["recipe_for"]["name"] = "renamed"
    ran.setdefault("teacher", {})["checkpoint"] = "/elsewhere/teacher.pt"
    (pub / "results.json").write_text(json.dumps({"config": ran}))
    assert published_drift(pub, "train", overrides) == ""
    ran["algo"]["exploration"]["eps_end"], ran["algo"]["gamma"] = 0.5, 0.5  # defaults changed since it ran
    (pub / "results.json").write_text(json.dumps({"config": ran}))
    with hydra_conf():
        now = OmegaConf.to_container(compose(config_name="train", overrides=overrides), resolve=True)["algo"]
    assert published_drift(pub, "train", overrides) == (
        f"algo.exploration.eps_end: 0.5 then, {now['exploration']['eps_end']!r} now; "
        f"algo.gamma: 0.5 then, {now['gamma']!r} now"
    )
    (pub / "results.json").unlink()
    assert published_drift(pub, "train", overrides) == "its results.json does not say"


def test_an_end_slope_table_is_written_from_its_stages_runs(tmp_path):
    """A declared table of kind end_slope (issue 27's convergence table) is what kdrl.tables computes from
    the stage's runs: its markdown, its CSVs and its plot, sizes largest first."""
    import pandas as pd

    from kdrl import tables as T
    from kdrl.study import Runner

    sdir = tmp_path / "study"
    rows = {}
    for p in sorted((ROOT / "docs" / "minatar" / "runs" / "asterix").iterdir()):
        shutil.copytree(p, sdir / "students" / p.name)
        rows[f"students/{p.name}"] = {
            "id": f"students/{p.name}", "stage": "students", "app": "distill", "name": p.name, "hash": "x",
            "run_dir": f"students/{p.name}", "overrides": [], "needs": [], "status": "ok", "since": 0.0,
        }  # fmt: skip
    groups = ["env_id", "student_size"]
    spec = {"kind": "end_slope", "groups": groups, "x": "env_steps", "margin": 0.05}
    study = {"name": "conv", "stages": {"students": {"app": "distill"}}, "tables": {"conv": spec}}
    Index(sdir / "index.json", {"study": "conv"}, rows).save()
    (text,) = Runner(study, sdir, say=lambda s: None).write_tables()
    out = sdir / "tables" / "conv"
    curves = T.end_slope_curves([sdir / "students"], groups)
    tab = T.end_slope_table(curves, groups, margin=0.05)
    assert list(tab.student_size) == ["rusu_25", "rusu_7", "rusu_4"] and tab.runs.tolist() == [5, 5, 5]
    md = (out / "table.md").read_text()
    assert (
        md.startswith("# conv: conv\n\ncomplete.")
        and T.end_slope_markdown(tab, groups, "env_steps", "normalized_score", 0.05) in md
    )
    written = pd.read_csv(out / "end_slope.csv")
    assert written.slope_per_doubling.tolist() == pytest.approx(tab.slope_per_doubling.tolist())
    assert len(pd.read_csv(out / "curves.csv")) == len(curves) == 15 * 10
    assert (out / "score_vs_env_steps.png").is_file()


def test_tables_named_by_table_are_the_only_ones_written_and_published(tmp_path):
    """``--tables table=[...]``: only the named tables are rewritten and published (publishing every table
    overwrote the published tables of stages this machine ran only in part); an unknown name is refused."""
    from kdrl.cli.study import parse
    from kdrl.study import Runner

    sdir = tmp_path / "study"
    rows = {}
    for p in sorted((ROOT / "docs" / "minatar" / "runs" / "asterix").iterdir())[:5]:
        shutil.copytree(p, sdir / "students" / p.name)
        rows[f"students/{p.name}"] = {
            "id": f"students/{p.name}", "stage": "students", "app": "distill", "name": p.name, "hash": "x",
            "run_dir": f"students/{p.name}", "overrides": [], "needs": [], "status": "ok", "since": 0.0,
        }  # fmt: skip
    spec = {"kind": "end_slope", "groups": ["env_id", "student_size"], "x": "env_steps", "margin": 0.05}
    tables = {name: {**spec, "publish": str(tmp_path / "docs" / name)} for name in ("a", "b", "c")}
    decl = {"name": "sel", "stages": {"students": {"app": "distill"}}, "tables": tables}
    Index(sdir / "index.json", {"study": "sel"}, rows).save()
    runner = Runner(decl, sdir, say=lambda s: None)
    (text,) = runner.write_tables(publish=True, names=["b"])
    assert "(published to " in text
    assert sorted(p.name for p in (sdir / "tables").iterdir()) == ["b"]
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["b"]
    assert len(runner.write_tables(publish=False)) == 3  # no names: every table
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["b"]
    with pytest.raises(StudyError, match=r"^no table d, e in study 'sel' \(has: a, b, c\)$"):
        runner.write_tables(names=["a", "d", "e"])
    assert parse(["study=sel", "--tables", "table=[a, b]"])["table"] == ["a", "b"]
    assert parse(["study=sel", "--tables", "table=c"])["table"] == ["c"]
    refused = study("study=debug", f"dir={tmp_path / 'x'}", "table=[main]")
    assert refused.returncode == 2 and "table= selects tables for --tables" in refused.stderr, refused.stderr


def test_a_partial_table_never_replaces_a_complete_published_one(tmp_path):
    """A stage run with publish=true rewrites every table: on a machine holding only some of a study's stages,
    the other stages' tables come out PARTIAL, and must not overwrite their complete published copies (they
    did once: kdrl-study study=minatar stage=[teachers5] publish=true). A partial table still publishes where
    nothing complete is published, and a complete one always does."""
    from kdrl.study import Runner

    sdir = tmp_path / "study"
    rows = {}
    for i, p in enumerate(sorted((ROOT / "docs" / "minatar" / "runs" / "asterix").iterdir())[:5]):
        shutil.copytree(p, sdir / "students" / p.name)
        rows[f"students/{p.name}"] = {
            "id": f"students/{p.name}", "stage": "students", "app": "distill", "name": p.name, "hash": "x",
            "run_dir": f"students/{p.name}", "overrides": [], "needs": [], "status": "ok" if i else "pending",
            "since": 0.0,
        }  # fmt: skip
    spec = {"kind": "end_slope", "groups": ["env_id", "student_size"], "x": "env_steps", "margin": 0.05}
    done, fresh = tmp_path / "docs" / "done", tmp_path / "docs" / "fresh"
    decl = {"name": "part", "stages": {"students": {"app": "distill"}},
            "tables": {"done": {**spec, "publish": str(done)}, "fresh": {**spec, "publish": str(fresh)}}}  # fmt: skip
    done.mkdir(parents=True)
    (done / "table.md").write_text("# t\n\ncomplete. Regenerate: `kdrl-study study=part`.\n\nthe published table\n")
    Index(sdir / "index.json", {"study": "part"}, rows).save()
    texts = Runner(decl, sdir, say=lambda s: None).write_tables(publish=True)
    assert (
        "PARTIAL: 4 of 5 jobs finished" in texts[0]
        and f"(not published: 4 of 5 jobs finished here, and {done}" in texts[0]
    )
    assert (done / "table.md").read_text().endswith("the published table\n") and sorted(os.listdir(done)) == [
        "table.md"
    ]
    assert "(published to " in texts[1] and (fresh / "table.md").read_text().splitlines()[2].startswith("PARTIAL")
    rows["students/" + next(iter(rows))[9:]]["status"] = "ok"  # all finished: the complete table replaces it
    Index(sdir / "index.json", {"study": "part"}, rows).save()
    (text, _) = Runner(decl, sdir, say=lambda s: None).write_tables(publish=True)
    assert "(published to " in text and (done / "table.md").read_text().splitlines()[2].startswith("complete.")


def asterix_runs_in_two_stages(sdir: Path, study: str) -> Path:
    """A study dir holding docs/minatar/runs/asterix's 15 finished students as two distill stages: seeds 3
    and 4 in ``online_b``, the rest in ``online`` (its index says all ok)."""
    rows = {}
    for p in sorted((ROOT / "docs" / "minatar" / "runs" / "asterix").iterdir()):
        stage = "online_b" if p.name.endswith(("_s3", "_s4")) else "online"
        shutil.copytree(p, sdir / stage / p.name)
        rows[f"{stage}/{p.name}"] = {
            "id": f"{stage}/{p.name}", "stage": stage, "app": "distill", "name": p.name, "hash": "x",
            "run_dir": f"{stage}/{p.name}", "overrides": [], "needs": [], "status": "ok", "since": 0.0,
        }  # fmt: skip
    Index(sdir / "index.json", {"study": study}, rows).save()
    return sdir


def test_stage_labels_show_stages_that_differ_only_in_their_teachers_stage_as_one_column(tmp_path):
    """issue 27's data_protocol table: compression and compression_seaquest are both the online arm; with
    stage_labels their runs share a column (n counts both), without it each stage is a column. The table's
    note is printed above it (it was dropped for student tables)."""
    import pandas as pd

    from kdrl.study import Runner

    sdir = asterix_runs_in_two_stages(tmp_path / "study", "labels")
    stages = {"online": {"app": "distill"}, "online_b": {"app": "distill"}}
    note = "The online arm: two stages that differ only in their teachers' stage."
    table = {"stages": ["online", "online_b"], "rows": "student_size", "cols": "stage", "plots": False, "note": note}
    for labels, cols in (({"online_b": "online"}, {"online": 5}), ({}, {"online": 3, "online_b": 2})):
        study = {"name": "labels", "stages": stages, "tables": {"t": {**table, "stage_labels": labels}}}
        Runner(study, sdir, say=lambda s: None).write_tables()
        cells = pd.read_csv(sdir / "tables" / "t" / "table_cells.csv")
        assert sorted(cells["stage"].unique()) == sorted(cols), labels
        assert {c: set(cells.loc[cells["stage"] == c, "n"]) for c in cols} == {c: {n} for c, n in cols.items()}
        assert f"\n\n{note}\n\n" in (sdir / "tables" / "t" / "table.md").read_text()  # a student table's note too


def test_a_tables_exclude_leaves_out_the_runs_matching_every_column_of_an_entry(tmp_path):
    """issue 27's five-game Rusu table over three Asterix teachers: one stage's Asterix row is left out because
    another stage reruns it. An entry drops the runs matching all its columns (not any), matched on the stages'
    own names before stage_labels; an unknown column is one line."""
    import pandas as pd

    from kdrl.study import Runner

    sdir = asterix_runs_in_two_stages(tmp_path / "study", "ex")
    stages = {"online": {"app": "distill"}, "online_b": {"app": "distill"}}
    table = {"stages": ["online", "online_b"], "rows": "student_size", "cols": "stage", "plots": False}
    table["stage_labels"] = {"online_b": "online"}
    n_by_size = {}
    for name, exclude in {
        "none": [],
        "b_25": [{"stage": "online_b", "student_size": "rusu_25"}],  # 2 runs of rusu_25
        "own_name": [{"stage": "online", "student_size": ["rusu_25"]}],  # the 3 of stage online, not its label's 5
        "b_or_7": [{"stage": "online_b"}, {"student_size": "rusu_7"}],  # entries add up
    }.items():
        study = {"name": "ex", "stages": stages, "tables": {"t": {**table, "exclude": exclude}}}
        Runner(study, sdir, say=lambda s: None).write_tables()
        cells = pd.read_csv(sdir / "tables" / "t" / "table_cells.csv")
        n_by_size[name] = dict(zip(cells["student_size"], cells["n"]))
    assert n_by_size == {
        "none": {"rusu_25": 5, "rusu_4": 5, "rusu_7": 5},
        "b_25": {"rusu_25": 3, "rusu_4": 5, "rusu_7": 5},
        "own_name": {"rusu_25": 2, "rusu_4": 5, "rusu_7": 5},
        "b_or_7": {"rusu_25": 3, "rusu_4": 3},
    }
    study = {"name": "ex", "stages": stages, "tables": {"t": {**table, "exclude": [{"gmae": "x"}]}}}
    said = Runner(study, sdir, say=lambda s: None).write_tables()  # said, never stopping the study
    assert said == ["table t: not written yet (StudyError: table t: no column 'gmae' in the results (where / exclude))"]


def test_a_table_joins_published_runs_of_other_stages_and_takes_its_own_stages_from_its_run_dirs(tmp_path):
    """issue 27's Breakout table over three wide teachers: the other games' stages ran on a machine since
    replaced, so the table joins their runs from the committed results.csv of a published table. The joined
    table has the cells the table had when every stage ran here; rows of the table's own stages come from its
    run dirs, never from the CSV; where, exclude and stage_labels apply to the published rows too; a missing
    CSV and a curve table are one line."""
    import pandas as pd

    from kdrl.study import Runner

    whole = asterix_runs_in_two_stages(tmp_path / "whole", "pub")
    stages = {"online": {"app": "distill"}, "online_b": {"app": "distill"}}
    table = {"rows": "student_size", "cols": "stage", "plots": False, "stage_labels": {"online_b": "online"}}
    both = {"name": "pub", "stages": stages, "tables": {"t": {**table, "stages": ["online", "online_b"]}}}
    Runner(both, whole, say=lambda s: None).write_tables()
    published = tmp_path / "results.csv"
    shutil.copy(whole / "tables" / "t" / "results.csv", published)
    expected = pd.read_csv(whole / "tables" / "t" / "table_cells.csv")

    # a study that ran online_b only (its 6 runs); online's 9 are in the published CSV
    sdir = tmp_path / "here"
    for p in (whole / "online_b").iterdir():
        shutil.copytree(p, sdir / "online_b" / p.name)
    rows = {f"online_b/{p.name}": {**r, "since": 0.0} for p in (sdir / "online_b").iterdir() for r in [{
        "id": f"online_b/{p.name}", "stage": "online_b", "app": "distill", "name": p.name, "hash": "x",
        "run_dir": f"online_b/{p.name}", "overrides": [], "needs": [], "status": "ok"}]}  # fmt: skip
    Index(sdir / "index.json", {"study": "pub"}, rows).save()

    def cells(**extra):
        spec = {**table, "stages": ["online_b"], "published_runs": [str(published)], **extra}
        said = Runner({"name": "pub", "stages": stages, "tables": {"t": spec}}, sdir, say=lambda s: None).write_tables()
        md = (sdir / "tables" / "t" / "table.md").read_text()
        return pd.read_csv(sdir / "tables" / "t" / "table_cells.csv"), md, said

    joined, md, _ = cells()
    pd.testing.assert_frame_equal(joined, expected)  # the same cells as with every stage run here
    assert "\n\ncomplete." in md and "9 of these runs (stages online) are published runs joined from" in md
    # the own stage's rows come from its run dirs: a changed run there changes the cell, the CSV's copy does not
    res = next((sdir / "online_b").iterdir()) / "results.json"
    data = json.loads(res.read_text())
    size = data["student_size"]
    data["normalized_score"] = 9.0
    res.write_text(json.dumps(data))
    changed, _, _ = cells()
    before = expected.set_index("student_size")["mean"]
    after = changed.set_index("student_size")["mean"]
    assert after[size] > before[size] + 1 and (after.drop(size) == before.drop(size)).all()
    assert set(changed.set_index("student_size")["n"]) == {5}  # no run twice
    # where and exclude on the published rows, matched on their own stage names
    kept, md, _ = cells(exclude=[{"stage": "online", "student_size": "rusu_25"}], where={"student_size": ["rusu_25"]})
    assert dict(zip(kept["student_size"], kept["n"])) == {"rusu_25": 2}
    assert "complete." in md and "None of the 3 published runs joined is shown" in md
    # a table that joined published runs is itself joinable: its CSV names every run's stage
    chained = {**table, "stages": ["online_b"], "published_runs": [str(published)]}
    chained.pop("stage_labels")
    Runner({"name": "pub", "stages": stages, "tables": {"t2": chained}}, sdir, say=lambda s: None).write_tables()
    again, md, _ = cells(published_runs=[str(sdir / "tables" / "t2" / "results.csv")])
    pd.testing.assert_frame_equal(again, changed)
    # the header counts the joined runs as finished jobs: one own job not finished leaves 14 of 15
    index = Index.load(sdir)
    first = sorted(index.rows)[0]
    index.rows[first]["status"] = "pending"
    shutil.move(sdir / index.rows[first]["run_dir"], tmp_path / "away")
    index.save()
    _, md, _ = cells()
    assert "PARTIAL: 14 of 15 jobs finished" in md
    # one line each
    twice = tmp_path / "twice" / "results.csv"
    twice.parent.mkdir()
    shutil.copy(published, twice)
    _, _, said = cells(published_runs=[str(published), str(twice)])
    assert said[0].startswith("table t: not written yet (StudyError: table t: published_runs: stage online is in both")
    other = tmp_path / "other.csv"
    pd.read_csv(published).assign(study_stage="elsewhere").to_csv(other, index=False)
    _, _, said = cells(published_runs=[str(other)])
    assert said[0].startswith(
        f"table t: not written yet (StudyError: table t: published_runs: {other} has runs of elsewhere, no stage of study 'pub'"
    )
    spec = {**table, "stages": ["online_b"], "published_runs": [str(tmp_path / "nowhere.csv")]}
    said = Runner({"name": "pub", "stages": stages, "tables": {"t": spec}}, sdir, say=lambda s: None).write_tables()
    assert said == [
        f"table t: not written yet (StudyError: table t: published_runs: no file {tmp_path / 'nowhere.csv'})"
    ]
    bad = {"kind": "end_slope", "stages": ["online_b"], "published_runs": [str(published)]}
    with pytest.raises(
        StudyError,
        match="published_runs joins runs to a student, teacher, budget or all table .* not to kind end_slope",
    ):
        check_declaration({"name": "pub", "stages": stages, "tables": {"t": bad}})
    for value in ("x.csv", [""]):
        with pytest.raises(StudyError, match="published_runs takes a list of results.csv paths"):
            check_declaration(
                {"name": "pub", "stages": stages, "tables": {"t": {**bad, "kind": "student", "published_runs": value}}}
            )


def test_stage_curves_are_named_and_merged_by_the_tables_stage_labels():
    """the reuse table's curves: the legend names the table's columns (scratch, not reuse_scratch); stages
    sharing a label (compression, compression_seaquest: online) share one curve, in the stages' order."""
    from kdrl.study import labelled_stage_files

    a, b, c = Path("a"), Path("b"), Path("c")
    files = {"reuse_scratch": [a], "compression": [b], "compression_seaquest": [c], "other": []}
    labels = {"reuse_scratch": "scratch", "compression": "online", "compression_seaquest": "online"}
    assert labelled_stage_files(files, labels) == {"scratch": [a], "online": [b, c], "other": []}
    assert list(labelled_stage_files(files, labels)) == ["scratch", "online", "other"]
    assert labelled_stage_files(files, None) == files


@PLANS
def test_every_declared_stage_takes_its_published_jobs_as_they_ran():
    """Each job of a declared stage with a ``published`` dir has its published run there, and that run's
    config is what the job's overrides compose today: a default changed under a published run (as
    Seaquest's recipe did under minatar_seaquest's big_batch stage) fails here, not in a rerun."""
    from kdrl.study import published_drift, resolve_published

    checked = []
    for decl in sorted((ROOT / "conf" / "study").glob("*.yaml")):
        study_cfg, jobs = planned(decl.stem)
        for job in jobs:
            where = study_cfg["stages"][job.stage].get("published")
            if not where:
                continue
            pub = resolve_published(str(where)) / job.name
            assert (pub / "job.json").is_file(), f"{decl.stem} {job.id}: nothing published in {pub}"
            assert published_drift(pub, job.app, job.overrides) == "", f"{decl.stem} {job.id}"
            checked.append((decl.stem, job.app))
    assert sum(app == "train" for _, app in checked) >= 28  # the 15 published teachers and Seaquest's 13, some
    # declared by several studies; the data jobs' recordings: the minatar study's 15, minatar_data_protocol's 6
    assert [sum(c == (name, "data") for c in checked) for name in ("minatar", "minatar_data_protocol")] == [15, 6]


def test_a_budget_table_paired_by_seed_takes_its_slopes_within_seeds(tmp_path):
    """A declared table of kind budget with ``pair_by: seed`` (issue 26's plateau at 5 seeds): its slope is
    each seed's own difference between budgets, its interval the paired one; without pair_by the same runs
    give the pooled fit; a pair_by that is no column of the runs is refused in one line."""
    import numpy as np
    import pandas as pd
    from scipy.stats import t as student_t

    from kdrl import tables as T
    from kdrl.study import Runner

    sdir = tmp_path / "study"
    rows = {}
    for p in sorted((ROOT / "docs" / "minatar" / "runs" / "asterix").glob("kl_rusu-rusu_25-*")):
        for doubled in (False, True):
            name = p.name + ("-x2" if doubled else "")
            shutil.copytree(p, sdir / "students" / name)
            if doubled:  # the same seed at twice the updates, a little better by a seed's own amount
                res = json.loads((p / "results.json").read_text())
                res.update(
                    grad_steps=2 * res["grad_steps"], normalized_score=res["normalized_score"] + 0.01 * res["seed"]
                )
                (sdir / "students" / name / "results.json").write_text(json.dumps(res))
            rows[f"students/{name}"] = {
                "id": f"students/{name}", "stage": "students", "app": "distill", "name": name, "hash": "x",
                "run_dir": f"students/{name}", "overrides": [], "needs": [], "status": "ok", "since": 0.0,
            }  # fmt: skip
    groups = ["env_id", "student_size"]
    spec = {"kind": "budget", "groups": groups, "x": "grad_steps", "margin": 0.05, "pair_by": "seed", "plots": False}
    study = {"name": "b", "stages": {"students": {"app": "distill"}}, "tables": {"b": spec}}
    Index(sdir / "index.json", {"study": "b"}, rows).save()
    Runner(study, sdir, say=lambda s: None).write_tables()
    out = sdir / "tables" / "b"
    runs = pd.read_csv(out / "results.csv")
    assert len(runs) == 10 and sorted(runs.seed.unique()) == [0, 1, 2, 3, 4]
    written = pd.read_csv(out / "budget.csv")
    diffs = 0.01 * np.arange(5)
    assert written.slope_per_doubling[0] == pytest.approx(diffs.mean()) and written.slope_n[0] == 10
    half = student_t.ppf(0.975, 4) * diffs.std(ddof=1) / np.sqrt(5)
    assert (written.slope_low[0], written.slope_high[0]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert bool(written.plateau[0]) is True  # 0.02 [0.00, 0.04] per doubling: a rise above 0.05 ruled out
    tab = T.budget_table(runs, groups, "grad_steps", "normalized_score", 0.05, "seed")
    assert "slope per doubling within seeds, last third" in (out / "table.md").read_text()
    assert T.budget_markdown(tab, groups, "normalized_score", 0.05, "seed") in (out / "table.md").read_text()
    pooled = T.budget_table(runs, groups, "grad_steps", "normalized_score", 0.05)
    assert pooled.slope_per_doubling[0] == pytest.approx(diffs.mean())
    assert pooled.slope_high[0] - pooled.slope_low[0] > 3 * (written.slope_high[0] - written.slope_low[0])
    study["tables"]["b"] = {**spec, "pair_by": "teacher_seed_of"}
    said = Runner(study, sdir, say=lambda s: None).write_tables()  # said, never stopping the study
    assert said == [
        "table b: not written yet (StudyError: table b: no column 'teacher_seed_of' in the results (pair_by))"
    ]


def test_a_budget_table_takes_its_where_and_exclude(tmp_path):
    """A budget table's ``where`` and ``exclude`` leave runs out as a student table's do (they were ignored,
    so a budget table over a stage of many games and sizes showed them all)."""
    import pandas as pd

    from kdrl.study import Index, Runner

    sdir, rows = tmp_path / "study", {}
    for p in sorted((ROOT / "docs" / "minatar" / "runs" / "asterix").glob("kl_rusu-rusu_25-*")):
        for size in ("rusu_25", "rusu_7"):
            for mult in (1, 4):
                name = f"{p.name}-{size}-x{mult}"
                shutil.copytree(p, sdir / "students" / name)
                res = json.loads((p / "results.json").read_text())
                res.update(student_size=size, grad_steps=mult * res["grad_steps"])
                (sdir / "students" / name / "results.json").write_text(json.dumps(res))
                rows[f"students/{name}"] = {
                    "id": f"students/{name}", "stage": "students", "app": "distill", "name": name, "hash": "x",
                    "run_dir": f"students/{name}", "overrides": [], "needs": [], "status": "ok", "since": 0.0,
                }  # fmt: skip
    Index(sdir / "index.json", {"study": "b"}, rows).save()
    spec = {
        "kind": "budget",
        "groups": ["env_id", "student_size"],
        "x": "grad_steps",
        "pair_by": "seed",
        "plots": False,
    }
    filters = {
        "all": {},
        "where": {"where": {"student_size": ["rusu_7"]}},
        "exclude": {"exclude": [{"stage": "students", "seed": [0, 1]}]},
    }
    study = {
        "name": "b",
        "stages": {"students": {"app": "distill"}},
        "tables": {k: {**spec, **f} for k, f in filters.items()},
    }
    Runner(study, sdir, say=lambda s: None).write_tables()
    read = {k: pd.read_csv(sdir / "tables" / k / "results.csv") for k in filters}
    budgets = {k: pd.read_csv(sdir / "tables" / k / "budget.csv") for k in filters}
    assert len(read["all"]) == 20 and sorted(budgets["all"].student_size) == ["rusu_25", "rusu_7"]
    assert set(read["where"].student_size) == {"rusu_7"} and len(read["where"]) == 10
    assert list(budgets["where"].student_size) == ["rusu_7"]
    assert sorted(read["exclude"].seed.unique()) == [2, 3, 4] and len(read["exclude"]) == 12


def test_a_budget_table_joins_published_runs_of_its_other_arm(tmp_path):
    """issue 27's Rusu-regime Asterix on 400k env steps: its 100k arm ran on a machine since replaced and is
    published only as a results.csv, so the budget table joins those runs. Its budget rows (means, paired
    slope) are those of the table when both arms ran here, and it says which runs were joined."""
    import pandas as pd

    from kdrl.study import Runner

    def arm(sdir, stage, mult):
        rows = {}
        for p in sorted((ROOT / "docs" / "minatar" / "runs" / "asterix").glob("kl_rusu-rusu_25-*")):
            shutil.copytree(p, sdir / stage / p.name)
            res = json.loads((p / "results.json").read_text())
            res.update(env_steps=mult * res["env_steps"], normalized_score=res["normalized_score"] + 0.1 * (mult > 1))
            (sdir / stage / p.name / "results.json").write_text(json.dumps(res))
            rows[f"{stage}/{p.name}"] = {
                "id": f"{stage}/{p.name}", "stage": stage, "app": "distill", "name": p.name, "hash": "x",
                "run_dir": f"{stage}/{p.name}", "overrides": [], "needs": [], "status": "ok", "since": 0.0,
            }  # fmt: skip
        return rows

    spec = {"kind": "budget", "groups": ["env_id", "student_size"], "x": "env_steps", "pair_by": "seed", "plots": False}
    stages = {"base": {"app": "distill"}, "more": {"app": "distill"}}
    whole = tmp_path / "whole"
    Index(whole / "index.json", {"study": "b"}, {**arm(whole, "base", 1), **arm(whole, "more", 4)}).save()
    Runner({"name": "b", "stages": stages, "tables": {"t": {**spec, "stages": ["base", "more"]}}}, whole,
           say=lambda s: None).write_tables()  # fmt: skip
    expected = pd.read_csv(whole / "tables" / "t" / "budget.csv")
    assert len(expected) == 1 and expected["points"].iloc[0].count("(n=5)") == 2  # one group, two arms of 5

    here = tmp_path / "here"
    Index(here / "index.json", {"study": "b"}, arm(here, "more", 4)).save()
    joined = {**spec, "stages": ["more"], "published_runs": [str(whole / "tables" / "t" / "results.csv")]}
    said = Runner({"name": "b", "stages": stages, "tables": {"t": joined}}, here, say=lambda s: None).write_tables()
    assert not any("not written" in s for s in said), said
    pd.testing.assert_frame_equal(pd.read_csv(here / "tables" / "t" / "budget.csv"), expected)
    md = (here / "tables" / "t" / "table.md").read_text()
    assert "complete." in md and "5 of these runs (stages base) are published runs joined from" in md
