"""kdrl-multitask: the multi-task net, both training modes end to end, and that distillation works.

The teachers here are hand-written linear policies stored as ordinary kdrl policy checkpoints
(a 2-unit MLP whose Q-values are relu(w.s) and relu(-w.s)): CartPole (push towards where the
pole falls: 500 on every held-out seed) and Acrobot (torque with the second joint's velocity: about
-100, against -500 for a random policy). They take no training, so the tests can afford a real
distillation run and still check that the student gets most of the way to each teacher.
"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kdrl.cli.multitask_table import collect_multitask
from kdrl.cli.multitask_table import main as table_main
from kdrl.envs import EnvSpec
from kdrl.io import load_multitask_policy, save_policy
from kdrl.nets import MLP, MultiTaskQNetwork, TaskView, build_multitask_net, count_params, task_params
from kdrl.runs.multitask import multitask_job
from kdrl.scores import mean_pcts, pct_of_teacher, teacher_beats_random
from tests.helpers import compose_cfg
from tests.zygote import run_app

TINY = ["debug=fast", "student.width=32", "trainer.enable_progress_bar=false"]


def linear_teacher(path: Path, env_id: str, obs_dim: int, n_actions: int, w: list[float], pos: int, neg: int) -> Path:
    """A kdrl MLP checkpoint acting `pos` when w.s > 0 and `neg` otherwise (other actions: Q = -1)."""
    net = MLP((obs_dim,), n_actions, hidden=[2])
    hidden, head = [m for m in net.modules() if isinstance(m, nn.Linear)]
    wt = 10.0 * torch.tensor(w, dtype=torch.float32)
    with torch.no_grad():
        hidden.weight.copy_(torch.stack([wt, -wt]))
        hidden.bias.zero_()
        head.weight.zero_()
        head.bias.fill_(-1.0)
        head.weight[pos, 0], head.bias[pos] = 1.0, 0.0
        head.weight[neg, 1], head.bias[neg] = 1.0, 0.0
    cfg = {"_target_": "kdrl.nets.MLP", "width": 2, "depth": 1, "dueling": False, "hidden": [2]}
    return save_policy(path, net, cfg, env_id, (obs_dim,), n_actions)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("teachers")
    cp = linear_teacher(d / "cartpole.pt", "CartPole-v1", 4, 2, [0, 0, 1, 0.3], pos=1, neg=0)
    ac = linear_teacher(d / "acrobot.pt", "Acrobot-v1", 6, 3, [0, 0, 0, 0, 0, 1], pos=2, neg=0)
    return [f"teacher.checkpoints={{cartpole:{cp},acrobot:{ac}}}"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, teachers) -> dict[str, Path]:
    """One tiny run of each mode (shared by the tests that read their files)."""
    root = tmp_path_factory.mktemp("runs")
    for mode in ("distill", "joint_dqn"):
        multitask_job(compose_cfg("multitask", TINY + teachers + [f"mode={mode}"]), root / mode)
    return {mode: root / mode for mode in ("distill", "joint_dqn")}


# ---- the network -----------------------------------------------------------------------------------
def test_per_task_adapters_shared_trunk_and_heads_with_their_own_action_counts():
    net = MultiTaskQNetwork([(4,), (6,)], [2, 3], width=8, depth=2, adapter="linear")
    assert net(torch.zeros(5, 4), 0).shape == (5, 2) and net(torch.zeros(5, 6), 1).shape == (5, 3)
    adapters, trunk, heads = (4 * 8 + 8) + (6 * 8 + 8), 8 * 8 + 8, (8 * 2 + 2) + (8 * 3 + 3)
    assert count_params(net) == adapters + trunk + heads == 213
    assert task_params(net, 0) == 40 + 72 + 18 and task_params(net, 1) == 56 + 72 + 27
    pad = MultiTaskQNetwork([(4,), (6,)], [2, 3], width=8, depth=2, adapter="pad")
    assert count_params(pad) == (6 + 2) * 8 + 8 + trunk + heads == 189
    # padded inputs carry the task id: the same numbers give different features for different tasks
    x = torch.zeros(1, 4)
    assert not torch.equal(pad.features(x, 0), pad.features(torch.zeros(1, 6), 1))
    # MinAtar-like (C, 10, 10) grids with 4 and 10 channels: one conv over padded channels + task planes,
    # or a first conv per task; then the shared FC layer and the heads
    conv = {"channels": [16], "kernels": [3], "strides": [1]}
    fc, grid_heads = 16 * 8 * 8 * 16 + 16, (16 * 3 + 3) + (16 * 6 + 6)
    shared = MultiTaskQNetwork([(4, 10, 10), (10, 10, 10)], [3, 6], width=16, depth=1, adapter="pad", conv=conv)
    assert shared(torch.zeros(2, 4, 10, 10), 0).shape == (2, 3) and shared(torch.zeros(2, 10, 10, 10), 1).shape == (
        2,
        6,
    )
    assert count_params(shared) == (10 + 2) * 16 * 9 + 16 + fc + grid_heads
    per_task = MultiTaskQNetwork([(4, 10, 10), (10, 10, 10)], [3, 6], width=16, depth=1, adapter="linear", conv=conv)
    assert count_params(per_task) == (4 * 16 * 9 + 16) + (10 * 16 * 9 + 16) + fc + grid_heads
    specs = [EnvSpec("CartPole-v1", (4,), 2), EnvSpec("Acrobot-v1", (6,), 3)]
    rebuilt = build_multitask_net(net.config(), specs)
    rebuilt.load_state_dict(net.state_dict())  # same layout: strict loading succeeds
    assert count_params(rebuilt) == 213
    with pytest.raises(ValueError, match="one observation shape and one action count per task"):
        MultiTaskQNetwork([(4,)], [2, 3])
    with pytest.raises(ValueError, match="unknown adapter"):
        MultiTaskQNetwork([(4,)], [2], adapter="concat")
    with pytest.raises(ValueError, match="one rank"):
        MultiTaskQNetwork([(4,), (4, 10, 10)], [2, 3], adapter="pad")


def test_a_task_loss_trains_its_adapter_the_trunk_and_its_head_only():
    net = MultiTaskQNetwork([(4,), (6,)], [2, 3], width=8, depth=2)
    net(torch.randn(16, 4), 0).pow(2).sum().backward()
    assert net.inputs[0].weight.grad is not None and net.heads[0].weight.grad is not None
    assert all(p.grad is not None for p in net.trunk.parameters())
    assert net.inputs[1].weight.grad is None and net.heads[1].weight.grad is None


def test_task_view_is_a_single_task_q_network():
    net = MultiTaskQNetwork([(4,), (6,)], [2, 3], width=8, depth=2)
    view = TaskView(net, 1)
    obs = torch.randn(7, 6)
    assert torch.equal(view(obs), net(obs, 1)) and torch.equal(view.greedy(obs), net(obs, 1).argmax(1))


def test_percent_of_teacher_is_normalised_by_a_random_policy():
    assert pct_of_teacher(-100.0, -100.0, -500.0) == pytest.approx(100.0)  # Acrobot: negative returns
    assert pct_of_teacher(-300.0, -100.0, -500.0) == pytest.approx(50.0)
    assert pct_of_teacher(22.0, 500.0, 22.0) == pytest.approx(0.0)
    mean, geo = mean_pcts([100.0, 25.0])
    assert mean == pytest.approx(62.5) and geo == pytest.approx(50.0)
    assert mean_pcts([100.0, -5.0])[1] == pytest.approx(10.0)  # floored at 1%


# ---- both modes end to end -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["distill", "joint_dqn"])
def test_tiny_run_writes_one_entry_per_task(tiny_runs, mode):
    res = json.loads((tiny_runs[mode] / "results.json").read_text())
    assert res["status"] == "ok" and res["kind"] == "multitask" and res["mode"] == mode
    assert res["method"] == ("kl (tau=0.01)" if mode == "distill" else "joint_dqn")
    assert list(res["tasks"]) == ["cartpole", "acrobot"] and res["env_id"] == "CartPole-v1+Acrobot-v1"
    for name, env_id in (("cartpole", "CartPole-v1"), ("acrobot", "Acrobot-v1")):
        t = res["tasks"][name]
        assert t["env_id"] == env_id and len(t["eval_returns"]) == len(t["teacher_returns"]) == 3
        # the score's T and R: the task teacher's reference, stored next to its file, computed once for both modes
        (ref,) = json.loads(Path(t["teacher_checkpoint"] + ".reference.json").read_text())["references"]
        assert ref["episodes"] == t["teacher_reference"]["episodes"] == 20  # debug=fast
        assert t["teacher_reference"]["return_mean"] == ref["teacher"]["mean"]
        assert t["teacher_beats_random"] is teacher_beats_random(ref["teacher"]["returns"], ref["random"]["returns"])
        assert t["pct_of_teacher"] == pytest.approx(
            pct_of_teacher(t["eval_return_mean"], ref["teacher"]["mean"], ref["random"]["mean"])
        )
        assert t["env_steps"] >= 1200 - 4  # the same per-task budget in both modes
    assert res["mean_pct_of_teacher"] == pytest.approx(sum(t["pct_of_teacher"] for t in res["tasks"].values()) / 2)
    # return_ratio means the raw ratio S / T wherever it appears (per task); the mean score has its own key
    assert "return_ratio" not in res and res["normalized_score"] == pytest.approx(
        res["mean_pct_of_teacher"] / 100, nan_ok=True
    )
    assert res["params"] == count_params(MultiTaskQNetwork([(4,), (6,)], [2, 3], width=32, depth=2))
    state = load_multitask_policy(tiny_runs[mode] / "student.pt", ["CartPole-v1", "Acrobot-v1"])
    assert [t["name"] for t in state["tasks"]] == ["cartpole", "acrobot"]
    header = (tiny_runs[mode] / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "eval/cartpole/pct_of_teacher" in header and "eval/acrobot/return_mean" in header


def test_table_has_a_row_per_method_and_a_column_per_task(tiny_runs, capsys):
    df = collect_multitask([tiny_runs["distill"].parent])
    assert set(df["method"]) == {"kl (tau=0.01)", "joint_dqn"}
    assert table_main([str(tiny_runs["distill"].parent)]) == 0
    out = capsys.readouterr().out
    assert "| method | cartpole | acrobot | mean over tasks | geomean over tasks |" in out
    assert "joint_dqn (n=1)" in out and "2 ok runs, 0 failed" in out


def test_bad_mode_fails_in_one_line():
    proc = run_app("multitask", ["mode=dagger", "logger=none"], timeout=120)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("kdrl-multitask: error: mode must be one of distill, joint_dqn, got 'dagger'")
    )


# ---- distillation works ----------------------------------------------------------------------------
def test_kl_student_gets_most_of_the_way_to_each_teacher(tmp_path, teachers):
    """3000 teacher-driven env steps per task: a working multi-task student scores >= 60% of each
    teacher on 10 held-out seeds (0% = random, which an untrained or head-swapped net stays near)."""
    cfg = compose_cfg(
        "multitask",
        [
            "debug=fast",
            "student.width=64",
            "multitask.steps_per_task=3000",
            "multitask.batch_size=64",
            "eval.freq=1500",
            "eval.episodes=3",
            "eval.final_episodes=10",
            "eval.final_policy=last",
            *teachers,
        ],
    )
    res = multitask_job(cfg, tmp_path)
    pcts = {name: t["pct_of_teacher"] for name, t in res["tasks"].items()}
    assert min(pcts.values()) >= 60.0, pcts
    assert res["tasks"]["cartpole"]["eval_return_mean"] >= 300 and res["tasks"]["acrobot"]["eval_return_mean"] >= -250


def test_joint_dqn_learns_from_n_step_returns_as_single_task_dqn_does():
    """``dqn.n_step=3``: each task's replay serves 3-step returns discounted by ``dqn.gamma`` and the
    TD loss bootstraps with gamma^m, the single-task DQN's machinery (kdrl.replay, kdrl.td)."""
    import torch.nn.functional as F

    from kdrl.data import TaskEnv
    from kdrl.modules.multitask import JointMultiTaskDQN
    from kdrl.optim import build_optimizer
    from kdrl.runs.job import plain

    cfg = compose_cfg("multitask", ["mode=joint_dqn", "dqn.n_step=3", "dqn.gamma=0.9", "multitask.update=sum"])
    specs = [EnvSpec("CartPole-v1", (4,), 2), EnvSpec("Acrobot-v1", (6,), 3)]
    tasks = [TaskEnv(n, s, {"id": s.env_id, "num_envs": 2}) for n, s in zip(("cartpole", "acrobot"), specs)]
    torch.manual_seed(0)
    net = build_multitask_net({"width": 16, "depth": 2}, specs)
    data, dqn = plain(cfg.multitask), plain(cfg.dqn)
    module = JointMultiTaskDQN(net, tasks, data, dqn, build_optimizer(**data["optimizer"]), update="sum", seed=3)
    module.setup("fit")
    for c in module.collectors:
        while c.env_steps < 600:
            c.step()
    for task, c in enumerate(module.collectors):
        assert c.buffer.n_step == 3 and c.buffer.gamma == 0.9  # was 1 and 0.99: one-step returns
        batch = c.buffer.sample_stack(1, 256).at(0)
        assert batch.discounts is not None
        d = batch.discounts
        assert torch.isclose(d[:, None], torch.tensor([0.9, 0.81, 0.729])[None]).any(1).all()  # gamma^m, m <= 3
        assert (d == d.min()).float().mean() > 0.8 and torch.isclose(d.min(), torch.tensor(0.729))
        # every step pays 1 (CartPole) or -1 (Acrobot, 0 on reaching the goal): r = sum_j 0.9^j r_j
        m_step_sum = (1 - d) / (1 - 0.9)
        if task == 0:
            assert torch.allclose(batch.rewards, m_step_sum)
        else:
            assert torch.allclose(batch.rewards[batch.terminated == 0], -m_step_sum[batch.terminated == 0])
        # the TD loss is the n-step Double-DQN target, bootstrapped with gamma^m
        with torch.no_grad():
            q_next = net(batch.next_obs, task)
            v_next = module.target(batch.next_obs, task).gather(1, q_next.argmax(1, keepdim=True)).squeeze(1)
            y = batch.rewards + d * (1 - batch.terminated) * v_next
            q = net(batch.obs, task).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
            assert torch.allclose(module.task_loss(task, batch)["td_loss"], F.smooth_l1_loss(q, y))


