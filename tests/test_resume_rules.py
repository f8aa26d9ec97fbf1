"""Which config differences stop a run from resuming (kdrl.runs.job.config_differences), and how a
multirun job refused before it wrote results.json is reported (the listed sweeper's log line)."""

from __future__ import annotations

import logging

from hydra.core.utils import JobReturn, JobStatus

from hydra_plugins.kdrl_sweeper.listed_sweeper import report_failure
from kdrl.runs.job import ResumeConflict, config_differences

OLD = {
    "task": "distill",
    "student": {"size": "rusu_25", "width": None},
    "student_sizes": {"rusu_25": {"channels": [8], "hidden": [64]}, "rusu_7": {"channels": [4], "hidden": [32]}},
    "distill": {"batch_size": 32},
}


def with_(**changes):
    return {**OLD, **changes}


def test_a_key_added_as_null_and_presets_no_run_uses_do_not_block_a_resume():
    new = with_(
        distill={"batch_size": 32, "dataset": None},
        student_sizes={**OLD["student_sizes"], "half": {"channels": [16], "hidden": [64]}, "rusu_7": {"channels": [1]}},
    )
    assert config_differences(OLD, new) == []
    # (kdrl.runs.job.x_config_differences__mutmut_22-24: only the new config's presets counted) a preset the old
    # run's kdrl had and the new one dropped, used by neither run
    dropped = with_(student_sizes={**OLD["student_sizes"], "gone": {"channels": [2], "hidden": [8]}})
    assert config_differences(dropped, OLD) == []


def test_the_preset_a_run_uses_and_a_key_added_with_a_value_still_do():
    sizes = {**OLD["student_sizes"], "rusu_25": {"channels": [9], "hidden": [64]}}
    assert [k for k, *_ in config_differences(OLD, with_(student_sizes=sizes))] == ["student_sizes.rusu_25.channels"]
    added = config_differences(OLD, with_(distill={"batch_size": 32, "dataset": "teacher.npz"}))
    assert [(k, repr(a), b) for k, a, b in added] == [("distill.dataset", "(absent)", "teacher.npz")]
    removed = config_differences(with_(distill={"batch_size": 32, "dataset": "teacher.npz"}), OLD)
    # (kdrl.runs.job.x_config_differences__mutmut_48, 50: the side that lacks the key shown as None, a null)
    assert [(k, a, repr(b)) for k, a, b in removed] == [("distill.dataset", "teacher.npz", "(absent)")]
    # a run switched to the other size: both presets shape one of the two runs
    switched = config_differences(OLD, with_(student={"size": "rusu_7", "width": None}))
    assert [k for k, *_ in switched] == ["student.size"]
    changed_other = {**OLD["student_sizes"], "rusu_7": {"channels": [5], "hidden": [32]}}
    both = config_differences(OLD, with_(student={"size": "rusu_7", "width": None}, student_sizes=changed_other))
    assert [k for k, *_ in both] == ["student.size", "student_sizes.rusu_7.channels"]


def test_a_failed_multirun_job_is_reported_in_one_line_and_an_ok_one_is_not(caplog):
    failed = JobReturn(overrides=["seed=3", "env=cartpole"], status=JobStatus.FAILED)
    failed._return_value = ResumeConflict("outputs/x holds an unfinished run of another config (seed: 1 -> 3)")
    ok = JobReturn(overrides=["seed=4"], status=JobStatus.COMPLETED)
    ok._return_value = 1.0
    with caplog.at_level(logging.ERROR):
        report_failure(failed)
        report_failure(ok)
    assert [r.getMessage() for r in caplog.records] == [
        "a job failed (seed=3 env=cartpole): outputs/x holds an unfinished run of another config (seed: 1 -> 3)"
    ]
