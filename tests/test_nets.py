import numpy as np
import torch

from kdrl.nets import MLP, count_params


def mlp_params(obs_dim, n_actions, width, depth):
    hidden = (obs_dim * width + width) + (depth - 1) * (width * width + width)
    return hidden + width * n_actions + n_actions


def test_param_counts():
    assert count_params(MLP((4,), 2, 256, 2)) == mlp_params(4, 2, 256, 2) == 67_586
    assert count_params(MLP((8,), 4, 64, 3)) == mlp_params(8, 4, 64, 3)


def test_dueling_head_and_features():
    net = MLP((4,), 3, 32, 2, dueling=True)
    x = torch.randn(5, 4)
    assert net.features(x).shape == (5, 32)
    q = net(x)
    adv = net.q_head.advantage(net.features(x))
    v = net.q_head.value(net.features(x))
    assert torch.allclose(q, v + adv - adv.mean(1, keepdim=True), atol=1e-6)
    assert count_params(net) == mlp_params(4, 3, 32, 2) + 33  # + value head


def test_bad_width():
    import pytest

    with pytest.raises(ValueError, match="width"):
        MLP((4,), 2, 0, 2)


def test_explicit_hidden_sizes():
    net = MLP((4,), 2, hidden=[120, 84])
    assert count_params(net) == (4 * 120 + 120) + (120 * 84 + 84) + (84 * 2 + 2)
    assert net.feature_dim == 84 and net(torch.randn(3, 4)).shape == (3, 2)


def test_fast_greedy_path_matches_forward():
    for net in (MLP((4,), 3, 32, 2), MLP((4,), 3, hidden=[20, 10]), MLP((4,), 3, 16, 1, dueling=True)):
        x = torch.randn(64, 4)
        with torch.inference_mode():
            assert torch.equal(net.greedy(x), net(x).argmax(1))


def test_greedy_honours_forward_hooks_on_the_net_a_layer_or_global():
    """The fast greedy paths (torch addmm chain, numpy) skip nn.Module dispatch; with any forward
    hook they must act as the hooked forward does (a Q-negating hook flips every argmax)."""
    from kdrl.collector import greedy_actions

    torch.manual_seed(0)
    net = MLP((4,), 3, 64, 2).eval()
    states = np.random.default_rng(0).normal(size=(5000, 4)).astype(np.float32)
    x = torch.as_tensor(states)
    hooks = [
        lambda: net.register_forward_hook(lambda m, i, q: -q),  # on the net itself
        lambda: net.q_head.register_forward_hook(lambda m, i, q: -q),  # on a layer
        lambda: torch.nn.modules.module.register_module_forward_hook(  # global, on the Q head only
            lambda m, i, q: -q if m is net.q_head else None
        ),
    ]
    with torch.inference_mode():
        plain = net(x).argmax(1)
    for register in hooks:
        handle = register()
        try:
            with torch.inference_mode():
                want = net(x).argmax(1)
                assert (want != plain).float().mean() > 0.99  # the hook changes the policy
                agree = int((net.greedy(x) == want).sum())
                assert agree == 5000  # was 0 of 5,000 with the hook on the net
            assert np.array_equal(greedy_actions(net, states, torch.device("cpu")), want.numpy())
        finally:
            handle.remove()
    with torch.inference_mode():  # hooks removed: the fast paths again, the plain policy
        assert torch.equal(net.greedy(x), plain)
    assert np.array_equal(greedy_actions(net, states, torch.device("cpu")), plain.numpy())


def test_a_job_holds_numpys_blas_to_its_torch_threads_as_well_as_torch():
    """seed_job sets torch_threads for torch and for numpy's BLAS (the numpy acting path is a BLAS call:
    at one thread per core a batch-8 action took ~90x longer here whenever the other core was busy);
    the actions are the same either way."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from kdrl.runs.job import seed_job

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    net = MLP((4,), 2, width=256)
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    threads = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):  # restored on exit, whatever the job set
        assert blas_threads() == {2}
        two = net.numpy_greedy(obs)
        try:
            seed_job(0, 1)
            assert blas_threads() == {1} and torch.get_num_threads() == 1
            np.testing.assert_array_equal(net.numpy_greedy(obs), two)
            seed_job(0, 2)
            assert blas_threads() == {2} and torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(threads)
