"""The bad-input catalogue: each case must end with a non-zero exit, a one-line actionable message
(no traceback unless KDRL_DEBUG=1), and no results.json marked complete."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdrl.io import save_policy
from kdrl.nets import MLP
from tests.zygote import run_app

ROOT = Path(__file__).resolve().parents[1]
FAST = ["debug=fast"]


class Exploit:
    """Unpickling this would run a shell command: weights_only loading must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    net_cfg = {"_target_": "kdrl.nets.MLP", "width": 16, "depth": 1, "dueling": False, "hidden": None}
    save_policy(d / "acrobot.pt", MLP((6,), 3, 16, 1), net_cfg, "Acrobot-v1", (6,), 3)
    save_policy(d / "obs5.pt", MLP((5,), 2, 16, 1), net_cfg, "CartPole-v1", (5,), 2)
    save_policy(d / "act3.pt", MLP((4,), 3, 16, 1), net_cfg, "CartPole-v1", (4,), 3)
    good = d / "good.pt"
    save_policy(good, MLP((4,), 2, 16, 1), net_cfg, "CartPole-v1", (4,), 2)
    (d / "truncated.pt").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (d / "notes.pt").write_text("these are my notes, not a checkpoint\n")
    torch.save({"format": "kdrl-qnet/1", "payload": Exploit(str(d / "PWNED"))}, d / "exploit.pt")
    return d


# (app, overrides, expected text in the one-line message)
CASES = [
    ("train", ["env.id=CartPol-v1"], "unknown gymnasium env id 'CartPol-v1'. Did you mean: CartPole-v1"),
    ("train", ["env.id=Pendulum-v1"], "Box action space; kdrl's DQN needs Discrete"),
    ("distill", ["loss=kld"], "Could not find 'loss/kld'"),
    ("train", ["net=cnn"], "Could not find 'net/cnn'"),
    ("train", ["launcher=sge"], "Could not find 'launcher/sge'"),
    # an option name longer than the file system allows (found by the config fuzzer): refused, not an OSError
    ("distill", ["algo=" + "a" * 300], "Could not find 'algo/" + "a" * 300 + "'"),
    ("distill", ["experiment=nope"], "Could not find 'experiment/nope'"),
    ("distill", ["loss.temperature=0"], "loss.temperature must be in (0.0, inf], got 0"),
    ("distill", ["loss.temperature=-1"], "loss.temperature must be in (0.0, inf], got -1"),
    ("distill", ["student.width=0"], "student.width must be null or an integer >= 1, got 0"),
    ("train", ["net.width=0"], "net.width must be an integer >= 1, got 0"),
    (
        "distill",
        ["loss=hybrid", "loss.distill_weight.value=1.5"],
        "loss.distill_weight.value must be in [0.0, 1.0], got 1.5",
    ),
    (
        "distill",
        ["loss=hybrid", "loss.distill_weight.kind=cosine"],
        "loss.distill_weight.kind must be one of constant, linear, qdagger",
    ),
    ("train", ["env.num_envs=0"], "env.num_envs must be an integer >= 1, got 0"),
    ("train", ["algo.gamma=1.5"], "algo.gamma must be in [0.0, 1.0], got 1.5"),
    ("train", ["algo.optimizer.name=adagrad"], "algo.optimizer.name must be one of adam, adamw, rmsprop, sgd"),
    ("train", ["seed=-1"], "seed must be an integer >= 0, got -1"),
    ("train", ["eval.final_policy=worst"], "eval.final_policy must be one of best, last"),
    ("distill", ["control=both"], "control must be one of teacher, student, mixed, got 'both'"),
    ("distill", ["baseline=random"], "baseline must be one of None, scratch, got 'random'"),
    ("train", ["algo.lrr=1"], "Key 'lrr' is not in struct"),
    ("train", ["-m", "seed=choice()"], "empty choice is not legal"),
    ("train", ["hydra.run.dir=/etc/hostname/run"], "output dir /etc/hostname/run is not writable"),
    ("distill", ["teacher.checkpoint=/nonexistent/teacher.pt"], "checkpoint not found: /nonexistent/teacher.pt"),
    ("distill", ["teacher.checkpoint={d}/truncated.pt"], "cannot load checkpoint"),
    ("distill", ["teacher.checkpoint={d}/notes.pt"], "cannot load checkpoint"),
    ("distill", ["teacher.checkpoint={d}/acrobot.pt"], "was trained on 'Acrobot-v1', not 'CartPole-v1'"),
    ("distill", ["teacher.checkpoint={d}/obs5.pt"], "expects observations of shape (5,), env gives (4,)"),
    ("distill", ["teacher.checkpoint={d}/act3.pt"], "has 3 actions, env has 2"),
    ("distill", ["teacher.checkpoint={d}/exploit.pt"], "cannot load checkpoint"),
    # a replay no machine here holds: refused before anything is built, not by the allocator after setup
    (
        "train",
        ["env=minatar_breakout", "algo.buffer_size=2000000000"],
        "algo.buffer_size=2,000,000,000 needs a standard replay of 1634.0 GB",
    ),
    (
        "train",
        ["recipe=minatar_fast", "env=cartpole"],
        "recipe=minatar_fast is made for minatar envs, but the env (CartPole-v1) is a gym env: recipes for gym "
        "envs: acrobot, cartpole, lunarlander",
    ),
]


