import json

import numpy as np
import pytest

from kdrl.cli.table import main as table_main
from kdrl.tables import aggregate, bootstrap_ci, collect, iqm


def test_iqm_by_hand():
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # middle two
    assert iqm([0, 1, 2, 3, 100, 4, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    # n=5: scipy's trim_mean (rliable's IQM) cuts whole observations, one from each end
    assert iqm([1, 2, 3, 4, 50]) == pytest.approx(3.0)


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.normal(1.0, 1.0, 5), rng.normal(1.0, 1.0, 200)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big)
    assert (bhi - blo) < (hi - lo)
    assert 0.7 < blo < 1.0 < bhi < 1.3
    assert bootstrap_ci([3.0]) == (3.0, 3.0)


def _write(d, **fields):
    d.mkdir(parents=True)
    base = {
        "kind": "student",
        "status": "ok",
        "env_id": "CartPole-v1",
        "param_ratio": 0.07,
        "temperature": 0.01,
        "eval_history": [{"env_steps": 1000, "return_mean": 100.0}, {"env_steps": 2000, "return_mean": 500.0}],
    }
    (d / "results.json").write_text(json.dumps({**base, **fields}))


def test_table_tool_end_to_end(tmp_path, capsys):
    for seed in range(3):
        _write(tmp_path / f"kl{seed}", loss="kl", width=64, seed=seed, normalized_score=1.0 - 0.1 * seed)
        _write(tmp_path / f"mse{seed}", loss="mse", width=64, seed=seed, normalized_score=0.5, temperature=1.0)
    _write(tmp_path / "bad", loss="kl", width=64, seed=9, status="failed", error="RuntimeError: boom")
    df = collect([tmp_path])
    assert len(df) == 7 and set(df["method"]) == {"kl (tau=0.01)", "mse"}
    agg = aggregate(df, ["method", "width"], "normalized_score")
    kl = agg[agg["method"] == "kl (tau=0.01)"].iloc[0]
    assert kl["n"] == 3 and kl["mean"] == pytest.approx(0.9) and kl["ci_low"] <= 0.9 <= kl["ci_high"]
    out = tmp_path / "table"
    assert table_main([str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "90.0 [" in printed and "1 failed" in printed and "RuntimeError: boom" in printed
    for name in ("results.csv", "table.md", "table.tex", "ratio_vs_params.png", "curves_by_method.svg"):
        assert (out / name).exists(), name
    assert "\\begin{tabular}" in (out / "table.tex").read_text()


def test_table_tool_errors_clearly(tmp_path, capsys):
    assert table_main([str(tmp_path)]) == 1
    assert "no results.json" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        collect([tmp_path / "missing"])
