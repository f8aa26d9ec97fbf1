"""env.vectorization=envpool (issue 15): EnvPool's Atari pool against kdrl's gymnasium path on Pong:
same spaces, same preprocessing, same SAME_STEP episode boundaries; and a run trains through it."""

from __future__ import annotations

import numpy as np
import pytest

from kdrl.envs import EnvError, make_vector_env, transition_next_obs

pytest.importorskip("envpool")
PONG = "ALE/Pong-v5"


def both(kwargs: dict, num_envs: int = 1):
    return (
        make_vector_env(PONG, num_envs, seed=0, kwargs=kwargs, vectorization="sync"),
        make_vector_env(PONG, num_envs, seed=0, kwargs=kwargs, vectorization="envpool"),
    )


def test_spaces_match_the_gymnasium_path():
    gym_envs, pool = both({})
    assert pool.single_observation_space == gym_envs.single_observation_space  # Box(0, 255, (4, 84, 84), uint8)
    assert pool.single_action_space == gym_envs.single_action_space  # Discrete(6), the minimal set
    gym_envs.close(), pool.close()


def test_preprocessing_gives_the_same_frames_until_the_emulators_diverge():
    """No sticky actions, no no-ops, NOOP actions: grey 84x84, max-pooled, INTER_AREA-resized frames
    stacked 4 deep with reset padding. The reset frames agree but for a handful of pixels, and the
    next frames exactly, until EnvPool's own ALE build serves the ball on another frame."""
    deterministic = {"repeat_action_probability": 0.0, "preprocess": {"noop_max": 0}}
    gym_envs, pool = both(deterministic)
    g, p = gym_envs.reset(seed=[0])[0], pool.reset()[0]
    assert (p[0] == p[0, -1]).all() and (g[0] == g[0, -1]).all()  # the stack is padded with the reset frame
    assert np.mean(g != p) < 0.005
    equal = 0
    for _ in range(12):
        g = gym_envs.step(np.array([0]))[0]
        p = pool.step(np.array([0]))[0]
        equal += int(np.array_equal(g[0, -1], p[0, -1]))
    assert equal >= 8
    gym_envs.close(), pool.close()


def test_episode_boundaries_follow_kdrls_same_step_contract():
    """Truncation after max_num_frames_per_episode (here 400 frames = 100 steps; no no-ops, which ALE
    counts as frames and EnvPool does not) on both backends: the ending step reports it, carries the
    true last observation in final_obs and already returns the next episode's (reset-padded) first stack."""
    kwargs = {"max_num_frames_per_episode": 400, "preprocess": {"noop_max": 0}}
    for envs in both(kwargs, num_envs=2):
        envs.reset(seed=[0, 1])
        rng = np.random.default_rng(0)
        for t in range(1, 101):
            obs, rew, term, trunc, infos = envs.step(rng.integers(6, size=2))
            assert not term.any()
            if t < 100:
                assert not trunc.any()
        assert trunc.all() and infos["_final_obs"].all()
        real = transition_next_obs(obs, infos, trunc | term)
        assert not np.array_equal(real, obs)  # the stored next_obs is the last frame stack, not the reset
        assert all((obs[i] == obs[i, -1]).all() for i in range(2))  # the new episode's padded stack
        envs.close()


def test_envpool_is_for_atari_only_and_says_so():
    with pytest.raises(EnvError, match="ALE/ envs"):
        make_vector_env("CartPole-v1", 2, seed=0, vectorization="envpool")
    with pytest.raises(EnvError, match="does not support"):
        make_vector_env(PONG, 1, seed=0, kwargs={"mode": 1}, vectorization="envpool")


def test_a_teacher_trains_through_envpool(tmp_path):
    from kdrl.runs.teacher import train_teacher
    from tests.helpers import compose_cfg

    cfg = compose_cfg(
        "train",
        [
            "env=atari_pong",
            "env.vectorization=envpool",
            "env.num_envs=4",
            "algo.total_timesteps=800",
            "algo.learning_starts=400",
            "algo.buffer_size=1000",
            "eval.freq=800",
            "eval.episodes=1",
            "eval.final_episodes=1",
            "eval.reference_episodes=1",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "+env.kwargs.max_num_frames_per_episode=2000",
        ],
    )
    res = train_teacher(cfg, tmp_path)
    assert res["status"] == "ok" and res["env_steps"] >= 800 and res["grad_steps"] > 0
