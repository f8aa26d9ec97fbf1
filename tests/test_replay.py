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


@pytest.mark.parametrize(
    "kind,shape,dtype,num_envs",
    [("standard", (4,), "float32", 1), ("auto", (4, 10, 10), "uint8", 3), ("auto", (4, 84, 84), "uint8", 2)],
)
def test_replay_nbytes_is_what_make_replay_allocates(kind, shape, dtype, num_envs):
    """The config check (kdrl.validate: a replay that cannot fit) sizes replays without building them."""
    from kdrl.replay import make_replay, replay_nbytes

    buf = make_replay(kind, 1000, shape, dtype, num_envs)
    arrays = [v for v in vars(buf).values() if isinstance(v, (torch.Tensor, np.ndarray))]
    allocated = sum(a.numel() * a.element_size() if isinstance(a, torch.Tensor) else a.nbytes for a in arrays)
    shared = sum(a.nbytes for a in arrays if isinstance(a, np.ndarray) and not a.flags.owndata)  # numpy views
    assert replay_nbytes(kind, 1000, shape, dtype, num_envs) == allocated - shared


def _gb_machine(monkeypatch, gb):
    import kdrl.validate

    monkeypatch.setattr(kdrl.validate, "available_memory", lambda: (int(gb * 1e9), "a test machine"))


def test_a_replay_that_cannot_fit_is_refused_up_front(monkeypatch):
    """issue: env=minatar_breakout algo.buffer_size=2000000000 failed after setup with the allocator's
    `you tried to allocate 800000000000 bytes`."""
    from kdrl.validate import ConfigError, validate_common, validate_distill, validate_multitask
    from tests.helpers import compose_cfg

    _gb_machine(monkeypatch, 64)
    cfg = compose_cfg("train", ["env=minatar_breakout", "recipe=minatar", "algo.buffer_size=2000000000"])
    with pytest.raises(ConfigError) as err:
        validate_common(cfg)
    msg = str(err.value)
    assert "algo.buffer_size=2,000,000,000 needs a standard replay of 1634.0 GB" in msg, msg
    assert "64.0 GB this machine has (a test machine)" in msg and "lower algo.buffer_size (about 78,000,000 fit)" in msg
    assert "frame_stack" not in msg  # MinAtar's channels are not stacked frames
    validate_common(compose_cfg("train", ["env=minatar_breakout"]))  # the recipe's replay fits
    # stacked Atari frames kept whole: the frame-stack replay is named, with its size
    cfg = compose_cfg("distill", ["env=atari_pong", "distill.replay=standard", "distill.buffer_size=2000000"])
    with pytest.raises(ConfigError, match=r"distill.replay=frame_stack, which stores each frame once \(14.1 GB\)"):
        validate_distill(cfg)
    # a given teacher: the teacher's replay is not built, so not checked
    validate_distill(compose_cfg("distill", ["algo.buffer_size=1000000000000", "teacher.checkpoint=t.pt"]))
    with pytest.raises(ConfigError, match="multitask.buffer_size=1,000,000,000 needs 2 standard replays, one per task"):
        validate_multitask(compose_cfg("multitask", ["multitask.buffer_size=1000000000"]))
