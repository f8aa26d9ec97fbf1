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


@pytest.fixture(autouse=True)
def _keep_this_process_placement():
    """A test that drops an actor without closing it (``c._proc = None``) leaves the learner pinned
    (kdrl.actor.pin_plan, when KDRL_NO_PIN is unset); the next test starts from the placement before."""
    import os

    before = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, before)


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


# ---- the triage of the room's full run (survivors-data.txt): the collector's acting and counting ----
def test_epsilon_greedy_hands_out_int64_actions_and_copies_nothing_it_need_not():
    from kdrl.collector import epsilon_greedy

    obs = np.arange(6, dtype=np.float32).reshape(3, 2)
    seen = []
    greedy = lambda o: seen.append(o) or np.full(len(o), 1, dtype=np.int32)  # noqa: E731
    out = epsilon_greedy(obs, None, np.zeros(0, dtype=np.int64), greedy)
    assert out.dtype == np.int64 and out.tolist() == [1, 1, 1]
    # nobody explores this step: the greedy net sees the observations themselves, not a masked copy
    out = epsilon_greedy(obs, np.zeros(3, dtype=bool), np.zeros(0, dtype=np.int64), greedy)
    assert seen[-1] is obs and out.tolist() == [1, 1, 1]
    # everybody explores: the random actions are the step's actions, as they are
    draws = np.array([0, 1, 0], dtype=np.int64)
    out = epsilon_greedy(obs, np.ones(3, dtype=bool), draws, greedy)
    assert out is draws and len(seen) == 2


class FakeNet(torch.nn.Module):
    """A net whose numpy path answers ``answer`` (None: it declines) and whose torch path answers
    zeros and records the device it was handed."""

    def __init__(self, answer):
        super().__init__()
        self.answer, self.devices = answer, []

    def numpy_greedy(self, obs):
        return self.answer

    def greedy(self, x):
        self.devices.append(x.device)
        return torch.zeros(len(x), dtype=torch.int64)


def test_greedy_actions_takes_the_numpy_path_on_cpu_and_the_torch_path_on_the_given_device():
    from kdrl.collector import greedy_actions

    obs = np.zeros((2, 4), dtype=np.float32)
    answer = np.array([1, 1])
    net = FakeNet(answer)
    assert greedy_actions(net, obs, torch.device("cpu")) is answer and net.devices == []
    declines = FakeNet(None)
    assert greedy_actions(declines, obs, torch.device("cpu")).tolist() == [0, 0]
    assert declines.devices == [torch.device("cpu")]
    off_cpu = FakeNet(answer)  # not on the CPU: the torch path, on that device
    assert greedy_actions(off_cpu, obs, torch.device("meta")).tolist() == [0, 0]
    assert [d.type for d in off_cpu.devices] == ["meta"]


def test_an_env_collector_defaults_to_seed_0_and_no_clipping_and_names_an_unnamed_env():
    buf = stream_replay(CARTPOLE, config(n_step=1), 2, seed=0)
    default = EnvCollector(make_vector_env("CartPole-v1", 2, 0), buf, push_left, lambda t: 0.5)
    seeded = EnvCollector(make_vector_env("CartPole-v1", 2, 0), buf, push_left, lambda t: 0.5, seed=0)
    assert default.rng.bit_generator.state == seeded.rng.bit_generator.state
    assert np.array_equal(default.obs, seeded.obs) and default.reward_clip is False
    unnamed = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    assert unnamed.spec is None
    c = EnvCollector(unnamed, stream_replay(CARTPOLE, config(n_step=1), 1, seed=0), push_left, lambda t: 0.0)
    assert c.env_id == "?"

    def boom(actions):
        raise RuntimeError("boom")

    c.envs.step = boom
    with pytest.raises(EnvStepError, match=r"^env '\?' raised at env step 0: RuntimeError\('boom'\)$"):
        c.step()
    for x in (default, seeded, c):
        x.envs.close()


def two_env_collector(epsilon=lambda t: 0.5, seed=3) -> EnvCollector:
    buf = stream_replay(CARTPOLE, config(n_step=1), 2, seed=0)
    return EnvCollector(make_vector_env("CartPole-v1", 2, seed, key=KEY), buf, push_left, epsilon, seed=seed, key=KEY)


