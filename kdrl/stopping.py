"""Early stop: a listener of the periodic evaluation (kdrl.evaluation.EvaluationListener) that ends
training once an evaluation's mean return reaches ``eval.stop_at_return``."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from kdrl.evaluation import Evaluated, EvaluationListener


class StopAtReturn(EvaluationListener):
    """Stop once the evaluation mean reaches ``threshold``, when the module allows it
    (``RLModule.may_stop_early``: not while a student's pruning or int8 point is still to come)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def on_evaluation(self, trainer: pl.Trainer, pl_module: Any, result: Evaluated) -> None:
        if result.record["return_mean"] >= self.threshold and pl_module.may_stop_early():
            trainer.should_stop = True
