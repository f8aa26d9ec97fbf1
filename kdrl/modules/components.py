"""A student's components: parts of its run that it composes instead of branching on them.

``DistillStudent`` calls every component through ``StudentComponent``'s hooks, in order:

- ``before_updates``: before each stream item's updates (where a compression point is checked);
- ``after_optimizer_step``: after every optimiser step, before the target net may sync (so the
  target copies the constrained weights);
- ``may_stop_early``: whether ``eval.stop_at_return`` may end the run yet;
- ``state_dict`` / ``load_state_dict``: the component's resume state, saved with the student's
  checkpoint (flat keys of ``checkpoint["kdrl"]``, as the student wrote them before it had components).

A component that has changed the student (``applied``) starts a new selection phase: the best
policy is chosen among the checkpoints of the latest phase only (kdrl.checkpoints).

Two components exist, each owning its config (``distill.prune``, ``distill.quantize``):
``MagnitudePruning`` (kdrl.prune) and ``Int8Training`` (kdrl.quantize).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from kdrl.prune import apply_masks, magnitude_masks, nonzero_params
from kdrl.quantize import Int8Weights

if TYPE_CHECKING:
    from kdrl.modules.base import RLModule


class StudentComponent:
    """The hooks a student calls on each of its components (all no-ops here)."""

    #: what the component reports in results.json once applied (None before)
    report: dict[str, float] | None = None

    @property
    def applied(self) -> bool:
        """Whether it has changed the student (each applied component is one selection phase)."""
        return False

    def before_updates(self, student: RLModule) -> None:
        """Before the updates of each stream item."""

    def after_optimizer_step(self, student: RLModule) -> None:
        """After every optimiser step, before the target network may copy the weights."""

    def may_stop_early(self) -> bool:
        return True

    def state_dict(self) -> dict[str, Any]:
        """Resume state (tensors and plain values; keys shared with the student's own state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], student: RLModule) -> None:
        pass


def _due(student: RLModule, at: float) -> bool:
    """The student's env steps have reached the fraction ``at`` of its budget."""
    return student.data is not None and student.env_steps >= at * student.data.total_timesteps


@dataclass(frozen=True)
class Pruning:
    """``distill.prune``: at ``at`` x the student's env-step budget, zero the ``amount`` fraction of
    its weights smallest in magnitude (kdrl.prune); the rest of the run is the distillation
    fine-tune, with the pruned weights held at zero."""

    amount: float = 0.0
    at: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.amount < 1.0 or not 0.0 <= self.at < 1.0:
            raise ValueError(f"distill.prune amount and at must be in [0, 1), got {self.amount}, {self.at}")

    @property
    def enabled(self) -> bool:
        return self.amount > 0


@dataclass(frozen=True)
class Quantization:
    """``distill.quantize``: from ``at`` x the student's env-step budget on, its weights are int8
    (kdrl.quantize: per output channel, symmetric) and the rest of the run is a quantisation-aware
    distillation fine-tune; its policy files then export to int8 weights without further rounding."""

    int8: bool = False
    at: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.at < 1.0:
            raise ValueError(f"distill.quantize.at must be in [0, 1), got {self.at}")

    @property
    def enabled(self) -> bool:
        return self.int8


class MagnitudePruning(StudentComponent):
    """Prunes the student once, at its point, and holds the pruned weights at zero after every step."""

    def __init__(self, config: Pruning) -> None:
        self.config = config
        self.masks: dict[str, torch.Tensor] | None = None

    @property
    def applied(self) -> bool:
        return self.masks is not None

    def before_updates(self, student: RLModule) -> None:
        if self.masks is None and _due(student, self.config.at):
            self.apply(student)

    def apply(self, student: RLModule) -> None:
        dense = nonzero_params(student.q_net)
        self.masks = magnitude_masks(student.q_net, self.config.amount)
        apply_masks(student.q_net, self.masks)
        self.report = {
            "amount": self.config.amount,
            "at_env_step": float(student.env_steps),
            "nonzero_before": float(dense),
            "nonzero_after": float(nonzero_params(student.q_net)),
        }
        student.log_env_metrics({f"prune/{k}": v for k, v in self.report.items()})

    def after_optimizer_step(self, student: RLModule) -> None:
        if self.masks is None:
            return
        if next(iter(self.masks.values())).device != student.device:  # a resume loads them where they were saved
            self.masks = {k: m.to(student.device) for k, m in self.masks.items()}
        apply_masks(student.q_net, self.masks)

    def may_stop_early(self) -> bool:
        return self.masks is not None

    def state_dict(self) -> dict[str, Any]:
        if self.masks is None:
            return {}
        return {"prune_masks": {k: v.clone() for k, v in self.masks.items()}, "prune_report": dict(self.report or {})}

    def load_state_dict(self, state: dict[str, Any], student: RLModule) -> None:
        if "prune_masks" in state:
            self.masks = {k: v.bool() for k, v in state["prune_masks"].items()}
            self.report = {k: float(v) for k, v in state["prune_report"].items()}


class Int8Training(StudentComponent):
    """From its point on, the student's weights are int8-representable: float32 master weights take
    each update and are re-rounded after it (kdrl.quantize.Int8Weights). With pruning, the masters
    of pruned weights stay at zero (``pruning``'s masks, applied to the weights first)."""

    def __init__(self, config: Quantization, pruning: MagnitudePruning | None = None) -> None:
        self.config = config
        self.pruning = pruning
        self.qat: Int8Weights | None = None  # the int8 master weights, once quantised

    @property
    def applied(self) -> bool:
        return self.qat is not None

    def before_updates(self, student: RLModule) -> None:
        if self.qat is None and _due(student, self.config.at):
            self.apply(student)

    def apply(self, student: RLModule) -> None:
        self.qat = Int8Weights(student.q_net)
        self.report = {"at_env_step": float(student.env_steps)}
        student.log_env_metrics({"quantize/at_env_step": float(student.env_steps)})

    def after_optimizer_step(self, student: RLModule) -> None:
        if self.qat is not None:
            self.qat.after_step(student.q_net, self.pruning.masks if self.pruning is not None else None)

    def may_stop_early(self) -> bool:
        return self.qat is not None

    def state_dict(self) -> dict[str, Any]:
        if self.qat is None:
            return {}
        return {
            "int8_master": {k: v.clone() for k, v in self.qat.master.items()},
            "quantize_report": dict(self.report or {}),
        }

    def load_state_dict(self, state: dict[str, Any], student: RLModule) -> None:
        if "int8_master" in state:
            self.qat = Int8Weights(student.q_net, dict(state["int8_master"]))
            self.report = {k: float(v) for k, v in state["quantize_report"].items()}


def compression_components(distill: dict[str, Any]) -> tuple[MagnitudePruning | None, Int8Training | None]:
    """The pruning and int8 components ``distill`` asks for (None where it does not); both configs
    are validated either way."""
    pruning = Pruning(**(distill.get("prune") or {}))
    quantization = Quantization(**(distill.get("quantize") or {}))
    pruner = MagnitudePruning(pruning) if pruning.enabled else None
    int8 = Int8Training(quantization, pruner) if quantization.enabled else None
    return pruner, int8
