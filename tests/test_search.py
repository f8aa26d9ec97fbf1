"""kdrl.search, piece by piece: the search space, the objective and its intermediate values, the
storage strings, the settings a study keeps, stale trials and their retries, a job's reports and
pruning, and the kdrl-search report. The end-to-end searches are in tests/test_hparams_search.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from kdrl.search.objective import Objective, time_to_score  # noqa: E402
from kdrl.search.space import parse_space  # noqa: E402
from kdrl.search.storage import (  # noqa: E402
    SearchSettingsError,
    create_or_load_study,
    record_settings,
    storage_url,
)
from tests.helpers import compose_cfg  # noqa: E402

MEDIAN = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}


def test_sweep_overrides_become_optuna_distributions():
    space = parse_space(
        [
            "a=tag(log, interval(1e-4, 1e-2))",
            "b=interval(0.0, 1.0)",
            "c=interval(1, 5)",
            "d=choice(32, 64, 128)",
            "e=x,y",
            "f=range(2, 10, 3)",
            "g=7",
            "+h=foo",
            "d=choice(1, 2)",  # the command line's wins over the preset's params
        ]
    )
    d = space.distributions
    assert d["a"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["b"] == FloatDistribution(0.0, 1.0)
    assert d["c"] == FloatDistribution(1.0, 5.0)  # Hydra's interval is a float one (ints: range)
    assert d["d"] == CategoricalDistribution([1, 2])
    assert d["e"] == CategoricalDistribution(["x", "y"])
    assert d["f"] == IntDistribution(2, 8, step=3)  # range's stop is excluded, as in Python
    assert space.fixed == ["g=7", "+h=foo"]
    assert space.trial_overrides({"a": 0.001, "d": 2}) == ["g=7", "+h=foo", "a=0.001", "d=2"]
    with pytest.raises(ValueError, match="empty range"):
        parse_space(["x=range(5, 5)"])


def test_objective_values_and_intermediate_values():
    obj = Objective(metrics=("normalized_score",), directions=("maximize",), periodic="normalized_score")
    hist = [
        {"env_steps": 1000, "wall_s": 1.0, "normalized_score": 0.2},
        {"env_steps": 2000, "wall_s": 2.0, "normalized_score": 0.6},
        {"env_steps": 3000, "wall_s": 3.0, "normalized_score": 0.4},
        {"env_steps": 4000, "wall_s": 4.0, "normalized_score": float("nan")},
    ]
    assert obj.prunable and obj.values({"normalized_score": 0.9}) == [0.9]
    assert obj.intermediate(hist[:1], 10_000) == 0.2
    assert obj.intermediate(hist, 10_000) == 0.6  # best so far; the refused (nan) evaluation is skipped
    last = Objective(
        metrics=("normalized_score",), directions=("maximize",), periodic="normalized_score", report="last"
    )
    assert last.intermediate(hist[:3], 10_000) == 0.4 and last.intermediate(hist, 10_000) is None
    with pytest.raises(ValueError, match="no number"):
        obj.values({"normalized_score": None})
    with pytest.raises(ValueError, match="not finite"):
        obj.values({"normalized_score": float("nan")})
    multi = Objective(metrics=("normalized_score", "wall_time_s"), directions=("maximize", "minimize"))
    assert not multi.prunable and multi.values({"normalized_score": 0.5, "wall_time_s": 12.0}) == [0.5, 12.0]
    with pytest.raises(ValueError, match="one direction per"):
        Objective(metrics=("a", "b"), directions=("maximize",))


def test_time_to_score_counts_failures_at_the_budget_and_projects_before_the_target():
    obj = Objective(metrics=("time_to_score",), directions=("minimize",), periodic="return_mean", target=10.0)
    hist = [
        {"env_steps": 25_000, "wall_s": 30.0, "return_mean": 2.0},
        {"env_steps": 50_000, "wall_s": 60.0, "return_mean": 11.0},
    ]
    assert obj.stops_at_target and time_to_score(hist, "return_mean", 10.0) == 60.0
    assert obj.values({"eval_history": hist, "wall_time_s": 61.0}) == [60.0]
    assert obj.values({"eval_history": hist[:1], "wall_time_s": 1200.0}) == [1200.0]  # never reached: the budget
    assert obj.intermediate(hist[:1], 1_000_000) == pytest.approx(30.0 * 40)  # projected to the budget
    assert obj.intermediate(hist, 1_000_000) == 60.0
    with pytest.raises(ValueError, match="minimised"):
        Objective(metrics=("time_to_score",), directions=("maximize",), periodic="return_mean", target=1.0)
    with pytest.raises(ValueError, match="target"):
        Objective(metrics=("time_to_score",), directions=("minimize",), periodic="return_mean")


def test_storage_strings(tmp_path):
    assert storage_url(None, tmp_path) == f"journal:{tmp_path.resolve()}/optuna.journal"
    assert storage_url(str(tmp_path / "s.journal")) == f"journal:{tmp_path.resolve()}/s.journal"
    assert storage_url(f"journal:{tmp_path}/x.log") == f"journal:{tmp_path.resolve()}/x.log"
    assert storage_url("sqlite:///rel.db").startswith("sqlite:////")  # absolute: jobs run elsewhere
    assert storage_url("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(ValueError, match="journal"):
        storage_url("somewhere")


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_study_keeps_its_settings_and_refuses_other_ones(tmp_path, kind):
    url = storage_url(str(tmp_path / "s.journal") if kind == "journal" else f"sqlite:///{tmp_path / 's.db'}")
    settings = {"objective": {"metrics": ["m"]}, "pruner": MEDIAN, "heartbeat_s": 30.0}
    study = create_or_load_study(url, "s", ["maximize"])
    assert record_settings(study, settings)["pruner"] == MEDIAN
    again = create_or_load_study(url, "s", ["maximize"])  # a second worker, or a resumed search
    record_settings(again, {**settings, "heartbeat_s": 5.0})  # a worker's own liveness setting may differ
    with pytest.raises(SearchSettingsError, match="pruner"):
        record_settings(again, {**settings, "pruner": None})
    with pytest.raises(SearchSettingsError, match="optimises"):
        create_or_load_study(url, "s", ["minimize"])


def _search(tmp_path: Path, n_trials: int = 3, stale_after_s: float = 5.0):
    """An OptunaSearch on a journal in tmp_path, set up without Hydra (no launcher)."""
    from kdrl.search.sweeper import OptunaSearch

    s = OptunaSearch(
        sampler="random",
        samplers={"random": {"_target_": "optuna.samplers.RandomSampler", "seed": 3}},
        study_name="s",
        storage=f"journal:{tmp_path / 's.journal'}",
        n_trials=n_trials,
        heartbeat_s=1.0,
        stale_after_s=stale_after_s,
    )
    s.url = storage_url(s.storage)
    s.study = create_or_load_study(s.url, "s", ["maximize"])
    s.storage_obj = s.study._storage
    s.study_id = s.storage_obj.get_study_id_from_name("s")
    return s


def test_stale_trials_are_failed_and_retried_with_their_parameters(tmp_path):
    from kdrl.search.storage import RETRY_OF_ATTR, STALE_ATTR
    from kdrl.search.trial import HEARTBEAT_ATTR

    s = _search(tmp_path)
    space = parse_space(["x=interval(0.0, 1.0)", "k=choice(1, 2, 3)"])
    dead = s.ask(space)  # a worker that dies with this trial running
    dead_id = s.storage_obj.get_trial_id_from_study_id_trial_number(s.study_id, dead.number)
    s.storage_obj.set_trial_system_attr(dead_id, HEARTBEAT_ATTR, time.time() - 60)
    alive = s.ask(space)
    alive_id = s.storage_obj.get_trial_id_from_study_id_trial_number(s.study_id, alive.number)
    s.storage_obj.set_trial_system_attr(alive_id, HEARTBEAT_ATTR, time.time())  # its job beats
    assert s.reap_stale() == [dead.number]
    assert s.reap_stale() == []  # once
    frozen = s.storage_obj.get_trial(dead_id)
    assert frozen.state == TrialState.FAIL and frozen.system_attrs[STALE_ATTR]
    assert s.counted() == 2  # the alive trial and the retry waiting, not the stale one
    retry = s.ask(space)
    assert retry.params == dead.params and retry.user_attrs[RETRY_OF_ATTR] == dead.number
    # a retry that goes stale again still points at the first job dir
    retry_id = s.storage_obj.get_trial_id_from_study_id_trial_number(s.study_id, retry.number)
    s.storage_obj.set_trial_system_attr(retry_id, HEARTBEAT_ATTR, time.time() - 60)
    s.reap_stale()
    assert s.ask(space).user_attrs[RETRY_OF_ATTR] == dead.number


def test_seeded_sampler_gives_each_trial_number_its_own_draws(tmp_path):
    """Two workers started at once must not propose the same start-up trials (one seeded sampler per
    worker would); the same trial number draws the same values (a search on one worker is reproducible)."""
    space = parse_space(["x=interval(0.0, 1.0)"])
    a, b = _search(tmp_path / "a"), _search(tmp_path / "b")
    xa = [a.ask(space).params["x"] for _ in range(3)]
    xb = [b.ask(space).params["x"] for _ in range(3)]
    assert xa == xb and len(set(xa)) == 3


class _Eval:
    def __init__(self) -> None:
        self.history: list[dict] = []
        self.freq = 1000


def _job_link(tmp_path: Path, pruner: dict, objective: Objective):
    from kdrl.search.storage import record_settings

    url = storage_url(str(tmp_path / "s.journal"))
    study = create_or_load_study(url, "s", list(objective.directions))
    record_settings(study, {"objective": objective.to_dict(), "pruner": pruner, "heartbeat_s": 30.0})
    return study, url


def test_job_reports_each_evaluation_and_stops_when_pruned(tmp_path):
    from kdrl.search.trial import TrialLink, TrialReporter, trial_pruned

    obj = Objective(metrics=("normalized_score",), directions=("maximize",), periodic="normalized_score")
    study, url = _job_link(tmp_path, MEDIAN, obj)
    good = study.ask()  # an earlier trial that did well
    for step in (1000, 2000):
        good.report(0.9, step)
    study.tell(good, 0.9)
    number = study.ask().number
    link = TrialLink(url, "s", number)
    ev, pl_module = _Eval(), SimpleNamespace(stream=SimpleNamespace(total_timesteps=3000))
    trainer = SimpleNamespace(should_stop=False)
    rep = TrialReporter(link, ev)
    ev.history.append({"env_steps": 1000, "wall_s": 1.0, "normalized_score": 0.95})
    rep.on_train_batch_end(trainer, pl_module, None, None, 0)
    assert not trainer.should_stop
    ev.history.append({"env_steps": 2000, "wall_s": 2.0, "normalized_score": 0.1})
    rep.on_train_batch_end(trainer, pl_module, None, None, 0)
    assert not trainer.should_stop  # best so far (0.95) is above the median (0.9)
    link2 = TrialLink(url, "s", study.ask().number)
    rep2, trainer2, ev2 = TrialReporter(link2, _Eval()), SimpleNamespace(should_stop=False), None
    ev2 = rep2.evaluation
    ev2.history.append({"env_steps": 1000, "wall_s": 1.0, "normalized_score": 0.2})
    rep2.on_train_batch_end(trainer2, pl_module, None, None, 0)
    assert trainer2.should_stop and trial_pruned([object(), rep2]) and not trial_pruned([rep])
    assert link2.finish({"status": "pruned", "env_steps": 1000, "wall_time_s": 1.0, "run_dir": "d"}) == "PRUNED"
    frozen = study.trials[link2.number]
    assert frozen.state == TrialState.PRUNED and frozen.value == 0.2 and frozen.user_attrs["kdrl:env_steps"] == 1000
    assert link.finish({"status": "ok", "normalized_score": 0.97}) == "COMPLETE"
    assert study.trials[number].value == 0.97 and study.trials[number].intermediate_values == {1000: 0.95, 2000: 0.95}
    # a job that fails tells FAIL with its error; a trial already ended takes no more reports
    link3 = TrialLink(url, "s", study.ask().number)
    assert link3.finish(None, RuntimeError("boom")) == "FAIL"
    assert study.trials[link3.number].user_attrs["kdrl:error"].endswith("boom")
    assert not link3.report(1.0, 1000)


def test_a_trial_that_reaches_its_target_stands_at_the_steps_it_skipped(tmp_path):
    from kdrl.search.trial import TrialLink, TrialReporter

    obj = Objective(metrics=("time_to_score",), directions=("minimize",), periodic="return_mean", target=10.0)
    sh = {"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 1000, "reduction_factor": 2}
    study, url = _job_link(tmp_path, sh, obj)
    link = TrialLink(url, "s", study.ask().number)
    ev, pl_module = _Eval(), SimpleNamespace(stream=SimpleNamespace(total_timesteps=5000))
    rep, trainer = TrialReporter(link, ev), SimpleNamespace(should_stop=False)
    ev.history += [
        {"env_steps": 1000, "wall_s": 3.0, "return_mean": 4.0},
        {"env_steps": 2000, "wall_s": 6.0, "return_mean": 12.0},
    ]
    rep.on_train_batch_end(trainer, pl_module, None, None, 0)
    rep.on_train_end(trainer, pl_module)  # stopped at the target (eval.stop_at_return)
    link.finish({"status": "ok", "eval_history": ev.history, "wall_time_s": 6.5})
    t = study.trials[0]
    assert t.value == 6.0
    assert t.intermediate_values == {1000: 15.0, 2000: 6.0, 3000: 6.0, 4000: 6.0, 5000: 6.0}
    assert any(k.startswith("completed_rung_") for k in t.system_attrs)  # the pruner's rungs were recorded


def test_search_report_lists_states_compute_best_importance_and_plots(tmp_path, capsys):
    from kdrl.cli.search import main
    from kdrl.search.storage import record_settings

    url = storage_url(str(tmp_path / "s.journal"))
    study = create_or_load_study(url, "demo", ["maximize"])
    record_settings(study, {"objective": {"metrics": ["normalized_score"]}, "pruner": MEDIAN, "heartbeat_s": 30.0})
    for i in range(6):
        t = study.ask({"lr": FloatDistribution(1e-4, 1e-2, log=True), "bs": CategoricalDistribution([32, 64])})
        for step in (1000, 2000):
            t.report(0.1 * i + step / 10_000, step)
        t.set_user_attr("kdrl:env_steps", 2000 if i != 4 else 1000)
        t.set_user_attr("kdrl:job_s", 10.0)
        if i == 4:
            study.tell(t, state=TrialState.PRUNED)
        else:
            study.tell(t, 0.1 * i)
    assert main([str(tmp_path / "s.journal"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "complete 5, pruned 1" in out and "11,000 env steps" in out and "1.0 min of job wall time" in out
    assert "trial 5: 0.5" in out and "| lr |" in out
    for name in ("search.md", "trials.csv", "search.json", "optimization_history.png", "intermediate_values.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    body = json.loads((tmp_path / "rep" / "search.json").read_text())
    assert body["trials"]["PRUNED"] == 1 and set(body["importance"]) == {"lr", "bs"}
    assert main([str(tmp_path / "nothing.journal")]) == 1  # no study there: one line, exit 1


def test_minatar_presets_compose_with_their_objectives():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kdrl.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        t = compose("train", ["hparams_search=minatar_teacher_optuna", "env=minatar_asterix"], return_hydra_config=True)
        s = compose("distill", ["hparams_search=minatar_student_optuna"], return_hydra_config=True)
    sw = t.hydra.sweeper
    assert t.env.id == "MinAtar/Asterix-v1" and t.hydra.runtime.choices.recipe == "minatar_fast"
    assert sw.objective.metrics == ["time_to_score"] and sw.direction == "minimize"
    assert sw.objective.targets[t.hydra.runtime.choices.env] == 17 and sw.study_name.endswith("minatar_asterix")
    assert s.env.id == "MinAtar/Breakout-v1" and s.student.size == "rusu_4" and s.loss.name == "kl_rusu"
    assert s.optimized_metric == "normalized_score" and s.distill.total_timesteps == 50_000
    for cfg in (t, s):
        for name in ("median", "successive_halving", "hyperband"):
            assert cfg.hydra.sweeper.pruners[name]._target_.startswith("optuna.pruners.")
    assert compose_cfg("train", ["hparams_search=cartpole_teacher_optuna"]).optimized_metric == "eval_return_mean"


def test_kdrl_table_counts_pruned_runs_apart_from_failures():
    import pandas as pd

    from kdrl.tables import summary_table

    base = {"kind": "student", "env_id": "CartPole-v1", "run_dir": "x", "loss": "kl", "width": 16}
    rows = [
        {**base, "status": "ok", "seed": 0, "normalized_score": 0.9},
        {**base, "status": "ok", "seed": 1, "normalized_score": 0.8},
        {**base, "status": "pruned", "seed": 2, "normalized_score": None},
        {**base, "status": "failed", "seed": 3, "normalized_score": None},
    ]
    tab = summary_table(pd.DataFrame(rows), "loss", "width", "normalized_score")
    assert "2 ok runs, 1 failed, 1 pruned by a search" in tab.caption
