"""The teacher reference (kdrl.reference): the normalised score's T and R measured once per teacher
on eval.reference_episodes (100) final held-out seeds, stored with the teacher, reused by every
student; a stale or mismatched one is recomputed; the score and its refusal rule use it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import kdrl.reference as reference
import kdrl.runs.distill as distill
from kdrl.envs import probe_spec
from kdrl.reference import ReferenceSettings, reference_fields, sidecar_path, teacher_reference
from kdrl.runs.distill import distill_student, final_evaluation
from kdrl.runs.job import plain
from kdrl.runs.teacher import obtain_teacher
from kdrl.scores import teacher_beats_random
from kdrl.teachers import teacher_key
from kdrl.validate import ConfigError, validate_common, validate_distill, validate_multitask
from tests.helpers import compose_cfg

REFERENCE_SEEDS = list(range(2_000_000, 2_000_100))
CARTPOLE = ReferenceSettings("CartPole-v1", 100, 2_000_000, 0.0, {})


def balancer(obs: np.ndarray) -> np.ndarray:
    """A CartPole policy that needs no training: push towards where the pole falls."""
    return (3 * obs[:, 2] + obs[:, 3] > 0).astype(np.int64)


class Spy:
    """Records (who, seeds, epsilon) of every evaluation kdrl.reference (and optionally kdrl.runs.distill)
    makes, passing the calls through."""

    def __init__(self, monkeypatch, modules=(reference,)):
        self.calls: list[tuple[str, str, list[int], float]] = []
        for module in modules:
            evaluate, rand = module.evaluate_policy, module.random_returns
            name = module.__name__

            def spy_evaluate(fn, env_id, seeds, *a, _evaluate=evaluate, _name=name, **kw):
                self.calls.append((_name, "teacher", list(seeds), kw.get("epsilon", 0.0)))
                return _evaluate(fn, env_id, seeds, *a, **kw)

            def spy_random(env_id, seeds, *a, _rand=rand, _name=name, **kw):
                self.calls.append((_name, "random", list(seeds), 1.0))
                return _rand(env_id, seeds, *a, **kw)

            monkeypatch.setattr(module, "evaluate_policy", spy_evaluate)
            monkeypatch.setattr(module, "random_returns", spy_random)

    def of(self, module) -> list[tuple[str, list[int], float]]:
        return [(who, seeds, eps) for name, who, seeds, eps in self.calls if name == module.__name__]

    def clear(self) -> None:
        self.calls.clear()


# ---- unit: computed once, reused, recomputed when stale --------------------------------------------------------
def test_the_reference_is_computed_once_on_the_reference_seeds_and_reused(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"a teacher file")
    first = teacher_reference(teacher, balancer, CARTPOLE, tmp_path / "cache")
    assert spy.of(reference) == [("teacher", REFERENCE_SEEDS, 0.0), ("random", REFERENCE_SEEDS, 1.0)]
    assert first["stored_at"] == str(sidecar_path(teacher)) and sidecar_path(teacher).is_file()
    assert first["teacher"]["mean"] == pytest.approx(np.mean(first["teacher"]["returns"]))
    assert first["teacher"]["se"] == pytest.approx(np.std(first["teacher"]["returns"], ddof=1) / 10)
    assert len(first["random"]["returns"]) == 100 and first["seeds"] == "2000000 + i, i < 100"
    spy.clear()
    second = teacher_reference(teacher, balancer, CARTPOLE, tmp_path / "cache")  # the next student
    assert spy.calls == [] and second == first


@pytest.mark.parametrize(
    "change",
    [
        {"episodes": 120},
        {"epsilon": 0.05},
        {"first_seed": 2_500_000},
        {"env_kwargs": {"max_episode_steps": 200}},
    ],
)
def test_a_reference_for_other_settings_is_recomputed_and_both_are_kept(tmp_path, monkeypatch, change):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"a teacher file")
    stored = teacher_reference(teacher, balancer, CARTPOLE, tmp_path / "cache")
    spy = Spy(monkeypatch)
    other = ReferenceSettings(**{**CARTPOLE.__dict__, **change})
    fresh = teacher_reference(teacher, balancer, other, tmp_path / "cache")
    seeds = list(range(other.first_seed, other.first_seed + other.episodes))
    assert spy.of(reference) == [("teacher", seeds, other.epsilon), ("random", seeds, 1.0)]
    assert fresh["episodes"] == other.episodes and fresh["epsilon"] == other.epsilon
    spy.clear()
    assert teacher_reference(teacher, balancer, CARTPOLE, tmp_path / "cache") == stored  # still there
    assert teacher_reference(teacher, balancer, other, tmp_path / "cache") == fresh
    assert spy.calls == []


def test_a_reference_of_an_overwritten_teacher_file_is_recomputed(tmp_path, monkeypatch):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"a teacher file")
    teacher_reference(teacher, balancer, CARTPOLE, tmp_path / "cache")
    teacher.write_bytes(b"another teacher, same name")  # a retrained or replaced teacher.pt
    spy = Spy(monkeypatch)
    teacher_reference(teacher, lambda obs: np.zeros(len(obs), dtype=np.int64), CARTPOLE, tmp_path / "cache")
    assert [who for who, _, _ in spy.of(reference)] == ["teacher", "random"]
    body = json.loads(sidecar_path(teacher).read_text())
    assert len(body["references"]) == 1 and body["teacher_sha256"] == reference.content_digest(teacher)


def test_a_teacher_in_a_read_only_place_gets_its_reference_in_the_cache_by_content(tmp_path, monkeypatch):
    teacher = tmp_path / "user" / "teacher.pt"
    teacher.parent.mkdir()
    teacher.write_bytes(b"a user's teacher")
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(reference, "sidecar_path", lambda p: blocked / "teacher.pt.reference.json")  # unwritable
    spy = Spy(monkeypatch)
    first = teacher_reference(teacher, balancer, CARTPOLE, tmp_path / "cache")
    digest = reference.content_digest(teacher)
    assert first["stored_at"] == str(tmp_path / "cache" / "references" / f"{digest}.json")
    assert len(spy.of(reference)) == 2
    spy.clear()
    copy = tmp_path / "elsewhere" / "copy.pt"
    copy.parent.mkdir()
    shutil.copyfile(teacher, copy)  # the same teacher under another name: keyed by content
    assert teacher_reference(copy, balancer, CARTPOLE, tmp_path / "cache") == first and spy.calls == []


# ---- config ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "app,check", [("train", validate_common), ("distill", validate_distill), ("multitask", validate_multitask)]
)
@pytest.mark.parametrize("value,message", [
    (19, r"eval.reference_episodes \(19\) must be >= eval.final_episodes \(20\)"),
    (0, "eval.reference_episodes must be an integer >= 1, got 0"),
    (99.5, "eval.reference_episodes must be an integer >= 1, got 99.5"),
    ("many", "eval.reference_episodes must be an integer >= 1, got 'many'"),
])  # fmt: skip
def test_bad_reference_episodes_are_refused_in_one_line(app, check, value, message):
    assert compose_cfg(app, []).eval.reference_episodes == 100
    check(compose_cfg(app, ["eval.reference_episodes=20"]))  # = final_episodes: fine
    with pytest.raises(ConfigError, match=message) as err:
        check(compose_cfg(app, [f"eval.reference_episodes={value}"]))
    assert "\n" not in str(err.value)


def test_reference_episodes_do_not_change_which_teacher_is_cached():
    """Cached teachers trained before the reference existed keep their key (their students add one)."""
    base = compose_cfg("train", [])
    assert teacher_key(base) == teacher_key(compose_cfg("train", ["eval.reference_episodes=500"]))
    assert teacher_key(base) != teacher_key(compose_cfg("train", ["eval.final_episodes=30"]))


# ---- the score and its refusal rule use the reference -------------------------------------------------------------
def linear_policy(w: list[float]) -> nn.Module:
    """Q = (-w.s, w.s): acts 1 when w.s > 0 (a CartPole balancer for w = [0, 0, 3, 1])."""
    net = nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-x for x in w], w], dtype=torch.float32))
        net.bias.zero_()
    return net.eval()


def made_up_reference(teacher: list[float], random: list[float]) -> dict:
    return {
        "episodes": len(teacher),
        "first_seed": 2_000_000,
        "epsilon": 0.0,
        "teacher": reference.return_stats(teacher),
        "random": reference.return_stats(random),
        "stored_at": "made up",
    }


@pytest.fixture(scope="module")
def small_eval():
    cfg = compose_cfg(
        "distill",
        ["eval.final_episodes=4", "eval.generalisation_episodes=1", "eval.agreement_states=50", "logger=none"],
    )
    return cfg, probe_spec(plain(cfg.env))


def test_the_score_is_computed_against_the_reference(small_eval):
    cfg, spec = small_eval
    teacher, student = linear_policy([0, 0, 3, 1]), linear_policy([0, 0, 1, 0])
    rng = np.random.default_rng(0)
    ref = made_up_reference(list(rng.normal(350, 30, 100)), list(rng.normal(20, 8, 100)))
    res = final_evaluation(cfg, teacher, student, spec, [], ref)
    s, t, r = res["eval_return_mean"], ref["teacher"]["mean"], ref["random"]["mean"]
    assert res["normalized_score"] == pytest.approx((s - r) / (t - r))
    assert res["raw_return_ratio"] == pytest.approx(s / t)
    assert res["teacher_beats_random"] is True and res["teacher_reference"] == reference_fields(ref)
    # the 4-episode teacher and random returns are still there, and are not what the score used
    assert len(res["teacher_returns"]) == len(res["random_returns"]) == 4
    assert res["teacher_return_mean"] != pytest.approx(t)


def test_the_refusal_rule_uses_the_reference(small_eval):
    cfg, spec = small_eval
    teacher = linear_policy([0, 0, 3, 1])  # beats random clearly on the 4 final episodes ...
    same = list(np.random.default_rng(1).normal(20, 8, 100))
    res = final_evaluation(cfg, teacher, teacher, spec, [], made_up_reference(same, same))  # ... not on its reference
    assert teacher_beats_random(res["teacher_returns"], res["random_returns"])
    assert res["teacher_beats_random"] is False and np.isnan(res["normalized_score"])
    # and the other way round: a teacher no better than random on the final episodes, clearly better on its reference
    weak = linear_policy([0, 0, -3, -1])  # pushes the pole over
    rng = np.random.default_rng(2)
    res = final_evaluation(
        cfg, weak, weak, spec, [], made_up_reference(list(rng.normal(300, 20, 100)), list(rng.normal(20, 8, 100)))
    )
    assert not teacher_beats_random(res["teacher_returns"], res["random_returns"])
    assert res["teacher_beats_random"] is True and np.isfinite(res["normalized_score"])


# ---- end to end: a teacher job stores it, students reuse it; an old teacher gets one from its first student ----------
FAST_TEACHER = ["algo.total_timesteps=3000", "algo.learning_starts=500", "eval.freq=1500", "eval.episodes=2"]
FAST_STUDENT = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "student.width=16",
    "distill.total_timesteps=1200",
    "distill.learning_starts=300",
    "eval.freq=600",
    "eval.episodes=2",
    "eval.final_episodes=3",
    "eval.generalisation_episodes=1",
    "eval.agreement_states=100",
]


def stored_reference(teacher_path) -> dict:
    (ref,) = json.loads(sidecar_path(teacher_path).read_text())["references"]
    return ref


def check_student_against(res: dict, ref: dict) -> None:
    """The student's score, by hand from the stored numbers, and the reference block it carries."""
    s, t, r = res["eval_return_mean"], ref["teacher"]["mean"], ref["random"]["mean"]
    beats = teacher_beats_random(ref["teacher"]["returns"], ref["random"]["returns"])
    assert res["teacher_beats_random"] is beats
    assert res["normalized_score"] == pytest.approx((s - r) / (t - r) if beats else float("nan"), nan_ok=True)
    block = res["teacher_reference"]
    assert block["episodes"] == 100 and block["return_mean"] == t and block["random_mean"] == r
    assert block["return_se"] == ref["teacher"]["se"] and block["random_se"] == ref["random"]["se"]


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A tiny CartPole teacher trained on demand into a cache, with kdrl.reference's evaluations recorded."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        spy = Spy(mp)
        path, res = obtain_teacher("cartpole", 0, FAST_TEACHER, cache)
    return cache, path, res, spy.of(reference)


