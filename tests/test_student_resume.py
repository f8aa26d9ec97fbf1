"""A resumed hybrid/QDagger student continues where it stopped: target schedule, lambda, the
who-acts counters (DistillStudent saved none of its own state before)."""

import copy

import pytest
import torch
from hydra.utils import instantiate

from kdrl.envs import probe_spec
from kdrl.quantize import is_int8_representable
from kdrl.runs.distill import build_student_module
from kdrl.runs.job import plain, seed_job
from tests.helpers import compose_cfg

OVERRIDES = [
    "logger=none",
    "distill.total_timesteps=4000",
    "distill.learning_starts=200",
    "distill.batch_size=32",
    "distill.target_update_interval=300",
    "student.width=16",
    "control=mixed",
]


def _student(loss: str):
    cfg = compose_cfg("distill", [f"loss={loss}", *OVERRIDES])
    seed_job(cfg.seed, 1)
    spec = probe_spec(plain(cfg.env))
    teacher = instantiate(cfg.net, obs_shape=spec.obs_shape, n_actions=spec.n_actions)
    net_cfg = {**plain(cfg.net), "width": 16}
    module = build_student_module(cfg, spec, teacher, net_cfg)
    module.setup("fit")
    return module, module.configure_optimizers()


def _train(module, opt, batches, it):
    for _ in range(batches):
        module.run_updates(opt, next(it))


def _checkpoint(module, opt):
    ckpt = copy.deepcopy({"state_dict": module.state_dict(), "optimizer": opt.state_dict()})
    module.on_save_checkpoint(ckpt)
    return ckpt


@pytest.mark.parametrize("loss", ["qdagger", "hybrid"])
def test_resumed_hybrid_student_restores_target_schedule_and_lambda(loss):
    a, opt_a = _student(loss)
    it_a = iter(a.stream)
    _train(a, opt_a, 60, it_a)
    a.on_greedy_evaluation(student_return=40.0, teacher_return=160.0, random_return=0.0)  # QDagger: lambda 0.75
    assert a.target.updates >= 2  # the target schedule has moved on from its start
    ckpt = _checkpoint(a, opt_a)

    b, opt_b = _student(loss)  # a fresh process: everything at its initial state
    b.load_state_dict(ckpt["state_dict"])
    b.on_load_checkpoint(ckpt)
    opt_b.load_state_dict(ckpt["optimizer"])
    assert (b.target.next_update, b.target.updates) == (a.target.next_update, a.target.updates)
    lam = a.objective.distill_weight(a.env_steps)
    assert b.objective.distill_weight(b.env_steps) == lam
    if loss == "qdagger":
        assert lam == pytest.approx(0.75)
    assert b.teacher_acted == a.teacher_acted and b.resumed_from_env_steps == a.env_steps

    assert b.target.next_update % 300 == 0 and b.env_steps < b.target.next_update <= b.env_steps + 300

    # the resumed run continues the same schedules
    before = b.target.updates
    _train(b, opt_b, 40, iter(b.stream))
    assert b.target.updates == before + (b.env_steps // 300 - a.env_steps // 300)
    if loss == "qdagger":  # lambda stays at the last evaluation's value until the next one
        assert b.objective.distill_weight(b.env_steps) == pytest.approx(0.75)


def test_hybrid_td_term_follows_the_teachers_dqn_settings():
    """The hybrid student's TD term and target network take algo's td_loss, double_dqn and tau (it used
    to be Huber, Double DQN and a hard copy whatever algo said)."""
    cfg = compose_cfg(
        "distill", ["loss=qdagger", "algo.td_loss=mse", "algo.double_dqn=false", "algo.tau=0.5", *OVERRIDES]
    )
    spec = probe_spec(plain(cfg.env))
    teacher = instantiate(cfg.net, obs_shape=spec.obs_shape, n_actions=spec.n_actions)
    module = build_student_module(cfg, spec, teacher, {**plain(cfg.net), "width": 16})
    td = module.objective.td
    assert (td.td_loss, td.double_dqn, td.gamma) == ("mse", False, cfg.algo.gamma)
    assert module.target.tau == 0.5 and module.target.interval == 300


def _int8_student_factory(extra: list[str]):
    cfg = compose_cfg("distill", [*OVERRIDES, *extra, "distill.quantize.int8=true", "distill.quantize.at=0.25"])
    seed_job(cfg.seed, 1)
    spec = probe_spec(plain(cfg.env))
    teacher = instantiate(cfg.net, obs_shape=spec.obs_shape, n_actions=spec.n_actions)

    def student():
        module = build_student_module(cfg, spec, teacher, {**plain(cfg.net), "width": 16})
        module.setup("fit")
        return module, module.configure_optimizers()

    return student


def test_resumed_int8_student_keeps_its_master_weights():
    """A quantisation-aware student resumed after its int8 point goes on from the float masters, not
    from the rounded weights (which would lose every update below half a step so far)."""
    student = _int8_student_factory([])
    a, opt_a = student()
    it_a = iter(a.stream)
    for _ in range(60):
        a.learn(opt_a, next(it_a))  # learn: where the int8 point is checked
    assert a.int8.qat is not None and a.selection_phase == 1
    masters = {k: v.clone() for k, v in a.int8.qat.master.items()}
    params = dict(a.q_net.named_parameters())
    assert any(not torch.equal(m, params[k]) for k, m in masters.items())  # masters are off the int8 grid
    ckpt = _checkpoint(a, opt_a)

    b, opt_b = student()
    b.load_state_dict(ckpt["state_dict"])
    b.on_load_checkpoint(ckpt)
    opt_b.load_state_dict(ckpt["optimizer"])
    assert b.int8.qat is not None and b.selection_phase == 1 and b.int8.report == a.int8.report
    assert all(torch.equal(b.int8.qat.master[k], m) for k, m in masters.items())
    batches = [next(it_a) for _ in range(5)]
    for batch in batches:  # both take the same further steps on the same batches
        a.learn(opt_a, batch)
        b.learn(opt_b, batch)
    assert all(torch.equal(x, y) for x, y in zip(a.q_net.state_dict().values(), b.q_net.state_dict().values()))


def test_hybrid_td_target_copies_the_int8_weights():
    """The target net syncs after the rounding, so it holds the weights the student acts with."""
    a, opt = _int8_student_factory(["loss=hybrid"])()
    it = iter(a.stream)
    while a.int8.qat is None:
        a.learn(opt, next(it))
    synced = a.target.updates
    for _ in range(400):  # on to the first target sync after the int8 point
        if a.target.updates > synced:
            break
        a.learn(opt, next(it))
    assert a.target.updates > synced and is_int8_representable(a.target.net)
