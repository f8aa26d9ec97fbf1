"""Rusu et al.'s data protocol (kdrl.datasets, kdrl-data, distill.dataset, a study's data stage): a
recording replays exactly what the teacher's online play would have written, its Q-values are the
teacher's, a student trains on it at the online schedule, and whatever cannot serve a run is refused
in one line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from kdrl.collector import EnvCollector, greedy_actions
from kdrl.config import compose_config
from kdrl.data import StreamConfig
from kdrl.datasets import (
    DatasetCollector,
    DatasetError,
    TeacherDataset,
    check_dataset,
    check_teacher,
    dataset_stream,
    file_sha256,
    load_dataset,
    record_dataset,
    save_dataset,
)
from kdrl.envs import EnvSpec, make_vector_env
from kdrl.nets import MLP
from kdrl.study import StudyError, load_study, plan
from kdrl.validate import ConfigError, validate_data, validate_distill
from tests.zygote import run_app

ENV = {"id": "CartPole-v1", "num_envs": 3, "kwargs": None, "vectorization": "sync"}
SPEC = EnvSpec("CartPole-v1", (4,), 2)


def small_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MLP((4,), 2, width=16, depth=1).eval()


class Spy:
    """The replay contract's ``add``, remembering every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, ...]] = []

    def add(self, *arrays) -> None:  # noqa: ANN002
        self.calls.append(tuple(np.array(a, copy=True) for a in arrays))

    def end_streams(self) -> None:
        pass


def test_a_recording_replays_exactly_what_the_teachers_online_play_writes_with_its_q_values():
    """An untrained teacher at epsilon 0.3 ends many short episodes across 3 sub-envs: the replayed
    (obs, action, reward, next obs, terminated, done) of every vector step, true final observations
    included, equal those an EnvCollector with the same teacher, epsilon, seed and stream writes."""
    teacher = small_net(0)
    greedy = lambda obs: greedy_actions(teacher, obs, torch.device("cpu"))  # noqa: E731
    data = record_dataset(ENV, SPEC, teacher, 600, 0.3, 7, greedy)
    assert data.env_steps == 600 and data.num_envs == 3 and data.meta["episodes"] > 10
    online = Spy()
    envs = make_vector_env("CartPole-v1", 3, 7, None, "sync", key=("dataset",))
    collector = EnvCollector(envs, online, greedy, lambda t: 0.3, seed=7, key=("dataset",))
    while collector.env_steps < 600:
        collector.step()
    replayed = Spy()
    replay = DatasetCollector(data, replayed, seed=7)
    while replay.env_steps < 600:
        replay.step()
    assert len(replayed.calls) == len(online.calls) == 200
    ended = 0
    for got, want in zip(replayed.calls, online.calls):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        ended += int(want[5].sum())
    assert ended == data.meta["episodes"] == replay.episodes == collector.episodes
    assert replay.recent_returns == collector.recent_returns  # the teacher's episode returns, as logged online
    q = teacher(torch.as_tensor(data.obs.reshape(-1, 4))).detach().numpy()
    np.testing.assert_allclose(data.q.reshape(-1, 2), q, rtol=0, atol=1e-6)
    with pytest.raises(DatasetError, match="the teacher dataset ran out at env step 600"):
        replay.step()


