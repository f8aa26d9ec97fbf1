"""FrameStackReplay (each frame stored once, stacks rebuilt at sample time) against the plain
ReplayBuffer (full obs and next_obs stacks stored per transition) fed the very same stream.

The synthetic streams give every frame a unique id (its first four bytes, plus the env and random
bytes), so a stack mixed from two episodes, a stale frame or a field taken from the wrong
transition cannot go unnoticed: each sampled transition must equal, field for field, exactly one
transition the plain buffer stored.
"""

from __future__ import annotations

import copy
import io
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from kdrl.collector import EnvCollector
from kdrl.envs import make_vector_env
from kdrl.replay import FrameStackReplay, ReplayBuffer, make_replay

FRAME_SHAPE = (2, 5)  # 10 bytes: id (uint32 LE), env, 5 random bytes


# ---- a synthetic SAME_STEP-autoreset, frame-stacked vector env stream -------------------------
class SyntheticStream:
    """Vector-env transitions as EnvCollector hands them to ``buffer.add``.

    Episodes have random lengths (a quarter of them length 1) and end by termination or by
    truncation (done and not terminated). The reset observation is padded like gymnasium's
    FrameStackObservation: ``reset`` repeats the first frame, ``zero`` pads with zero frames.
    ``true_next`` at an episode end is the final stack (``final_obs``); the next ``obs`` of that env
    is a fresh reset stack.

    It also keeps the documented storage model of FrameStackReplay: k frames at the start of each
    episode, then one frame per transition, per env (``written``; ``first_frame`` is where a
    transition's oldest obs frame sits in its env's frame sequence).
    """

    def __init__(
        self,
        num_envs: int,
        k: int,
        seed: int,
        padding: str = "reset",
        max_len: int = 12,
        first_id: int = 1,
        first_episode: int = 0,
    ) -> None:
        self.n, self.k, self.padding, self.max_len = num_envs, k, padding, max_len
        self.rng = np.random.default_rng(seed)
        self.next_id = first_id  # 0 is reserved for zero padding
        self.frame_episode: dict[int, tuple[int, int]] = {}  # frame id -> (env, episode number)
        self.episode = np.zeros(num_envs, dtype=np.int64)
        self.episodes_started = first_episode
        self.written = np.zeros(num_envs, dtype=np.int64)
        self.new_episode = np.ones(num_envs, dtype=bool)
        self.stacks = np.zeros((num_envs, k, *FRAME_SHAPE), dtype=np.uint8)
        self.remaining = np.zeros(num_envs, dtype=np.int64)
        self.meta: list[tuple[int, int, int]] = []  # per transition, in add order: (env, step, first_frame)
        self.steps = 0
        self.n_terminated = self.n_truncated = 0
        for i in range(num_envs):
            self._reset(i)

    def _frame(self, env: int) -> np.ndarray:
        fid = self.next_id
        self.next_id += 1
        self.frame_episode[fid] = (env, int(self.episode[env]))
        f = np.empty(int(np.prod(FRAME_SHAPE)), dtype=np.uint8)
        f[:4] = np.frombuffer(np.uint32(fid).tobytes(), dtype=np.uint8)
        f[4] = env
        f[5:] = self.rng.integers(0, 256, size=f.size - 5)
        return f.reshape(FRAME_SHAPE)

    def _episode_length(self) -> int:
        return 1 if self.rng.random() < 0.25 else int(self.rng.integers(2, self.max_len + 1))

    def _reset(self, i: int) -> None:
        self.episode[i] = self.episodes_started
        self.episodes_started += 1
        first = self._frame(i)
        self.stacks[i] = 0
        if self.padding == "reset":
            self.stacks[i, :] = first
        else:
            self.stacks[i, -1] = first
        self.remaining[i] = self._episode_length()
        self.new_episode[i] = True

    def step(self):
        n, k = self.n, self.k
        obs = self.stacks.copy()
        actions = self.rng.integers(0, 6, size=n)
        rewards = self.rng.normal(size=n).astype(np.float32)
        new = np.stack([self._frame(i) for i in range(n)])
        true_next = np.concatenate([obs[:, 1:], new[:, None]], axis=1)
        self.remaining -= 1
        done = self.remaining == 0
        terminated = done & (self.rng.random(n) < 0.5)
        self.n_terminated += int(terminated.sum())
        self.n_truncated += int((done & ~terminated).sum())
        for i in range(n):
            if self.new_episode[i]:
                self.written[i] += k
                self.new_episode[i] = False
            self.meta.append((i, self.steps, int(self.written[i]) - k))
            self.written[i] += 1
        self.stacks = true_next.copy()
        for i in np.flatnonzero(done):
            self._reset(i)
        self.steps += 1
        return obs, actions, rewards, true_next, terminated, done


