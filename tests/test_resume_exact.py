"""A run stopped mid-way and resumed is the run it would have been: the checkpoint saves the envs
mid-episode where their family allows it (kdrl.envs.vector_env_state), and a resumed teacher or
student then matches the uninterrupted run to the last digit. Where the envs cannot be saved, the
resume resets them and says so in one line."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from kdrl.data import StreamConfig, build_stream
from kdrl.envs import EnvSpec, envs_restorable, load_vector_env_state, make_vector_env, vector_env_state
from kdrl.io import load_policy
from kdrl.schedules import LinearSchedule
from tests.helpers import kill_after_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MINATAR = [f"MinAtar/{g}-v1" for g in ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")]
CLASSIC = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]


def step_all(envs: gym.vector.VectorEnv, actions: np.ndarray) -> list[tuple]:
    out = []
    for a in actions:
        obs, rew, term, trunc, _ = envs.step(a)
        out.append((obs.copy(), rew.copy(), term.copy(), trunc.copy()))
    return out


@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("env_id", MINATAR + CLASSIC)
def test_saved_envs_step_on_exactly_as_the_originals(env_id, num_envs):
    """Saved mid-episode and loaded into a vector env of another seed, the envs give the same
    observations, rewards and episode ends as the originals for 3,000 more steps (episode ends,
    resets and MinAtar's sticky actions included)."""
    rng = np.random.default_rng(0)
    envs = make_vector_env(env_id, num_envs, seed=3)
    n = int(envs.single_action_space.n)
    step_all(envs, rng.integers(n, size=(250, num_envs)))
    assert envs_restorable(envs)
    saved = vector_env_state(envs)
    other = make_vector_env(env_id, num_envs, seed=99)
    load_vector_env_state(other, saved)
    actions = rng.integers(n, size=(3000, num_envs))  # past an episode end in every game (Freeway: 2,500)
    a, b = step_all(envs, actions), step_all(other, actions)
    assert all(all(np.array_equal(x, y) for x, y in zip(sa, sb)) for sa, sb in zip(a, b))
    assert sum(int(s[2].sum() + s[3].sum()) for s in a) > 0  # episodes ended and restarted


@pytest.mark.parametrize(
    "env_id,vectorization", [("LunarLander-v3", "sync"), ("ALE/Pong-v5", "sync"), ("CartPole-v1", "async")]
)
def test_envs_that_would_not_step_on_exactly_are_not_saved(env_id, vectorization):
    """Box2D and ALE envs pickle but lose their state (a Box2D body, the emulator); an async vector
    env's envs live in other processes. None of them is saved: a resume resets them."""
    envs = make_vector_env(env_id, 2, seed=0, vectorization=vectorization)
    try:
        assert not envs_restorable(envs) and vector_env_state(envs) is None
    finally:
        envs.close()


def test_a_saved_env_state_that_names_other_code_is_refused_unrun(tmp_path):
    """A checkpoint is data: an env state naming anything but env, space and numpy classes is refused
    before anything runs (a pickle calling os.system would otherwise run at the resume)."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    envs = make_vector_env("CartPole-v1", 1, seed=0)
    with pytest.raises(pickle.UnpicklingError, match="may not name posix.system|may not name os.system"):
        load_vector_env_state(envs, pickle.dumps([Payload()]))
    assert not marker.exists()
    with pytest.raises(ValueError, match="a saved env state is a list of envs, got a dict"):
        load_vector_env_state(envs, pickle.dumps({"envs": []}))
    with pytest.raises(ValueError, match="holds 2 envs, the run has 1"):
        load_vector_env_state(envs, vector_env_state(make_vector_env("CartPole-v1", 2, seed=0)))


def test_a_stream_state_with_envs_loads_weights_only_and_continues_the_episodes():
    """The stream's state (envs included) survives torch.save / torch.load(weights_only=True); the
    loaded stream's next batches equal the original's, n-step sums across the save included."""
    data = StreamConfig(600, 500, 8, 40, 4, 2, "standard", False, 3, 0.9)
    spec = EnvSpec("CartPole-v1", (4,), 2)

    def stream():
        lean = lambda obs: (obs[:, 2] > 0).astype(np.int64)  # noqa: E731 (push the way the pole leans)
        return build_stream({"id": "CartPole-v1", "num_envs": 2}, spec, data, lean, LinearSchedule(1.0, 0.1, 100),
                            seed=7)  # fmt: skip

    first = stream()
    it = iter(first)
    for _ in range(20):
        next(it)
    blob = io.BytesIO()
    torch.save(first.state_dict(), blob)
    blob.seek(0)
    second = stream()
    second.load_state_dict(torch.load(blob, weights_only=True))
    assert second.envs_restored is True
    for x, y in zip(it, iter(second)):
        assert all(u is v is None or torch.equal(u, v) for u, v in zip(x, y))
    assert second.collector.env_steps == first.collector.env_steps == 600
    assert second.collector.episodes == first.collector.episodes


@pytest.mark.parametrize(
    "vectorization,why",
    [("async", "envs of this kind are not saved"), ("sync", "the checkpoint was written before kdrl saved envs")],
)
def test_a_stream_whose_envs_were_not_saved_resets_them_ends_the_replays_streams_and_says_so(
    caplog, vectorization, why
):
    """Async envs are never saved; a sync run's checkpoint from before envs were saved has none either."""
    data = StreamConfig(600, 500, 8, 40, 4, 2, "standard", False, 3, 0.9)
    spec = EnvSpec("CartPole-v1", (4,), 2)
    env = {"id": "CartPole-v1", "num_envs": 2, "vectorization": vectorization}
    streams = [build_stream(env, spec, data, lambda o: np.zeros(len(o), np.int64), LinearSchedule(1.0, 0.1, 100), seed=7)
               for _ in range(2)]  # fmt: skip
    try:
        first, second = streams
        it = iter(first)
        for _ in range(10):
            next(it)
        state = first.state_dict()
        assert ("envs" in state) is (vectorization == "sync")
        state.pop("envs", None)
        with caplog.at_level(logging.INFO, logger="kdrl.data"):
            second.load_state_dict(state)
        assert second.envs_restored is False
        buf, pos = second.collector.buffer, second.collector.buffer.pos
        assert buf.dones[[(pos - 1) % buf.capacity, (pos - 2) % buf.capacity]].all()  # n-step sums stop at the save
        lines = [r.getMessage() for r in caplog.records if "envs reset" in r.getMessage()]
        assert len(lines) == 1 and "CartPole-v1" in lines[0] and "not be bit-identical" in lines[0]
        assert f"({why})" in lines[0]
    finally:
        for st in streams:
            st.collector.envs.close()


# ---- end to end: killed with SIGKILL after a checkpoint, rerun, compared with a run never stopped --------
def run_killed_and_resumed(cmd: list[str], out: Path, kill_after: int) -> str:
    proc = subprocess.Popen(cmd + [f"hydra.run.dir={out}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    kill_after_checkpoint(proc, out, kill_after)
    again = subprocess.run(cmd + [f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    return again.stdout + again.stderr


def assert_same_run(never_stopped: Path, resumed: Path, policy: str) -> None:
    a, b = (json.loads((d / "results.json").read_text()) for d in (never_stopped, resumed))
    assert b["resumed_from_env_steps"] is not None and b["resumed_from_env_steps"] < b["env_steps"]
    for key in ("eval_returns", "eval_return_mean", "env_steps", "grad_steps"):
        assert a[key] == b[key], key
    assert [h["return_mean"] for h in a["eval_history"]] == [h["return_mean"] for h in b["eval_history"]]
    wa, wb = (load_policy(d / policy)["state_dict"] for d in (never_stopped, resumed))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_teacher_killed_after_a_checkpoint_resumes_to_the_run_never_stopped(tmp_path):
    """Before the envs were saved, the resumed run restarted its episodes and drifted from the
    one never stopped after its first evaluation past the resume (held-out 193.7 against 138.7)."""
    train = [sys.executable, "-m", "kdrl.cli.train", "debug=fast", "seed=2"]
    cmd = [*train, "algo.total_timesteps=5000", "eval.freq=1000"]
    done = subprocess.run(cmd + [f"hydra.run.dir={tmp_path / 'a'}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = run_killed_and_resumed(cmd, tmp_path / "b", kill_after=2000)
    assert "resuming from" in out and "envs reset" not in out
    assert_same_run(tmp_path / "a", tmp_path / "b", "teacher.pt")


def test_a_mixed_control_student_killed_after_a_checkpoint_resumes_to_the_run_never_stopped(tmp_path):
    """The student's who-acts coin flips, the teacher's actions and the envs all step on as before."""
    teach = [sys.executable, "-m", "kdrl.cli.train", "debug=fast", f"hydra.run.dir={tmp_path / 't'}"]
    assert subprocess.run(teach, cwd=ROOT, capture_output=True, text=True).returncode == 0
    cmd = [sys.executable, "-m", "kdrl.cli.distill", "debug=fast", "seed=4", "control=mixed",
           f"teacher.checkpoint={tmp_path / 't' / 'teacher.pt'}", "distill.total_timesteps=4000", "eval.freq=800",
           "eval.stop_at_return=null"]  # fmt: skip
    done = subprocess.run(cmd + [f"hydra.run.dir={tmp_path / 'a'}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = run_killed_and_resumed(cmd, tmp_path / "b", kill_after=1600)
    assert "resuming from" in out and "envs reset" not in out
    assert_same_run(tmp_path / "a", tmp_path / "b", "student.pt")
