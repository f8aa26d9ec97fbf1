"""A study on W&B: every job's run joins the study's group, and the study logs its tables (W&B tables)
and plots as one more run in that group, offline by default (``wandb sync`` uploads it), nothing when
disabled. Real wandb in offline mode: no account, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdrl.study import StudyError, jobs_wandb, load_study
from kdrl.study_wandb import JOB_TYPE, log_study_tables
from tests.helpers import wandb_records, wandb_run_summary

STUDY = {"name": "tiny", "description": "a tiny study", "stages": {}, "tables": {"main": {"rows": "method"}}}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """W&B offline with every W&B dir under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def written_table(study_dir: Path, mean: float = 0.9, plot: bool = True) -> Path:
    """<study dir>/tables/main as write_table leaves it: table.md, table_cells.csv and a plot."""
    out = study_dir / "tables" / "main"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"# tiny\n\n| method | 64 |\n|---|---|\n| kl | {100 * mean:.1f} |\n")
    (out / "table_cells.csv").write_text(
        "method,width,n,refused,mean,iqm,ci_low,ci_high,flag,at_bound,param_ratio\n"
        f"kl,64,2,0,{mean},{mean},0.5,1.0,,0,0.068\n"
        "mse,64,1,0,0.4,0.4,,,n<2,0,0.068\n"  # a cell without an interval: NaN CI, a flag
    )
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, mean])
        fig.savefig(out / "ratio_vs_params.png", dpi=50)
        plt.close(fig)
    return out


def offline_runs(study_dir: Path) -> list[Path]:
    return sorted((study_dir / "wandb").glob("offline-run-*"))


