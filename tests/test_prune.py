"""Distillation combined with magnitude pruning (issue 15): exact global masks, pruned weights held
at zero through the distillation fine-tune, and only pruned checkpoints chosen."""

from __future__ import annotations

import pytest
import torch

from kdrl.io import load_policy
from kdrl.nets import MLP
from kdrl.prune import apply_masks, magnitude_masks, nonzero_params, prunable_weights
from kdrl.runs.distill import distill_student
from kdrl.validate import ConfigError, validate_distill
from tests.helpers import compose_cfg
from tests.test_distill import _overrides


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_global_magnitude_masks_prune_exactly_the_smallest_weights():
    torch.manual_seed(0)
    net = MLP((4,), 2, width=16, depth=2)
    weights = prunable_weights(net)
    total = sum(w.numel() for w in weights.values())
    masks = magnitude_masks(net, 0.7)
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(0.7 * total)
    kept_min = min(float(w.detach().abs()[m].min()) for (n, w), m in zip(weights.items(), masks.values()))
    cut_max = max(float(w.detach().abs()[~m].max()) for (n, w), m in zip(weights.items(), masks.values()) if (~m).any())
    assert cut_max <= kept_min  # one threshold over all layers
    biases = sum(p.numel() for n, p in net.named_parameters() if n.endswith("bias"))
    apply_masks(net, masks)
    assert nonzero_params(net) == total - pruned + biases  # biases are not pruned
    with torch.no_grad():  # ties: a net of equal weights still prunes exactly k
        for w in weights.values():
            w.fill_(0.5)
    assert sum(int((~m).sum()) for m in magnitude_masks(net, 0.25).values()) == round(0.25 * total)


def test_pruned_student_keeps_its_zeros_through_the_fine_tune(tmp_path, cache):
    cfg = compose_cfg(
        "distill", _overrides(cache, ["student.width=32", "distill.prune.amount=0.8", "distill.prune.at=0.5"])
    )
    res = distill_student(cfg, tmp_path)
    assert res["status"] == "ok"
    prune = res["prune"]
    assert prune["at_env_step"] >= 0.5 * cfg.distill.total_timesteps
    policy = load_policy(tmp_path / "student.pt")
    net = MLP((4,), 2, width=32, depth=2)
    net.load_state_dict(policy["state_dict"])
    total = sum(w.numel() for w in prunable_weights(net).values())
    zeros = sum(int((w == 0).sum()) for w in prunable_weights(net).values())
    assert zeros >= round(0.8 * total)  # still pruned after the fine-tune's optimiser steps
    assert prune["nonzero_params"] == nonzero_params(net)
    # the chosen checkpoint is one taken after pruning
    assert policy["extra"]["env_steps"] >= prune["at_env_step"]


def test_early_stop_waits_for_the_pruning_point(tmp_path, cache):
    # a return every evaluation reaches: without the wait the run ends at its first evaluation,
    # before the pruning point, and the "pruned" student is the dense one
    cfg = compose_cfg(
        "distill",
        _overrides(
            cache,
            [
                "student.width=32",
                "distill.prune.amount=0.5",
                "distill.prune.at=0.5",
                "eval.stop_at_return=-1e9",
                "eval.freq=300",
            ],
        ),
    )
    res = distill_student(cfg, tmp_path)
    assert res["status"] == "ok" and res["prune"] is not None
    assert res["prune"]["at_env_step"] >= 0.5 * cfg.distill.total_timesteps
    assert res["prune"]["nonzero_params"] < res["prune"]["nonzero_before"]
    # it stopped early at the first evaluation after pruning, not at the end of the budget
    assert res["env_steps"] < cfg.distill.total_timesteps
    policy = load_policy(tmp_path / "student.pt")
    assert policy["extra"]["env_steps"] >= res["prune"]["at_env_step"]


def test_pruning_settings_are_checked_before_training():
    with pytest.raises(ConfigError, match="distill.prune.amount"):
        validate_distill(compose_cfg("distill", ["distill.prune.amount=1.0"]))
    with pytest.raises(ConfigError, match="scratch"):
        validate_distill(compose_cfg("distill", ["distill.prune.amount=0.5", "baseline=scratch"]))