def test_count_round_carries_each_envs_return_and_length_into_the_episode_that_ends():
    c = two_env_collector()
    try:
        c.count(np.array([0.125, 0.0625]), np.zeros(2, dtype=bool))  # a step before the round counts too
        c.count_round(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), np.zeros((3, 2), dtype=bool))
        assert c.env_steps == 8 and c.finished == []
        c.count_round(np.array([[0.5, 0.25]]), np.array([[True, True]]))
        assert c.finished == [(10, 9.625, 5), (10, 12.3125, 5)]
        assert list(c.recent_returns) == [9.625, 12.3125] and c.episodes == 2
    finally:
        c.envs.close()


def test_recent_returns_keep_the_last_100_episodes():
    c = two_env_collector()
    try:
        for i in range(60):
            c.count(np.array([float(i), i + 0.5]), np.array([True, True]))
        expected = [r for i in range(60) for r in (float(i), i + 0.5)][-100:]
        assert c.recent_returns.maxlen == 100 and list(c.recent_returns) == expected
    finally:
        c.envs.close()


def test_exploration_at_epsilon_0_draws_nothing_and_explores_only_strictly_below_epsilon():
    c = two_env_collector(epsilon=lambda t: 0.0)
    try:
        before = c.rng.bit_generator.state
        explore, random_actions = c.exploration()
        assert explore is None and len(random_actions) == 0 and c.rng.bit_generator.state == before
        u = generator(3, *KEY, "collector").random(2)  # the collector's next uniform draws
        c.epsilon_fn = lambda t: float(u[0])  # epsilon exactly at sub-env 0's draw: it does not explore
        explore, _ = c.exploration()
        assert explore.tolist() == [False, bool(u[1] < u[0])]
    finally:
        c.envs.close()


# ---- build_stream and the round lengths -------------------------------------------------------------
def test_build_stream_passes_the_env_kwargs_and_seeds_the_action_space_on_its_key():
    stream = stream_of({"id": "CartPole-v1", "num_envs": 2, "kwargs": {"max_episode_steps": 5}}, config())
    ref = make_vector_env("CartPole-v1", 2, 7, key=KEY)
    try:
        c = stream.collector
        for _ in range(5):
            c.step()
        assert c.episodes == 2 and [f[2] for f in c.finished] == [5, 5]
        samples = [c.envs.action_space.sample().tolist() for _ in range(20)]
        assert samples == [ref.action_space.sample().tolist() for _ in range(20)]
    finally:
        close(stream)
        ref.close()


def test_build_stream_says_what_an_actor_process_needs():
    with pytest.raises(ValueError, match=r"^env.actor=process needs the module's acting nets$"):
        build_stream(
            {"id": "CartPole-v1", "num_envs": 1, "actor": "process"}, CARTPOLE, config(), push_left, lambda t: 0.1, 0
        )


def test_steps_to_next_round_is_whole_vector_steps_to_the_next_update_or_the_budget():
    # learning_starts 40, train_freq 4, 2 updates per update period, a budget of 400 env steps
    stream = stream_of({"id": "CartPole-v1", "num_envs": 2}, config())
    c = stream.collector
    try:
        cases = [  # (env_steps, grad_steps) -> vector steps
            ((33, 0), 4),  # 7 env steps to the first update: 4 vector steps
            ((40, 0), 1),  # due now: one vector step
            ((43, 4), 3),  # due at 40 + 2 * 4 = 48
            ((397, 400), 2),  # the budget first: 3 env steps left
            ((400, 400), 0),
        ]
        for (steps, grads), expected in cases:
            c.env_steps, stream.grad_steps = steps, grads
            got = stream.steps_to_next_round()
            assert (got, type(got)) == (expected, int), (steps, grads)
    finally:
        close(stream)


# ---- the actor process: what it stages is what an in-process collector records ----------------------
LUNAR = env_spec(make_env("LunarLander-v3"))
LUNAR_ENV = ("LunarLander-v3", 2, 3, {"max_episode_steps": 9})  # real-valued rewards, truncations


