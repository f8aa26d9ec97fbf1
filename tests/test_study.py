"""scripts/study_minatar.py end to end at debug size: the teacher before its students, tables and
plots written, and a rerun that skips every finished job (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SMOKE = [
    "--games", "breakout", "--parts", "teachers", "compression", "--seeds", "1",
    "--student-steps", "1200", "--student-eval-freq", "600", "--extra", "debug=fast", "eval.episodes=2",
]  # fmt: skip


def study(tmp_path: Path, *args: str) -> str:
    cmd = [sys.executable, "scripts/study_minatar.py", "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")]
    done = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_study_runs_teacher_first_writes_tables_and_skips_finished_jobs(tmp_path):
    out = study(tmp_path, *SMOKE, "--jobs", "2")
    starts = [line.split()[-1] for line in out.splitlines() if " start " in line]
    assert starts[0] == "teachers/breakout_s0" and len(starts) == 4  # students only once their teacher exists
    assert "finished: 0 failed" in out
    runs = pd.read_csv(tmp_path / "docs" / "compression_runs.csv")
    assert sorted(runs["tag"]) == sorted(f"kl_rusu-{s}-teacher" for s in ("rusu_25", "rusu_4", "rusu_7"))
    assert (runs["status"] == "ok").all()
    for name in ("teachers.md", "teachers.png", "compression.md", "compression.tex", "compression.csv"):
        assert (tmp_path / "docs" / name).stat().st_size > 0
    assert "| breakout |" in (tmp_path / "docs" / "compression.md").read_text()
    again = study(tmp_path, *SMOKE)
    assert "4 already done, 0 to run" in again and " start " not in again
    status = study(tmp_path, *SMOKE, "--status")
    assert status.count("ok ") == 4