def test_a_saved_dataset_loads_the_same_and_feeds_the_stream_at_the_online_schedule(tmp_path):
    teacher = small_net(1)
    data = record_dataset(ENV, SPEC, teacher, 300, 0.05, 3, lambda o: greedy_actions(teacher, o, torch.device("cpu")))
    path = save_dataset(tmp_path / "dataset.npz", data)
    back = load_dataset(tmp_path)  # a run dir is read as its dataset.npz
    for key in ("obs", "last_obs", "final_obs", "actions", "rewards", "terminated", "done", "q"):
        np.testing.assert_array_equal(getattr(back, key), getattr(data, key))
    assert back.meta == data.meta and path.name == "dataset.npz"
    cfg = StreamConfig(
        total_timesteps=240, buffer_size=1000, batch_size=8, learning_starts=60, train_freq=12, gradient_steps=3
    )
    stream = dataset_stream(back, SPEC, cfg, seed=0)
    batches = list(stream)
    # the online stream's schedule: updates from env step 60 on, 3 every 12 env steps (transitions), to 240
    assert stream.collector.env_steps == 240 and stream.grad_steps == ((240 - 60) // 12 + 1) * 3
    assert sum(b.actions.shape[0] for b in batches) == stream.grad_steps


def test_a_dataset_that_cannot_serve_the_run_is_refused_in_one_line(tmp_path):
    teacher = small_net(2)
    data = record_dataset(ENV, SPEC, teacher, 120, 0.05, 0, lambda o: greedy_actions(teacher, o, torch.device("cpu")))
    check_dataset(data, SPEC, 120, "d.npz")
    assert check_teacher(data, teacher, "d.npz") == 0.0
    with pytest.raises(DatasetError, match=r"holds 120 env steps, fewer than distill.total_timesteps 121"):
        check_dataset(data, SPEC, 121, "d.npz")
    with pytest.raises(DatasetError, match=r"recorded on CartPole-v1 \(4,\), this run's env is Acrobot-v1 \(6,\)"):
        check_dataset(data, EnvSpec("Acrobot-v1", (6,), 3), 10, "d.npz")
    with pytest.raises(DatasetError, match="was recorded with another teacher: its stored Q-values differ"):
        check_teacher(data, small_net(3), "d.npz")
    with pytest.raises(DatasetError, match="no teacher dataset at"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="is not a kdrl teacher dataset"):
        load_dataset(tmp_path / "junk.npz")
    with pytest.raises(DatasetError, match="dataset.steps must be >= 1"):
        record_dataset(ENV, SPEC, teacher, 0, 0.05, 0, lambda o: o)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["control=student"], "control must be teacher, got control='student'"),
        (["control=mixed"], "control must be teacher, got control='mixed'"),
        (["baseline=scratch"], "not for baseline=scratch"),
        (["distill.pretrain.teacher_steps=100", "distill.pretrain.updates=10"], "do not combine"),
    ],
)
def test_distill_refuses_a_dataset_with_other_data_settings(overrides, message):
    validate_distill(compose_config("distill", ["distill.dataset=/x/dataset.npz", "teacher.checkpoint=/x/t.pt"]))
    with pytest.raises(ConfigError, match=message):
        validate_distill(compose_config("distill", ["distill.dataset=/x/dataset.npz", *overrides]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "kdrl-data needs the teacher that plays: set teacher.checkpoint"),
        (["teacher.checkpoint=/t.pt", "dataset.steps=0"], "dataset.steps"),
        (["teacher.checkpoint=/t.pt", "dataset.epsilon=1.5"], "dataset.epsilon"),
    ],
)
def test_kdrl_data_refuses_a_config_without_a_teacher_or_with_bad_sizes(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_data(compose_config("data", overrides))


def test_a_study_data_stage_records_one_dataset_per_teacher_and_students_name_theirs(tmp_path):
    """conf/study/debug_data.yaml: each dataset is recorded by its seed's teacher; each dataset student
    (seed cycle over the datasets) loads its dataset and that dataset's teacher and needs both; the online
    students beside them load the same teachers and no dataset."""
    jobs = {j.id: j for j in plan(load_study("debug_data"), tmp_path)}
    assert [j.split("/")[0] for j in jobs][:4] == ["teachers", "teachers", "data", "data"]
    data1 = jobs["data/env=cartpole,seed=1"]
    assert data1.app == "data" and data1.needs == ["teachers/env=cartpole,seed=1"]
    flat = lambda job: [o.replace("'", "") for o in job.overrides]  # noqa: E731
    assert f"teacher.checkpoint={tmp_path}/teachers/env=cartpole,seed=1/teacher.pt" in flat(data1)
    for seed, t in [(0, 0), (1, 1), (2, 0)]:
        student = jobs[f"dataset/env=cartpole,seed={seed}"]
        assert student.needs == [f"teachers/env=cartpole,seed={t}", f"data/env=cartpole,seed={t}"]
        assert f"distill.dataset={tmp_path}/data/env=cartpole,seed={t}/dataset.npz" in flat(student)
        online = jobs[f"online/env=cartpole,seed={seed}"]
        assert online.needs == [f"teachers/env=cartpole,seed={t}"]
        assert not any(o.startswith("distill.dataset") for o in online.overrides)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("+stages.students.dataset={stage: teachers}", "its dataset stage 'teachers' is not a data stage"),
        (
            "+stages.students.dataset={stage: students}",
            "its dataset stage 'students' is a later stage: datasets run first",
        ),
        ("+stages.students.dataset={stage: nowhere}", "its dataset stage 'nowhere' is no stage of this study"),
        ("+stages.students.dataset={seed: 1}", "dataset names the data stage that records it"),
        ("+stages.teachers.dataset={stage: students}", "a dataset link is for a distill stage"),
        ("+stages.students.dataset={stage: data, bogus: 1}", "dataset takes stage, seed"),
    ],
)
def test_a_bad_dataset_link_is_one_line(extra, message):
    with pytest.raises(StudyError, match=message):
        load_study("debug", [extra])