class PlainReplay:
    """A replay that is not a ``ReplayBuffer`` (the actor records it step by step)."""

    def __init__(self, replay):
        self.replay = replay

    def add(self, *rows):
        self.replay.add(*rows)


def fire_main(obs: np.ndarray) -> np.ndarray:
    return np.full(len(obs), 2, dtype=np.int64)


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("clip", [False, True])
def test_an_actor_records_what_an_in_process_collector_of_its_arguments_records(clip, plain):
    """Rounds of 8 steps in the child, epsilon 0.5 (some sub-envs explore, some exploit), reward
    clipping on/off, an n-step replay that needs the episode ends, one written per round or step by step."""
    rows, acting = {}, [torch.nn.Linear(8, 4)]
    for kind in ("actor", "inline"):
        replay = stream_replay(LUNAR, config(n_step=3), 2, seed=0)
        buf = PlainReplay(replay) if plain else replay
        envs = make_vector_env(*LUNAR_ENV, key=KEY)
        if kind == "actor":
            c = ActorCollector(envs, buf, fire_main, lambda t: 0.5, lambda: acting, 8, 3, clip, KEY)
            for _ in range(3):
                c.launch(8)
                c.join()
            c.close()
        else:
            c = EnvCollector(envs, buf, fire_main, lambda t: 0.5, seed=3, reward_clip=clip, key=KEY)
            for _ in range(24):
                c.step()
        envs.close()
        names = ("obs", "actions", "rewards", "next_obs", "terminated")
        rows[kind] = [getattr(replay, n)[:48].clone() for n in names], np.array(replay.dones[:48]), c
    (a_rows, a_dones, a), (i_rows, i_dones, i) = rows["actor"], rows["inline"]
    for x, y in zip(a_rows, i_rows):
        assert torch.equal(x, y)
    assert np.array_equal(a_dones, i_dones) and a_dones.sum() > 0
    assert not torch.equal(i_rows[4], torch.as_tensor(i_dones).to(i_rows[4].dtype))  # truncations are no terminations
    assert (a.env_steps, a.episodes, a.finished) == (i.env_steps, i.episodes, i.finished) == (48, 4, i.finished)
    assert a.rng.bit_generator.state == i.rng.bit_generator.state
    assert bool(torch.all(i_rows[2].abs() <= 1)) is clip and set(i_rows[1].tolist()) > {2}


def test_an_actors_defaults_and_its_shared_staging():
    calls = []
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    buf = stream_replay(CARTPOLE, config(n_step=1), 2, seed=0)
    c = ActorCollector(
        make_vector_env("CartPole-v1", 2, 0), buf, push_left, lambda t: 0.5, lambda: calls.append(1) or [net], 0
    )
    ref = EnvCollector(make_vector_env("CartPole-v1", 2, 0), buf, push_left, lambda t: 0.5, seed=0)
    try:
        assert c.rng.bit_generator.state == ref.rng.bit_generator.state and np.array_equal(c.obs, ref.obs)
        assert (c.max_round, c.pending, c.wait_s, c.in_process, c.reward_clip) == (1, 0, 0.0, False, False)
        assert type(c.pending) is int and c.in_process is False and c.reward_clip is False
        c.start()
        dtypes = {name: a.dtype for name, a in c._staged.items()}
        assert dtypes == {
            "obs": np.float32,
            "next_obs": np.float32,
            "actions": np.int64,
            "rewards": np.float64,
            "terminated": np.bool_,
            "done": np.bool_,
            "explore": np.bool_,
            "has_draws": np.bool_,
            "random_actions": np.int64,
        }
        assert c._proc.daemon is True
        c.launch(1)  # the snapshot the child acts with: every parameter in its own slot
        assert [w.dtype for w in c._weights] == [torch.float32] * 4
        assert all(torch.equal(w, p) for w, p in zip(c._weights, net.parameters()))
        c.join()
        c.step()
        assert len(calls) == 1  # the acting nets are asked for once
        proc = c._proc
    finally:
        c.close()
        ref.envs.close()
        c.envs.close()
    assert proc.exitcode == 0 and c.pending == 0 and type(c.pending) is int
    c.__del__()  # closed: nothing to kill
    ActorCollector.__new__(ActorCollector).__del__()  # never initialised: nothing to kill


