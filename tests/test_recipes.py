"""Named recipes (algorithm x env x budget) compose on every env they are meant for and train."""

from __future__ import annotations

import pytest
from helpers import compose_cfg

from kdrl.runs.teacher import train_teacher
from kdrl.validate import validate_common

MINATAR = ["minatar_asterix", "minatar_breakout", "minatar_freeway", "minatar_seaquest", "minatar_space_invaders"]


@pytest.mark.parametrize("env", MINATAR)
def test_minatar_fast_recipe_composes_on_every_game(env):
    cfg = compose_cfg("train", [f"env={env}", "recipe=minatar_fast"])
    validate_common(cfg)
    assert cfg.env.id.startswith("MinAtar/")
    assert cfg.algo.optimizer.name == "adam" and cfg.algo.double_dqn and cfg.net.dueling
    assert cfg.algo.train_freq == 4 and cfg.algo.total_timesteps == 1_000_000
    # Young & Tian's recipe is untouched beside it
    yt = compose_cfg("train", [f"env={env}"])
    assert yt.algo.optimizer.name == "rmsprop" and yt.algo.train_freq == 1 and not yt.net.dueling


def test_minatar_fast_recipe_trains(tmp_path):
    cfg = compose_cfg("train", ["env=minatar_breakout", "recipe=minatar_fast", "debug=fast", "logger=none"])
    res = train_teacher(cfg, tmp_path)
    assert res["status"] == "ok" and res["env_steps"] == 3000
    assert res["grad_steps"] == (3000 - 500) // 4 + 1
