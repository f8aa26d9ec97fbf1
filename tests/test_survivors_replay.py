"""Tests written against the surviving mutants of the replay room (docs/mutation.md, `kdrl/replay.py`).

Both replays are fed random vector-env streams (episodes ended by termination and by truncation,
several sub-envs, rings that wrap, a resume in the middle) and every sampled field is checked
against a plain-Python reference: a list of every transition ever added, whose n-step returns are
summed with a plain loop, and the replay's own sampling draws redone by loop with a generator of
the same seed. The other tests pin the defaults, the byte counts, the refusal messages word for
word and the paths the references do not reach (the torch write path of bfloat16 observations,
the frame-stack sampler giving up). Mutant names as in build/mutation/replay/survivors-replay.txt.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdrl.replay import (
    FrameStackReplay,
    ReplayBuffer,
    Transitions,
    make_replay,
    n_step_returns,
    replay_kind,
    replay_nbytes,
    stacked_frames,
)

GAMMA = 0.9


def flatten(batch: Transitions, k: int, b: int) -> Transitions:
    return Transitions(*(None if t is None else t.reshape(k * b, *t.shape[2:]) for t in batch))


def check_minibatches(batch: Transitions, k: int, b: int) -> None:
    """``sample_stack``'s fields are (k, b, ...) and ``at(j)`` is minibatch j of every field."""
    for j in range(k):
        mb = batch.at(j)
        for whole, part in zip(batch, mb):
            if whole is None:
                assert part is None
            else:
                assert whole.shape[:2] == (k, b) and torch.equal(part, whole[j])


# ---- ReplayBuffer against a plain list of every row ever added ----------------------------------------------------
class PlainRows:
    """Row g of the stream is sub-env g % num_envs (one vector step = num_envs rows); the ring keeps
    the newest ``capacity`` rows. An n-step return follows the same sub-env, num_envs rows at a time,
    and stops after an episode end, at a resume, or at the newest row."""

    def __init__(self, num_envs: int, n_step: int, gamma: float, seed: int) -> None:
        self.num_envs, self.n, self.gamma = num_envs, n_step, gamma
        self.rows: list[dict] = []
        self.rng = np.random.default_rng(seed)

    def step(self):
        """One vector step with fresh ids; inputs in the dtypes envs hand out (float64 obs and rewards,
        int32 actions, bool terminated)."""
        n, g = self.num_envs, len(self.rows) + np.arange(self.num_envs)
        obs = np.stack([g, np.arange(n) + 0.5], 1).astype(np.float64)
        nxt = np.stack([-(g + 1), np.arange(n) + 0.25], 1).astype(np.float64)
        actions = self.rng.integers(0, 6, n).astype(np.int32)
        rewards = self.rng.integers(-3, 4, n).astype(np.float64)
        done = self.rng.random(n) < 0.25
        terminated = done & (self.rng.random(n) < 0.5)
        for j in range(n):
            self.rows.append(
                {
                    "obs": obs[j],
                    "action": int(actions[j]),
                    "reward": float(rewards[j]),
                    "next": nxt[j],
                    "term": float(terminated[j]),
                    "end": bool(done[j]),
                }
            )
        return obs, actions, rewards, nxt, terminated, done

    def resume(self) -> None:
        for row in self.rows[-self.num_envs :]:
            row["end"] = True

    def expected(self, g: int) -> tuple[float, dict, float]:
        ret, m, h = 0.0, 0, g
        while True:
            ret += self.gamma**m * self.rows[h]["reward"]
            m += 1
            if m == self.n or self.rows[h]["end"] or h + self.num_envs >= len(self.rows):
                break
            h += self.num_envs
        return ret, self.rows[h], self.gamma**m


def sampled(buf, b: int, stack: int | None) -> Transitions:
    """``sample(b)``, or ``sample_stack(stack, b)`` checked and flattened to one batch."""
    if not stack:
        return buf.sample(b)
    batch = buf.sample_stack(stack, b)
    check_minibatches(batch, stack, b)
    return flatten(batch, stack, b)