def runs_as_stages(sdir, runs: dict) -> dict:
    """A study dir at ``sdir`` whose stage <name> (app multitask) holds runs[name] as its one finished job
    (seed=0), its index.json written; the stages' declarations."""
    import shutil

    from kdrl.study import Index

    rows = {}
    for stage, path in runs.items():
        shutil.copytree(path, sdir / stage / "seed=0")
        rows[f"{stage}/seed=0"] = {
            "id": f"{stage}/seed=0", "stage": stage, "app": "multitask", "name": "seed=0", "hash": "x",
            "run_dir": f"{stage}/seed=0", "overrides": [], "needs": [], "status": "ok", "since": 0.0,
        }  # fmt: skip
    Index(sdir / "index.json", {"study": "mt"}, rows).save()
    return {stage: {"app": "multitask"} for stage in runs}


def test_a_multitask_tables_stage_labels_name_its_methods(tiny_runs, tmp_path):
    """Two stages of one method (the joint DQN at two budgets) are two rows under their stage_labels; a stage
    without a label keeps its runs' method."""
    import pandas as pd

    from kdrl.study import Runner

    sdir = tmp_path / "study"
    runs = {"short": tiny_runs["joint_dqn"], "long": tiny_runs["joint_dqn"], "kl": tiny_runs["distill"]}
    stages = runs_as_stages(sdir, runs)
    spec = {"kind": "multitask", "stages": list(runs), "plots": False, "aggregate": True}
    spec["stage_labels"] = {"short": "joint_dqn 100k", "long": "joint_dqn 1M"}
    study = {"name": "mt", "stages": stages, "tables": {"main": spec}}
    (text,) = Runner(study, sdir, say=lambda s: None).write_tables()
    got = pd.read_csv(sdir / "tables" / "main" / "runs.csv")
    assert set(got["method"]) == {"joint_dqn 100k", "joint_dqn 1M", "kl (tau=0.01)"}
    assert {m: int((got["method"] == m).sum()) for m in set(got["method"])} == dict.fromkeys(set(got["method"]), 4)
    assert "| joint_dqn 100k (n=1) |" in text and "| joint_dqn 1M (n=1) |" in text
    assert set(pd.read_csv(sdir / "tables" / "main" / "aggregate.csv")["method"]) == set(got["method"])


