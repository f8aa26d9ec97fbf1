"""The fast single-env loop (issue 13): every shortcut computes what the plain path computes.

Lean 1-env adapter vs SyncVectorEnv, numpy acting vs the torch forward, greedy only where the
epsilon draw exploits, FlatAdam vs torch's fused Adam, several stream rounds per Lightning step
(evaluations still land where they did), and the actor process (same exploration, same data when
the acting net does not change, reproducible, errors in one line).
"""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import compose_cfg

from kdrl.collector import EnvCollector, greedy_actions
from kdrl.data import build_stream
from kdrl.envs import SingleEnvVector, env_spec, make_env, make_vector_env, transition_next_obs
from kdrl.errors import KdrlUserError
from kdrl.nets import MLP, ConvNet
from kdrl.optim import FlatAdam, build_optimizer
from kdrl.replay import ReplayBuffer
from kdrl.runs.teacher import train_teacher
from kdrl.schedules import LinearSchedule
from kdrl.seeding import seed_ints

CPU = torch.device("cpu")


# ---- the 1-env adapter ---------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["CartPole-v1", "MinAtar/Breakout-v1"])
def test_single_env_vector_steps_exactly_like_sync_vector_env(env_id):
    lean = make_vector_env(env_id, 1, seed=3)
    assert isinstance(lean, SingleEnvVector)
    sync = gym.vector.SyncVectorEnv([lambda: make_env(env_id)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    sync.reset(seed=seed_ints(3, "envs", n=1))
    rng = np.random.default_rng(0)
    episodes = 0
    for t in range(2500):
        actions = rng.integers(lean.single_action_space.n, size=1)
        a, b = lean.step(actions), sync.step(actions)
        for x, y in zip(a[:4], b[:4]):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), t
        done = a[2] | a[3]
        assert np.array_equal(transition_next_obs(a[0], a[4], done), transition_next_obs(b[0], b[4], done)), t
        episodes += int(done.sum())
    assert episodes > 5  # the comparison crossed many episode boundaries
    assert lean.observation_space == sync.observation_space and lean.action_space == sync.action_space


# ---- numpy acting -------------------------------------------------------------------------------
def test_numpy_greedy_matches_the_torch_forward_and_follows_weight_updates():
    torch.manual_seed(0)
    net = MLP((4,), 3, hidden=[64, 32]).eval()
    states = np.random.default_rng(1).normal(size=(4000, 4)).astype(np.float32) * 2
    with torch.no_grad():
        want = net(torch.as_tensor(states)).argmax(1).numpy()
    assert np.array_equal(net.numpy_greedy(states), want)
    assert np.array_equal(greedy_actions(net, states[:1], CPU), want[:1])
    # an optimiser that re-points .data (FlatAdam) and its steps are seen by the numpy views
    opt = FlatAdam(net.parameters(), lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        net(torch.as_tensor(states[:256])).pow(2).mean().backward()
        opt.step()
    with torch.no_grad():
        moved = net(torch.as_tensor(states)).argmax(1).numpy()
    assert not np.array_equal(moved, want)  # the policy changed, and numpy acting follows it
    assert np.array_equal(net.numpy_greedy(states), moved)


def test_numpy_greedy_refuses_what_it_cannot_compute():
    dueling = MLP((4,), 2, hidden=[8], dueling=True)
    assert dueling.numpy_greedy(np.zeros((1, 4), np.float32)) is None
    hooked = MLP((4,), 2, hidden=[8])
    hooked.body[1].register_forward_pre_hook(lambda m, x: (x[0] * 0,))  # e.g. a pruning mask
    assert hooked.numpy_greedy(np.ones((1, 4), np.float32)) is None
    with torch.no_grad():  # and the torch fast path honours the hook too
        assert torch.equal(hooked(torch.ones(1, 4)), hooked.q_head(hooked.body(torch.ones(1, 4))))


def test_fast_mlp_forward_equals_the_module_path_values_and_gradients():
    torch.manual_seed(0)
    a = MLP((4,), 2, hidden=[120, 84])
    b = copy.deepcopy(a)
    x = torch.randn(128, 4)
    a(x).square().sum().backward()
    b.q_head(b.body(x)).square().sum().backward()
    assert torch.equal(a(x), b.q_head(b.body(x)))
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


# ---- epsilon-greedy: the greedy net only where the draw exploits -----------------------------------
def test_collector_takes_the_actions_of_the_plain_epsilon_greedy_rule():
    """The old rule computed greedy actions for every sub-env, then overwrote the explorers; the
    new one asks the net only for the exploiting ones. Same RNG, same actions, fewer forwards."""
    envs = make_vector_env("CartPole-v1", 4, seed=0)
    net = MLP((4,), 2, hidden=[16]).eval()
    asked: list[int] = []

    def greedy(obs):
        asked.append(len(obs))
        return greedy_actions(net, obs, CPU)

    collector = EnvCollector(envs, ReplayBuffer(100, (4,)), greedy, lambda t: 0.5, seed=1)
    shadow = copy.deepcopy(collector.rng)
    for _ in range(200):
        obs = collector.obs
        old = greedy_actions(net, obs, CPU).astype(np.int64)
        explore = shadow.random(4) < 0.5
        if explore.any():
            old[explore] = shadow.integers(2, size=int(explore.sum()))
        assert np.array_equal(collector.select_actions(obs), old)
    assert sum(asked) < 0.6 * 200 * 4  # about half the rows explored and skipped the net


# ---- FlatAdam -------------------------------------------------------------------------------------
def test_flat_adam_follows_torch_fused_adam_and_shares_its_checkpoint_format():
    torch.manual_seed(0)
    a = MLP((4,), 2, hidden=[120, 84])
    b = copy.deepcopy(a)
    ref = torch.optim.Adam(a.parameters(), lr=1e-3, fused=True)
    flat = build_optimizer("adam", lr=1e-3)(b.parameters())
    assert isinstance(flat, FlatAdam)
    for _ in range(300):
        x = torch.randn(64, 4)
        for net, opt in ((a, ref), (b, flat)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    worst = max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    assert worst < 1e-5  # float rounding only (the fused kernel's vector/tail split differs)
    # a FlatAdam checkpoint loads into torch's Adam and back, moments and step count intact
    torch_again = torch.optim.Adam(copy.deepcopy(b).parameters(), lr=1e-3, fused=True)
    torch_again.load_state_dict(flat.state_dict())
    assert float(torch_again.state_dict()["state"][0]["step"]) == 300
    back = FlatAdam(copy.deepcopy(b).parameters(), lr=1e-3)
    back.load_state_dict(ref.state_dict())
    assert torch.equal(back.exp_avg[:480], ref.state_dict()["state"][0]["exp_avg"].reshape(-1))
    assert float(back.step_count) == 300


def test_flat_optimiser_runs_registered_step_hooks():
    net = MLP((4,), 2, hidden=[8])
    opt = FlatAdam(net.parameters(), lr=1e-3)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    net(torch.randn(2, 4)).sum().backward()
    opt.step()
    assert calls == ["pre", "post"]


# ---- several rounds per Lightning step ---------------------------------------------------------------
def test_evaluations_land_where_one_round_per_step_put_them(tmp_path):
    """A Lightning step now spans many stream rounds, but ends at the first round at or past an
    evaluation's env step, exactly where the old one-round-per-step loop evaluated."""
    cfg = compose_cfg(
        "train",
        [
            "experiment=cleanrl_cartpole",
            "algo.total_timesteps=6000",
            "algo.learning_starts=1000",
            "algo.exploration.decay_steps=3000",
            "eval.freq=1234",
            "eval.episodes=2",
            "eval.final_episodes=2",
            "logger=none",
        ],
    )
    res = train_teacher(cfg, tmp_path)
    steps = [h["env_steps"] for h in res["eval_history"]]
    # rounds end every train_freq=10 env steps once learning starts (at 1,000)
    assert steps[:4] == [1240, 2470, 3710, 4940]
    assert steps[-1] == 6000
    assert res["grad_steps"] == (6000 - 1000) // 10 + 1


def test_a_lightning_step_spans_many_updates(tmp_path):
    from kdrl.runs.job import make_trainer
    from kdrl.runs.teacher import build_teacher

    cfg = compose_cfg(
        "train",
        ["experiment=cleanrl_cartpole", "algo.total_timesteps=4000", "algo.learning_starts=500", "logger=none"],
    )
    module, _ = build_teacher(cfg)
    trainer = make_trainer(cfg, [], [], tmp_path)
    trainer.fit(module)
    lightning_steps = trainer.fit_loop.epoch_loop.batch_progress.total.completed
    assert module.stream.grad_steps == (4000 - 500) // 10 + 1
    assert module.env_steps == 4000
    assert 1 <= lightning_steps < module.stream.grad_steps / 10


# ---- the actor process ------------------------------------------------------------------------------
def _stream(actor: str, lr_net: torch.nn.Module, total: int = 3000, seed: int = 0):
    from kdrl.data import StreamConfig

    spec = env_spec(make_env("CartPole-v1"))
    data = StreamConfig(total, 5000, 32, 500, 10, 1)
    return build_stream(
        {"id": "CartPole-v1", "num_envs": 1, "actor": actor},
        spec,
        data,
        lambda obs: greedy_actions(lr_net, obs, CPU),
        LinearSchedule(1.0, 0.05, 2000),
        seed,
        acting_nets=lambda: [lr_net],
    )


def test_actor_process_collects_the_in_process_data_when_the_policy_is_fixed():
    """With weights that do not change, the one-round policy lag is void: the actor process must
    write exactly the transitions, in the same order, that the in-process collector writes."""
    torch.manual_seed(0)
    net = MLP((4,), 2, hidden=[16]).eval()
    runs = {}
    for actor in ("inline", "process"):
        stream = _stream(actor, net)
        batches = [b for b in stream]
        buf = stream.collector.buffer
        runs[actor] = (stream, batches, buf)
    (si, bi, ri), (sp, bp, rp) = runs["inline"], runs["process"]
    assert sp.collector.env_steps == si.collector.env_steps == 3000
    assert sp.grad_steps == si.grad_steps and len(bp) == len(bi)
    for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
        assert torch.equal(getattr(ri, name), getattr(rp, name)), name
    assert all(x is y is None or torch.equal(x, y) for b1, b2 in zip(bi, bp) for x, y in zip(b1, b2))
    assert sp.collector.episodes == si.collector.episodes
    assert sp.collector._proc is None  # the child was stopped when the budget was spent


def test_actor_process_runs_are_reproducible_and_learn(tmp_path):
    overrides = [
        "experiment=cleanrl_cartpole",
        "env.actor=process",
        "algo.total_timesteps=8000",
        "algo.learning_starts=1000",
        "algo.exploration.decay_steps=4000",
        "eval.freq=8000",
        "eval.episodes=3",
        "eval.final_episodes=3",
        "logger=none",
    ]
    a = train_teacher(compose_cfg("train", overrides), tmp_path / "a")
    b = train_teacher(compose_cfg("train", overrides), tmp_path / "b")
    assert a["status"] == b["status"] == "ok"
    assert a["eval_returns"] == b["eval_returns"] and a["episodes"] == b["episodes"]
    assert a["env_steps"] == 8000 and a["grad_steps"] == 701


def test_a_checkpoint_taken_with_a_round_in_flight_is_the_in_process_state():
    """``state_dict()`` (saved at every evaluation) while the actor process collects the next round
    is the run at its current env step, exactly as the in-process collector has it: the round in
    flight is neither recorded nor counted, and stays in flight (audit 4: it was joined, which
    moved the run a round past the evaluation that saved it)."""
    torch.manual_seed(0)
    net = MLP((4,), 2, hidden=[16]).eval()
    inline, process = _stream("inline", net, total=1500), _stream("process", net, total=1500)
    it_i, it_p = iter(inline), iter(process)
    try:
        for _ in range(6):
            next(it_i), next(it_p)
            assert process.collector.pending == 10  # the next round (train_freq=10 steps) is in flight
            si, sp = inline.state_dict(), process.state_dict()
            assert sp["env_steps"] == si["env_steps"] and sp["episodes"] == si["episodes"]
            assert sp["grad_steps"] == si["grad_steps"]
            assert sp["collector_rng"] == si["collector_rng"]  # before the draws of the round in flight
            assert sp["buffer"]["size"] == si["buffer"]["size"]
            assert torch.equal(sp["buffer"]["obs"], si["buffer"]["obs"])
            assert process.collector.pending == 10
    finally:
        process.collector.close()


def test_actor_process_stopped_early_ends_where_the_inline_run_does(tmp_path):
    """An early stop at the first evaluation: the same env steps and one evaluation whichever
    way the envs step (audit 4: the process run reported 1,076 env steps, not 1,012, and
    evaluated a second time at the end)."""
    runs = {}
    for actor in ("inline", "process"):
        overrides = ["debug=fast", f"env.actor={actor}", "eval.freq=1000", "eval.stop_at_return=0", "logger=none"]
        runs[actor] = train_teacher(compose_cfg("train", overrides), tmp_path / actor)
    inline, process = runs["inline"], runs["process"]
    assert inline["status"] == process["status"] == "ok"
    assert inline["env_steps"] == process["env_steps"] == 1012  # 4 envs, rounds of 64 env steps past 500
    assert [h["env_steps"] for h in process["eval_history"]] == [h["env_steps"] for h in inline["eval_history"]]
    assert len(process["eval_history"]) == 1
    assert process["grad_steps"] == inline["grad_steps"]


def test_actor_process_reports_env_errors_in_one_line():
    from kdrl.collector import EnvStepError

    net = MLP((4,), 2, hidden=[8]).eval()
    stream = _stream("process", net)
    collector = stream.collector
    collector.start()

    def boom(actions):
        raise RuntimeError("physics exploded")

    collector.envs.step = boom  # the child was forked before this: it still has the real env
    it = iter(stream)
    next(it)  # the real envs work
    collector.close()
    collector.envs.step = boom
    collector.start()  # a new child with the broken env
    with pytest.raises(EnvStepError, match="physics exploded"):
        next(it)
    collector.close()


def test_actor_process_is_refused_where_acting_keeps_learner_state():
    from kdrl.validate import validate_distill

    with pytest.raises(KdrlUserError, match="env.actor=process runs only with control=student"):
        validate_distill(compose_cfg("distill", ["env=cartpole", "env.actor=process", "control=teacher"]))
    validate_distill(compose_cfg("distill", ["env=cartpole", "env.actor=process", "control=student"]))
    with pytest.raises(KdrlUserError, match="env.actor"):
        from kdrl.validate import validate_common

        validate_common(compose_cfg("train", ["env=cartpole", "env.actor=thread"]))


def test_actor_process_is_accepted_for_a_scratch_baseline_whatever_control_says():
    """A scratch baseline is plain DQN acting with its own net (``control`` is unused, and defaults
    to teacher): env.actor=process is valid for it, and still refused for a distilling student
    that the teacher or the mixed policy drives (audit 10: the scratch baseline was refused)."""
    from kdrl.validate import validate_distill

    for control in ([], ["control=teacher"], ["control=mixed"], ["control=student"]):
        validate_distill(compose_cfg("distill", ["env=cartpole", "env.actor=process", "baseline=scratch", *control]))
    for control in ([], ["control=teacher"], ["control=mixed"]):
        with pytest.raises(KdrlUserError, match="env.actor=process runs only with control=student"):
            validate_distill(compose_cfg("distill", ["env=cartpole", "env.actor=process", *control]))


def test_conv_nets_act_through_torch_in_the_actor_process():
    net = ConvNet((4, 10, 10), 3, [4], [3], [1], [8]).eval()
    assert not hasattr(net, "numpy_greedy")  # conv nets keep the torch forward (oneDNN)
    obs = np.zeros((1, 4, 10, 10), np.uint8)
    assert greedy_actions(net, obs, CPU).shape == (1,)


def test_actor_process_on_a_gpu_net_steps_in_process(monkeypatch):
    """A forked child cannot share the parent's CUDA context: with the acting net off the CPU the
    actor collector steps in-process, exactly as the inline collector (no child, no lag)."""
    from kdrl.actor import ActorCollector

    monkeypatch.setattr(ActorCollector, "_acting_on_cpu", lambda self: False)
    torch.manual_seed(0)
    net = MLP((4,), 2, hidden=[16]).eval()
    inline, gpu_like = _stream("inline", net, total=1500), _stream("process", net, total=1500)
    a, b = list(inline), list(gpu_like)
    assert gpu_like.collector.in_process and gpu_like.collector._proc is None
    assert len(a) == len(b) and all(x is y is None or torch.equal(x, y) for s, t in zip(a, b) for x, y in zip(s, t))


def test_actor_process_gpu_fallback_collects_after_the_updates_as_inline(monkeypatch, caplog):
    """The in-process fallback (acting net on a GPU, simulated) is env.actor=inline: a round is
    stepped after the updates it was launched before, with the updated weights, so collection is
    never ahead of learning and the data equal the inline collector's while the net keeps changing
    (audit 11: the fallback stepped each round at launch, a round ahead, with the old weights)."""
    from kdrl.actor import ActorCollector

    monkeypatch.setattr(ActorCollector, "_acting_on_cpu", lambda self: False)
    torch.manual_seed(0)
    nets = {"inline": MLP((4,), 2, hidden=[16]).eval()}
    nets["process"] = copy.deepcopy(nets["inline"])
    streams = {actor: _stream(actor, net, total=1500) for actor, net in nets.items()}
    iters = {actor: iter(s) for actor, s in streams.items()}
    gens = {actor: torch.Generator().manual_seed(1) for actor in nets}
    fallback = streams["process"].collector
    with caplog.at_level("WARNING", logger="kdrl.actor"):
        rounds = 0
        while True:
            items = {actor: next(it, None) for actor, it in iters.items()}
            if items["inline"] is None:
                assert items["process"] is None
                break
            rounds += 1
            assert fallback.in_process and fallback._proc is None
            # nothing of the next round is collected before the updates below
            assert fallback.env_steps == streams["inline"].collector.env_steps
            assert fallback.buffer.size == streams["inline"].collector.buffer.size
            with torch.no_grad():  # "the updates": the policy changes between rounds
                for actor, net in nets.items():
                    for p in net.parameters():
                        p.add_(torch.randn(p.shape, generator=gens[actor]))
    assert rounds == (1500 - 500) // 10 + 1
    ri, rp = streams["inline"].collector.buffer, fallback.buffer
    assert fallback.env_steps == streams["inline"].collector.env_steps == 1500
    for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
        assert torch.equal(getattr(ri, name), getattr(rp, name)), name
    assert "as env.actor=inline" in caplog.text


def _signal_mask(pid: int, field: str) -> int:
    """A process's SigCgt (caught) or SigIgn (ignored) mask from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _in_mask(mask: int, sig: int) -> bool:
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")
def test_actor_child_leaves_the_jobs_signals_to_the_parent(tmp_path):
    """submitit (SLURM --signal=USR2@90 reaches every process of the job step) and Lightning
    install Python handlers for USR2/USR1/TERM; the forked actor child must not run them (submitit's
    would checkpoint and ``scontrol requeue`` the job a second time): it ignores the job's notices
    (USR1, USR2, INT) and takes SIGTERM's default action, exiting (audit 12: it inherited the
    parent's handlers, SigCgt had TERM/USR1/USR2)."""
    from kdrl.collector import EnvStepError

    handled = tmp_path / "handled"

    def parents_handler(signum, frame):
        with open(handled, "a") as f:
            f.write(f"{os.getpid()} {signum}\n")

    notices = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    saved = {sig: signal.getsignal(sig) for sig in notices}
    for sig in notices:
        signal.signal(sig, parents_handler)
    collector = _stream("process", MLP((4,), 2, hidden=[8]).eval()).collector
    try:
        collector.step()  # the child is in its loop: it set its signals before its first round
        pid = collector._proc.pid
        caught, ignored = _signal_mask(pid, "SigCgt"), _signal_mask(pid, "SigIgn")
        assert [sig.name for sig in notices if _in_mask(caught, sig)] == []
        assert _in_mask(ignored, signal.SIGUSR1) and _in_mask(ignored, signal.SIGUSR2)
        assert _in_mask(ignored, signal.SIGINT)
        assert not _in_mask(ignored, signal.SIGTERM)
        assert all(signal.getsignal(sig) is parents_handler for sig in notices)  # the parent keeps its own
        os.kill(pid, signal.SIGUSR2)  # the time-limit notice: the child carries on
        os.kill(pid, signal.SIGUSR1)
        collector.step()
        assert collector.env_steps == 2 and collector._proc.is_alive()
        os.kill(pid, signal.SIGTERM)  # the child exits on SIGTERM
        collector._proc.join(timeout=5)
        assert collector._proc.exitcode == -signal.SIGTERM
        with pytest.raises(EnvStepError, match=r"the actor process died \(SIGTERM\) at env step 2"):
            collector.step()
        assert not handled.exists()  # the parent's handler never ran in the child
        os.kill(os.getpid(), signal.SIGUSR2)  # control: in the parent it does run
        assert handled.read_text() == f"{os.getpid()} {int(signal.SIGUSR2)}\n"
    finally:
        collector.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