def frame_ids(stacks: np.ndarray) -> np.ndarray:
    """(B, k, *FRAME_SHAPE) uint8 -> (B, k) frame ids (0 = zero padding)."""
    b, k = stacks.shape[:2]
    raw = np.ascontiguousarray(stacks.reshape(b, k, -1)[..., :4])
    return raw.view(np.uint32)[..., 0]


class Reference:
    """A plain ReplayBuffer that never wraps: the ground truth for every transition ever added."""

    def __init__(self, total: int, obs_shape: tuple[int, ...]) -> None:
        self.buf = ReplayBuffer(total, obs_shape, obs_dtype=torch.uint8)
        self.index: dict[bytes, int] = {}

    def add(self, obs, actions, rewards, next_obs, terminated, done) -> None:
        start = self.buf.pos
        self.buf.add(obs, actions, rewards, next_obs, terminated, done)
        for j in range(len(actions)):
            key = obs[j].tobytes() + next_obs[j].tobytes()
            assert key not in self.index, "synthetic stream produced two identical transitions"
            self.index[key] = start + j

    def lookup(self, batch) -> np.ndarray:
        """Reference index of each sampled transition; every field must match it exactly."""
        obs, nxt = batch.obs.numpy(), batch.next_obs.numpy()
        out = np.empty(len(obs), dtype=np.int64)
        for b in range(len(obs)):
            j = self.index.get(obs[b].tobytes() + nxt[b].tobytes())
            assert j is not None, (
                f"sampled transition {b} matches no stored transition: obs ids "
                f"{frame_ids(obs[b : b + 1])[0]}, next ids {frame_ids(nxt[b : b + 1])[0]}"
            )
            out[b] = j
        ref = self.buf
        assert torch.equal(batch.obs, ref.obs[out]) and torch.equal(batch.next_obs, ref.next_obs[out])
        assert torch.equal(batch.actions, ref.actions[out]), "actions do not belong to their obs"
        assert torch.equal(batch.rewards, ref.rewards[out]), "rewards do not belong to their obs"
        assert torch.equal(batch.terminated, ref.terminated[out]), "terminated does not belong to its obs"
        return out