def check_discount_dtype(batch: Transitions, n: int) -> None:
    if n == 1:
        assert batch.discounts is None
    else:
        assert batch.discounts.dtype == torch.float32


def check_row(batch: Transitions, j: int, got: tuple, want_obs, action: int, expected: tuple, ref) -> int:
    """Row j of a sample (``got``: its observation and next observation as arrays) against the reference's
    transition: observations, action, n-step return, end and discount; returns the number of rewards the
    return summed."""
    ret, last, disc = expected
    np.testing.assert_array_equal(got[0], want_obs)
    np.testing.assert_array_equal(got[1], last["next"])
    assert batch.actions[j].item() == action
    assert batch.rewards[j].item() == pytest.approx(ret, abs=1e-5)
    assert batch.terminated[j].item() == last["term"]
    if ref.n > 1:
        assert batch.discounts[j].item() == pytest.approx(disc, rel=1e-6)
    return round(np.log(disc) / np.log(ref.gamma))


def check_plain(buf: ReplayBuffer, ref: PlainRows, gen: torch.Generator, b: int, stack: int | None = None) -> None:
    total = len(ref.rows)
    size = min(total, buf.capacity)
    first = total - size
    assert len(buf) == size and buf.pos == total % buf.capacity
    draws = torch.randint(0, size, ((stack or 1) * b,), generator=gen, device=buf.device).cpu().numpy()
    batch = sampled(buf, b, stack)
    for t in batch:
        assert t is None or t.device == buf.device
    assert batch.obs.dtype == buf.obs.dtype and batch.next_obs.dtype == buf.obs.dtype
    assert batch.actions.dtype == torch.int64
    assert batch.rewards.dtype == torch.float32 and batch.terminated.dtype == torch.float32
    check_discount_dtype(batch, ref.n)
    obs, nxt = batch.obs.float().cpu().numpy(), batch.next_obs.float().cpu().numpy()
    summed = set()
    for j, row in enumerate(draws):
        g = first + (row - first) % buf.capacity  # the global row held at ring row `row`
        summed.add(
            check_row(batch, j, (obs[j], nxt[j]), ref.rows[g]["obs"], ref.rows[g]["action"], ref.expected(g), ref)
        )
    return summed


# (id, num_envs, capacity, n_step, gamma the buffer should use, seed it should use, builder, resume)
PLAIN = [
    ("one-step", 1, 7, 1, GAMMA, 3, lambda: ReplayBuffer(7, (2,), seed=3), False),
    (
        "3 envs n=3 make_replay",
        3,
        10,
        3,
        GAMMA,
        5,
        lambda: make_replay("standard", 10, (2,), "float32", 3, seed=5, n_step=3, gamma=GAMMA),
        True,
    ),
    (
        "bf16 2 envs n=3 default gamma",
        2,
        9,
        3,
        0.99,
        2,
        lambda: make_replay("standard", 9, (2,), "bfloat16", 2, seed=2, n_step=3),
        True,
    ),
    ("bf16 n=2 defaults", 1, 6, 2, 0.99, 0, lambda: ReplayBuffer(6, (2,), torch.bfloat16, n_step=2), False),
    (
        "bf16 one-step 2 envs",
        2,
        8,
        1,
        GAMMA,
        1,
        lambda: ReplayBuffer(8, (2,), torch.bfloat16, seed=1, num_envs=2),
        False,
    ),
    ("make_replay defaults", 1, 5, 1, GAMMA, 0, lambda: make_replay("standard", 5, (2,), "float32", 1), False),
]


