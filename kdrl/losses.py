"""Distillation losses: one registry, each a function of student and teacher Q-values.

Temperature semantics (written down once, tested in tests/test_losses.py):
    p_T = softmax(q_T / tau)          tau = ``temperature``: the teacher's temperature
    p_S = softmax(q_S / tau_S)        tau_S = ``student_temperature``; None means tau_S = tau
A *sharp* tau (Rusu et al. 2016 use tau = 0.01 with tau_S = 1) turns the teacher's Q-values into an
almost one-hot target on its greedy action while keeping the ranking of near-ties; tau = 1 matches
raw Q-value softmaxes (Hinton et al.'s "soft targets" use tau > 1 on both). With ``tau_squared``,
the KL and CE losses are multiplied by tau * tau_S (Hinton's tau^2 factor when tau_S = tau). That
levels gradient magnitudes only when tau is large against the Q-value gaps; at a sharp tau it
shrinks them (~60x smaller at tau = 0.01 than at tau = 1 with tau_S = tau): Rusu et al.'s form is
``kl_rusu`` (tau_S = 1, no factor).

Reductions: every loss is a mean over the batch (``batchmean`` for KL) of a per-state sum over
actions (MSE) or over the action distribution (KL, CE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from kdrl.scores import normalized_score
from kdrl.td import TDTerm

LOSSES = ("mse", "kl", "ce", "nll")


def _temperatures(temperature: float, student_temperature: float | None) -> tuple[float, float]:
    tau = float(temperature)
    tau_s = tau if student_temperature is None else float(student_temperature)
    if not (tau > 0 and tau_s > 0):
        raise ValueError(
            f"temperatures must be > 0, got temperature={temperature}, student_temperature={student_temperature}"
        )
    return tau, tau_s


def mse_loss(q_s: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    """||q_S - q_T||^2 summed over actions, mean over the batch."""
    return (q_s - q_t).pow(2).sum(dim=1).mean()


def kl_loss(
    q_s: torch.Tensor,
    q_t: torch.Tensor,
    temperature: float = 1.0,
    student_temperature: float | None = None,
    tau_squared: bool = True,
) -> torch.Tensor:
    """KL(softmax(q_T/tau) || softmax(q_S/tau_S)), batch mean, optionally times tau*tau_S."""
    tau, tau_s = _temperatures(temperature, student_temperature)
    log_p_s = F.log_softmax(q_s / tau_s, dim=1)
    log_p_t = F.log_softmax(q_t / tau, dim=1)
    loss = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return loss * (tau * tau_s) if tau_squared else loss


def ce_loss(
    q_s: torch.Tensor,
    q_t: torch.Tensor,
    temperature: float = 1.0,
    student_temperature: float | None = None,
    tau_squared: bool = True,
) -> torch.Tensor:
    """Soft cross-entropy H(p_T, p_S) = KL(p_T || p_S) + H(p_T): same gradient as KL."""
    tau, tau_s = _temperatures(temperature, student_temperature)
    p_t = F.softmax(q_t / tau, dim=1)
    loss = -(p_t * F.log_softmax(q_s / tau_s, dim=1)).sum(dim=1).mean()
    return loss * (tau * tau_s) if tau_squared else loss


def nll_loss(q_s: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax(q_S) on the teacher's greedy action (Rusu et al.'s NLL)."""
    return F.cross_entropy(q_s, q_t.argmax(dim=1))


@dataclass(frozen=True)
class DistillLoss:
    """A configured distillation loss: ``loss(q_s, q_t) -> scalar``."""

    name: str
    temperature: float = 1.0
    student_temperature: float | None = None
    tau_squared: bool = True

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown distillation loss '{self.name}' (expected one of {', '.join(LOSSES)})")
        if self.name in ("kl", "ce"):
            _temperatures(self.temperature, self.student_temperature)

    def __call__(self, q_s: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
        if self.name == "mse":
            return mse_loss(q_s, q_t)
        if self.name == "nll":
            return nll_loss(q_s, q_t)
        fn: Callable = kl_loss if self.name == "kl" else ce_loss
        return fn(q_s, q_t, self.temperature, self.student_temperature, self.tau_squared)


def hint_loss(h_s: torch.Tensor, h_t: torch.Tensor, projection: torch.nn.Module) -> torch.Tensor:
    """Feature (hint) distillation: ||W h_S + b - h_T||^2 per state (mean over units), batch mean."""
    return F.mse_loss(projection(h_s), h_t)


class LambdaSchedule:
    """Weight of the distillation term in hybrid losses: L = L_TD + lambda * L_distill.

    constant: lambda = value.  linear: value -> end over decay_steps env steps.
    qdagger: lambda = clip(1 - score, 0, 1) with score = (R_S - R_random) / (R_T - R_random), the
    student's normalised score at the latest evaluation (Agarwal et al. 2022 write 1 - R_S / R_T,
    which inverts for negative returns and exceeds 1 for a student below zero), starting at
    ``value`` before the first evaluation and kept there while the teacher does not beat random.
    """

    KINDS = ("constant", "linear", "qdagger")

    def __init__(self, kind: str = "constant", value: float = 1.0, end: float = 0.0, decay_steps: int = 0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown lambda schedule '{kind}' (expected one of {', '.join(self.KINDS)})")
        for name, v in (("lambda", value), ("lambda end", end)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.kind, self.value, self.end, self.decay_steps = kind, float(value), float(end), int(decay_steps)
        self.score: float | None = None  # the student's latest normalised score

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score = None if state.get("score") is None else float(state["score"])

    def observe(self, student_return: float, teacher_return: float, random_return: float) -> None:
        score = normalized_score(student_return, teacher_return, random_return)
        if math.isfinite(score):
            self.score = score

    def __call__(self, env_steps: int) -> float:
        if self.kind == "constant":
            return self.value
        if self.kind == "linear":
            if self.decay_steps <= 0 or env_steps >= self.decay_steps:
                return self.end
            return self.value + (self.end - self.value) * env_steps / self.decay_steps
        return self.value if self.score is None else min(max(1.0 - self.score, 0.0), 1.0)


@dataclass
class StudentLoss:
    """What a student minimises, as configured in ``conf/loss/<name>.yaml`` (built with ``_target_``):

        L = L_kind(q_S, q_T) [+ feature_weight * hint]                      (distillation)
        L = L_TD + lambda * (L_kind(q_S, q_T) [+ feature_weight * hint])    (hybrid: ``td`` given)

    ``kind`` is any of LOSSES, so a hybrid composes the TD term with any distillation loss;
    ``distill_weight`` is lambda's schedule (hybrid only).
    """

    name: str
    kind: str
    temperature: float = 1.0
    student_temperature: float | None = None
    tau_squared: bool = True
    feature_weight: float = 0.0
    td: TDTerm | None = None
    distill_weight: LambdaSchedule | None = None
    distill: DistillLoss = field(init=False)

    def __post_init__(self) -> None:
        self.distill = DistillLoss(self.kind, float(self.temperature), self.student_temperature, bool(self.tau_squared))
        self.feature_weight = float(self.feature_weight or 0.0)
        if self.td is not None and self.distill_weight is None:
            raise ValueError(f"loss '{self.name}': a hybrid loss (td set) needs a distill_weight schedule")

    @property
    def hybrid(self) -> bool:
        return self.td is not None
