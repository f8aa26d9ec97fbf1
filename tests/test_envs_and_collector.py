"""The autoreset contract: no stored transition spans an episode boundary; truncation bootstraps
from the true final observation, termination does not."""

import gymnasium as gym
import numpy as np
import pytest

from kdrl.collector import EnvCollector
from kdrl.envs import EnvError, env_spec, make_env, make_vector_env
from kdrl.replay import ReplayBuffer

X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * np.pi / 360


def _collect(num_envs, steps, max_episode_steps=None, seed=0):
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    envs = make_vector_env("CartPole-v1", num_envs, seed, kwargs)
    buf = ReplayBuffer(num_envs * steps, (4,))
    rng = np.random.default_rng(seed)
    collector = EnvCollector(envs, buf, lambda obs: rng.integers(2, size=len(obs)), lambda t: 0.0, seed=seed)
    for _ in range(steps):
        collector.step()
    n = len(buf)
    # transitions are stored step-major: index = step * num_envs + env
    view = lambda t: t[:n].numpy().reshape(steps, num_envs, *t.shape[1:])  # noqa: E731
    return collector, view(buf.obs), view(buf.next_obs), view(buf.terminated), view(buf.rewards)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_no_transition_spans_an_episode_boundary(num_envs):
    collector, obs, next_obs, term, _ = _collect(num_envs, 400)
    assert collector.episodes > 10
    for e in range(num_envs):
        for t in range(len(obs) - 1):
            if term[t, e]:
                # terminal next_obs is the real failing state, and the next obs is a fresh reset state
                x, theta = next_obs[t, e, 0], next_obs[t, e, 2]
                assert abs(x) > X_LIMIT or abs(theta) > THETA_LIMIT
                assert np.all(np.abs(obs[t + 1, e]) <= 0.05)
                assert not np.allclose(next_obs[t, e], obs[t + 1, e])
            else:
                assert np.array_equal(next_obs[t, e], obs[t + 1, e])


def test_truncation_bootstraps_from_true_final_obs():
    collector, obs, next_obs, term, _ = _collect(2, 60, max_episode_steps=10)
    # with random actions episodes rarely fail inside 10 steps: most end by truncation
    boundaries = [
        (t, e) for t in range(len(obs) - 1) for e in range(2) if not np.array_equal(next_obs[t, e], obs[t + 1, e])
    ]
    truncated = [(t, e) for t, e in boundaries if not term[t, e]]
    assert len(truncated) >= 5
    for t, e in truncated:
        assert term[t, e] == 0.0  # bootstraps
        assert np.all(np.abs(obs[t + 1, e]) <= 0.05)  # the next row starts a new episode
        # the stored next_obs is one physics step from obs, not the reset state
        assert np.abs(next_obs[t, e] - obs[t, e]).max() < 0.5


def test_episode_returns_are_recorded():
    collector, *_, rewards = _collect(2, 300)
    finished = collector.drain_finished()
    assert len(finished) == collector.episodes > 0
    assert all(ret == length for _, ret, length in finished)  # CartPole pays 1 per step
    assert collector.drain_finished() == []


def test_env_errors_are_clear():
    with pytest.raises(EnvError, match="unknown gymnasium env id 'CartPol-v1'.*CartPole-v1"):
        make_env("CartPol-v1")
    with pytest.raises(EnvError, match="num_envs must be >= 1"):
        make_vector_env("CartPole-v1", 0, 0)
    with pytest.raises(EnvError, match="Discrete"):
        env_spec(gym.make("Pendulum-v1"))


def test_spec_of_vector_env():
    spec = env_spec(make_vector_env("Acrobot-v1", 2, 0))
    assert spec.obs_shape == (6,) and spec.n_actions == 3 and spec.env_id == "Acrobot-v1"


def test_an_unknown_minatar_id_registers_the_family_once_without_warnings():
    """The config check probes the env before the build does: an unknown MinAtar id registered the
    family twice, and gymnasium warned "Overriding environment MinAtar/... already in registry" for
    every id above the one-line error."""
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from kdrl.envs import EnvError, probe_spec\n"
        "for _ in range(2):\n"
        "    try: probe_spec({'id': 'MinAtar/Brekout-v1'})\n"
        "    except EnvError as e: print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("unknown gymnasium env id 'MinAtar/Brekout-v1'") == 2
    assert "Overriding environment" not in proc.stderr, proc.stderr[-2000:]
