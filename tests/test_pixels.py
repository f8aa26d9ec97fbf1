"""MinAtar and Atari (ALE) end to end on CPU: envs, conv nets, lean replay, teacher -> student."""

import copy

import numpy as np
import pytest
import torch

from kdrl.envs import EnvError, env_spec, make_env
from kdrl.nets import ConvNet, count_params
from kdrl.optim import FlatRMSprop, build_optimizer
from kdrl.replay import FrameStackReplay, ReplayBuffer
from kdrl.runs.distill import distill_student
from kdrl.runs.teacher import train_teacher
from tests.helpers import compose_cfg

NATURE = dict(kernels=[8, 4, 3], strides=[4, 2, 1])


def test_rusu_compression_family_param_counts():
    """Rusu et al. 2016, Table 2 (18 actions, 84x84x4): teacher and the three students exactly."""
    teacher = count_params(ConvNet((4, 84, 84), 18, [32, 64, 64], hidden=[512], **NATURE))
    sizes = {(16, 32, 32, 256): 427_874, (16, 16, 16, 128): 113_346, (16, 16, 16, 64): 61_954}
    assert teacher == 1_693_362
    for (*ch, fc), expected in sizes.items():
        assert count_params(ConvNet((4, 84, 84), 18, ch, hidden=[fc], **NATURE)) == expected
    assert count_params(ConvNet((4, 84, 84), 18, width_mult=0.5)) == 427_874  # 16-32-32/256 is x0.5
    assert [round(100 * n / teacher, 1) for n in sizes.values()] == [25.3, 6.7, 3.7]


def test_minatar_presets_student_sizes_match_rusu_fractions():
    cfg = compose_cfg("distill", ["env=minatar_breakout", "recipe=minatar"])  # Young & Tian's net as published
    spec = env_spec(make_env(cfg.env.id))
    teacher = count_params(
        ConvNet(spec.obs_shape, spec.n_actions, **{k: v for k, v in cfg.net.items() if k != "_target_"})
    )
    fractions = {}
    for name, size in cfg.student_sizes.items():
        net_cfg = {**{k: v for k, v in cfg.net.items() if k != "_target_"}, **size}
        fractions[name] = count_params(ConvNet(spec.obs_shape, spec.n_actions, **net_cfg)) / teacher
    assert teacher == 132_179  # Young & Tian's net on Breakout's 4 channels, 3 actions
    assert fractions["half"] == pytest.approx(0.5, abs=0.01)
    assert fractions["rusu_25"] == pytest.approx(0.253, abs=0.01)
    assert fractions["rusu_7"] == pytest.approx(0.067, abs=0.01)
    assert fractions["rusu_4"] == pytest.approx(0.037, abs=0.005)


@pytest.mark.parametrize(
    "game", ["minatar_asterix", "minatar_breakout", "minatar_freeway", "minatar_seaquest", "minatar_space_invaders"]
)
def test_the_rusu_regime_recipe_is_as_over_parameterised_as_their_teacher(game):
    """issue 27: recipe=minatar_rusu_regime widens Young & Tian's hidden layer until the teacher has
    Rusu et al.'s 1.69M params (+-2%) and its 7% student >= 100k; the sizes keep their fractions."""
    cfg = compose_cfg("distill", [f"env={game}", "recipe=minatar_rusu_regime"])
    spec = env_spec(make_env(cfg.env.id))
    base = {k: v for k, v in cfg.net.items() if k != "_target_"}
    teacher = count_params(ConvNet(spec.obs_shape, spec.n_actions, **base))
    size = {
        n: count_params(ConvNet(spec.obs_shape, spec.n_actions, **{**base, **s})) for n, s in cfg.student_sizes.items()
    }
    assert teacher == pytest.approx(1_693_362, rel=0.02) and size["full"] == teacher
    assert size["rusu_7"] >= 100_000
    assert size["half"] / teacher == pytest.approx(0.5, abs=0.005)
    assert size["rusu_25"] / teacher == pytest.approx(0.253, abs=0.005)
    assert size["rusu_7"] / teacher == pytest.approx(0.067, abs=0.002)
    assert size["rusu_4"] / teacher == pytest.approx(0.037, abs=0.002)
    assert cfg.algo.batch_size == 128 and cfg.algo.train_freq == 32  # minatar_big_batch's DQN, the net widened


def test_minatar_and_atari_observations_are_channels_first_uint8():
    for env_id, shape in [("MinAtar/Breakout-v1", (4, 10, 10)), ("ALE/Pong-v5", (4, 84, 84))]:
        env = make_env(env_id)
        obs, _ = env.reset(seed=0)
        assert obs.shape == shape and obs.dtype == np.uint8
        assert env_spec(env).obs_dtype == "uint8"
        env.close()
    with pytest.raises(EnvError, match="preprocess is for ALE"):
        make_env("CartPole-v1", {"preprocess": {"frame_stack": 4}})
    with pytest.raises(EnvError, match="unknown Atari preprocess"):
        make_env("ALE/Pong-v5", {"preprocess": {"frame_stak": 4}})