def check_against_reference(
    lean: FrameStackReplay, ref: Reference, stream: SyntheticStream, n_samples: int = 6000
) -> None:
    batch = lean.sample(n_samples)
    k = stream.k
    assert batch.obs.shape == (n_samples, k, *FRAME_SHAPE) and batch.obs.dtype == torch.uint8
    assert batch.next_obs.shape == batch.obs.shape
    assert batch.actions.dtype == torch.int64 and batch.rewards.dtype == torch.float32
    js = ref.lookup(batch)

    # no stack (obs + the new frame of next_obs) spans two episodes or two envs
    ids = np.concatenate([frame_ids(batch.obs.numpy()), frame_ids(batch.next_obs.numpy()[:, -1:])], axis=1)
    for row in ids:
        eps = {stream.frame_episode[int(f)] for f in row if f != 0}
        assert len(eps) == 1, f"sampled stack spans episodes {sorted(eps)} (frame ids {row})"

    # never a transition whose frames have been overwritten: all its frames are among the last
    # `slots` frames written to its env's ring; and it belongs to the newest ceil(capacity / n)
    # transitions of its env
    meta = np.asarray(stream.meta)
    env, step, first = meta[js, 0], meta[js, 1], meta[js, 2]
    assert (first >= stream.written[env] - lean.slots).all(), "sampled a transition whose frames were overwritten"
    per_env = -(-lean.capacity // lean.num_envs)
    assert (step >= stream.steps - per_env).all(), "sampled a transition older than the buffer's capacity"

    # coverage and uniformity: every transition whose k+1 frames lie strictly inside the ring is
    # sampled, about equally often
    expected = {j for j, (e, _, f) in enumerate(stream.meta) if f >= stream.written[e] - lean.slots + 1}
    counts = Counter(js.tolist())
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} stored transitions never sampled, e.g. {sorted(missing)[:5]}"
    assert set(counts) - expected <= {
        j for j, (e, _, f) in enumerate(stream.meta) if f == stream.written[e] - lean.slots
    }
    mean = n_samples / len(counts)
    worst = max(abs(c - mean) for c in counts.values())
    assert worst < 6 * mean**0.5 + 3, f"sampling far from uniform: mean {mean:.1f}, worst deviation {worst}"


@pytest.mark.parametrize(
    "num_envs,capacity,k,padding",
    [
        (3, 48, 4, "reset"),  # ring of 16+5 frames per env, wraps ~25 times
        (4, 50, 4, "zero"),  # capacity not a multiple of num_envs, zero-padded first stacks
        (1, 10, 2, "reset"),
        (2, 7, 1, "reset"),  # k = 1: no stacking at all
    ],
)
def test_matches_plain_buffer_on_synthetic_stream(num_envs, capacity, k, padding):
    stream = SyntheticStream(num_envs, k, seed=capacity + k, padding=padding)
    obs_shape = (k, *FRAME_SHAPE)
    steps = 300
    lean = FrameStackReplay(capacity, obs_shape, num_envs, seed=1)
    ref = Reference(steps * num_envs, obs_shape)
    checkpoints = {1, 3, 9, 40, 120, steps}
    for t in range(1, steps + 1):
        args = stream.step()
        lean.add(*args)
        ref.add(*args)
        if t in checkpoints:
            check_against_reference(lean, ref, stream)
    assert stream.n_terminated > 5 and stream.n_truncated > 5
    assert (stream.written > 3 * lean.slots).all(), "the ring should have wrapped several times"
    # sample_stack: K minibatches, each row still a stored transition
    batch = lean.sample_stack(3, 16)
    assert batch.obs.shape == (3, 16, k, *FRAME_SHAPE) and batch.rewards.shape == (3, 16)
    flat = type(batch)(*(t.reshape(48, *t.shape[2:]) for t in batch[:5]))
    ref.lookup(flat)


def test_sampling_is_reproducible_and_independent_of_global_rng():
    def run(seed):
        stream = SyntheticStream(2, 4, seed=5)
        buf = FrameStackReplay(40, (4, *FRAME_SHAPE), 2, seed=seed)
        for _ in range(60):
            buf.add(*stream.step())
        torch.manual_seed(np.random.randint(1000))
        np.random.seed(torch.randint(1000, ()).item())
        return buf.sample(64)

    a, b, c = run(3), run(3), run(4)
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.obs, c.obs)


# ---- a real Atari stream through EnvCollector --------------------------------------------------
class Tee:
    """Hands every EnvCollector.add to several buffers."""

    def __init__(self, *buffers) -> None:
        self.buffers = buffers

    def add(self, *args) -> None:
        for b in self.buffers:
            b.add(*args)


