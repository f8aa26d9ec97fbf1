"""notebooks/analysis.ipynb runs top to bottom on a tiny real sweep, so it never rots."""

import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_analysis_notebook_executes_on_a_tiny_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdrl.cli.distill",
            "-m",
            "experiment=debug_sweep",
            "hydra.sweeper.params.seed=0",
            f"hydra.sweep.dir={sweep}",
            f"teacher.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    monkeypatch.setenv("KDRL_SWEEP_DIRS", str(sweep))
    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    assert (sweep / "notebook_curves.png").exists()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "2 ok runs, 0 failed" in outputs