def test_flat_rmsprop_equals_torch_centred_rmsprop():
    torch.manual_seed(0)
    a = ConvNet((4, 10, 10), 3, [16], [3], [1], [128])
    b = copy.deepcopy(a)
    opt_a = torch.optim.RMSprop(a.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    opt_b = build_optimizer("rmsprop", lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)(b.parameters())
    assert isinstance(opt_b, FlatRMSprop)
    for i in range(10):
        x = torch.randint(0, 2, (32, 4, 10, 10), dtype=torch.uint8)
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad(set_to_none=True)
            if i % 3 == 1:  # a trainer that resets .grad behind the optimiser's back (Lightning does)
                for p in net.parameters():
                    p.grad = None
            net(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    state = opt_b.state_dict()  # resumable: optimiser state survives a round trip
    opt_c = build_optimizer("rmsprop", lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)(copy.deepcopy(b).parameters())
    opt_c.load_state_dict(state)
    torch.testing.assert_close(opt_c.square_avg, opt_b.square_avg)


def _tiny(extra):
    return [
        "logger=none",
        "trainer.enable_progress_bar=false",
        "eval.episodes=1",
        "eval.final_episodes=2",
        "eval.reference_episodes=2",  # the teacher reference: 100 pixel episodes would cost minutes here
        "resume=false",
        *extra,
    ]


def test_minatar_teacher_then_compressed_student(tmp_path):
    from kdrl.runs.job import seed_job
    from kdrl.runs.teacher import build_teacher

    t_cfg = compose_cfg(
        "train",
        _tiny(
            [
                "env=minatar_breakout",
                "recipe=minatar",
                "algo.total_timesteps=4000",
                "algo.learning_starts=1000",
                "eval.freq=2000",
            ]
        ),
    )
    seed_job(t_cfg.seed, t_cfg.torch_threads)  # as train_teacher does: the same initial weights
    initial = {k: v.clone() for k, v in build_teacher(t_cfg)[0].q_net.state_dict().items()}
    t_res = train_teacher(t_cfg, tmp_path / "teacher")
    trained = torch.load(tmp_path / "teacher" / "checkpoints" / "last_policy.pt", weights_only=True)["state_dict"]
    for name, value in trained.items():  # every layer learnt (the optimiser really stepped under Lightning)
        assert (value - initial[name]).abs().max() > 1e-4, name
    assert t_res["status"] == "ok" and t_res["params"] == 132_179 and t_res["env_steps"] == 4000
    s_cfg = compose_cfg(
        "distill",
        _tiny(
            [
                "env=minatar_breakout",
                "recipe=minatar",
                f"teacher.checkpoint={tmp_path / 'teacher' / 'teacher.pt'}",
                "student.size=rusu_4",
                "distill.total_timesteps=2000",
                "distill.learning_starts=500",
                "eval.freq=1000",
                "eval.generalisation_episodes=1",
                "eval.agreement_states=200",
            ]
        ),
    )
    s_res = distill_student(s_cfg, tmp_path / "student")
    assert s_res["status"] == "ok" and s_res["student_size"] == "rusu_4"
    assert s_res["param_ratio"] == pytest.approx(0.0365, abs=0.002)
    assert len(s_res["teacher_returns"]) == 2 and np.isfinite(s_res["eval_return_mean"])


def test_pong_runs_end_to_end_on_cpu(tmp_path):
    """Pong: Atari preprocessing, Nature CNN, FrameStackReplay, reward clipping, teacher -> student."""
    cap = ["+env.kwargs.max_episode_steps=800"]  # raw frames: 200 agent steps per evaluation episode, truncated
    t_cfg = compose_cfg(
        "train",
        _tiny(
            [
                "env=atari_pong",
                "algo.total_timesteps=1600",
                "algo.learning_starts=800",
                "algo.buffer_size=4000",
                "algo.batch_size=8",
                "algo.train_freq=8",
                "eval.freq=1600",
                *cap,
            ]
        ),
    )
    t_res = train_teacher(t_cfg, tmp_path / "teacher")
    assert t_res["status"] == "ok" and t_res["env_steps"] == 1600
    assert t_res["params"] == 1_687_206  # Nature CNN with Pong's 6 actions
    assert -21 <= t_res["eval_return_mean"] <= 21
    s_cfg = compose_cfg(
        "distill",
        _tiny(
            [
                "env=atari_pong",
                f"teacher.checkpoint={tmp_path / 'teacher' / 'teacher.pt'}",
                "student.size=rusu_7",
                "distill.total_timesteps=800",
                "distill.learning_starts=400",
                "distill.buffer_size=2000",
                "distill.batch_size=8",
                "distill.train_freq=8",
                "eval.freq=800",
                "eval.generalisation_episodes=1",
                "eval.agreement_states=100",
                *cap,
            ]
        ),
    )
    s_res = distill_student(s_cfg, tmp_path / "student")
    assert s_res["status"] == "ok" and s_res["param_ratio"] == pytest.approx(0.067, abs=0.002)


def test_auto_replay_is_lean_for_pixels_only():
    from kdrl.replay import make_replay

    assert isinstance(make_replay("auto", 1000, (4, 84, 84), "uint8", 2), FrameStackReplay)
    assert isinstance(make_replay("auto", 1000, (4, 10, 10), "uint8", 2), ReplayBuffer)
    assert make_replay("auto", 1000, (4, 10, 10), "uint8", 2).obs.dtype == torch.uint8
    with pytest.raises(ValueError, match="unknown replay kind"):
        make_replay("lean", 1000, (4,), "float32", 1)
