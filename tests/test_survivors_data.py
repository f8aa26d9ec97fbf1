"""The data room's mutation survivors (docs/mutation.md, issue 29): what ``build_stream``,
``stream_replay`` and ``StreamConfig`` put into the replay, the collector and the envs, checked
against objects built here from the same config, seed and stream key (kdrl.seeding), and the
stream's resume state read back."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from kdrl.actor import ActorCollector
from kdrl.collector import EnvCollector
from kdrl.data import MultiTaskStream, ReplayStream, StreamConfig, build_stream, stream_replay
from kdrl.envs import EnvSpec, env_spec, make_env, make_vector_env
from kdrl.schedules import LinearSchedule
from kdrl.seeding import generator, seed_ints

CARTPOLE = env_spec(make_env("CartPole-v1"))
KEY = ("task", "b")


def push_left(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), dtype=np.int64)


def config(**kw) -> StreamConfig:
    base = dict(
        total_timesteps=400,
        buffer_size=500,
        batch_size=8,
        learning_starts=40,
        train_freq=4,
        gradient_steps=2,
        replay="standard",
        reward_clip=True,
        n_step=3,
        gamma=0.5,
    )
    return StreamConfig(**{**base, **kw})


def stream_of(env: dict, data: StreamConfig, seed: int = 7, key=KEY, spec: EnvSpec = CARTPOLE) -> ReplayStream:
    net = torch.nn.Linear(4, 2)
    return build_stream(env, spec, data, push_left, LinearSchedule(1.0, 0.1, 100), seed, key, acting_nets=lambda: [net])


def close(stream: ReplayStream) -> None:
    if isinstance(stream.collector, ActorCollector):
        stream.collector.close()
    stream.collector.envs.close()


@pytest.mark.parametrize("actor", ["inline", "process"])
def test_build_stream_puts_the_config_seed_and_key_into_every_part(actor):
    data = config()
    stream = stream_of({"id": "CartPole-v1", "num_envs": 2, "actor": actor}, data)
    try:
        c, buf = stream.collector, stream.collector.buffer
        assert type(c) is (ActorCollector if actor == "process" else EnvCollector)
        assert (stream.batch_size, stream.learning_starts, stream.train_freq) == (8, 40, 4)
        assert (stream.gradient_steps, stream.total_timesteps) == (2, 400)
        assert c.reward_clip is True
        assert (buf.n_step, buf.gamma, buf.num_envs, buf.capacity) == (3, 0.5, 2, 500)
        # each part on its own stream of (seed, *key): the replay's sampler, the exploration draws, the env resets
        ref = torch.Generator().manual_seed(seed_ints(7, *KEY, "replay")[0])
        assert torch.equal(buf.generator.get_state(), ref.get_state())
        assert c.rng.bit_generator.state == generator(7, *KEY, "collector").bit_generator.state
        envs = make_vector_env("CartPole-v1", 2, 7, key=KEY)
        unkeyed = make_vector_env("CartPole-v1", 2, 7)
        assert np.array_equal(c.obs, envs.reset(seed=seed_ints(7, *KEY, "envs", n=2))[0])
        assert not np.array_equal(c.obs, unkeyed.reset(seed=seed_ints(7, "envs", n=2))[0])
    finally:
        close(stream)


def test_stream_replay_takes_its_seed_stream_and_discount():
    replay = stream_replay(CARTPOLE, config(gamma=0.25, n_step=2), 3, seed=5, key=KEY)
    assert (replay.gamma, replay.n_step, replay.num_envs) == (0.25, 2, 3)
    ref = torch.Generator().manual_seed(seed_ints(5, *KEY, "replay")[0])
    assert torch.equal(replay.generator.get_state(), ref.get_state())


def test_reward_clip_reaches_the_inline_collector_and_off_stays_off():
    for clip in (True, False):
        stream = stream_of({"id": "CartPole-v1", "num_envs": 1}, config(reward_clip=clip, n_step=1))
        assert type(stream.collector) is EnvCollector  # env.actor defaults to inline
        assert stream.collector.reward_clip is clip
        close(stream)


def test_build_stream_honours_the_env_vectorization_and_refuses_an_unknown_actor():
    stream = stream_of({"id": "CartPole-v1", "num_envs": 2, "vectorization": "async"}, config())
    try:
        assert isinstance(stream.collector.envs, gym.vector.AsyncVectorEnv)
    finally:
        close(stream)
    stream = stream_of({"id": "CartPole-v1", "num_envs": 2}, config())
    assert isinstance(stream.collector.envs, gym.vector.SyncVectorEnv)  # the default
    close(stream)
    with pytest.raises(ValueError, match="env.actor must be 'inline' or 'process', got 'thread'"):
        stream_of({"id": "CartPole-v1", "num_envs": 1, "actor": "thread"}, config())


@pytest.mark.parametrize(
    ("obs_shape", "train_freq", "round_len"),
    [
        ((4,), 4, 256),  # small observations: 256-step rounds before learning starts
        ((4, 84, 84), 4, 18),  # 32 MB of staged observations: 32 MiB // (4*84*84 * 4 B * 8 envs * 2) = 18
        ((4, 84, 84), 1001, 126),  # never shorter than one update period: ceil(1001 / 8) = 126
    ],
)
def test_actor_rounds_follow_the_staging_rule(obs_shape, train_freq, round_len):
    spec = EnvSpec("CartPole-v1", obs_shape, 2, "float32")
    stream = stream_of(
        {"id": "CartPole-v1", "num_envs": 8, "actor": "process"},
        config(train_freq=train_freq, buffer_size=16, n_step=1),
        spec=spec,
    )
    try:
        assert stream.collector.max_round == round_len
    finally:
        close(stream)


def test_stream_config_defaults_and_keys():
    required = dict(total_timesteps=10, buffer_size=20, batch_size=4, learning_starts=5, train_freq=1, gradient_steps=1)
    d = StreamConfig.from_dict(required)
    assert (d.replay, d.reward_clip, d.n_step, d.gamma) == ("auto", False, 1, 0.99)
    full = StreamConfig.from_dict({**required, "replay": "standard", "reward_clip": True, "n_step": 3, "gamma": 0.5})
    assert (full.replay, full.reward_clip, full.n_step, full.gamma) == ("standard", True, 3, 0.5)
    assert StreamConfig.from_dict({**required, "steps": 99}, total_key="steps").total_timesteps == 99


def test_a_stream_resumes_from_its_state():
    """state_dict -> load_state_dict carries the counters, the exploration RNG, the replay and the
    epsilon the schedule gives at the restored env step (single- and multi-task)."""
    first = stream_of({"id": "CartPole-v1", "num_envs": 2}, config())
    batches = iter(first)
    for _ in range(5):
        next(batches)
    state = first.state_dict()
    second = stream_of({"id": "CartPole-v1", "num_envs": 2}, config())
    second.load_state_dict(state)
    a, b = first.collector, second.collector
    assert (b.env_steps, b.episodes, second.grad_steps) == (a.env_steps, a.episodes, first.grad_steps)
    assert b.env_steps > 40 and second.grad_steps == 10
    assert b.rng.bit_generator.state == a.rng.bit_generator.state
    assert b.buffer.size == a.buffer.size and torch.equal(b.buffer.obs, a.buffer.obs)
    assert b.epsilon == pytest.approx(LinearSchedule(1.0, 0.1, 100)(a.env_steps))
    multi = MultiTaskStream([first, stream_of({"id": "CartPole-v1", "num_envs": 1}, config(), key=("task", "c"))])
    fresh = MultiTaskStream(
        [
            stream_of({"id": "CartPole-v1", "num_envs": 2}, config()),
            stream_of({"id": "CartPole-v1", "num_envs": 1}, config(), key=("task", "c")),
        ]
    )
    fresh.load_state_dict(multi.state_dict())
    assert [s.collector.env_steps for s in fresh.streams] == [a.env_steps, 0]
    assert fresh.streams[0].grad_steps == 10
    for s in (first, second, *multi.streams[1:], *fresh.streams):
        close(s)
