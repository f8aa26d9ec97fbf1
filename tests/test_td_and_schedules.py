from types import SimpleNamespace

import pytest
import torch

from kdrl.data import ReplayStream
from kdrl.schedules import LinearSchedule
from kdrl.td import td_error_loss, td_targets, update_target


def test_dqn_targets_by_hand():
    r = torch.tensor([1.0, 0.5, -1.0])
    term = torch.tensor([0.0, 1.0, 0.0])
    next_q_target = torch.tensor([[1.0, 3.0], [10.0, 2.0], [-2.0, -4.0]])
    y = td_targets(r, term, next_q_target, gamma=0.9)
    # 1 + .9*3 ; terminal -> 0.5 ; -1 + .9*(-2)
    assert torch.allclose(y, torch.tensor([3.7, 0.5, -2.8]))


def test_double_dqn_targets_by_hand():
    r = torch.tensor([1.0, 0.0])
    term = torch.tensor([0.0, 0.0])
    next_q_target = torch.tensor([[1.0, 3.0], [5.0, 2.0]])
    next_q_online = torch.tensor([[9.0, 0.0], [0.0, 9.0]])  # online picks a*=0 then a*=1
    y = td_targets(r, term, next_q_target, gamma=0.5, next_q_online=next_q_online)
    assert torch.allclose(y, torch.tensor([1.0 + 0.5 * 1.0, 0.5 * 2.0]))


def test_td_losses():
    q, y = torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0])
    assert td_error_loss(q, y, "mse").item() == pytest.approx((0.25 + 9.0) / 2)
    assert td_error_loss(q, y, "huber").item() == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)
    with pytest.raises(ValueError):
        td_error_loss(q, y, "l3")


def test_polyak_and_hard_target_update():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    update_target(target, online, 0.25)
    assert torch.allclose(target.weight, 0.75 * before + 0.25 * online.weight)
    update_target(target, online, 1.0)
    assert torch.equal(target.weight, online.weight)


def test_linear_schedule():
    s = LinearSchedule(1.0, 0.1, duration=100, delay=50)
    assert s(0) == 1.0 and s(50) == 1.0
    assert s(100) == pytest.approx(0.55)
    assert s(150) == pytest.approx(0.1) and s(10_000) == pytest.approx(0.1)
    assert LinearSchedule(1.0, 0.0, duration=0)(0) == 1.0 and LinearSchedule(1.0, 0.0, 0)(1) == 0.0
    with pytest.raises(ValueError):
        LinearSchedule(1.0, 0.0, duration=-1)


@pytest.mark.parametrize("num_envs", [1, 4, 7])
def test_update_to_data_ratio_is_independent_of_num_envs(num_envs):
    collector = SimpleNamespace(env_steps=0, buffer=None)
    stream = ReplayStream(
        collector, batch_size=32, learning_starts=100, train_freq=10, gradient_steps=2, total_timesteps=10_000
    )
    collector.env_steps = 99
    assert stream.grad_steps_allowed() == 0
    for steps in (100, 109, 110, 1000, 5003):
        collector.env_steps = steps
        assert stream.grad_steps_allowed() == ((steps - 100) // 10 + 1) * 2