def run_plain(num_envs, capacity, n_step, gamma, seed, build, resume, steps: int = 24) -> ReplayBuffer:
    buf = build()
    ref = PlainRows(num_envs, n_step, gamma, seed=100 * num_envs + capacity)
    gen = torch.Generator(device=buf.device)
    gen.manual_seed(seed)
    summed = set()
    for t in range(1, steps + 1):
        buf.add(*ref.step())
        if t in (1, 2, 5, 11, steps):
            summed |= check_plain(buf, ref, gen, 48)
        if resume and t == 9:
            state = buf.state_dict()
            buf = build()
            buf.load_state_dict(state)
            buf.end_streams()  # a resume whose envs were reset (kdrl.data.ReplayStream.load_state_dict)
            ref.resume()
            summed |= check_plain(buf, ref, gen, 48)
    check_plain(buf, ref, gen, 8, stack=3)
    check_plain(buf, ref, gen, 8, stack=1)
    # the stream exercised what it is for: a wrapped ring, both kinds of episode end, sums of every length
    assert len(ref.rows) > 2 * capacity
    assert any(r["term"] for r in ref.rows) and any(r["end"] and not r["term"] for r in ref.rows)
    assert summed == set(range(1, n_step + 1))
    return buf


@pytest.mark.parametrize("case", PLAIN, ids=[c[0] for c in PLAIN])
def test_replay_buffer_matches_a_plain_reference(case):
    """Every field of every sample (obs, action, n-step return summed by loop, the last summed row's
    next_obs and terminated, gamma^m) is the reference's; the draws are ``torch.randint`` over the
    filled rows with the buffer's own seeded generator (defaults: seed 0, gamma 0.99, one env,
    make_replay's n_step 1). The bfloat16 cases take the torch write path (no numpy view of bfloat16).

    Mutants: ReplayBuffer.__init__ 3, 5, 6, 72, 73, 77; add 5, 15, 35, 38, 39, 41, 43, 45, 47-49,
    51, 53-55, 57, 59-61, 63, 65-67, 69, 71, 72; sample_stack 1-7; Transitions.at 1-3; make_replay
    1, 3, 44; n_step_returns 44."""
    _, *args = case
    run_plain(*args)


@pytest.fixture
def meta_default_device():
    old = torch.get_default_device()
    torch.set_default_device("meta")  # a stand-in for another default device ("cuda") on a CPU-only torch
    yield
    torch.set_default_device(old)


@pytest.mark.parametrize("n_step", [1, 3])
def test_replay_buffer_keeps_to_its_device_whatever_torchs_default_device(meta_default_device, n_step):
    """``ReplayBuffer(device="cpu")`` puts its storage, its draws and every sampled field on the CPU even
    when torch's default device is another one (a float32 CPU buffer writes through numpy views and
    names its device in every factory call). Mutants: __init__ 31, 34, 38, 41, 45, 48, 52, 55, 59, 62,
    74-76, 78; _gather 33, 35, 60, 62, 74, 76; sample_indices 10, 15."""

    def build():
        return ReplayBuffer(9, (2,), seed=4, n_step=n_step, gamma=GAMMA, num_envs=2)

    buf = run_plain(2, 9, n_step, GAMMA, 4, build, True)
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        assert getattr(buf, name).device.type == "cpu", name


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
@pytest.mark.parametrize("n_step", [1, 3])
def test_replay_buffer_on_a_cuda_device(n_step):
    """The same reference on a CUDA buffer (its writes take the torch path): every tensor it holds,
    its generator and every sampled field on the device. Not run without CUDA (mutants that only a
    CUDA device tells apart: __init__ 81; add 44, 46, 50, 52, 56, 58, 62, 64, 68, 70)."""

    def build():
        return ReplayBuffer(9, (2,), device="cuda", seed=4, n_step=n_step, gamma=GAMMA, num_envs=2)

    buf = run_plain(2, 9, n_step, GAMMA, 4, build, True)
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        assert getattr(buf, name).device.type == "cuda", name
    assert buf.generator.device.type == "cuda"


@CUDA
@pytest.mark.parametrize("n_step", [1, 3])
def test_a_cpu_bfloat16_buffer_under_a_cuda_default_device(n_step):
    """A CPU buffer taking the torch write path (bfloat16) while torch's default device is CUDA: its
    write indices and values are put on the CPU, not on the default device. Not run without CUDA
    (mutants: add 40, 42, 44, 46, 50, 52, 56, 58, 62, 64, 68, 70)."""

    def build():
        return ReplayBuffer(9, (2,), torch.bfloat16, seed=4, n_step=n_step, gamma=GAMMA, num_envs=2)

    old = torch.get_default_device()
    torch.set_default_device("cuda")
    try:
        buf = run_plain(2, 9, n_step, GAMMA, 4, build, True)
    finally:
        torch.set_default_device(old)
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        assert getattr(buf, name).device.type == "cpu", name


