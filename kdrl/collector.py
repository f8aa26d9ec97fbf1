"""env -> replay: the acting loop. ``EnvCollector`` steps a vector env with an epsilon-greedy policy
and writes every transition to a replay buffer; ``collect_rollouts`` does it once, into a given
buffer (QDagger's teacher data). ``greedy_actions`` is the greedy policy of a Q-network.

An actor process (kdrl.actor) is an ``EnvCollector`` whose envs step elsewhere; the stream that
consumes the replay (kdrl.data) imports both, and neither imports it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from kdrl.envs import load_vector_env_state, make_vector_env, transition_next_obs, vector_env_state
from kdrl.replay import Replay
from kdrl.seeding import Key, generator, seed_ints

GreedyFn = Callable[[np.ndarray], np.ndarray]  # batch of observations -> greedy actions


_NO_ACTIONS = np.zeros(0, dtype=np.int64)


def epsilon_greedy(
    obs: np.ndarray, explore: np.ndarray | None, random_actions: np.ndarray, greedy_fn: GreedyFn
) -> np.ndarray:
    """The actions of one vector step: ``random_actions`` where ``explore``, greedy elsewhere
    (the greedy net sees only the exploiting sub-envs)."""
    n_explore = len(random_actions)
    if explore is None or n_explore == 0:
        return np.asarray(greedy_fn(obs), dtype=np.int64)
    if n_explore == len(explore):
        return random_actions.astype(np.int64, copy=False)
    actions = np.empty(len(explore), dtype=np.int64)
    actions[explore] = random_actions
    exploit = ~explore
    actions[exploit] = greedy_fn(obs[exploit])
    return actions


class EnvStepError(RuntimeError):
    """An env raised while stepping; the message names the env and the env step."""


class EnvCollector:
    """Steps a SAME_STEP-autoreset vector env and fills a replay buffer.

    ``env_steps`` counts transitions (one per sub-env per vector step).
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        buffer: Replay,
        greedy_fn: GreedyFn,
        epsilon_fn: Callable[[int], float],
        seed: int = 0,
        reward_clip: bool = False,
        key: tuple[Key, ...] = (),
    ) -> None:
        self.envs = envs
        self.buffer = buffer
        self.greedy_fn = greedy_fn
        self.epsilon_fn = epsilon_fn
        self.num_envs = envs.num_envs
        self.n_actions = int(envs.single_action_space.n)
        self.env_id = envs.spec.id if envs.spec is not None else "?"
        self.rng = generator(seed, *key, "collector")  # exploration draws
        self.obs, _ = envs.reset(seed=seed_ints(seed, *key, "envs", n=self.num_envs))
        self.env_steps = 0
        self.episodes = 0
        self.epsilon = epsilon_fn(0)
        self.reward_clip = bool(reward_clip)  # sign(r) into replay (Atari DQN); logged returns stay raw
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.finished: list[tuple[int, float, int]] = []  # (env_steps, return, length), drained by the logger

    def exploration(self) -> tuple[np.ndarray | None, np.ndarray]:
        """This step's epsilon draws: which sub-envs explore (None: none can, epsilon is 0) and
        their random actions. The same draws whether the greedy actions come from here or from
        an actor process (kdrl.actor), so both take the same exploratory actions."""
        self.epsilon = self.epsilon_fn(self.env_steps)
        if self.epsilon <= 0:
            return None, _NO_ACTIONS
        explore = self.rng.random(self.num_envs) < self.epsilon
        n_explore = int(np.count_nonzero(explore))
        if n_explore == 0:
            return explore, _NO_ACTIONS
        return explore, self.rng.integers(self.n_actions, size=n_explore)

    def select_actions(self, obs: np.ndarray) -> np.ndarray:
        """Epsilon-greedy. The greedy net runs only on the sub-envs that do not explore (at one
        env, not at all on an exploring step)."""
        explore, random_actions = self.exploration()
        return epsilon_greedy(obs, explore, random_actions, self.greedy_fn)

    def step(self) -> None:
        actions = self.select_actions(self.obs)
        try:
            next_obs, rewards, terminated, truncated, infos = self.envs.step(actions)
        except Exception as exc:  # report where it happened; the run keeps its last checkpoint
            raise EnvStepError(f"env '{self.env_id}' raised at env step {self.env_steps}: {exc!r}") from exc
        done = terminated | truncated
        self.record(self.obs, actions, rewards, transition_next_obs(next_obs, infos, done), terminated, done)
        self.obs = next_obs

    def record(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        done: np.ndarray,
    ) -> None:
        """One vector step's transitions into replay, and the counters and episode statistics."""
        stored = np.sign(rewards) if self.reward_clip else rewards
        self.buffer.add(obs, actions, stored, next_obs, terminated, done)
        self.count(rewards, done)

    def count_round(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """``count`` for k vector steps at once (``(k, num_envs)`` arrays): one update of the
        counters when no episode ended in them, step by step otherwise."""
        if done.any():
            for r, d in zip(rewards, done):
                self.count(r, d)
            return
        self.env_steps += len(rewards) * self.num_envs
        self._ep_return += rewards.sum(axis=0)
        self._ep_length += len(rewards)

    def count(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """One vector step's counters and episode statistics (its transitions are in replay)."""
        self.env_steps += self.num_envs
        self._ep_return += rewards
        self._ep_length += 1
        if done.any():
            for i in np.flatnonzero(done):
                ret = float(self._ep_return[i])
                self.recent_returns.append(ret)
                self.finished.append((self.env_steps, ret, int(self._ep_length[i])))
                self.episodes += 1
                self._ep_return[i] = 0.0
                self._ep_length[i] = 0

    def drain_finished(self) -> list[tuple[int, float, int]]:
        out, self.finished = self.finished, []
        return out

    # ---- resuming mid-episode -------------------------------------------------------------------
    def env_state(self) -> dict[str, Any] | None:
        """The envs mid-episode and what this collector holds of their episodes (last observations,
        returns and lengths so far), as tensors and plain values; None when the envs cannot be
        saved (kdrl.envs.envs_restorable): a resume then resets them."""
        saved = vector_env_state(self.envs)
        if saved is None:
            return None
        return {
            "envs": torch.frombuffer(bytearray(saved), dtype=torch.uint8),
            "obs": torch.from_numpy(np.array(self.obs)),
            "ep_return": torch.from_numpy(self._ep_return.copy()),
            "ep_length": torch.from_numpy(self._ep_length.copy()),
            "recent_returns": [float(r) for r in self.recent_returns],
        }

    def load_env_state(self, state: Mapping[str, Any]) -> None:
        load_vector_env_state(self.envs, state["envs"].numpy().tobytes())
        self.obs = state["obs"].numpy().copy()
        self._ep_return = state["ep_return"].numpy().copy()
        self._ep_length = state["ep_length"].numpy().copy()
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])


