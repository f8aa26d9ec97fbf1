"""Greedy evaluation: N episodes on fixed seeds, stepped together with one batched forward; and
what a periodic evaluation (kdrl.callbacks) hands to its listeners (``Evaluated``,
``EvaluationListener``: policy selection and checkpoints in kdrl.checkpoints, early stop in
kdrl.stopping)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdrl.envs import make_env

GreedyFn = Callable[[np.ndarray], np.ndarray]


def evaluate_policy(
    greedy_fn: GreedyFn,
    env_id: str,
    seeds: Sequence[int],
    kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Callable] = (),
    epsilon: float = 0.0,
    rng_seed: int = 0,
) -> list[float]:
    """Undiscounted return of one episode per seed (episode i is reset with ``seeds[i]``).

    All episodes run side by side: each step does one forward over the envs still running, so
    an evaluation costs about one episode's worth of forwards instead of N.
    """
    if len(seeds) == 0:
        return []
    envs = [make_env(env_id, kwargs, wrappers) for _ in seeds]
    obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
    returns = np.zeros(len(envs))
    active = list(range(len(envs)))
    rng = np.random.default_rng(rng_seed)
    n_actions = envs[0].action_space.n
    try:
        while active:
            actions = np.asarray(greedy_fn(np.stack([obs[i] for i in active])))
            if epsilon > 0:
                explore = rng.random(len(active)) < epsilon
                actions[explore] = rng.integers(n_actions, size=int(explore.sum()))
            still = []
            for a, i in zip(actions, active):
                obs[i], r, term, trunc, _ = envs[i].step(int(a))
                returns[i] += r
                if not (term or trunc):
                    still.append(i)
            active = still
    finally:
        for env in envs:
            env.close()
    return returns.tolist()


def random_returns(env_id: str, seeds: Sequence[int], kwargs: dict[str, Any] | None = None) -> list[float]:
    """Uniform-random actions on ``seeds``: the floor of a random-normalised score (evaluate_policy
    with epsilon = 1, its own RNG seeded from the first seed)."""
    return evaluate_policy(
        lambda obs: np.zeros(len(obs), dtype=np.int64),
        env_id,
        seeds,
        kwargs,
        epsilon=1.0,
        rng_seed=int(seeds[0]) if len(seeds) else 0,
    )


def eval_seeds(base: int, n: int) -> list[int]:
    return [int(base) + i for i in range(int(n))]


def rollout_states(
    greedy_fn: GreedyFn, env_id: str, seeds: Sequence[int], max_states: int, kwargs: dict[str, Any] | None = None
) -> np.ndarray:
    """Observations visited by a greedy policy on ``seeds`` (one episode each), at most ``max_states``."""
    states: list[np.ndarray] = []
    for seed in seeds:
        env = make_env(env_id, kwargs)
        obs, _ = env.reset(seed=int(seed))
        done = False
        while not done and len(states) < max_states:
            states.append(obs)
            obs, _, term, trunc, _ = env.step(int(greedy_fn(obs[None])[0]))
            done = term or trunc
        env.close()
        if len(states) >= max_states:
            break
    return np.stack(states)


# ---- periodic evaluations and their listeners ---------------------------------------------------
@dataclass
class Evaluated:
    """One periodic evaluation: its ``record`` (an entry of the history, results.json's
    ``eval_history``) and the ``metrics`` logged for it once every listener has run (a listener
    may add its own, e.g. the best return so far)."""

    record: dict[str, Any]
    metrics: dict[str, float]


class EvaluationListener:
    """Told of every periodic evaluation, after it is in the history, before its metrics are logged.

    A periodic evaluation (kdrl.callbacks.PeriodicEvaluation) calls its policy files first, then its
    other listeners in the order given (early stop, a tuner's reporter), then the resume checkpoint,
    which saves every listener's ``state_dict`` with the evaluation's own state (the flat keys of
    the callback's state in ``last.ckpt``)."""

    def on_evaluation(self, trainer: Any, pl_module: Any, result: Evaluated) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