# ---- FrameStackReplay against a per-env list of transitions ----------------------------------------------------------
class FrameStream:
    """num_envs sub-envs emitting (k, *frame_shape) uint8 stacks of unique frames (bytes 0-1: the
    frame's id, byte 2: its env). Episodes end at random, half by termination; the observation after
    an end (or after a resume) is a fresh stack, its first frame repeated k times."""

    def __init__(self, num_envs: int, k: int, frame_shape: tuple[int, ...], seed: int) -> None:
        self.n, self.k, self.frame_shape = num_envs, k, frame_shape
        self.rng = np.random.default_rng(seed)
        self.frames: dict[int, np.ndarray] = {}
        self.next_id = 1
        self.stacks = [self._fresh(e) for e in range(num_envs)]
        self.done_buffer = np.zeros(num_envs, dtype=bool)  # for callers that reuse their done array

    def _frame(self, env: int) -> int:
        i, self.next_id = self.next_id, self.next_id + 1
        f = self.rng.integers(0, 256, int(np.prod(self.frame_shape)), dtype=np.uint8)
        f[0], f[1], f[2] = i % 256, i // 256, env
        self.frames[i] = f.reshape(self.frame_shape)
        return i

    def _fresh(self, env: int) -> list[int]:
        return [self._frame(env)] * self.k

    def pixels(self, ids: list[int]) -> np.ndarray:
        return np.stack([self.frames[i] for i in ids])

    def reset_all(self) -> None:
        self.stacks = [self._fresh(e) for e in range(self.n)]

    def step(self, done_as: str):
        n = self.n
        obs_ids = self.stacks
        next_ids = [s[1:] + [self._frame(e)] for e, s in enumerate(obs_ids)]
        actions = self.rng.integers(0, 6, n)
        rewards = self.rng.integers(-3, 4, n).astype(np.float32)
        done = self.rng.random(n) < 0.2
        terminated = (done & (self.rng.random(n) < 0.5)).astype(np.float32)
        self.stacks = [self._fresh(e) if done[e] else next_ids[e] for e in range(n)]
        if done_as == "reused":  # the caller's one array, overwritten every step
            self.done_buffer[:] = done
            d = self.done_buffer
        else:
            d = {"bool": done.copy(), "int": done.astype(np.int64), "float": done.astype(np.float32)}[done_as]
        obs = np.stack([self.pixels(s) for s in obs_ids])
        nxt = np.stack([self.pixels(s) for s in next_ids])
        return (obs, actions, rewards, nxt, terminated, d), (obs_ids, next_ids, done)


