"""Distillation combined with int8 weights (issue 15): one rounding scheme for training and export,
master weights that accumulate updates below half a step, and a student whose int8 export is exact."""

from __future__ import annotations

import pytest
import torch

from kdrl.io import load_policy
from kdrl.nets import MLP
from kdrl.prune import prunable_weights
from kdrl.quantize import Int8Weights, int8_rounded, int8_symmetric, is_int8_representable
from kdrl.runs.distill import distill_student
from kdrl.validate import ConfigError, validate_distill
from tests.helpers import compose_cfg
from tests.test_distill import _overrides


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_int8_symmetric_is_per_output_channel_and_idempotent():
    torch.manual_seed(0)
    w = torch.randn(8, 5) * torch.arange(1, 9).float()[:, None]  # rows of very different ranges
    q, scale = int8_symmetric(w)
    assert q.dtype == torch.int8 and scale.shape == (8, 1) and int(q.abs().max()) == 127
    assert torch.allclose(scale.flatten(), w.abs().amax(1) / 127)
    assert torch.all((q.float() * scale - w).abs() <= scale / 2 + 1e-7)  # nearest step
    r = int8_rounded(w)
    assert torch.equal(int8_rounded(r), r)  # the max of each row is a step: re-rounding changes nothing
    assert torch.equal(int8_rounded(torch.zeros(3, 4)), torch.zeros(3, 4))  # an all-zero channel stays zero


def test_master_weights_keep_updates_smaller_than_half_a_step():
    torch.manual_seed(0)
    net = MLP((4,), 2, width=16, depth=1)
    int8 = Int8Weights(net)
    assert is_int8_representable(net)
    w = next(iter(prunable_weights(net).values()))
    row = w.detach()[0].abs()
    j = int(row.argmin())  # not the row's max, so the row's scale stays put
    step = float(row.max() / 127)
    start = float(w[0, j])
    plain = w.detach().clone()
    for _ in range(10):  # ten nudges of 0.12 step each: every one is rounded away on its own
        with torch.no_grad():
            w[0, j] += 0.12 * step
        int8.after_step(net)
        assert is_int8_representable(net)
        plain[0, j] += 0.12 * step
        plain = int8_rounded(plain)  # rounding without a master copy
    assert float(w[0, j]) - start == pytest.approx(step, rel=1e-4)  # 1.2 steps accumulated: one step
    assert float(plain[0, j]) == start  # lost every time


def test_quantised_student_exports_to_int8_weights_exactly(tmp_path, cache):
    from kdrl.export import export_policy

    cfg = compose_cfg(
        "distill",
        _overrides(
            cache,
            ["student.width=32", "distill.quantize.int8=true", "distill.quantize.at=0.5", "eval.freq=300"]
            + ["eval.stop_at_return=-1e9"],  # early stop must wait for the int8 fine-tune
        ),
    )
    res = distill_student(cfg, tmp_path)
    assert res["status"] == "ok" and res["quantize"]["int8_representable"] is True
    assert res["quantize"]["at_env_step"] >= 0.5 * cfg.distill.total_timesteps
    assert res["env_steps"] < cfg.distill.total_timesteps  # stopped early, but only after the int8 point
    policy = load_policy(tmp_path / "student.pt")
    assert policy["extra"]["env_steps"] >= res["quantize"]["at_env_step"]  # chosen among int8 checkpoints
    net = MLP((4,), 2, width=32, depth=2)
    net.load_state_dict(policy["state_dict"])
    assert is_int8_representable(net)
    out = export_policy(tmp_path / "student.pt", tmp_path / "export", ["onnx", "onnx_int8_weights"], n_verify=256)
    v = out.info["verification"]["onnx_int8_weights"]
    assert v["agreement"] == 1.0 and v["max_abs_diff"] < 1e-4  # nothing left to round: as exact as fp32


def test_a_float_net_is_not_int8_representable():
    torch.manual_seed(0)
    net = MLP((4,), 2, width=32, depth=2)
    assert not is_int8_representable(net)
    Int8Weights(net)
    assert is_int8_representable(net)


def test_quantize_settings_are_checked_before_training():
    with pytest.raises(ConfigError, match="distill.quantize.at"):
        validate_distill(compose_cfg("distill", ["distill.quantize.at=1.0"]))
    with pytest.raises(ConfigError, match="distill.quantize.int8"):
        validate_distill(compose_cfg("distill", ["distill.quantize.int8=maybe"]))
    with pytest.raises(ConfigError, match="scratch"):
        validate_distill(compose_cfg("distill", ["distill.quantize.int8=true", "baseline=scratch"]))