@pytest.mark.parametrize(
    "env_id,kwargs",
    [
        ("ALE/Pong-v5", {"max_episode_steps": 240}),  # ~55-step episodes ended by truncation
        ("ALE/Breakout-v5", {"preprocess": {"terminal_on_life_loss": True}}),  # ended by termination
    ],
)
def test_matches_plain_buffer_on_atari_stream(env_id, kwargs):
    num_envs, steps, capacity = 2, 300, 200  # 100 transitions per env ring: wraps ~3 times
    envs = make_vector_env(env_id, num_envs, seed=0, kwargs=kwargs)
    obs_shape = envs.single_observation_space.shape
    assert obs_shape == (4, 84, 84)
    lean = make_replay("auto", capacity, obs_shape, "uint8", num_envs, seed=2)
    assert isinstance(lean, FrameStackReplay)
    ref = ReplayBuffer(steps * num_envs, obs_shape, obs_dtype=torch.uint8)
    collector = EnvCollector(
        envs,
        Tee(lean, ref),
        greedy_fn=lambda o: np.zeros(len(o), dtype=np.int64),
        epsilon_fn=lambda _: 1.0,
        seed=0,
        reward_clip=True,
    )
    for _ in range(steps):
        collector.step()
    envs.close()
    assert collector.episodes >= 4
    ended = "terminated" if "preprocess" in kwargs else "truncated"
    if ended == "terminated":
        assert ref.terminated.sum() >= 2
    else:
        assert ref.terminated.sum() == 0

    # reference transition j: env j % num_envs, env step j // num_envs
    index: dict[bytes, list[int]] = defaultdict(list)
    ro, rn = ref.obs.numpy(), ref.next_obs.numpy()
    for j in range(steps * num_envs):
        index[ro[j].tobytes() + rn[j].tobytes()].append(j)
    per_env = capacity // num_envs
    batch = lean.sample(3000)
    seen: set[int] = set()
    for b in range(len(batch.actions)):
        cands = index.get(batch.obs[b].numpy().tobytes() + batch.next_obs[b].numpy().tobytes(), [])
        cands = [
            j
            for j in cands
            if j // num_envs >= steps - per_env
            and ref.actions[j] == batch.actions[b]
            and ref.rewards[j] == batch.rewards[b]
            and ref.terminated[j] == batch.terminated[b]
        ]
        assert cands, f"sampled transition {b} equals none of the newest {per_env} transitions of any env"
        seen.update(cands)
    newest = {j for j in range(steps * num_envs) if j // num_envs >= steps - 10}
    assert newest <= seen, "the newest transitions of each env should all be sampled"
    # the collector's contract the lean buffer relies on: next_obs (final_obs at an episode end)
    # is always obs shifted by one frame
    assert all(np.array_equal(rn[j][:-1], ro[j][1:]) for j in seen)


# ---- checkpointing ----------------------------------------------------------------------------
def test_state_dict_roundtrip_gives_identical_samples_and_continues_or_starts_segments():
    """Loaded, the buffer samples as the saved one did. A resume whose envs step on mid-episode
    (kdrl.envs.vector_env_state) glues the next obs onto the saved segments; one whose envs were
    reset calls ``end_streams`` (kdrl.data), and the reset stacks start new segments."""
    obs_shape = (4, *FRAME_SHAPE)
    stream = SyntheticStream(3, 4, seed=11)
    buf = FrameStackReplay(45, obs_shape, 3, seed=5)
    saved_steps = [stream.step() for _ in range(80)]
    for args in saved_steps:
        buf.add(*args)
    state = buf.state_dict()
    at_save, never_stopped = copy.deepcopy(stream), copy.deepcopy(buf)  # the envs and buffer as saved
    a = buf.sample(200)
    for _ in range(20):  # the original moves on; the saved state must not move with it
        buf.add(*stream.step())

    blob = io.BytesIO()  # as in a Lightning checkpoint, loaded with weights_only=True
    torch.save(state, blob)
    blob.seek(0)
    loaded = torch.load(blob, weights_only=True)

    def load() -> FrameStackReplay:
        other = FrameStackReplay(45, obs_shape, 3, seed=99)
        busy = SyntheticStream(3, 4, seed=13, max_len=1000)  # load into a buffer in mid-episode
        for _ in range(5):
            other.add(*busy.step())
        other.load_state_dict(loaded)
        return other

    def resume(other: FrameStackReplay, envs: SyntheticStream) -> None:
        ref = Reference(3 * 400, obs_shape)
        for args in saved_steps:
            ref.add(*args)
        for _ in range(3):
            args = envs.step()
            other.add(*args)
            ref.add(*args)
        js = ref.lookup(other.sample(2000))  # every field of every sample equals a stored transition
        first_after_load = {80 * 3, 80 * 3 + 1, 80 * 3 + 2}  # ref holds the 80 steps before the save first
        assert first_after_load <= set(js.tolist()), "the first transitions after loading are sampled"

    other = load()
    b = other.sample(200)
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(a, b)), "same state should give the same samples"
    assert len(other) == min(80 * 3, 45)
    # the envs stepped on from where they were saved: their next frames continue the saved segments,
    # and the buffer samples exactly as the one never stopped
    resume(other, copy.deepcopy(at_save))
    for _ in range(3):
        never_stopped.add(*at_save.step())
    never_stopped.rng.bit_generator.state = other.rng.bit_generator.state
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(never_stopped.sample(500), other.sample(500)))
    # the envs were reset: the first obs after loading is a fresh reset stack, unrelated to the last
    # saved next_obs; after end_streams it is stored as a new segment, not glued onto the old one
    reset = load()
    reset.end_streams()
    resume(
        reset,
        SyntheticStream(3, 4, seed=12, first_id=stream.next_id + 10_000, first_episode=stream.episodes_started + 1),
    )