def test_a_teacher_job_stores_its_reference_and_its_students_reuse_it(taught, tmp_path, monkeypatch):
    cache, teacher_path, res, teacher_job_calls = taught
    assert teacher_job_calls == [("teacher", REFERENCE_SEEDS, 0.0), ("random", REFERENCE_SEEDS, 1.0)]
    ref = stored_reference(teacher_path)
    assert ref["computed_by"] == "teacher job" and res["reference"]["stored_at"] == str(sidecar_path(teacher_path))
    assert res["reference"]["teacher"] == ref["teacher"] and res["reference"]["random"] == ref["random"]
    # its 20 final episodes are the reference's first 20 (greedy: the same episodes, up to argmax ties)
    assert sum(a == b for a, b in zip(res["eval_returns"], ref["teacher"]["returns"][:20])) >= 19
    spy = Spy(monkeypatch, (reference, distill))
    cfg = compose_cfg("distill", [*FAST_STUDENT, f"teacher.cache_dir={cache}", f"teacher.overrides={FAST_TEACHER}"])
    student = distill_student(cfg, tmp_path / "student")
    assert student["status"] == "ok" and student["teacher_checkpoint"] == str(teacher_path)
    assert spy.of(reference) == []  # reused, not recomputed
    # the student's own final evaluation is as before: 3 episodes, the first reference seeds (paired)
    final = [(who, seeds) for who, seeds, _ in spy.of(distill) if seeds[0] == 2_000_000]
    assert final == [("teacher", REFERENCE_SEEDS[:3])] * 2 + [("random", REFERENCE_SEEDS[:3])]
    check_student_against(student, ref)
    saved = json.loads((tmp_path / "student" / "results.json").read_text())
    assert saved["teacher_reference"] == student["teacher_reference"]


def test_a_teacher_without_a_reference_gets_one_from_its_first_student_only(taught, tmp_path, monkeypatch):
    """An old cache entry, a user's or a foreign file: the first student computes it and stores it next
    to the file, the second reuses it."""
    teacher_path = tmp_path / "mine" / "teacher.pt"
    teacher_path.parent.mkdir()
    shutil.copyfile(taught[1], teacher_path)  # no reference next to it
    spy = Spy(monkeypatch)
    given = [*FAST_STUDENT, f"teacher.checkpoint={teacher_path}", f"teacher.cache_dir={tmp_path / 'cache'}"]
    first = distill_student(compose_cfg("distill", given), tmp_path / "first")
    assert spy.of(reference) == [("teacher", REFERENCE_SEEDS, 0.0), ("random", REFERENCE_SEEDS, 1.0)]
    ref = stored_reference(teacher_path)
    assert ref["computed_by"] == "student" and ref["teacher"] == stored_reference(taught[1])["teacher"]
    check_student_against(first, ref)
    spy.clear()
    second = distill_student(compose_cfg("distill", [*given, "seed=1"]), tmp_path / "second")
    assert spy.of(reference) == [] and second["teacher_reference"] == first["teacher_reference"]
    check_student_against(second, ref)
