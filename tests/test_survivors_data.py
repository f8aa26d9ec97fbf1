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
from kdrl.collector import EnvCollector, EnvStepError
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


# ---- collect_rollouts: QDagger's teacher data ---------------------------------------------------
class RecordingReplay:
    """A replay that records the order of its writes and stream ends (and keeps the rows)."""

    def __init__(self, replay):
        self.replay, self.calls = replay, []

    def add(self, *rows):
        self.calls.append("add")
        self.replay.add(*rows)

    def end_streams(self):
        self.calls.append("end")
        self.replay.end_streams()


def random_policy(n_actions: int, seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.integers(n_actions, size=len(obs))


@pytest.mark.parametrize("clip", [False, True, None])
def test_collect_rollouts_writes_what_a_collector_of_its_arguments_writes(monkeypatch, clip):
    """The env config (id, num_envs, kwargs, vectorization), seed, key, epsilon and reward_clip
    (default off) reach the envs and the collector; the step count is the budget rounded up to
    whole vector steps; the buffer's streams are ended before and after."""
    import kdrl.collector

    env = {"id": "LunarLander-v3", "num_envs": 2, "kwargs": {"max_episode_steps": 9}, "vectorization": "async"}
    made = []
    real_make = kdrl.collector.make_vector_env
    monkeypatch.setattr(kdrl.collector, "make_vector_env", lambda *a, **kw: made.append((a, kw)) or real_make(*a, **kw))
    spec = env_spec(make_env("LunarLander-v3"))
    buffer = RecordingReplay(stream_replay(spec, config(n_step=1), 2, seed=0))
    kw = {} if clip is None else {"reward_clip": clip}
    steps = kdrl.collector.collect_rollouts(env, buffer, random_policy(4, 1), 0.4, 31, 5, ("pretrain",), **kw)
    assert made == [(("LunarLander-v3", 2, 5, {"max_episode_steps": 9}, "async"), {"key": ("pretrain",)})]
    assert steps == 32 and buffer.replay.size == 32
    assert buffer.calls == ["end"] + ["add"] * 16 + ["end"]
    # the same rows from a collector built here with the same arguments
    envs = real_make("LunarLander-v3", 2, 5, {"max_episode_steps": 9}, key=("pretrain",))
    ref = stream_replay(spec, config(n_step=1), 2, seed=0)
    c = EnvCollector(envs, ref, random_policy(4, 1), lambda t: 0.4, seed=5, reward_clip=bool(clip), key=("pretrain",))
    while c.env_steps < 31:
        c.step()
    envs.close()
    for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
        assert torch.equal(getattr(buffer.replay, name)[:32], getattr(ref, name)[:32]), name
    assert np.array_equal(buffer.replay.dones[:30], ref.dones[:30])  # episodes of 9 steps (kwargs) end alike
    assert buffer.replay.dones[30:32].all()  # ... and the last rows end their streams
    rewards = buffer.replay.rewards[:32]
    assert bool(torch.all(rewards.abs() == 1.0) if clip else torch.any((rewards.abs() != 1.0) & (rewards != 0)))


def test_collect_rollouts_stops_at_a_budget_of_whole_vector_steps():
    from kdrl.collector import collect_rollouts

    buffer = stream_replay(CARTPOLE, config(n_step=1), 2, seed=0)
    assert collect_rollouts({"id": "CartPole-v1", "num_envs": 2}, buffer, push_left, 0.0, 4, 0, ("p",)) == 4
    assert buffer.size == 4


# ---- the actor process (kdrl.actor) ---------------------------------------------------------------
def test_pin_plan_takes_the_two_lowest_cpus_unless_told_not_to(monkeypatch):
    from kdrl import actor

    monkeypatch.delenv("KDRL_NO_PIN", raising=False)
    monkeypatch.setattr(actor.os, "sched_getaffinity", lambda pid: {9, 5, 2})
    assert actor.pin_plan() == (2, 5)
    monkeypatch.setattr(actor.os, "sched_getaffinity", lambda pid: {4})
    assert actor.pin_plan() is None
    monkeypatch.setattr(actor.os, "sched_getaffinity", lambda pid: {4, 6})
    monkeypatch.setenv("KDRL_NO_PIN", "1")
    assert actor.pin_plan() is None
    monkeypatch.delenv("KDRL_NO_PIN")
    assert actor.pin_plan() == (4, 6)
    monkeypatch.delattr(actor.os, "sched_getaffinity")
    assert actor.pin_plan() is None


def test_the_child_ignores_the_jobs_notices_and_takes_the_default_for_other_python_handlers():
    import signal

    from kdrl.actor import child_signal_plan

    mine = lambda *_: None
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGTRAP, signal.SIGUSR1)}
    try:
        for s in saved:
            signal.signal(s, mine)
        plan = child_signal_plan()
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert plan[signal.SIGINT] == plan[signal.SIGUSR1] == plan[signal.SIGUSR2] == signal.SIG_IGN
    assert plan[signal.SIGHUP] == plan[signal.SIGTERM] == signal.SIG_DFL  # before and after the notices
    assert signal.SIGTRAP not in plan  # a synchronous signal keeps its handler
    assert signal.SIGKILL not in plan and signal.SIGSTOP not in plan