def test_the_tables_are_one_offline_run_in_the_study_group_with_w_and_b_tables_and_images(offline):
    sdir = offline / "study"
    written_table(sdir)
    said: list[str] = []
    stamp = log_study_tables(
        STUDY, sdir, mode="offline", project="kdrl-test", tags=["t"], summary={"jobs/ok": 3}, say=said.append
    )
    (run_dir,) = offline_runs(sdir)
    got = wandb_run_summary(run_dir)
    run = got["run"]
    assert (run.project, run.run_group, run.job_type, run.display_name) == (
        "kdrl-test",
        "tiny",
        JOB_TYPE,
        "tiny-tables",
    )
    assert got["config"]["study"]["name"] == "tiny" and got["config"]["study_dir"] == str(sdir)
    assert got["summary"]["jobs/ok"] == 3 and got["summary"]["tables"] == ["main"]
    # the cells as a W&B table (NaN as an empty cell), the plot as a W&B image, both in the run's files
    assert got["history"]["main/cells/_type"] == "table-file"
    (table_file,) = (run_dir / "files" / "media" / "table" / "main").glob("cells_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:9] == ["method", "width", "n", "refused", "mean", "iqm", "ci_low", "ci_high", "flag"]
    assert table["data"][0][:8] == ["kl", 64, 2, 0, 0.9, 0.9, 0.5, 1.0]
    assert table["data"][1][6:9] == [None, None, "n<2"]
    assert got["history"]["main/plots/ratio_vs_params/_type"] == "image-file"
    assert list((run_dir / "files" / "media" / "images" / "main" / "plots").glob("ratio_vs_params_*.png"))
    assert any(f"wandb sync {run_dir}" in line for line in said), said
    # the same tables again: no second run; changed tables: one more
    assert log_study_tables(STUDY, sdir, mode="offline", last=stamp, say=said.append) == stamp
    assert len(offline_runs(sdir)) == 1
    written_table(sdir, mean=0.95)
    assert log_study_tables(STUDY, sdir, mode="offline", last=stamp, say=said.append) not in (None, stamp)
    assert len(offline_runs(sdir)) == 2


def test_disabled_logs_nothing(offline, monkeypatch):
    sdir = offline / "study"
    written_table(sdir, plot=False)
    assert log_study_tables(STUDY, sdir, mode="disabled", say=print) is None
    monkeypatch.setenv("WANDB_MODE", "disabled")  # as the jobs: WANDB_MODE=disabled switches W&B off
    assert log_study_tables(STUDY, sdir, mode="offline", say=print) is None
    assert not (sdir / "wandb").exists() and not (offline / "wandb_home").exists()
    # nothing written yet: nothing to log
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert log_study_tables(STUDY, offline / "empty", mode="offline", say=print) is None
    assert not (offline / "empty").exists()


def test_the_study_run_logs_as_its_jobs_do_unless_its_declaration_says():
    assert jobs_wandb(load_study("cartpole_losses"))["mode"] == "offline"  # the jobs' default logger
    assert jobs_wandb(load_study("demo"))["mode"] == "disabled"  # its jobs log CSV only
    assert jobs_wandb(load_study("debug"))["mode"] == "disabled"  # debug=fast: CSV only
    assert jobs_wandb(load_study("debug", ["overrides=['debug=fast','logger.wandb=offline']"]))["mode"] == "offline"
    assert jobs_wandb(load_study("debug", ["wandb=offline"]))["mode"] == "offline"
    assert jobs_wandb(load_study("cartpole_losses", ["wandb=disabled"]))["mode"] == "disabled"
    assert jobs_wandb(load_study("cartpole_losses"))["tags"] == ["cartpole_losses"]
    with pytest.raises(StudyError, match="wandb must be offline, online, disabled or null, got 'maybe'"):
        load_study("debug", ["wandb=maybe"])


def test_a_studys_jobs_and_its_tables_run_share_one_offline_wandb_group(offline):
    """The debug study (one seed a stage) with its jobs on W&B offline: two job runs and one tables run,
    all in group 'debug'; a second call on the finished study logs no new run."""
    sdir = offline / "study"
    env = {**os.environ, "KDRL_NO_PROGRESS": "1", "KDRL_N_JOBS": "2"}
    args = [sys.executable, "-m", "kdrl.cli.study", "study=debug", f"dir={sdir}", "launcher=joblib"]
    args += ["overrides=[debug=fast,logger.wandb=offline]", "stages.teachers.seeds=[1]", "stages.students.seeds=[1]"]
    proc = subprocess.run(args, cwd=offline, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = {}
    for run_dir in sorted(sdir.glob("**/wandb/offline-run-*")):
        run = wandb_run_summary(run_dir)["run"]
        runs[str(run_dir.parent.parent.relative_to(sdir))] = (run.run_group, run.job_type)
    assert runs == {
        "teachers/env=cartpole,seed=1": ("debug", "teacher"),
        "students/seed=1": ("debug", "student"),
        ".": ("debug", JOB_TYPE),  # <study dir>/wandb/offline-run-*: the tables run
    }, runs
    assert "W&B: tables main logged offline in group debug" in proc.stdout
    assert list((sdir / "wandb").glob("offline-run-*/files/media/table/main/cells_*.table.json"))
    again = subprocess.run(args, cwd=offline, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "W&B:" not in again.stdout
    assert len(offline_runs(sdir)) == 1


def test_a_run_file_read_while_w_and_b_still_writes_it_gives_its_complete_records_so_far(offline):
    # the tests read a run's file as soon as finish() returns, while W&B's service may still be appending:
    # every cut of a real run file reads as a prefix of its records, never as a corrupt one
    sdir = offline / "study"
    written_table(sdir)
    long = {"note": "x" * 70_000}  # one record over two 32 KiB blocks: first, middle and last chunks
    log_study_tables(STUDY, sdir, mode="offline", project="kdrl-test", tags=[], summary=long, say=lambda _: None)
    wandb_run_summary(offline_runs(sdir)[0])  # the whole file: its exit record written (a loaded machine lags)
    (path,) = offline_runs(sdir)[0].glob("run-*.wandb")
    data = path.read_bytes()
    whole = [r.SerializeToString() for r in wandb_records(path)]
    assert len(whole) > 5 and len(data) > 2 * 32768
    torn = offline / "torn.wandb"
    for cut in [*range(8, len(data), 211), 32768 - 3, 32768 + 5, len(data) - 1]:
        torn.write_bytes(data[:cut])
        got = [r.SerializeToString() for r in wandb_records(torn)]
        assert got == whole[: len(got)], cut
    torn.write_bytes(data)
    assert [r.SerializeToString() for r in wandb_records(torn)] == whole