def test_kdrl_data_then_a_student_on_its_dataset_end_to_end(tmp_path):
    """The two apps as a user runs them (``python -m kdrl.cli.<app>``, forked from a warm process:
    tests/zygote.py): kdrl-data records the teacher's play; kdrl-distill trains on it (results.json names
    the dataset and its hash) and refuses it for another env in one line."""
    teacher = tmp_path / "teacher"
    env = {**os.environ, "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1"}
    run = lambda app, *args: run_app(app, list(args), env=env, cwd=tmp_path)  # noqa: E731
    t = run("train", "debug=fast", f"hydra.run.dir={teacher}")
    assert t.returncode == 0, t.stderr[-2000:]
    d = run("data", "debug=fast", f"teacher.checkpoint={teacher}/teacher.pt", f"hydra.run.dir={tmp_path}/data")
    assert d.returncode == 0, d.stderr[-2000:]
    rec = json.loads((tmp_path / "data" / "results.json").read_text())
    assert rec["kind"] == "dataset" and rec["status"] == "ok" and rec["env_steps"] >= 1200
    s = run(
        "distill", "debug=fast", f"teacher.checkpoint={teacher}/teacher.pt",
        f"distill.dataset={tmp_path}/data", f"hydra.run.dir={tmp_path}/student",
    )  # fmt: skip
    assert s.returncode == 0, s.stderr[-2000:]
    res = json.loads((tmp_path / "student" / "results.json").read_text())
    assert res["status"] == "ok" and res["dataset"]["sha256"] == rec["dataset"]["sha256"]
    assert res["dataset"]["max_q_difference"] == 0.0 and res["env_steps"] <= rec["env_steps"]
    bad = run(
        "distill", "debug=fast", "distill.total_timesteps=99999", f"teacher.checkpoint={teacher}/teacher.pt",
        f"distill.dataset={tmp_path}/data", f"hydra.run.dir={tmp_path}/bad",
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"holds {rec['env_steps']} env steps, fewer than distill.total_timesteps 99999" in bad.stderr, bad.stderr


def test_the_same_recording_saved_at_another_time_is_the_same_file(tmp_path, monkeypatch):
    """A recording's file is a function of its content: a data job run again for a published one is checked
    against it by sha256 (kdrl.study), so nothing of the time of writing may enter the file."""
    import time

    steps, n = 6, 2
    rng = np.random.default_rng(0)
    data = TeacherDataset(
        obs=rng.integers(0, 2, (steps, n, 4, 3), dtype=np.uint8), last_obs=np.zeros((n, 4, 3), np.uint8),
        final_obs=np.zeros((0, 4, 3), np.uint8), actions=np.zeros((steps, n), np.int64),
        rewards=np.ones((steps, n), np.float32), terminated=np.zeros((steps, n), bool), done=np.zeros((steps, n), bool),
        q=rng.normal(size=(steps, n, 3)).astype(np.float32), meta={"format": "kdrl-teacher-dataset-1"},
    )  # fmt: skip
    first = file_sha256(save_dataset(tmp_path / "a.npz", data))
    real = time.localtime
    monkeypatch.setattr(time, "localtime", lambda *a: real(86400 * 365 * 20))  # written twenty years on
    assert file_sha256(save_dataset(tmp_path / "b.npz", data)) == first
    again = load_dataset(tmp_path / "b.npz")
    assert all(np.array_equal(getattr(again, k), getattr(data, k)) for k in ("obs", "q", "actions", "done"))
