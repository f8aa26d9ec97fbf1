"""kdrl-export: TorchScript and ONNX reproduce the torch policy; bad files fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdrl.envs import make_env
from kdrl.io import save_policy
from kdrl.nets import MLP
from tests.zygote import run_app

ROOT = Path(__file__).resolve().parents[1]
NET_CFG = {"_target_": "kdrl.nets.MLP", "width": 64, "depth": 2, "dueling": False, "hidden": None}


def cartpole_states(n: int, seed: int = 123) -> np.ndarray:
    """Real CartPole states from random-action episodes (not the seeds the exporter checks on)."""
    env = make_env("CartPole-v1")
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    states, episode = [], 0
    while len(states) < n:
        states.append(obs)
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return np.stack(states).astype(np.float32)


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> tuple[Path, MLP]:
    torch.manual_seed(0)
    net = MLP((4,), 2, width=64, depth=2).eval()
    # A fresh net picks one action on nearly every CartPole state; centre its Q-gap on real states
    # so both actions are chosen and agreement between runtimes means something.
    with torch.no_grad():
        q = net(torch.from_numpy(cartpole_states(300, seed=7)))
        net.q_head.bias[1] += torch.median(q[:, 0] - q[:, 1])
    path = tmp_path_factory.mktemp("policy") / "student.pt"
    save_policy(path, net, NET_CFG, "CartPole-v1", (4,), 2)
    return path, net


@pytest.fixture(scope="module")
def exported(policy, tmp_path_factory) -> Path:
    """One export through the CLI's main (in-process: a subprocess costs seconds of imports)."""
    from kdrl.cli.export import main

    out = tmp_path_factory.mktemp("exported")
    main([str(policy[0]), "--out", str(out)])
    return out


def test_writes_both_formats_and_sidecar(exported, policy):
    assert sorted(p.name for p in exported.iterdir()) == [
        "student.export.json",
        "student.onnx",
        "student.torchscript.pt",
    ]
    info = json.loads((exported / "student.export.json").read_text())
    assert info["env_id"] == "CartPole-v1" and info["obs_shape"] == [4] and info["n_actions"] == 2
    assert info["params"] == sum(p.numel() for p in policy[1].parameters()) == 4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
    assert info["source"] == str(policy[0].resolve())
    assert info["files"]["onnx"]["file"] == "student.onnx"
    for fmt in ("torchscript", "onnx"):
        v = info["verification"][fmt]
        assert v["disagreements"] == 0 and v["max_abs_diff"] <= 1e-4 and v["n"] == 512


def test_runtimes_pick_torch_actions_on_real_states(exported, policy):
    import onnxruntime as ort

    states = cartpole_states(300)
    with torch.no_grad():
        q_ref = policy[1](torch.from_numpy(states)).numpy()
    a_ref = q_ref.argmax(1)
    assert 0.2 < a_ref.mean() < 0.8  # both actions occur often: agreement is not trivial

    ts = torch.jit.load(str(exported / "student.torchscript.pt"))
    with torch.no_grad():
        q_ts = ts(torch.from_numpy(states)).numpy()
        a_ts = ts.act(torch.from_numpy(states)).numpy()
        a_ts1 = np.array([int(ts.act(torch.from_numpy(s[None]))) for s in states[:20]])  # batch 1 too
    sess = ort.InferenceSession(str(exported / "student.onnx"), providers=["CPUExecutionProvider"])
    q_ox, a_ox = sess.run(["q", "action"], {"obs": states})
    a_ox1 = np.array([int(sess.run(["action"], {"obs": s[None]})[0][0]) for s in states[:20]])

    np.testing.assert_array_equal(a_ts, a_ref)
    np.testing.assert_array_equal(a_ox, a_ref)
    np.testing.assert_array_equal(a_ts1, a_ref[:20])
    np.testing.assert_array_equal(a_ox1, a_ref[:20])
    assert np.abs(q_ts - q_ref).max() <= 1e-4
    assert np.abs(q_ox - q_ref).max() <= 1e-4


def test_dueling_net_exports(tmp_path):
    """Nets are rebuilt from the file's own net config, whatever it is."""
    from kdrl.cli.export import main

    torch.manual_seed(1)
    net = MLP((6,), 3, hidden=[32, 16], dueling=True)
    cfg = {**NET_CFG, "hidden": [32, 16], "dueling": True}
    save_policy(tmp_path / "duel.pt", net, cfg, "Acrobot-v1", (6,), 3)
    main([str(tmp_path / "duel.pt"), "--out", str(tmp_path / "out"), "--formats", "onnx", "--verify-obs", "64"])
    info = json.loads((tmp_path / "out" / "duel.export.json").read_text())
    assert set(info["files"]) == {"onnx"} and info["n_actions"] == 3 and info["verification"]["onnx"]["n"] == 64


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    torch.manual_seed(0)
    good = d / "good.pt"
    save_policy(good, MLP((4,), 2, 16, 1), {**NET_CFG, "width": 16, "depth": 1}, "CartPole-v1", (4,), 2)
    (d / "notes.pt").write_text("these are my notes, not a checkpoint\n")
    (d / "truncated.pt").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    torch.save({"weights": torch.zeros(3)}, d / "foreign.pt")
    save_policy(d / "wrongnet.pt", MLP((4,), 2, 16, 1), {**NET_CFG, "width": 32, "depth": 1}, "CartPole-v1", (4,), 2)
    save_policy(
        d / "target.pt", MLP((4,), 2, 16, 1), {"_target_": "os.system", "command": "true"}, "CartPole-v1", (4,), 2
    )
    return {
        "missing": (d / "missing.pt", "checkpoint not found"),
        "notes": (d / "notes.pt", "cannot load checkpoint"),
        "truncated": (d / "truncated.pt", "cannot load checkpoint"),
        "foreign": (d / "foreign.pt", "is not a kdrl policy checkpoint"),
        "wrongnet": (d / "wrongnet.pt", "cannot rebuild the network"),
        "target": (d / "target.pt", "must be a kdrl network class"),
    }


