"""n-step returns in both replays, checked against a per-episode reference on a synthetic stream
whose episodes end by termination and by truncation (issue 14)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from kdrl.replay import FrameStackReplay, ReplayBuffer, make_replay
from kdrl.td import TDTerm, td_targets

GAMMA = 0.9


class Stream:
    """num_envs sub-envs emitting frame-stacked uint8 observations; a frame's first two pixels
    encode a unique id (so a sampled obs names its transition). Episodes end at random, half by
    termination and half by truncation; the next observation after an end is a fresh stack."""

    def __init__(self, num_envs: int, k: int, seed: int, end_prob: float = 0.15) -> None:
        self.end_prob = end_prob
        self.rng = np.random.default_rng(seed)
        self.num_envs, self.k, self.next_id = num_envs, k, 1
        self.stacks = [self._fresh() for _ in range(num_envs)]
        self.log: list[list[dict]] = [[] for _ in range(num_envs)]  # per env, in order

    def _frame(self) -> np.ndarray:
        i, self.next_id = self.next_id, self.next_id + 1
        f = np.zeros((3, 3), dtype=np.uint8)
        f[0, 0], f[0, 1] = i % 256, i // 256
        return f

    def _fresh(self) -> list[np.ndarray]:
        f = self._frame()
        return [f] * self.k

    def step(self):
        obs, nxt, rew, term, done = [], [], [], [], []
        for e in range(self.num_envs):
            o = np.stack(self.stacks[e])
            new = self.stacks[e][1:] + [self._frame()]
            r = float(self.rng.integers(-3, 4))
            end = self.rng.random() < self.end_prob
            t = bool(end and self.rng.random() < 0.5)
            obs.append(o), nxt.append(np.stack(new)), rew.append(r), term.append(t), done.append(end)
            self.log[e].append({"id": frame_id(o[-1]), "r": r, "term": t, "done": end, "next": frame_id(new[-1])})
            self.stacks[e] = self._fresh() if end else new
        f32 = np.float32
        return np.stack(obs), np.arange(self.num_envs), np.array(rew, f32), np.stack(nxt), np.array(term, f32), done

    def expected(self, obs_id: int, n: int) -> tuple[float, int, float, float]:
        """(n-step return, next_obs id, terminated, gamma^m) of the transition whose obs is ``obs_id``."""
        for episodes in self.log:
            pos = {t["id"]: i for i, t in enumerate(episodes)}
            if obs_id in pos:
                i = pos[obs_id]
                ret, m = 0.0, 0
                while m < n and i + m < len(episodes):
                    t = episodes[i + m]
                    ret += GAMMA**m * t["r"]
                    m += 1
                    if t["done"]:
                        break
                last = episodes[i + m - 1]
                return ret, last["next"], float(last["term"]), GAMMA**m
        raise AssertionError(f"obs id {obs_id} was never written")


def frame_id(frame: np.ndarray) -> int:
    return int(frame[0, 0]) + 256 * int(frame[0, 1])


def fill(replay, stream: Stream, steps: int) -> None:
    for _ in range(steps):
        replay.add(*stream.step())


def check(replay, stream: Stream, n: int, samples: int = 400) -> set[int]:
    batch = replay.sample(samples)
    steps_summed = set()
    for i in range(samples):
        ret, nxt, term, disc = stream.expected(frame_id(batch.obs[i, -1].numpy()), n)
        assert batch.rewards[i].item() == pytest.approx(ret, abs=1e-5)
        assert frame_id(batch.next_obs[i, -1].numpy()) == nxt
        assert batch.terminated[i].item() == term
        assert batch.discounts[i].item() == pytest.approx(disc, rel=1e-6)
        steps_summed.add(round(np.log(disc) / np.log(GAMMA)))
    return steps_summed


@pytest.mark.parametrize("kind", ["standard", "frame_stack"])
@pytest.mark.parametrize("num_envs,capacity,n", [(1, 500, 3), (3, 200, 3), (2, 97, 5)])
def test_n_step_returns_match_the_reference_at_terminations_and_truncations(kind, num_envs, capacity, n):
    stream = Stream(num_envs, k=2, seed=capacity + n)
    replay = make_replay(kind, capacity, (2, 3, 3), "uint8", num_envs, seed=3, n_step=n, gamma=GAMMA)
    fill(replay, stream, 3 * capacity // num_envs)  # the ring wraps
    ends = [t for episodes in stream.log for t in episodes if t["done"]]
    assert any(t["term"] for t in ends) and any(not t["term"] for t in ends)
    steps_summed = check(replay, stream, n)
    assert steps_summed == set(range(1, n + 1)), "sums cut short by episode ends and full n-step sums both occur"


@pytest.mark.parametrize("kind", ["standard", "frame_stack"])
def test_sums_stop_at_the_newest_transition_written(kind):
    """Also after the ring has wrapped: the slots past the newest hold stale transitions."""
    stream = Stream(1, k=2, seed=0, end_prob=0.0)  # one long episode: only the newest row stops a sum
    replay = make_replay(kind, 12, (2, 3, 3), "uint8", 1, n_step=4, gamma=GAMMA)
    fill(replay, stream, 40)
    newest = stream.log[0][-1]["id"]
    batch = replay.sample(2000)
    is_newest = torch.tensor([frame_id(o[-1].numpy()) == newest for o in batch.obs])
    # the newest transition sums only itself
    assert is_newest.any() and torch.allclose(batch.discounts[is_newest], torch.tensor(GAMMA))
    assert check(replay, stream, 4, samples=300) == {1, 2, 3, 4}


def test_one_step_replays_keep_the_plain_target():
    replay = ReplayBuffer(10, (2,))
    replay.add(np.ones((1, 2)), np.zeros(1), np.ones(1), np.ones((1, 2)), np.zeros(1), [False])
    assert replay.sample(4).discounts is None


def test_td_target_uses_the_per_sample_discount():
    rewards, terminated = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    next_q = torch.tensor([[1.0, 3.0], [5.0, 0.0]])
    y = td_targets(rewards, terminated, next_q, torch.tensor([0.81, 0.9]))
    assert torch.allclose(y, torch.tensor([1.0 + 0.81 * 3.0, 2.0]))
    # TDTerm picks the batch's discounts over its gamma
    stream = Stream(1, k=2, seed=1)
    replay = ReplayBuffer(100, (2, 3, 3), torch.uint8, n_step=3, gamma=GAMMA)
    fill(replay, stream, 60)
    batch = replay.sample(32)
    zero = lambda o: torch.zeros(len(o), 2)  # noqa: E731
    loss, _ = TDTerm(gamma=0.5, td_loss="mse", double_dqn=False)(torch.zeros(32, 2), batch, zero, zero)
    assert loss.item() == pytest.approx(batch.rewards.pow(2).mean().item(), rel=1e-6)


def test_n_step_needs_episode_ends_and_a_positive_n():
    with pytest.raises(ValueError, match="n_step"):
        ReplayBuffer(10, (2,), n_step=0)
    with pytest.raises(ValueError, match="n_step"):
        FrameStackReplay(10, (2, 3, 3), 1, n_step=0)
    replay = ReplayBuffer(10, (2,), n_step=3)
    with pytest.raises(ValueError, match="done"):
        replay.add(np.ones((1, 2)), np.zeros(1), np.ones(1), np.ones((1, 2)), np.zeros(1))


def test_a_resumed_replay_sums_on_across_the_save_and_not_across_a_reset():
    """Loaded, the replay's n-step sums run on across the save (the envs stepped on mid-episode,
    kdrl.envs.vector_env_state); where a resume resets the envs, ``end_streams`` makes the newest
    stored row of each env end its stream."""
    stream = Stream(2, k=2, seed=4)
    replay = ReplayBuffer(80, (2, 3, 3), torch.uint8, n_step=3, gamma=GAMMA, num_envs=2)
    fill(replay, stream, 30)
    state, at_save = replay.state_dict(), copy.deepcopy(stream)
    continued = ReplayBuffer(80, (2, 3, 3), torch.uint8, n_step=3, gamma=GAMMA, num_envs=2)
    continued.load_state_dict(state)
    newest = (continued.pos - 1 - np.arange(2)) % continued.capacity
    assert not continued.dones[newest].any()  # no episode ended at the save
    fill(continued, at_save, 10)
    check(continued, at_save, 3)
    resumed = ReplayBuffer(80, (2, 3, 3), torch.uint8, n_step=3, gamma=GAMMA, num_envs=2)
    resumed.load_state_dict(state)
    resumed.end_streams()
    assert resumed.dones[newest].all()
    for e in range(2):  # new episodes after the resume
        stream.stacks[e] = stream._fresh()
        stream.log[e][-1]["done"] = True
    fill(resumed, stream, 10)
    check(resumed, stream, 3)
