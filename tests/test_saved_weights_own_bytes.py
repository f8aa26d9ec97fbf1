"""Policy files and ``resources.bytes`` hold a net's own weights only: with the flat optimisers
(kdrl.optim) every trained parameter is a view of one buffer, a student's feature projection
included, and ``torch.save`` of a view writes its whole storage."""

from __future__ import annotations

import torch

from kdrl.io import cpu_weights, load_policy, save_policy
from kdrl.nets import MLP
from kdrl.optim import build_optimizer
from kdrl.resources import state_dict_bytes


def _student_sharing_a_flat_buffer_with_a_projection() -> tuple[MLP, torch.nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = MLP((4,), 2, width=64)  # 4-64-64-2: 4,610 params
    projection = torch.nn.Linear(64, 256)  # a hint loss's feature projection: 16,640 params
    opt = build_optimizer("adam", lr=1e-2)([*net.parameters(), *projection.parameters()])  # FlatAdam
    x = torch.randn(32, 4)
    loss = net(x).pow(2).mean() + projection(net.features(x)).pow(2).mean()
    loss.backward()
    opt.step()
    return net, projection, opt


def test_byte_count_is_the_nets_own_weights_not_the_shared_flat_buffer():
    torch.manual_seed(0)
    alone = state_dict_bytes(MLP((4,), 2, width=64))
    net, _, opt = _student_sharing_a_flat_buffer_with_a_projection()
    assert type(opt).__name__ == "FlatAdam" and net.q_head.weight.untyped_storage().nbytes() == 4 * (4610 + 16640)
    assert alone == 21205
    assert state_dict_bytes(net) == alone  # was 87,145: the projection's 16,640 floats came along


def test_policy_file_holds_the_nets_own_weights_only(tmp_path):
    torch.manual_seed(0)
    save_policy(tmp_path / "alone.pt", MLP((4,), 2, width=64), {"width": 64}, "CartPole-v1", (4,), 2)
    net, _, _ = _student_sharing_a_flat_buffer_with_a_projection()
    path = save_policy(tmp_path / "shared.pt", net, {"width": 64}, "CartPole-v1", (4,), 2)
    assert path.stat().st_size == (tmp_path / "alone.pt").stat().st_size  # was 87,081 B against 21,141 B
    state = load_policy(path)["state_dict"]
    assert sum(v.untyped_storage().nbytes() for v in state.values()) == 4 * 4610
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v)
    # and the copy is not tied to the live buffer
    weights = cpu_weights(net)
    before = weights["q_head.weight"].clone()
    with torch.no_grad():
        net.q_head.weight.add_(1.0)
    assert torch.equal(weights["q_head.weight"], before)
