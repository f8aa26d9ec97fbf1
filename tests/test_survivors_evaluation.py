"""The evaluation room's mutation survivors (docs/mutation.md, issue 29): ``evaluate_policy``,
``random_returns``, ``rollout_states`` and ``eval_seeds`` against plain loops written here, on real
CartPole episodes, with the env kwargs, wrappers, epsilon and RNG seed each one is given."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns, rollout_states


def balance(obs: np.ndarray) -> np.ndarray:
    """A CartPole policy that keeps the pole up for hundreds of steps: push towards the fall."""
    obs = np.atleast_2d(obs)
    return (obs[:, 2] + obs[:, 3] > 0).astype(np.int64)


def plain_evaluation(policy, seeds, max_steps=None, epsilon=0.0, rng_seed=0, reward_scale=1.0) -> list[float]:
    """evaluate_policy's contract written out: every episode steps together; each step draws, in this
    order, one uniform per running episode and one random action per exploring one."""
    kwargs = {} if max_steps is None else {"max_episode_steps": max_steps}
    envs = [gym.make("CartPole-v1", **kwargs) for _ in seeds]
    obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds)]
    rng = np.random.default_rng(rng_seed)
    returns, running = [0.0] * len(seeds), list(range(len(seeds)))
    while running:
        acts = list(policy(np.stack([obs[i] for i in running])))
        if epsilon > 0:
            explore = rng.random(len(running)) < epsilon
            draws = iter(rng.integers(2, size=int(explore.sum())))
            acts = [int(next(draws)) if e else a for a, e in zip(acts, explore)]
        nxt = []
        for a, i in zip(acts, running):
            obs[i], r, term, trunc, _ = envs[i].step(int(a))
            returns[i] += r * reward_scale
            if not (term or trunc):
                nxt.append(i)
        running = nxt
    return returns


def test_eval_seeds_count_up_from_their_base():
    assert eval_seeds(2_000_000, 3) == [2_000_000, 2_000_001, 2_000_002]
    assert eval_seeds(7, 0) == []


def test_evaluate_policy_defaults_are_greedy_play_with_rng_seed_0():
    seeds = [11, 12, 13]
    greedy = evaluate_policy(balance, "CartPole-v1", seeds, {"max_episode_steps": 60})
    assert greedy == plain_evaluation(balance, seeds, max_steps=60) == [60.0, 60.0, 60.0]
    noisy = evaluate_policy(balance, "CartPole-v1", seeds, {"max_episode_steps": 200}, epsilon=0.5)
    assert noisy == plain_evaluation(balance, seeds, max_steps=200, epsilon=0.5, rng_seed=0)
    assert noisy != plain_evaluation(balance, seeds, max_steps=200, epsilon=0.5, rng_seed=1)


@pytest.mark.parametrize("epsilon", [0.3, 0.7])
def test_evaluate_policy_explores_with_its_epsilon_and_rng_seed(epsilon):
    seeds = [3, 4, 5, 6]
    got = evaluate_policy(balance, "CartPole-v1", seeds, {"max_episode_steps": 150}, epsilon=epsilon, rng_seed=42)
    assert got == plain_evaluation(balance, seeds, max_steps=150, epsilon=epsilon, rng_seed=42)
    assert got != plain_evaluation(balance, seeds, max_steps=150)  # exploring changed the returns


def test_evaluate_policy_of_one_episode_with_exploration():
    got = evaluate_policy(balance, "CartPole-v1", [9], {"max_episode_steps": 100}, epsilon=0.4, rng_seed=5)
    assert got == plain_evaluation(balance, [9], max_steps=100, epsilon=0.4, rng_seed=5)


def test_evaluate_policy_uses_the_env_kwargs_and_wrappers():
    seeds = [21, 22]
    unlimited = evaluate_policy(balance, "CartPole-v1", seeds)
    assert min(unlimited) > 100  # without the kwargs the episodes run far past 40 steps
    double = lambda env: gym.wrappers.TransformReward(env, lambda r: 2.0 * r)  # noqa: E731
    got = evaluate_policy(balance, "CartPole-v1", seeds, {"max_episode_steps": 40}, wrappers=[double])
    assert got == plain_evaluation(balance, seeds, max_steps=40, reward_scale=2.0) == [80.0, 80.0]


def test_random_returns_play_uniformly_at_random_with_the_first_seeds_rng_and_the_kwargs():
    seeds = [100, 101, 102, 103, 104]
    got = random_returns("CartPole-v1", seeds, {"max_episode_steps": 12})
    zero = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    assert got == plain_evaluation(zero, seeds, max_steps=12, epsilon=1.0, rng_seed=100)
    assert max(got) == 12.0  # the kwargs cap the episodes
    assert random_returns("CartPole-v1", []) == []


def plain_states(policy, seeds, max_states, max_steps=None) -> np.ndarray:
    kwargs = {} if max_steps is None else {"max_episode_steps": max_steps}
    states = []
    for s in seeds:
        env = gym.make("CartPole-v1", **kwargs)
        obs, _ = env.reset(seed=s)
        while len(states) < max_states:
            states.append(obs)
            obs, _, term, trunc, _ = env.step(int(policy(obs)[0]))
            if term or trunc:
                break
        if len(states) == max_states:
            break
    return np.stack(states)


def test_rollout_states_are_the_seeded_episodes_states_up_to_the_cap():
    got = rollout_states(balance, "CartPole-v1", [1, 2, 3], 100, {"max_episode_steps": 7})
    want = plain_states(balance, [1, 2, 3], 100, max_steps=7)
    assert got.shape == (21, 4)  # three whole 7-step episodes: each ends at its cap
    np.testing.assert_array_equal(got, want)
    capped = rollout_states(balance, "CartPole-v1", [1, 2, 3], 10, {"max_episode_steps": 7})
    np.testing.assert_array_equal(capped, want[:10])  # exactly max_states, the second episode cut
    failing = rollout_states(lambda o: np.zeros(len(np.atleast_2d(o)), dtype=np.int64), "CartPole-v1", [4, 5], 500)
    np.testing.assert_array_equal(failing, plain_states(lambda o: [0], [4, 5], 500))  # episodes end by termination
    assert len(failing) < 40
