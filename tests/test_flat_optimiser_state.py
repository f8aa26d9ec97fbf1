"""The flat optimisers (kdrl.optim) against torch's: checkpoints move between them with their
moments (``optimizer.fused`` switched across a resume), parameter groups step with their own
hyperparameters, and what they cannot take is refused in one line."""

from __future__ import annotations

import copy

import pytest
import torch

from kdrl.nets import MLP
from kdrl.optim import FlatAdam, FlatRMSprop, build_optimizer


def _net(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((4,), 3, hidden=[24, 16])


def _train(net: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 4, generator=gen)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


def _moments(opt: torch.optim.Optimizer, key: str) -> list[torch.Tensor]:
    """Per-parameter moments as the optimiser's own state_dict gives them (torch's format)."""
    state = opt.state_dict()["state"]
    return [state[i][key] for i in range(len(state))]


def _close(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


# ---- RMSprop: fused (flat) <-> torch --------------------------------------------------------------
@pytest.mark.parametrize("centered", [False, True])
def test_flat_rmsprop_checkpoint_resumes_torch_rmsprop_with_its_moments(centered):
    net = _net()
    flat = build_optimizer("rmsprop", lr=1e-3, centered=centered, fused=True)(net.parameters())
    assert isinstance(flat, FlatRMSprop)
    _train(net, flat, 50, seed=1)
    ckpt = copy.deepcopy(flat.state_dict())
    resumed = copy.deepcopy(net)
    torch_opt = build_optimizer("rmsprop", lr=1e-3, centered=centered, fused=False)(resumed.parameters())
    assert type(torch_opt) is torch.optim.RMSprop
    torch_opt.load_state_dict(ckpt)
    state = torch_opt.state_dict()["state"]
    assert len(state) == 6  # was 0: torch's RMSprop restarted its moments from zero
    keys = ["square_avg", "grad_avg"] if centered else ["square_avg"]
    for key in keys:
        want = flat.per_param(getattr(flat, key))
        assert all(torch.equal(a, b) for a, b in zip(_moments(torch_opt, key), want))
    assert all(float(s["step"]) == 50 for s in state.values())
    # both carry on alike (float rounding: flat vector ops against torch's per-tensor ones)
    _train(net, flat, 30, seed=2)
    _train(resumed, torch_opt, 30, seed=2)
    assert _close(net, resumed) < 1e-6


@pytest.mark.parametrize("centered", [False, True])
def test_torch_rmsprop_checkpoint_resumes_flat_rmsprop_with_its_moments(centered):
    net = _net()
    torch_opt = build_optimizer("rmsprop", lr=1e-3, centered=centered, fused=False)(net.parameters())
    _train(net, torch_opt, 50, seed=1)
    resumed = copy.deepcopy(net)
    flat = build_optimizer("rmsprop", lr=1e-3, centered=centered, fused=True)(resumed.parameters())
    flat.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    keys = ["square_avg", "grad_avg"] if centered else ["square_avg"]
    for key in keys:
        got = flat.per_param(getattr(flat, key))
        assert all(torch.equal(a, b) for a, b in zip(got, _moments(torch_opt, key)))  # was all zeros
        assert float(getattr(flat, key).abs().sum()) > 0
    assert flat.steps_taken == 50 and float(flat.state_dict()["state"][0]["step"]) == 50
    _train(net, torch_opt, 30, seed=2)
    _train(resumed, flat, 30, seed=2)
    assert _close(net, resumed) < 1e-6


def test_an_old_flat_rmsprop_checkpoint_still_loads():
    """Checkpoints written before the torch format kept the flat buffers under ``flat``."""
    net = _net()
    flat = FlatRMSprop(net.parameters(), lr=1e-3)
    square = torch.rand_like(flat.square_avg)
    group = {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "centered": False, "params": list(range(6))}
    flat.load_state_dict({"state": {}, "param_groups": [group], "flat": {"square_avg": square, "grad_avg": None}})
    assert torch.equal(flat.square_avg, square)
    _train(net, flat, 1, seed=0)  # and it then writes torch's format, which torch's RMSprop runs
    torch_opt = torch.optim.RMSprop(copy.deepcopy(net).parameters())
    torch_opt.load_state_dict(flat.state_dict())
    assert torch_opt.param_groups[0]["weight_decay"] == 0 and len(torch_opt.state) == 6


# ---- Adam: parameter groups, and checkpoints both ways -------------------------------------------------
def _groups(net: MLP) -> list[dict]:
    body = [p for m in net.body for p in m.parameters()]
    return [{"params": body}, {"params": list(net.q_head.parameters()), "lr": 3e-3, "betas": (0.8, 0.99)}]


def test_flat_adam_steps_parameter_groups_as_torch_adam_does():
    a, b = _net(), _net()
    ref = torch.optim.Adam(_groups(a), lr=1e-3, fused=True)
    flat = FlatAdam(_groups(b), lr=1e-3)  # was AttributeError: 'dict' object has no attribute 'requires_grad'
    assert [g["lr"] for g in flat.param_groups] == [1e-3, 3e-3]
    _train(a, ref, 100, seed=1)
    _train(b, flat, 100, seed=1)
    assert _close(a, b) < 1e-5
    # the second group moved at its own rate: with its lr set to the first's, the run differs
    c = _net()
    same = FlatAdam(c.parameters(), lr=1e-3)
    _train(c, same, 100, seed=1)
    assert float((c.q_head.weight - b.q_head.weight).detach().abs().max()) > 1e-3


def test_flat_adam_and_torch_adam_checkpoints_move_both_ways_with_groups():
    a, b = _net(), _net()
    ref = torch.optim.Adam(_groups(a), lr=1e-3)
    flat = FlatAdam(_groups(b), lr=1e-3)
    _train(a, ref, 40, seed=1)
    _train(b, flat, 40, seed=1)
    # flat -> torch: moments intact, and torch's Adam steps on (its group keys are all there)
    to_torch = copy.deepcopy(b)
    torch_again = torch.optim.Adam(_groups(to_torch), lr=1e-3)
    torch_again.load_state_dict(copy.deepcopy(flat.state_dict()))
    for key in ("exp_avg", "exp_avg_sq"):
        assert all(torch.equal(x, y) for x, y in zip(_moments(torch_again, key), flat.per_param(getattr(flat, key))))
    assert [g["lr"] for g in torch_again.param_groups] == [1e-3, 3e-3]
    # torch -> flat
    to_flat = copy.deepcopy(a)
    flat_again = FlatAdam(_groups(to_flat), lr=1e-3)
    flat_again.load_state_dict(copy.deepcopy(ref.state_dict()))
    for key in ("exp_avg", "exp_avg_sq"):
        assert all(
            torch.equal(x, y) for x, y in zip(flat_again.per_param(getattr(flat_again, key)), _moments(ref, key))
        )
    assert flat_again.steps_taken == 40
    _train(b, flat, 20, seed=2)
    _train(to_torch, torch_again, 20, seed=2)
    _train(a, ref, 20, seed=2)
    _train(to_flat, flat_again, 20, seed=2)
    assert _close(b, to_torch) < 1e-5 and _close(a, to_flat) < 1e-5


def test_torch_adam_steps_on_from_a_flat_adam_checkpoint():
    """``optimizer.fused`` true -> false across a resume: torch's Adam takes the flat checkpoint's
    groups as they are, so they must carry every key its step reads."""
    net = _net()
    flat = build_optimizer("adam", lr=1e-3, fused=True)(net.parameters())
    _train(net, flat, 20, seed=1)
    resumed = copy.deepcopy(net)
    torch_opt = build_optimizer("adam", lr=1e-3, fused=False)(resumed.parameters())
    torch_opt.load_state_dict(copy.deepcopy(flat.state_dict()))
    _train(resumed, torch_opt, 20, seed=2)  # was KeyError: 'weight_decay'
    _train(net, flat, 20, seed=2)
    assert _close(net, resumed) < 1e-5


# ---- what the flat optimisers refuse, in one line ------------------------------------------------------
@pytest.mark.parametrize("cls", [FlatAdam, FlatRMSprop])
def test_nothing_to_train_is_refused_in_one_line(cls):
    frozen = _net().requires_grad_(False)
    with pytest.raises(ValueError, match=r"nothing to train: all 6 parameters given have requires_grad=False") as err:
        cls(frozen.parameters())
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([])
    # a frozen group next to a trainable one is fine: the frozen parameters are left out
    net = _net()
    net.q_head.requires_grad_(False)
    opt = cls([{"params": list(net.body.parameters())}, {"params": list(net.q_head.parameters())}])
    assert [len(g["params"]) for g in opt.param_groups] == [4, 0]
    before = net.q_head.weight.detach().clone()
    _train(net, opt, 3, seed=0)
    assert torch.equal(net.q_head.weight, before)


def test_a_state_the_flat_optimiser_cannot_compute_is_refused_in_one_line():
    net = _net()
    adamw = torch.optim.AdamW(copy.deepcopy(net).parameters(), lr=1e-3, weight_decay=0.01)
    _train(copy.deepcopy(net), adamw, 1, seed=0)
    with pytest.raises(ValueError, match="FlatAdam cannot load this optimiser state: it has no weight decay") as err:
        FlatAdam(net.parameters()).load_state_dict(adamw.state_dict())
    assert "\n" not in str(err.value)
    momentum = torch.optim.RMSprop(copy.deepcopy(net).parameters(), momentum=0.9)
    with pytest.raises(ValueError, match="FlatRMSprop cannot load this optimiser state: it has no momentum"):
        FlatRMSprop(net.parameters()).load_state_dict(momentum.state_dict())