def collect_rollouts(
    env: Mapping[str, Any],
    buffer: Replay,
    greedy: GreedyFn,
    epsilon: float,
    steps: int,
    seed: int,
    key: tuple[Key, ...],
    reward_clip: bool = False,
) -> int:
    """``steps`` env steps of an epsilon-greedy ``greedy`` in a vector env of ``env`` of its own
    (seeded on stream ``key``), written into ``buffer``: QDagger's teacher data. The buffer's
    streams are ended before and after, so no n-step sum or frame stack chains these rows to the
    run's own. Returns the env steps taken."""
    envs = make_vector_env(
        env["id"], int(env["num_envs"]), seed, env.get("kwargs"), env.get("vectorization", "sync"), key=key
    )
    try:
        buffer.end_streams()
        collector = EnvCollector(envs, buffer, greedy, lambda t: epsilon, seed=seed, reward_clip=reward_clip, key=key)
        while collector.env_steps < steps:
            collector.step()
        buffer.end_streams()
    finally:
        envs.close()
    return collector.env_steps


def greedy_actions(net: torch.nn.Module, obs: np.ndarray, device: torch.device) -> np.ndarray:
    """argmax_a Q(obs, a) for a batch of numpy observations (in numpy where the net offers it)."""
    if device.type == "cpu" and hasattr(net, "numpy_greedy"):
        actions = net.numpy_greedy(obs)
        if actions is not None:
            return actions
    return _torch_greedy(net, obs, device)


@torch.inference_mode()
def _torch_greedy(net: torch.nn.Module, obs: np.ndarray, device: torch.device) -> np.ndarray:
    x = torch.as_tensor(obs, dtype=torch.float32, device=device)
    actions = net.greedy(x) if hasattr(net, "greedy") else net(x).argmax(dim=1)
    return actions.numpy() if actions.device.type == "cpu" else actions.cpu().numpy()