def test_a_declared_multitask_table_with_aggregate_adds_the_cross_task_aggregates(tiny_runs, tmp_path):
    """kdrl-study's multitask table with ``aggregate: true`` (issue 27: aggregates for every comparison):
    IQM, mean and P(X > Y) across the tasks of each method's per-task % of its teacher, as kdrl.tables
    computes them from the same runs; without the key the table is as before."""
    import pandas as pd

    from kdrl import tables as T
    from kdrl.study import Runner

    sdir = tmp_path / "study"
    stages = runs_as_stages(sdir, tiny_runs)
    spec = {"kind": "multitask", "stages": list(tiny_runs), "plots": False}
    for aggregate in (False, True):
        study = {"name": "mt", "stages": stages, "tables": {"main": {**spec, "aggregate": aggregate}}}
        (text,) = Runner(study, sdir, say=lambda s: None).write_tables()
        assert ("IQM" in text) is aggregate and (sdir / "tables" / "main" / "aggregate.md").exists() is aggregate
    df = T.collect_multitask([sdir])
    per_task = df[~df["column"].isin(T.MULTITASK_SUMMARY_COLUMNS)].rename(columns={"column": "task"})
    expected = T.cross_task(
        per_task.assign(normalized_score=per_task["pct"] / 100), "task", "method", "normalized_score"
    )
    assert "% of teacher) over task:" in text
    assert expected.markdown in text
    cells = pd.read_csv(sdir / "tables" / "main" / "aggregate.csv")
    assert set(cells["method"]) == {"kl (tau=0.01)", "joint_dqn"} and set(cells["tasks"]) == {2}
    assert cells["mean"].tolist() == pytest.approx(expected.cells["mean"].tolist())
