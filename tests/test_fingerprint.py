"""kdrl.fingerprint: what a refactor's before/after comparison counts as an outcome (a changed return
or step count) and what it ignores (clock readings), and the job loop both fingerprint scripts use."""

from __future__ import annotations

import json
from pathlib import Path

from kdrl.fingerprint import diff, fingerprint, record_jobs


def run_dir(root: Path, ret: float, clock: float) -> Path:
    root.mkdir(parents=True)
    history = [
        {"env_steps": 500, "grad_steps": 100, "return_mean": ret, "wall_s": clock, "train_wall_s": clock / 2,
         "process_s": clock + 5},
    ]  # fmt: skip
    res = {"status": "ok", "eval_return_mean": ret, "env_steps": 500, "wall_time_s": clock, "eval_history": history}
    (root / "results.json").write_text(json.dumps(res))
    (root / "csv").mkdir()
    (root / "csv" / "metrics.csv").write_text(f"step,train/loss,train/sps,time/wall_s\n1,0.5,{clock * 100},{clock}\n")
    return root


def test_clock_readings_are_not_outcomes_but_a_return_is(tmp_path):
    a = fingerprint(run_dir(tmp_path / "a", 10.0, 1.0))
    b = fingerprint(run_dir(tmp_path / "b", 10.0, 7.5))  # same learning, other clocks (process_s included)
    c = fingerprint(run_dir(tmp_path / "c", 11.0, 1.0))
    assert diff(a, b) == []
    assert a["metrics"] == {"step": [1.0], "train/loss": [0.5]}
    assert sorted(d.split(":")[0] for d in diff(a, c)) == ["/eval_history[0]/return_mean", "/eval_return_mean"]


def test_record_jobs_runs_each_job_in_order_in_a_fresh_work_dir(tmp_path, capsys):
    work = tmp_path / "work"
    (work / "stale").mkdir(parents=True)  # a previous recording's leftovers go
    script = "import os,sys,json; d=sys.argv[-1].split('=',1)[1]; os.makedirs(d); open(d+'/results.json','w').write(json.dumps({'status':'ok','eval_return_mean':len(d)}))"  # noqa: E501
    jobs = [(n, ["python", "-c", script, f"hydra.run.dir={work / n}"]) for n in ("first", "second", "skipped")]
    body = record_jobs(jobs, work, fingerprint, only=["first", "second"])
    assert list(body) == ["first", "second"] and not (work / "stale").exists()
    assert body["second"]["eval_return_mean"] == len(str(work / "second"))
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["first", "second"]