@pytest.mark.parametrize(("shape", "dtype"), [((3, 2), np.int64), ((0, 3), np.int64), ((5,), np.bool_)])
def test_shared_arrays_are_zeroed_with_their_shape_and_dtype(shape, dtype):
    from kdrl.actor import shared_array

    a = shared_array(shape, dtype)
    assert a.shape == shape and a.dtype == np.dtype(dtype) and not a.any()


def actor_stream(epsilon: float = 0.5) -> ReplayStream:
    net = torch.nn.Linear(4, 2)
    data = config(n_step=1, total_timesteps=1000)
    return build_stream(
        {"id": "CartPole-v1", "num_envs": 2, "actor": "process"},
        CARTPOLE,
        data,
        push_left,
        lambda t: epsilon,
        3,
        acting_nets=lambda: [net],
    )


def test_a_checkpoint_takes_the_rng_state_of_the_last_joined_round():
    stream = actor_stream()
    c = stream.collector
    try:
        c.launch(4)
        before = c._rng_before_round
        assert (
            c.committed_rng_state() == before != c.rng.bit_generator.state
        )  # in flight: its draws are not the run's yet
        c.join()
        assert c.committed_rng_state() == c.rng.bit_generator.state != before  # joined: they are
    finally:
        close(stream)


def test_a_dead_actor_is_reported_with_how_it_died_and_a_dropped_collector_kills_its_child():
    import signal
    import struct

    stream = actor_stream()
    c = stream.collector
    try:
        c.step()
        proc = c._proc
        c._conn.send_bytes(struct.pack("ii", 2, 0))  # a clean stop: exit code 0, no signal to name
        proc.join(5)
        assert str(c._died()) == "env 'CartPole-v1': the actor process died at env step 2"
    finally:
        close(stream)
    stream = actor_stream()
    c = stream.collector
    c.step()
    proc = c._proc
    proc.kill()
    proc.join(5)
    with pytest.raises(EnvStepError, match=r"^env 'CartPole-v1': the actor process died \(SIGKILL\) at env step 2$"):
        c.step()
    c._proc = None
    close(stream)
    stream = actor_stream()
    c = stream.collector
    c.step()
    proc = c._proc
    c.__del__()  # what the garbage collector does with a collector nobody closed
    proc.join(5)
    assert proc.exitcode == -signal.SIGKILL
    c._proc = None
    close(stream)


def test_an_alive_actor_that_stopped_answering_is_reported_without_an_exit_code():
    stream = actor_stream()
    c = stream.collector
    try:
        c.step()
        assert str(c._died()) == "env 'CartPole-v1': the actor process died at env step 2"  # after its 1 s wait
        assert c._proc.is_alive()
    finally:
        close(stream)


# ---- multi-task: the collectors seen as one, the streams in lockstep -------------------------------
def test_a_collector_group_sums_the_counters_and_pools_no_returns():
    from kdrl.data import CollectorGroup

    a = stream_of({"id": "CartPole-v1", "num_envs": 2}, config())
    b = stream_of({"id": "CartPole-v1", "num_envs": 1}, config(), key=("task", "c"))
    for _ in range(30):
        a.collector.step()
    for _ in range(7):
        b.collector.step()
    group = CollectorGroup([a.collector, b.collector])
    assert (group.env_steps, group.episodes) == (67, a.collector.episodes + b.collector.episodes)
    assert group.epsilon == pytest.approx((a.collector.epsilon + b.collector.epsilon) / 2)
    assert list(group.recent_returns) == [] and group.recent_returns.maxlen == 1
    close(a)
    close(b)


def test_multitask_streams_end_together_and_a_cut_round_is_undone():
    """The first task to spend its budget ends the iteration; the minibatches the other tasks
    were handed in that cut round are taken back, so each stream's count is what was yielded."""
    first = stream_of({"id": "CartPole-v1", "num_envs": 1}, config(total_timesteps=300))
    second = stream_of({"id": "CartPole-v1", "num_envs": 1}, config(total_timesteps=100), key=("task", "c"))
    multi = MultiTaskStream([first, second])
    assert multi.total_timesteps == 400
    yielded = [0, 0]
    for batches in multi:
        for i, b in enumerate(batches):
            yielded[i] += int(b.actions.shape[0])
    assert second.collector.env_steps == 100
    assert [first.grad_steps, second.grad_steps] == yielded and yielded[0] == yielded[1] > 0
    assert multi.grad_steps == sum(yielded)
    close(first)
    close(second)
