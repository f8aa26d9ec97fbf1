"""replay -> batch: the IterableDataset that streams replay batches to a module.

``ReplayStream`` interleaves collection (a ``kdrl.collector.EnvCollector``, or an actor process's
``kdrl.actor.ActorCollector``) with sampling at a fixed ratio of env steps to gradient steps.
All state lives on these objects, not in ``__iter__`` locals, so Lightning can re-iterate the
dataset and the stream simply continues. ``build_stream`` puts env, replay, collector and stream
together from one ``StreamConfig``.

Multi-task runs keep one ``ReplayStream`` per task and advance them in lockstep
(``MultiTaskStream``); their collectors are seen as one by ``CollectorGroup``.

Imports go one way: kdrl.envs -> kdrl.replay -> kdrl.collector -> kdrl.actor -> kdrl.data -> kdrl.modules.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from kdrl.actor import ActorCollector
from kdrl.collector import EnvCollector, GreedyFn
from kdrl.envs import EnvSpec, envs_restorable, make_vector_env
from kdrl.replay import Replay, Transitions, make_replay
from kdrl.seeding import Key, seed_ints

log = logging.getLogger(__name__)


class ReplayStream(IterableDataset):
    """Yields, between rounds of env collection, a stack of all the minibatches now due.

    After ``learning_starts`` env steps it allows ``gradient_steps`` updates per ``train_freq``
    env steps (transitions; SB3 counts vector steps), so the update-to-data ratio is the same for any ``num_envs``.
    Each item is a ``Transitions`` whose tensors have a leading dim K (the updates due now, usually
    ``gradient_steps``): the module runs K updates per Lightning step, which keeps the Trainer's
    per-step overhead off the per-update cost. Iteration ends when the env-step budget
    ``total_timesteps`` is spent.
    """

    def __init__(
        self,
        collector: EnvCollector,
        batch_size: int,
        learning_starts: int,
        train_freq: int,
        gradient_steps: int,
        total_timesteps: int,
    ) -> None:
        super().__init__()
        if min(batch_size, train_freq, gradient_steps, total_timesteps) < 1:
            raise ValueError("batch_size, train_freq, gradient_steps and total_timesteps must all be >= 1")
        self.collector = collector
        self.batch_size = int(batch_size)
        self.learning_starts = max(int(learning_starts), int(batch_size))
        self.train_freq = int(train_freq)
        self.gradient_steps = int(gradient_steps)
        self.total_timesteps = int(total_timesteps)
        self.grad_steps = 0  # updates handed out so far (= updates done, once the module consumed them)
        self.envs_restored: bool | None = None  # after a resume: whether the envs stepped on mid-episode

    def grad_steps_allowed(self) -> int:
        steps = self.collector.env_steps
        if steps < self.learning_starts:
            return 0
        return ((steps - self.learning_starts) // self.train_freq + 1) * self.gradient_steps

    def steps_to_next_round(self) -> int:
        """Vector steps until the next update is due (or the budget is spent): a round's length."""
        c = self.collector
        if c.env_steps >= self.total_timesteps:
            return 0
        due_at = self.learning_starts + (self.grad_steps // self.gradient_steps) * self.train_freq
        n = c.num_envs
        to_due = max(-(-(due_at - c.env_steps) // n), 1)
        to_budget = -(-(self.total_timesteps - c.env_steps) // n)
        return min(to_due, to_budget)

    def __iter__(self) -> Iterator[Transitions]:
        """Collect until updates are due, yield them stacked, repeat until the budget is spent.

        With an actor process (kdrl.actor) the next round is launched before the yield, so the
        envs step while the module runs these updates; it is joined before anything is sampled.
        """
        collector = self.collector
        actor = collector if isinstance(collector, ActorCollector) else None
        while True:
            if actor is not None:
                actor.join()
            while self.grad_steps >= self.grad_steps_allowed():
                if collector.env_steps >= self.total_timesteps:
                    if actor is not None:
                        actor.close()
                    return
                if actor is not None:
                    actor.launch(min(self.steps_to_next_round(), actor.max_round))
                    actor.join()
                else:
                    collector.step()
            due = self.grad_steps_allowed() - self.grad_steps
            self.grad_steps += due
            batch = collector.buffer.sample_stack(due, self.batch_size)
            if actor is not None:
                k = min(self.steps_to_next_round(), actor.max_round)
                if k:
                    actor.launch(k)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The counters, the collector's RNG and the replay (for resuming).

        With an actor process, a round in flight is left out (not joined): the state is the run's
        at its current env step, as the in-process collector has it there. Joining it here moved
        the run a round past the evaluation that saved it, so a run stopped early there reported a
        round more env steps and evaluated a second time."""
        c = self.collector
        rng = c.committed_rng_state() if isinstance(c, ActorCollector) else c.rng.bit_generator.state
        state = {
            "env_steps": c.env_steps,
            "episodes": c.episodes,
            "grad_steps": self.grad_steps,
            "collector_rng": rng,
            "buffer": c.buffer.state_dict(),
        }
        envs = c.env_state()
        if envs is not None:
            state["envs"] = envs
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        c = self.collector
        c.env_steps, c.episodes, self.grad_steps = (
            int(state["env_steps"]),
            int(state["episodes"]),
            int(state["grad_steps"]),
        )
        c.rng.bit_generator.state = state["collector_rng"]
        c.buffer.load_state_dict(state["buffer"])
        c.epsilon = c.epsilon_fn(c.env_steps)
        self.envs_restored = "envs" in state
        if self.envs_restored:  # the episodes in progress step on: the run continues as if never stopped
            c.load_env_state(state["envs"])
        else:  # the envs restart; nothing chains the stored rows to the new episodes
            c.buffer.end_streams()
            if isinstance(c, ActorCollector):
                why = "they step in an actor process"
            elif envs_restorable(c.envs):
                why = "the checkpoint was written before kdrl saved envs"
            else:
                why = "envs of this kind are not saved"
            log.info(
                "resuming %s with its envs reset (%s): the episodes in progress at the save are dropped, "
                "so the run will not be bit-identical to one never stopped",
                c.env_id,
                why,
            )


@dataclass(frozen=True)
class StreamConfig:
    """How a module's data is made: replay and the env-step/update schedule (one config for the
    teacher's ``algo``, the student's ``distill`` and multi-task's ``multitask`` blocks)."""

    total_timesteps: int
    buffer_size: int
    batch_size: int
    learning_starts: int
    train_freq: int
    gradient_steps: int
    replay: str = "auto"
    reward_clip: bool = False
    n_step: int = 1  # samples carry n-step returns (kdrl.replay) ...
    gamma: float = 0.99  # ... discounted with this gamma

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], total_key: str = "total_timesteps") -> StreamConfig:
        return cls(
            int(d[total_key]),
            int(d["buffer_size"]),
            int(d["batch_size"]),
            int(d["learning_starts"]),
            int(d["train_freq"]),
            int(d["gradient_steps"]),
            str(d.get("replay", "auto")),
            bool(d.get("reward_clip", False)),
            int(d.get("n_step", 1)),
            float(d.get("gamma", 0.99)),
        )


def stream_replay(spec: EnvSpec, data: StreamConfig, num_envs: int, seed: int, key: tuple[Key, ...] = ()) -> Replay:
    """The replay of a stream: ``data``'s kind, capacity and n-step returns, on its own stream of run ``seed``."""
    return make_replay(
        data.replay,
        data.buffer_size,
        spec.obs_shape,
        spec.obs_dtype,
        num_envs,
        seed=seed_ints(seed, *key, "replay")[0],
        n_step=data.n_step,
        gamma=data.gamma,
    )


def build_stream(
    env: Mapping[str, Any],
    spec: EnvSpec,
    data: StreamConfig,
    behaviour: GreedyFn,
    exploration: Callable[[int], float],
    seed: int,
    key: tuple[Key, ...] = (),
    acting_nets: Callable[[], Sequence[torch.nn.Module]] | None = None,
) -> ReplayStream:
    """env -> replay -> stream: the vector env of an env config, its replay and collector (each on
    its own stream of run ``seed``, kdrl.seeding), streamed at ``data``'s update-to-data ratio.
    ``env.actor=process`` steps the envs in an actor process (kdrl.actor) that acts with
    ``acting_nets``' weights, refreshed every round."""
    envs = make_vector_env(
        env["id"], int(env["num_envs"]), seed, env.get("kwargs"), env.get("vectorization", "sync"), key=key
    )
    buffer = stream_replay(spec, data, envs.num_envs, seed, key)
    actor = str(env.get("actor", "inline"))
    if actor == "process":
        if acting_nets is None:
            raise ValueError("env.actor=process needs the module's acting nets")
        # rounds of one update period; longer (<= 256 steps, <= 32 MB of staged observations)
        # before learning starts, when there is nothing to overlap and round trips are the cost
        obs_bytes = int(np.prod(spec.obs_shape)) * np.dtype(spec.obs_dtype).itemsize * envs.num_envs * 2
        round_len = max(-(-data.train_freq // envs.num_envs), min(256, (32 << 20) // max(obs_bytes, 1)))
        collector: EnvCollector = ActorCollector(
            envs, buffer, behaviour, exploration, acting_nets, round_len, seed, data.reward_clip, key
        )
    elif actor == "inline":
        collector = EnvCollector(envs, buffer, behaviour, exploration, seed=seed, reward_clip=data.reward_clip, key=key)
    else:
        raise ValueError(f"env.actor must be 'inline' or 'process', got '{actor}'")
    return ReplayStream(
        collector, data.batch_size, data.learning_starts, data.train_freq, data.gradient_steps, data.total_timesteps
    )


# ---- multi-task: one replay stream per task, consumed in lockstep --------------------------------
@dataclass(frozen=True)
class TaskEnv:
    """What a module needs to build one task's envs: its name, shapes and env config."""

    name: str
    spec: EnvSpec
    env: dict[str, Any]  # id, num_envs, kwargs, vectorization (an env preset's `env` block)


class CollectorGroup:
    """The per-task collectors seen as one (what RLModule's logging and the progress bar read).

    Episode returns are not pooled across tasks (a CartPole and an Acrobot return do not average);
    the module logs them per task and the group reports none.
    """

    def __init__(self, collectors: Sequence[EnvCollector]) -> None:
        self.collectors = list(collectors)
        self.recent_returns: deque[float] = deque(maxlen=1)

    @property
    def env_steps(self) -> int:
        return sum(c.env_steps for c in self.collectors)

    @property
    def episodes(self) -> int:
        return sum(c.episodes for c in self.collectors)

    @property
    def epsilon(self) -> float:
        return float(np.mean([c.epsilon for c in self.collectors]))


class MultiTaskStream(IterableDataset):
    """Yields a tuple with one stacked batch per task (each ``(K, B, ...)``, see ``ReplayStream``).

    Each task keeps its own ``ReplayStream`` (its own replay and env-to-update ratio); the tasks are
    advanced in turn, one round each, so every update round sees every task. Iteration ends when
    the first task's env-step budget is spent (all tasks share the budget, so they end together).
    """

    def __init__(self, streams: Sequence[ReplayStream]) -> None:
        super().__init__()
        self.streams = list(streams)
        self.collector = CollectorGroup([s.collector for s in self.streams])
        self.total_timesteps = sum(s.total_timesteps for s in self.streams)

    @property
    def grad_steps(self) -> int:
        """Per-task minibatches handed out so far, summed over tasks."""
        return sum(s.grad_steps for s in self.streams)

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, t in zip(self.streams, state["tasks"]):
            s.load_state_dict(t)

    def __iter__(self) -> Iterator[tuple[Transitions, ...]]:
        iters = [iter(s) for s in self.streams]
        while True:
            batches: list[Transitions] = []
            for it in iters:
                batch = next(it, None)
                if batch is None:
                    for s, b in zip(self.streams, batches):  # undo the batches of this cut round
                        s.grad_steps -= int(b.actions.shape[0])
                    return
                batches.append(batch)
            yield tuple(batches)