def test_bad_files_fail_in_one_line_exit_2(tmp_path, capsys):
    from kdrl.cli.export import main

    for case, (path, expected) in _bad_files(tmp_path).items():
        with pytest.raises(SystemExit) as exc:
            main([str(path), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2, case
        assert err.count("\n") == 1 and err.startswith("kdrl-export: error: ") and expected in err, (case, err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_file_console_script_no_traceback(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    proc = run_app("export", [str(tmp_path / "notes.pt"), "--out", str(tmp_path)], timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and "cannot load checkpoint" in proc.stderr


def test_mismatching_export_is_refused_and_nothing_written(policy, tmp_path, capsys, monkeypatch):
    """An ONNX file that computes something else (here: another net's Q-values) must be caught."""
    import kdrl.export as kx

    real = kx.WRITERS["onnx"]
    other = MLP((4,), 2, width=64, depth=2).eval()
    monkeypatch.setitem(kx.WRITERS, "onnx", lambda net, shape, path: real(other, shape, path))
    from kdrl.cli.export import main

    with pytest.raises(SystemExit) as exc:
        main([str(policy[0]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert err.count("\n") == 1 and "onnx export does not match torch" in err
    assert list((tmp_path / "out").iterdir()) == []  # not even the TorchScript file that did match


def test_compare_excuses_only_ties():
    from kdrl.export import compare

    q_ref = np.array([[1.0, 1.0 + 5e-6], [0.0, 1.0]], np.float32)
    a_ref = q_ref.argmax(1)
    tie = compare(q_ref, a_ref, q_ref, np.array([0, 1]))  # flips a near-tie
    assert tie.disagreements == 0 and tie.near_ties == 1
    wrong = compare(q_ref, a_ref, q_ref, np.array([1, 0]))  # flips a clear choice
    assert wrong.disagreements == 1


def test_int8_mlp_is_dynamic_smaller_and_verified_by_agreement(policy, tmp_path):
    from kdrl.export import export_policy

    res = export_policy(policy[0], tmp_path, ["onnx", "onnx_int8"], n_verify=256)
    int8, fp32 = res.files["onnx_int8"], res.files["onnx"]
    info = res.info["files"]["onnx_int8"]
    assert info["quantization"].startswith("dynamic") and info["bytes"] == int8.stat().st_size
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    v = res.info["verification"]["onnx_int8"]
    assert 0.9 <= v["agreement"] <= 1.0 and v["n"] == 256
    import onnx

    model = onnx.load(str(int8))
    assert any(n.op_type == "MatMulInteger" for n in model.graph.node)  # int8 arithmetic, not fp32
    # the int8 graph picks torch's actions on other real states too
    from kdrl.export import onnx_runner

    states = cartpole_states(300, seed=99)
    _, actions = onnx_runner(int8)(states)
    with torch.no_grad():
        ref = policy[1](torch.from_numpy(states)).argmax(1).numpy()
    assert (actions == ref).mean() >= 0.9


def _dequantized_weights(path: Path) -> list[np.ndarray]:
    """Each DequantizeLinear of an onnx_int8_weights file, computed from its int8 values, scales and
    axis, in torch's (out, in, ...) layout."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not [a for a in inits.values() if a.dtype == np.float32 and a.ndim > 1]  # no float matrices left
    out = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q, scale = inits[node.input[0]], inits[node.input[1]]
        axis = next(a.i for a in node.attribute if a.name == "axis")
        assert q.dtype == np.int8 and scale.shape == (q.shape[axis],)
        shape = [1] * q.ndim
        shape[axis] = -1
        w = q.astype(np.float32) * scale.reshape(shape)
        out.append(w if axis == 0 else w.T)  # MatMul / Gemm without transB keep (in, out)
    return out


def _weight_only_export_matches(net: torch.nn.Module, path: Path, states: np.ndarray) -> float:
    """Each Linear/Conv weight of ``net`` is in the file as exactly its own int8 rounding (scales and
    axes read from the file); returns the file's greedy agreement with torch on ``states``."""
    from kdrl.export import onnx_runner
    from kdrl.prune import prunable_weights
    from kdrl.quantize import int8_rounded

    stored = _dequantized_weights(path)
    expected = [int8_rounded(w).numpy() for w in prunable_weights(net).values()]
    assert len(stored) == len(expected)
    for e in expected:  # one stored weight each, equal to the last bit
        assert sum(s.shape == e.shape and np.array_equal(s, e) for s in stored) >= 1
    _, actions = onnx_runner(path)(states)
    with torch.no_grad():
        ref = net(torch.from_numpy(states)).argmax(1).numpy()
    return float((actions == ref).mean())


def test_int8_weights_of_bias_free_and_biased_layers_are_exact(tmp_path):
    """A bias-free Linear becomes MatMul with an (in, out) weight, a biased one Gemm: both are
    rounded per output channel, so a net already on the int8 grid runs the same in onnxruntime."""
    import onnx

    from kdrl.export import export_onnx, onnx_runner, quantize_onnx_weights
    from kdrl.quantize import Int8Weights

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 24, bias=False), torch.nn.ReLU(), torch.nn.Linear(24, 3)).eval()
    Int8Weights(net)  # on the int8 grid, as a quantisation-aware student is
    export_onnx(net, (4,), tmp_path / "f.onnx")
    model = quantize_onnx_weights(onnx.load(str(tmp_path / "f.onnx")))
    assert {n.op_type for n in model.graph.node} >= {"MatMul", "Gemm", "DequantizeLinear"}
    onnx.save(model, str(tmp_path / "w.onnx"))
    states = cartpole_states(200, seed=3)
    assert _weight_only_export_matches(net, tmp_path / "w.onnx", states) == 1.0
    q, _ = onnx_runner(tmp_path / "w.onnx")(states)
    with torch.no_grad():
        assert np.abs(q - net(torch.from_numpy(states)).numpy()).max() < 1e-5


def test_int8_weights_store_int8_and_keep_float_activations(policy, tmp_path):
    from kdrl.export import export_policy

    res = export_policy(policy[0], tmp_path, ["onnx", "onnx_int8", "onnx_int8_weights"], n_verify=256)
    w8, fp32 = res.files["onnx_int8_weights"], res.files["onnx"]
    assert res.info["files"]["onnx_int8_weights"]["quantization"].startswith("weight-only")
    assert w8.stat().st_size < 0.5 * fp32.stat().st_size
    states = cartpole_states(300, seed=99)
    agree = _weight_only_export_matches(policy[1], w8, states)
    # float activations: closer to torch than the dynamic int8 graph on the same states
    assert agree >= res.info["verification"]["onnx_int8"]["agreement"] and agree >= 0.97


def test_int8_weights_of_a_conv_net(tmp_path):
    from kdrl.export import export_policy
    from kdrl.nets import ConvNet

    torch.manual_seed(0)
    cfg = {"_target_": "kdrl.nets.ConvNet", "channels": [16], "kernels": [3], "strides": [1], "hidden": [128]}
    shape = make_env("MinAtar/Breakout-v1").observation_space.shape
    net = ConvNet(shape, 3, **{k: v for k, v in cfg.items() if k != "_target_"}).eval()
    save_policy(tmp_path / "conv.pt", net, cfg, "MinAtar/Breakout-v1", shape, 3)
    res = export_policy(tmp_path / "conv.pt", tmp_path / "out", ["onnx", "onnx_int8_weights"], n_verify=256)
    from kdrl.export import sample_states

    states, _ = sample_states("MinAtar/Breakout-v1", shape, 256, seed=5)
    assert _weight_only_export_matches(net, res.files["onnx_int8_weights"], states) >= 0.95
    assert res.files["onnx_int8_weights"].stat().st_size * 3.5 <= res.files["onnx"].stat().st_size


def test_int8_conv_net_is_static_qdq_calibrated_on_real_states(tmp_path):
    from kdrl.export import export_policy
    from kdrl.nets import ConvNet

    torch.manual_seed(0)
    cfg = {"_target_": "kdrl.nets.ConvNet", "channels": [16], "kernels": [3], "strides": [1], "hidden": [128]}
    env = make_env("MinAtar/Breakout-v1")
    shape = env.observation_space.shape
    net = ConvNet(shape, 3, **{k: v for k, v in cfg.items() if k != "_target_"}).eval()
    save_policy(tmp_path / "conv.pt", net, cfg, "MinAtar/Breakout-v1", shape, 3)
    res = export_policy(tmp_path / "conv.pt", tmp_path / "out", ["onnx", "onnx_int8"], n_verify=256, min_agreement=0.5)
    import onnx

    model = onnx.load(str(res.files["onnx_int8"]))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ around the conv
    assert res.info["files"]["onnx_int8"]["quantization"].startswith("static QDQ")
    assert res.files["onnx_int8"].stat().st_size * 3.5 <= res.files["onnx"].stat().st_size
    with pytest.raises(Exception, match="below the 100% required"):
        export_policy(tmp_path / "conv.pt", tmp_path / "out2", ["onnx_int8"], n_verify=256, min_agreement=1.0 + 1e-9)
    assert not list((tmp_path / "out2").glob("*.onnx"))  # refused: nothing written
