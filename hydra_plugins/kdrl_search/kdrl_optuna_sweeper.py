"""The Hydra Sweeper class of ``hydra/sweeper=kdrl_optuna`` (see kdrl.search)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class KdrlOptunaSweeper(Sweeper):
    """Optuna (>= 4) search with pruning on kdrl's periodic evaluations: ``kdrl.search.sweeper``."""

    def __init__(self, **kwargs: Any) -> None:
        from kdrl.search.sweeper import OptunaSearch

        self.search = OptunaSearch(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