class FrameRef:
    """Per env, every transition in order, with the absolute slot of its newest obs frame in the env's
    ring (the storage model of FrameStackReplay's docstring: k frames at each episode start, then one
    per transition; ring length ceil(capacity / num_envs) + k + 1)."""

    def __init__(self, num_envs: int, k: int, capacity: int, n_step: int, gamma: float) -> None:
        self.n_envs, self.k, self.n, self.gamma = num_envs, k, n_step, gamma
        self.slots = -(-capacity // num_envs) + k + 1
        self.trans: list[list[dict]] = [[] for _ in range(num_envs)]
        self.at_slot: list[dict[int, int]] = [{} for _ in range(num_envs)]
        self.head = np.zeros(num_envs, dtype=np.int64)
        self.starts = np.ones(num_envs, dtype=bool)

    def add(self, info, actions, rewards, terminated) -> None:
        obs_ids, next_ids, done = info
        for e in range(self.n_envs):
            if self.starts[e]:
                self.head[e] += self.k
            p = int(self.head[e]) - 1
            self.at_slot[e][p] = len(self.trans[e])
            self.trans[e].append(
                {
                    "obs": list(obs_ids[e]),
                    "next": list(next_ids[e]),
                    "action": int(actions[e]),
                    "reward": float(rewards[e]),
                    "term": float(terminated[e]),
                    "end": bool(done[e]),
                }
            )
            self.head[e] += 1
        self.starts = np.array(done, dtype=bool)

    def resume(self) -> None:
        self.starts[:] = True
        for t in self.trans:
            t[-1]["end"] = True

    def draws(self, rng: np.random.Generator, b: int) -> list[tuple[int, int]]:
        """FrameStackReplay's sampler by loop: env drawn by its number of stored slots, a slot uniform
        in the env's window, kept if a transition starts there; 2 * need + 8 proposals a round."""
        lo = np.maximum(self.head - self.slots + self.k, 0)
        hi = self.head - 1
        span = np.maximum(hi - lo, 0)
        out, need = [], b
        for _ in range(100):
            e = rng.choice(self.n_envs, size=2 * need + 8, p=span / span.sum())
            p = lo[e] + (rng.random(e.shape) * span[e]).astype(np.int64)
            ok = [(int(x), int(y)) for x, y in zip(e, p) if int(y) in self.at_slot[x]][:need]
            out += ok
            need -= len(ok)
            if need == 0:
                return out
        raise AssertionError("reference sampler gave up")

    def expected(self, e: int, i: int) -> tuple[float, dict, float]:
        ret, m = 0.0, 0
        while True:
            t = self.trans[e][i]
            ret += self.gamma**m * t["reward"]
            m += 1
            if m == self.n or t["end"] or i + 1 == len(self.trans[e]):
                return ret, t, self.gamma**m
            i += 1


def check_frames(buf, stream: FrameStream, ref: FrameRef, rng, b: int, stack: int | None = None) -> None:
    batch = sampled(buf, b, stack)
    picks = ref.draws(rng, (stack or 1) * b)
    k = ref.k
    assert batch.obs.shape == (len(picks), k, *stream.frame_shape) == batch.next_obs.shape
    assert batch.obs.dtype == torch.uint8 and batch.actions.dtype == torch.int64
    assert batch.rewards.dtype == torch.float32 and batch.terminated.dtype == torch.float32
    check_discount_dtype(batch, ref.n)
    summed = set()
    for j, (e, p) in enumerate(picks):
        t = ref.trans[e][ref.at_slot[e][p]]
        ret, last, disc = ref.expected(e, ref.at_slot[e][p])
        pixels = {**last, "next": stream.pixels(last["next"])}  # the reference's frames as the replay stacks them
        got = (batch.obs[j].numpy(), batch.next_obs[j].numpy())
        summed.add(check_row(batch, j, got, stream.pixels(t["obs"]), t["action"], (ret, pixels, disc), ref))
    return summed


# (id, num_envs, capacity, k, frame_shape, n_step, gamma it should use, seed it should use, done given as, builder, resume)
FRAMES = [
    (
        "k=1 one env make_replay defaults",
        1,
        10,
        1,
        (3,),
        1,
        GAMMA,
        0,
        "bool",
        lambda: make_replay("frame_stack", 10, (1, 3), "uint8", 1),
        False,
    ),
    (
        "3 envs k=3 n=3 make_replay default gamma",
        3,
        20,
        3,
        (2, 3),
        3,
        0.99,
        7,
        "int",
        lambda: make_replay("frame_stack", 20, (3, 2, 3), "uint8", 3, seed=7, n_step=3),
        True,
    ),
    (
        "2 envs k=1 n=2 defaults",
        2,
        9,
        1,
        (3,),
        2,
        0.99,
        0,
        "float",
        lambda: FrameStackReplay(9, (1, 3), 2, n_step=2),
        False,
    ),
    (
        "2 envs k=4 one-step reused done",
        2,
        12,
        4,
        (2, 3),
        1,
        GAMMA,
        11,
        "reused",
        lambda: FrameStackReplay(12, (4, 2, 3), 2, seed=11, gamma=GAMMA),
        True,
    ),
    (
        "2 envs k=2 n=3 2-D obs",
        2,
        11,
        2,
        (4,),
        3,
        GAMMA,
        6,
        "bool",
        lambda: FrameStackReplay(11, (2, 4), 2, seed=6, n_step=3, gamma=GAMMA),
        False,
    ),
]


@pytest.mark.parametrize("case", FRAMES, ids=[c[0] for c in FRAMES])
def test_frame_stack_replay_matches_a_per_env_reference(case):
    """Every sampled obs and next_obs stack (all k frames, byte for byte), action, n-step return,
    terminated and gamma^m is the reference's, and the samples are the sampler's draws redone by loop
    with a generator of the replay's seed. ``done`` comes as bool, 0/1 ints, 0/1 floats, or one array
    the caller overwrites every step; add leaves the arrays it is given as they were. Sampling works
    from the first add on (one env, k=1: a single stored transition).

    Mutants: FrameStackReplay.__init__ 1, 3, 4, 5; add 35, 38, 40; _gather 18, 60, 62;
    sample_indices 26, 43, 44; make_replay 1, 3, 17, 23; n_step_returns 44."""
    _, num_envs, capacity, k, frame_shape, n_step, gamma, seed, done_as, build, resume = case
    buf = build()
    stream = FrameStream(num_envs, k, frame_shape, seed=capacity + k)
    ref = FrameRef(num_envs, k, capacity, n_step, gamma)
    rng = np.random.default_rng(seed)
    given, summed = [], set()
    steps = 30
    for t in range(1, steps + 1):
        args, info = stream.step(done_as)
        if done_as != "reused":
            given.append((args, tuple(np.copy(a) for a in args)))
        buf.add(*args)
        ref.add(info, args[1], args[2], args[4])
        assert len(buf) == min(t * num_envs, capacity)
        if t in (1, 2, 6, 15, steps):
            summed |= check_frames(buf, stream, ref, rng, 40)
        if resume and t == 12:
            state = buf.state_dict()
            buf = build()
            buf.load_state_dict(state)
            buf.end_streams()  # a resume whose envs were reset (kdrl.data.ReplayStream.load_state_dict)
            ref.resume()
            stream.reset_all()
            check_frames(buf, stream, ref, rng, 40)
    check_frames(buf, stream, ref, rng, 8, stack=3)
    assert (ref.head > 2 * ref.slots).all(), "every env's ring wrapped"
    ends = [t for trans in ref.trans for t in trans if t["end"]]
    assert any(t["term"] for t in ends) and any(not t["term"] for t in ends)
    assert summed == set(range(1, n_step + 1))
    for args, copies in given:  # the replay keeps no reference to (and never writes into) its inputs
        for a, c in zip(args, copies):
            np.testing.assert_array_equal(a, c)


def test_frame_stack_sampler_gives_up_after_100_rounds():
    """An rng that only ever proposes env 0's oldest slot (a padding frame of the first stack, not a
    transition): 100 rounds of 2 * need + 8 proposals, then the refusal.
    Mutants: sample_indices 33, 43, 44, 60-62."""

    class OldestSlotOnly:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def choice(self, n, size, p):
            self.sizes.append(size)
            return np.zeros(size, dtype=np.int64)

        def random(self, shape):
            return np.zeros(shape)

    buf = FrameStackReplay(10, (3, 3), 1)
    buf.add(*FrameStream(1, 3, (3,), seed=0).step("bool")[0])
    buf.rng = OldestSlotOnly()
    with pytest.raises(RuntimeError) as err:
        buf.sample(5)
    assert str(err.value) == "replay sampling found too few valid transitions"
    assert buf.rng.sizes == [18] * 100


# ---- defaults, refusals, byte counts ---------------------------------------------------------------------------------
def raises_exactly(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc) as err:
        fn(*args, **kwargs)
    assert str(err.value) == message


def one_row(n=1):
    return np.zeros((n, 2)), np.zeros(n, np.int64), np.arange(n, dtype=np.float32), np.ones((n, 2)), np.zeros(n)


def test_refusals_word_for_word_and_their_edges():
    """Mutants: ReplayBuffer.__init__ 8, 9, 10; add 2, 3, 5, 8; sample_indices 3, 4, 5;
    FrameStackReplay.__init__ 9, 10; add 5, 6; sample_indices 4; make_replay 48."""
    raises_exactly(ValueError, "replay capacity must be >= 1, got 0", ReplayBuffer, 0, (2,))
    raises_exactly(RuntimeError, "cannot sample from an empty replay buffer", ReplayBuffer(3, (2,)).sample, 1)
    tiny = ReplayBuffer(1, (2,))  # capacity 1 is allowed
    tiny.add(*one_row())
    assert tiny.sample(3).rewards.tolist() == [0.0, 0.0, 0.0]
    full = ReplayBuffer(2, (2,))
    raises_exactly(ValueError, "cannot add 3 transitions to a buffer of capacity 2", full.add, *one_row(3))
    full.add(*one_row(2))  # exactly the capacity at once
    assert len(full) == 2 and full.pos == 0 and full.rewards.tolist() == [0.0, 1.0]
    message = "an n-step replay needs done (episode ends) to stop its sums at truncations"
    raises_exactly(ValueError, message, ReplayBuffer(4, (2,), n_step=2).add, *one_row())

    raises_exactly(
        ValueError,
        "FrameStackReplay.add needs done (episode ends) to keep stacks within episodes",
        FrameStackReplay(4, (2, 3), 1).add,
        np.zeros((1, 2, 3), np.uint8),
        np.zeros(1),
        np.zeros(1),
        np.zeros((1, 2, 3), np.uint8),
        np.zeros(1),
    )
    raises_exactly(RuntimeError, "cannot sample from an empty replay buffer", FrameStackReplay(4, (2, 3), 1).sample, 1)
    one = FrameStackReplay(1, (2, 3), 1)  # capacity 1 is allowed
    one.add(
        np.ones((1, 2, 3), np.uint8), np.array([4]), np.array([2.0]), np.full((1, 2, 3), 7, np.uint8), [0.0], [True]
    )
    batch = one.sample(2)
    assert batch.actions.tolist() == [4, 4] and batch.rewards.tolist() == [2.0, 2.0]
    assert batch.next_obs[:, -1].eq(7).all() and batch.obs.eq(1).all()

    raises_exactly(
        ValueError,
        "unknown replay kind 'lean' (expected auto, standard or frame_stack)",
        make_replay,
        "lean",
        10,
        (2,),
        "float32",
        1,
    )


def test_defaults():
    """Mutants: ReplayBuffer.__init__ 3, 5, 6; FrameStackReplay.__init__ 1, 3; make_replay 1, 3."""
    buf = ReplayBuffer(5, (2,))
    assert (buf.n_step, buf.gamma, buf.num_envs, buf.device) == (1, 0.99, 1, torch.device("cpu"))
    assert torch.equal(buf.generator.get_state(), torch.Generator().manual_seed(0).get_state())
    lean = FrameStackReplay(5, (2, 3), 2)
    assert (lean.n_step, lean.gamma) == (1, 0.99)
    assert lean.rng.bit_generator.state == np.random.default_rng(0).bit_generator.state
    for kind in ("standard", "frame_stack"):
        made = make_replay(kind, 6, (2, 3), "uint8", 1)
        assert (made.n_step, made.gamma) == (1, 0.99)


def test_byte_counts_by_hand():
    """FrameStackReplay: per env a ring of ceil(capacity / num_envs) + k + 1 slots, each one frame plus
    action (8), reward (4), terminated (4) and valid (1) bytes, and per env its head (8) and
    needs_start (1); replay_nbytes computes the same without allocating (one env by default).
    ReplayBuffer: obs and next_obs plus 16 bytes a row in tensors (replay_nbytes adds the episode-end
    flag, 1 byte a row; (4, 10, 84) frames are not Atari's, so standard). Mutants: FrameStackReplay.nbytes
    2, 3, 5; replay_nbytes 1, 24; stacked_frames 9."""
    for capacity, num_envs, k, frame in [(1000, 3, 4, (84, 84)), (10, 1, 2, (3,)), (7, 2, 1, (2, 3)), (50, 4, 4, (5,))]:
        slots = -(-capacity // num_envs) + k + 1
        expect = num_envs * (slots * (int(np.prod(frame)) + 17) + 9)
        assert FrameStackReplay(capacity, (k, *frame), num_envs).nbytes() == expect
        assert replay_nbytes("frame_stack", capacity, (k, *frame), "uint8", num_envs) == expect
    assert replay_nbytes("frame_stack", 10, (2, 3), "uint8") == FrameStackReplay(10, (2, 3), 1).nbytes() == 13 * 20 + 9
    assert replay_nbytes("auto", 1000, (4, 84, 84), "uint8", 3) == 3 * ((334 + 5) * (84 * 84 + 17) + 9)
    assert ReplayBuffer(6, (2, 3)).nbytes() == 6 * (2 * 6 * 4 + 16)
    assert replay_nbytes("standard", 6, (2, 3), "float32", 4) == 6 * (2 * 6 * 4 + 17)
    assert replay_nbytes("auto", 6, (4, 10, 84), "uint8", 2) == 6 * (2 * 4 * 10 * 84 + 17)


def test_stacked_frames_are_uint8_stacks_of_at_least_32_by_32():
    """Mutants: stacked_frames 9, 10, 11."""
    assert stacked_frames((4, 32, 32), "uint8") and replay_kind("auto", (4, 32, 32), "uint8") == "frame_stack"
    assert isinstance(make_replay("auto", 10, (2, 32, 32), "uint8", 1), FrameStackReplay)
    for shape in [(4, 31, 84), (4, 84, 31), (4, 10, 84)]:
        assert not stacked_frames(shape, "uint8") and replay_kind("auto", shape, "uint8") == "standard"
    assert not stacked_frames((4, 84, 84), "float32") and not stacked_frames((84, 84), "uint8")


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_rewards_and_terminated_stay_float32_under_a_float64_default_dtype(float64_default):
    """The replays' sizes (replay_nbytes: 4-byte rewards and terminated) and their batches do not
    depend on torch's global default dtype. Mutants: ReplayBuffer.__init__ 51, 54, 58, 61;
    FrameStackReplay.__init__ 52, 54, 57, 59."""
    for kind, shape, dtype, nbytes in [
        ("standard", (3,), "float32", 10 * (2 * 3 * 4 + 16)),
        ("frame_stack", (2, 3), "uint8", replay_nbytes("frame_stack", 10, (2, 3), "uint8", 2)),
    ]:
        for n_step in (1, 3):
            buf = make_replay(kind, 10, shape, dtype, 2, n_step=n_step)
            obs = np.ones((2, *shape), dtype=dtype)
            buf.add(obs, np.array([1, 2]), np.array([0.5, -1.0]), obs, np.array([1.0, 0.0]), np.array([True, False]))
            batch = buf.sample(6)
            assert batch.rewards.dtype == torch.float32 and batch.terminated.dtype == torch.float32, (kind, n_step)
            assert buf.nbytes() == nbytes, kind


def test_n_step_returns_by_loop():
    """Discounted sums stopping after an episode end and before a missing row, in float32.
    Mutant: n_step_returns 44 (float64 returns)."""
    rng = np.random.default_rng(1)
    b, n, gamma = 300, 4, 0.9
    rewards = rng.integers(-3, 4, (b, n)).astype(np.float32)
    ends = rng.random((b, n)) < 0.3
    alive = rng.random((b, n)) < 0.8
    alive[:, 0] = True
    ret, last, disc = n_step_returns(rewards, ends, alive, gamma)
    assert ret.dtype == np.float32 and disc.dtype == np.float32
    for i in range(b):
        total, j = float(rewards[i, 0]), 0
        while j + 1 < n and alive[i, j + 1] and not ends[i, j]:
            j += 1
            total += gamma**j * float(rewards[i, j])
        assert ret[i] == pytest.approx(total, abs=1e-5) and last[i] == j
        assert disc[i] == pytest.approx(gamma ** (j + 1), rel=1e-6)