@pytest.mark.parametrize("app,overrides,expected", CASES, ids=[" ".join(c[1]) for c in CASES])
def test_bad_input(app, overrides, expected, ckpts, tmp_path):
    overrides = [o.format(d=ckpts) for o in overrides]
    run_dir = tmp_path / "run"
    extra = [] if any(o.startswith("hydra.run.dir") for o in overrides) else [f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k not in ("KDRL_DEBUG", "HYDRA_FULL_ERROR")}
    flags = [o for o in overrides if o.startswith("-")]
    overrides = [o for o in overrides if not o.startswith("-")]
    proc = run_app(app, [*flags, *FAST, *overrides, *extra], env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert expected in out, out[-2000:]
    assert "Traceback" not in out, out[-2000:]
    lines = [line for line in out.splitlines() if expected in line]
    assert len(lines) == 1 or all(line == lines[0] for line in lines)  # said once, on one line
    res = run_dir / "results.json"
    assert not res.exists() or json.loads(res.read_text())["status"] == "failed"
    assert not (ckpts / "PWNED").exists()  # the exploit's code never ran


def test_catalogue_size():
    assert len(CASES) >= 20


def test_a_warm_forked_run_says_what_a_fresh_interpreter_says(tmp_path):
    """The catalogue runs each app in a forked child of a warm process (tests/zygote.py); a fresh
    interpreter gives the same exit code and the same words, to the byte."""
    args = [*FAST, "env.num_envs=0", f"hydra.run.dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k not in ("KDRL_DEBUG", "HYDRA_FULL_ERROR")}
    fresh = subprocess.run(
        [sys.executable, "-m", "kdrl.cli.train", *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )
    warm = run_app("train", args, env=env)
    assert (warm.returncode, warm.stdout, warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == 2 and "env.num_envs must be an integer >= 1, got 0" in fresh.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    env = {**os.environ, "KDRL_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "kdrl.cli.train", *FAST, "env.num_envs=0", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "app,overrides,key",
    [
        ("train", ["algo.buffer_size=10", "algo.batch_size=64"], "algo.buffer_size"),
        ("distill", ["distill.buffer_size=16", "distill.batch_size=128"], "distill.buffer_size"),
    ],
)
def test_a_replay_smaller_than_one_batch_is_refused(app, overrides, key):
    """issue 16: algo.buffer_size=10 algo.batch_size=64 used to train and report status ok."""
    from kdrl.validate import ConfigError, validate_common, validate_distill
    from tests.helpers import compose_cfg

    cfg = compose_cfg(app, overrides)
    with pytest.raises(ConfigError, match=f"{key}.*smaller than one batch"):
        (validate_distill if app == "distill" else validate_common)(cfg)


def test_a_multitask_replay_smaller_than_one_batch_is_refused():
    from kdrl.runs.multitask import validate_multitask
    from kdrl.validate import ConfigError
    from tests.helpers import compose_cfg

    with pytest.raises((ConfigError, ValueError), match="multitask.buffer_size"):
        validate_multitask(compose_cfg("multitask", ["multitask.buffer_size=8", "multitask.batch_size=32"]))


def test_an_mlp_runs_on_minatar_grids(tmp_path):
    """issue 16: env=minatar_breakout net=mlp died in torch ("mat1 and mat2 must have the same dtype");
    an MLP on the flattened 0/1 grid is legitimate, so it trains and is scored."""
    from kdrl.runs.teacher import train_teacher
    from tests.helpers import compose_cfg

    cfg = compose_cfg(
        "train", ["env=minatar_breakout", "recipe=minatar", "net=mlp", "net.width=32", "debug=fast", "logger=none"]
    )  # recipe=minatar: a plain Q head (the default recipe has a dueling one)
    res = train_teacher(cfg, tmp_path)
    assert (
        res["status"] == "ok" and res["grad_steps"] > 0 and res["params"] == 400 * 32 + 32 + 32 * 32 + 32 + 32 * 3 + 3
    )


# Round two: mistakes a new user makes across every console script, each answered on exactly one line
# of stderr (no traceback, no usage block, no work done first), non-zero exit. (module, args, expected)
# "{d}": a scratch dir holding a trained teacher run (run/), a policy file, a text file and an empty dir.
ROUND_TWO = [
    ("train", ["envs=cartpole"], "envs=cartpole: there is no config group or key 'envs'; did you mean env=cartpole?"),
    ("train", ["trainer=tpu"], "trainer=tpu: Could not find 'trainer/tpu' (config group 'trainer' options: cpu,"),
    ("distill", ["teacher.checkpoint={d}/run"], "{d}/run is a kdrl run dir, not a policy file: give its teacher.pt"),
    ("table", ["{d}/nowhere"], "kdrl-table: error: none of the 1 results file(s) could be read: {d}/nowhere: no such"),
    ("table", ["{d}/sweep", "--metric", "nope", "--no-plots"], "kdrl-table: no column 'nope' in the results"),
    ("table", ["{d}/sweep", "--out", "{d}/notes.txt/out"], "kdrl-table: error: --out {d}/notes.txt/out cannot be"),
    ("export", ["{c}/good.pt", "--out", "{d}/notes.txt"], "--out {d}/notes.txt is a file, not a directory"),
    ("export", ["{c}/good.pt", "--out", "{d}/notes.txt/exp"], "--out {d}/notes.txt/exp cannot be created"),
    ("play", ["{c}/good.pt", "--out", "{t}/play.txt"], "kdrl-play writes a .gif or a video (.mp4,"),
    ("play", ["{c}/good.pt", "--out", "{d}/notes.txt/p.gif"], "its directory {d}/notes.txt is a file, not a directory"),
    ("show", ["{d}/empty"], "{d}/empty is a directory without a results.json"),
    ("show", ["{c}/good.pt"], "good.pt is a binary file (a policy or checkpoint?), not a results.json"),
    ("multitask_table", ["{d}/empty"], "kdrl-multitask-table: error: no kdrl-multitask results.json"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, ckpts):
    """A kdrl run dir holding its teacher.pt, a sweep of one results.json, an empty dir, a text file."""
    import shutil

    d = tmp_path_factory.mktemp("round2")
    (d / "run").mkdir()
    shutil.copyfile(ckpts / "good.pt", d / "run" / "teacher.pt")
    (d / "sweep" / "a").mkdir(parents=True)
    result = {"kind": "student", "status": "ok", "env_id": "CartPole-v1", "seed": 0, "loss": "kl", "width": 16}
    (d / "sweep" / "a" / "results.json").write_text(json.dumps({**result, "normalized_score": 0.9, "config": {}}))
    (d / "empty").mkdir()
    (d / "notes.txt").write_text("not a directory\n")
    return d


@pytest.mark.parametrize("module,args,expected", ROUND_TWO, ids=[f"{m} {' '.join(a)}" for m, a, _ in ROUND_TWO])
def test_round_two_mistake_is_one_line(module, args, expected, scratch, ckpts, tmp_path):
    args = [a.format(d=scratch, c=ckpts, t=tmp_path) for a in args]
    expected = expected.format(d=scratch)
    if module in ("train", "distill", "multitask"):
        args = [*FAST, *args, f"hydra.run.dir={tmp_path / 'run'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("KDRL_DEBUG", "HYDRA_FULL_ERROR")}
    proc = run_app(module, args, env=env)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in said, said[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], said[-3000:]
    assert not (scratch / "sweep" / "results.csv").exists()  # a refused kdrl-table wrote nothing
    assert "episode 0" not in proc.stdout  # kdrl-play refused before playing


def test_kdrl_show_takes_a_run_dir(tmp_path):
    """kdrl-show <run dir> reads the run dir's results.json (it said `cannot read ...: Is a directory`)."""
    from kdrl.cli.show import ResultsError, load

    (tmp_path / "results.json").write_text(json.dumps({"kind": "teacher", "status": "failed", "error": "x"}))
    assert load(str(tmp_path))["status"] == "failed"
    with pytest.raises(ResultsError, match="is a directory without a results.json"):
        load(str(tmp_path.parent))