# ---- memory ---------------------------------------------------------------------------------
def test_bytes_per_transition_atari():
    frame = 84 * 84
    capacity, num_envs = 16_000, 8
    lean = FrameStackReplay(capacity, (4, 84, 84), num_envs)
    per = lean.nbytes() / capacity
    assert frame <= per < 1.01 * frame + 32, f"{per:.1f} bytes per transition"
    plain = ReplayBuffer(64, (4, 84, 84), obs_dtype=torch.uint8)
    plain_per = plain.nbytes() / 64
    assert plain_per == 2 * 4 * frame + 8 + 4 + 4
    assert 7.5 < plain_per / per < 8.5, f"plain/lean = {plain_per / per:.2f}"


# ---- bad input --------------------------------------------------------------------------------
def test_rejects_bad_input_with_clear_messages():
    stream = SyntheticStream(2, 4, seed=0)
    buf = FrameStackReplay(20, (4, *FRAME_SHAPE), 2)
    obs, actions, rewards, true_next, terminated, done = stream.step()
    with pytest.raises(ValueError, match="needs done"):
        buf.add(obs, actions, rewards, true_next, terminated)
    with pytest.raises(ValueError, match="built for 2 envs, got 3"):
        buf.add(*(np.concatenate([x, x[:1]]) for x in (obs, actions, rewards, true_next, terminated, done)))
    with pytest.raises(ValueError, match="built for 2 envs, got 1"):
        buf.add(obs[:1], actions[:1], rewards[:1], true_next[:1], terminated[:1], done[:1])
    assert len(buf) == 0 and (buf.head == 0).all(), "a rejected add must leave the buffer untouched"
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(4)
    buf.add(obs, actions, rewards, true_next, terminated, done)  # still usable afterwards
    assert len(buf) == 2 and buf.sample(4).obs.shape == (4, 4, *FRAME_SHAPE)
    with pytest.raises(ValueError, match="stacked"):
        FrameStackReplay(10, (84,), 1)
    with pytest.raises(ValueError, match=">= 1"):
        FrameStackReplay(0, (4, 84, 84), 1)
