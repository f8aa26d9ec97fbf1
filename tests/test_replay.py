import numpy as np
import pytest
import torch

from kdrl.replay import ReplayBuffer


def _add(buf, start, n, obs_dim=3):
    obs = np.arange(start, start + n, dtype=np.float32)[:, None].repeat(obs_dim, 1)
    buf.add(
        obs,
        np.arange(start, start + n) % 2,
        np.arange(start, start + n, dtype=np.float32),
        obs + 0.5,
        np.zeros(n, dtype=bool),
    )


def test_wraparound_keeps_latest_in_ring_order():
    buf = ReplayBuffer(5, (3,))
    _add(buf, 0, 3)
    assert len(buf) == 3 and buf.pos == 3
    _add(buf, 3, 4)  # 0..6 written into a ring of 5: slots hold 5,6,2,3,4
    assert len(buf) == 5 and buf.pos == 2
    assert buf.rewards.tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert torch.equal(buf.next_obs[:, 0], buf.obs[:, 0] + 0.5)
    assert buf.actions.tolist() == [1, 0, 0, 1, 0]


def test_sample_only_from_filled_part_and_reproducible():
    buf = ReplayBuffer(100, (3,), seed=7)
    _add(buf, 0, 10)
    batch = buf.sample(1000)
    assert batch.rewards.max() <= 9 and batch.rewards.min() >= 0
    assert len(set(batch.rewards.tolist())) == 10  # all filled slots reachable
    assert torch.equal(batch.next_obs, batch.obs + 0.5)  # rows stay aligned across fields
    buf2 = ReplayBuffer(100, (3,), seed=7)
    _add(buf2, 0, 10)
    assert torch.equal(buf2.sample(1000).rewards, batch.rewards)


def test_state_dict_roundtrip_continues_sampling_identically():
    buf = ReplayBuffer(8, (3,), seed=1)
    _add(buf, 0, 5)
    _add(buf, 5, 6)
    state = buf.state_dict()
    a = buf.sample(16)
    other = ReplayBuffer(8, (3,), seed=99)
    other.load_state_dict(state)
    b = other.sample(16)
    assert other.pos == buf.pos and len(other) == len(buf)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.rewards, b.rewards)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        ReplayBuffer(0, (3,))
    buf = ReplayBuffer(2, (3,))
    with pytest.raises(ValueError):
        _add(buf, 0, 3)
    with pytest.raises(RuntimeError):
        ReplayBuffer(4, (3,)).sample(2)