def test_the_learners_wait_for_the_actor_adds_up(monkeypatch):
    from types import SimpleNamespace

    from kdrl import actor

    stream = actor_stream()
    c = stream.collector
    clock = iter([1.0, 3.0, 10.0, 15.0])
    monkeypatch.setattr(actor, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    try:
        for _ in range(2):
            c.launch(2)
            c.join()
        assert c.wait_s == 7.0
    finally:
        close(stream)


def test_a_launch_refuses_a_second_round_and_a_round_out_of_range():
    stream = actor_stream()
    c = stream.collector
    try:
        with pytest.raises(ValueError, match=rf"^a round is 1\.\.{c.max_round} vector steps, got 0$"):
            c.launch(0)
        c.launch(1)
        with pytest.raises(RuntimeError, match=r"^a round is already in flight; join it first$"):
            c.launch(1)
        c.join()
    finally:
        close(stream)


def test_an_acting_net_off_the_cpu_steps_in_process_and_says_so(caplog):
    import logging

    net = torch.nn.Linear(4, 2, bias=False, device="meta")
    buf = stream_replay(CARTPOLE, config(n_step=1), 2, seed=0)
    c = ActorCollector(make_vector_env("CartPole-v1", 2, 0), buf, push_left, lambda t: 0.5, lambda: [net], 4)
    try:
        with caplog.at_level(logging.WARNING, logger="kdrl.actor"):
            c.launch(3)
        assert [r.getMessage() for r in caplog.records] == [
            "env.actor=process: the acting net is on meta; the envs step in-process, as env.actor=inline"
        ]
        assert c.in_process and c._proc is None and c.pending == 3 and c.env_steps == 0
        c.close()  # the launched round is dropped
        assert c.pending == 0 and type(c.pending) is int and c.env_steps == 0
    finally:
        c.envs.close()


def test_the_child_acts_on_one_torch_thread():
    threads = lambda obs: np.full(len(obs), torch.get_num_threads() - 1, dtype=np.int64)  # noqa: E731
    buf = stream_replay(CARTPOLE, config(n_step=1), 2, seed=0)
    net = torch.nn.Linear(4, 2)
    c = ActorCollector(make_vector_env("CartPole-v1", 2, 0), buf, threads, lambda t: 0.0, lambda: [net], 4)
    try:
        c.launch(4)
        c.join()
        assert buf.size == 8 and not bool(buf.actions[:8].any())
    finally:
        c.close()
        c.envs.close()


def test_the_learner_and_the_actor_are_pinned_to_their_cpus_and_the_learner_unpinned_after(monkeypatch):
    import os

    from kdrl import actor

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    monkeypatch.delenv("KDRL_NO_PIN", raising=False)
    real = os.sched_getaffinity
    asked = []
    monkeypatch.setattr(actor.os, "sched_getaffinity", lambda pid: asked.append(pid) or real(pid))
    before = real(0)
    stream = actor_stream()
    c = stream.collector
    try:
        c.step()  # the child has set its own placement before it answered
        assert real(0) == {cpus[0]} and real(c._proc.pid) == {cpus[1]}
    finally:
        close(stream)
        after = real(0)
        os.sched_setaffinity(0, before)
    assert after == before and set(asked) == {0}


def test_pin_plan_asks_about_this_process(monkeypatch):
    from kdrl import actor

    monkeypatch.delenv("KDRL_NO_PIN", raising=False)
    monkeypatch.setattr(actor.os, "sched_getaffinity", lambda pid: {0: {5, 2}}[pid])
    assert actor.pin_plan() == (2, 5)


def test_a_signal_whose_handler_cannot_be_read_is_skipped_not_the_rest(monkeypatch):
    import signal

    from kdrl import actor

    real = signal.getsignal

    def getsignal(sig):
        if sig == signal.SIGHUP:
            raise ValueError("unreadable")
        return real(sig)

    saved = real(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        monkeypatch.setattr(actor.signal, "getsignal", getsignal)
        plan = actor.child_signal_plan()
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert signal.SIGHUP not in plan and plan[signal.SIGTERM] == signal.SIG_DFL
