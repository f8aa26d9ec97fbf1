"""kdrl.fingerprint: what a refactor's before/after comparison counts as an outcome (a changed return
or step count) and what it ignores (clock readings), the job loop both fingerprint scripts use, and the
statistical comparison of a rerun with a published table (scripts/rerun_cells.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kdrl.fingerprint import diff, fingerprint, record_jobs, rerun_cells


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


def student_runs(scores: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    params = {"rusu_25": 33_000, "rusu_7": 8_600}
    rows = [
        {"kind": "student", "status": "ok", "env_id": env, "student_size": size, "params": params[size],
         "normalized_score": s, "teacher_return_mean": 20.0, "random_return_mean": 0.5}
        for (env, size), ss in scores.items() for s in ss
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_a_rerun_is_compared_cell_by_cell_with_the_published_interval_and_p_of_improvement():
    published = student_runs(
        {("A", "rusu_7"): [0.5, 0.6, 0.7, 0.55, 0.65], ("A", "rusu_25"): [0.8, 0.9, 0.85, 0.95, 0.75],
         ("B", "rusu_7"): [0.9, 1.0, 0.95, 1.05, 0.98]}
    )  # fmt: skip
    same = rerun_cells(published, published.copy(), "env_id", "student_size", "normalized_score")
    lines = same.splitlines()
    # sizes largest first, as the tables print them; A has both sizes, B only rusu_7
    assert [ln.split(" | ")[1] for ln in lines[2:5]] == ["rusu_25", "rusu_7", "rusu_7"]
    assert "| A | rusu_7 | 60.0 [" in same and "| yes | 0.50 [" in lines[3]
    assert "Rerun means inside the published 95% CI: 3 of 3 cells." in same
    assert "| rusu_7 | 2 | 76.5 | 76.5 | 0.50 [" in same  # the geometric mean of 60.0 and 97.6

    # every rerun seed above every published one in A rusu_7; B's cell missing from the rerun
    better = student_runs(
        {("A", "rusu_7"): [0.9, 0.95, 1.0, 0.92, 0.97], ("A", "rusu_25"): [0.8, 0.9, 0.85, 0.95, 0.75]}
    )
    out = rerun_cells(published, better, "env_id", "student_size", "normalized_score")
    a7 = next(ln for ln in out.splitlines() if ln.startswith("| A | rusu_7 |"))
    assert "| **no** | 1.00 [1.00, 1.00] |" in a7
    assert next(ln for ln in out.splitlines() if ln.startswith("| B | rusu_7 |")).endswith("(n = 5) | – | – | – |")
    assert "Rerun means inside the published 95% CI: 1 of 2 cells." in out
    assert "| rusu_7 | 1 | 60.0 | 94.8 | 1.00 [" in out  # the geomean over the games both have: A only
