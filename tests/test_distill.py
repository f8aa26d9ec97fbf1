import json
import subprocess
import sys
import textwrap

import pytest
import torch

from kdrl.io import CheckpointError
from kdrl.runs.distill import distill_student, student_net_cfg
from kdrl.runs.teacher import obtain_teacher
from tests.helpers import compose_cfg

FAST_TEACHER = [
    "algo.total_timesteps=3000",
    "algo.learning_starts=500",
    "eval.freq=1500",
    "eval.episodes=2",
    "eval.final_episodes=2",
]
FAST_STUDENT = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "distill.total_timesteps=1200",
    "distill.learning_starts=300",
    "eval.freq=600",
    "eval.episodes=2",
    "eval.final_episodes=3",
    "eval.generalisation_episodes=2",
    "eval.agreement_states=300",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _overrides(cache, extra=()):
    ov = [f"teacher.cache_dir={cache}", "teacher.overrides=[" + ",".join(f"'{o}'" for o in FAST_TEACHER) + "]"]
    return FAST_STUDENT + ov + list(extra)


@pytest.mark.parametrize("keep_last", [1, 2])
def test_a_finished_student_drops_its_resume_checkpoint_unless_asked_to_keep_checkpoints(tmp_path, cache, keep_last):
    """A student's last.ckpt holds its whole replay (0.3-0.6 GB at MinAtar's 400k env steps) and a
    finished run is never resumed: with checkpoint.keep_last=1 it goes when the results are written;
    with numbered checkpoints asked for, last.ckpt stays beside them. The policies stay either way."""
    cfg = compose_cfg("distill", _overrides(cache, ["student.width=16", f"checkpoint.keep_last={keep_last}"]))
    ckpts = tmp_path / "checkpoints"
    assert distill_student(cfg, tmp_path)["status"] == "ok"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "ok"
    assert (ckpts / "best_policy.pt").is_file() and (ckpts / "last_policy.pt").is_file()
    assert (ckpts / "last.ckpt").is_file() == (keep_last > 1) and not (ckpts / "prev.ckpt").exists()
    assert len(list(ckpts.glob("step-*.ckpt"))) == keep_last - 1


def test_student_is_teacher_family_at_student_size():
    teacher = {"_target_": "kdrl.nets.MLP", "width": 256, "depth": 2, "dueling": True, "hidden": None}
    cfg = student_net_cfg(teacher, {"width": 32, "depth": 1, "hidden": None})
    assert cfg == {"_target_": "kdrl.nets.MLP", "width": 32, "depth": 1, "dueling": True, "hidden": None}


@pytest.mark.parametrize(
    "loss,control",
    [("kl", "teacher"), ("nll", "student"), ("mse", "mixed"), ("qdagger", "student"), ("feature", "teacher")],
)
def test_distill_runs_and_reports_the_four_evaluations(tmp_path, cache, loss, control):
    cfg = compose_cfg("distill", _overrides(cache, [f"loss={loss}", f"control={control}", "student.width=16"]))
    res = distill_student(cfg, tmp_path)
    assert res["status"] == "ok" and res["loss"] == cfg.loss.name and res["control"] == control
    # performance
    assert len(res["eval_returns"]) == 3 and len(res["teacher_returns"]) == 3
    # T and R come from the teacher reference (100 held-out episodes, tests/test_teacher_reference.py)
    ref = res["teacher_reference"]
    assert ref["episodes"] == 100 and res["raw_return_ratio"] == pytest.approx(
        res["eval_return_mean"] / ref["return_mean"]
    )
    s, t, r = res["eval_return_mean"], ref["return_mean"], ref["random_mean"]
    expected = (s - r) / (t - r) if res["teacher_beats_random"] else float("nan")
    assert res["normalized_score"] == pytest.approx(expected, nan_ok=True)
    # speed
    assert set(res["speed"]) == {"to_90pct", "to_100pct"}
    # generalisation, from the env config
    assert set(res["generalisation"]) == {"long_pole", "heavy_pole", "obs_noise"}
    # resources
    s, t = res["resources"]["student"], res["resources"]["teacher"]
    assert s["params"] == 4 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2 and t["params"] == 67_586
    assert s["flops"] < t["flops"] and s["bytes"] < t["bytes"] and s["latency_us"] > 0
    assert 0.0 <= res["action_agreement"] <= 1.0 and res["agreement_states"] == 300
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["param_ratio"] == pytest.approx(s["params"] / t["params"])


def test_scratch_baseline_trains_the_student_net_with_dqn(tmp_path, cache):
    cfg = compose_cfg("distill", _overrides(cache, ["baseline=scratch", "student.width=16"]))
    res = distill_student(cfg, tmp_path)
    assert res["loss"] == "scratch" and res["params"] == 386 and res["env_steps"] >= 1200


def test_teacher_is_trained_once_even_when_two_jobs_ask_at_once(tmp_path):
    code = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        from kdrl.runs.teacher import obtain_teacher
        path, res = obtain_teacher("cartpole", 5, {FAST_TEACHER!r}, {str(tmp_path)!r})
        print("TEACHER", path, res["status"])
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum("training teacher" in o for o in outs) == 1
    assert sum("reusing cached teacher" in o for o in outs) == 1
    paths = {line.split()[1] for o in outs for line in o.splitlines() if line.startswith("TEACHER")}
    assert len(paths) == 1
    # and a third call in this process reuses it too
    path, res = obtain_teacher("cartpole", 5, FAST_TEACHER, tmp_path)
    assert str(path) in paths and res["status"] == "ok"


def test_teacher_checkpoint_from_another_env_is_a_clear_error(tmp_path, cache):
    teacher, _ = obtain_teacher("cartpole", 0, FAST_TEACHER, cache)
    cfg = compose_cfg("distill", FAST_STUDENT + ["env=acrobot", f"teacher.checkpoint={teacher}"])
    with pytest.raises(CheckpointError, match="trained on 'CartPole-v1', not 'Acrobot-v1'"):
        distill_student(cfg, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "CheckpointError" in res["error"]


def test_a_student_does_not_depend_on_whether_its_teacher_was_cached(tmp_path):
    """Training the teacher on demand consumes the global RNG; the student must start from the same
    state either way (in a parallel sweep, which job trains the shared teacher is a race)."""
    cache = tmp_path / "cache"
    cfg = compose_cfg("distill", _overrides(cache, ["loss=kl", "student.width=16"]))
    trained = distill_student(cfg, tmp_path / "trained_teacher")  # empty cache: trains the teacher first
    cached = distill_student(cfg, tmp_path / "cached_teacher")  # the teacher now comes from the cache
    assert trained["teacher_checkpoint"] == cached["teacher_checkpoint"]
    assert trained["eval_returns"] == cached["eval_returns"]
    assert trained["eval_history"][0]["return_mean"] == cached["eval_history"][0]["return_mean"]
    s1, s2 = (
        torch.load(tmp_path / d / "student.pt", weights_only=True)["state_dict"]
        for d in ("trained_teacher", "cached_teacher")
    )
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
