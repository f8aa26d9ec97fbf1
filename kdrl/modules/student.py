"""DistillStudent: a smaller Q-network learns from a frozen DQN teacher (Rusu et al. 2016).

Each update, on a replay minibatch of states s visited by the acting policy:
    q_T = teacher(s) (frozen)      q_S = student(s)
    L   = L_distill(q_S, q_T) [+ w_hint * ||W h_S - h_T||^2]
    hybrid: L = L_TD(student, own target net) + lambda * L      (lambda constant/linear/QDagger)
Who acts (``control``): the teacher (Rusu et al.), the student (teacher labels the states the
student visits; DAgger-like, Czarnecki et al. 2019) or a mix (teacher with probability beta).
QDagger (Agarwal et al. 2022) adds an offline phase (``distill.pretrain``): the teacher's rollouts
fill the replay and the student takes ``updates`` gradient steps on them before it acts at all.
Rusu et al.'s data protocol (``distill.dataset``): the transitions come from a shared teacher dataset
(kdrl.datasets) instead of envs the student steps, at the same update schedule.
Pruning (``distill.prune``) and int8 training (``distill.quantize``) are components the student
composes (kdrl.modules.components), called through ``StudentComponent``'s hooks.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdrl.collector import collect_rollouts, greedy_actions
from kdrl.data import ReplayStream, StreamConfig
from kdrl.datasets import TeacherDataset, dataset_stream
from kdrl.envs import EnvSpec
from kdrl.losses import StudentLoss, hint_loss
from kdrl.modules.base import RLModule
from kdrl.modules.components import StudentComponent, compression_components
from kdrl.modules.dqn import exploration_schedule
from kdrl.nets import QNetwork
from kdrl.optim import OptimizerFactory
from kdrl.replay import Transitions
from kdrl.schedules import LinearSchedule
from kdrl.seeding import generator
from kdrl.td import TargetNetwork, update_target

CONTROLS = ("teacher", "student", "mixed")


def student_stream(distill: dict[str, Any], loss: StudentLoss) -> StreamConfig:
    """The student's data; n-step returns only where a TD term uses them (hybrid losses)."""
    data = StreamConfig.from_dict(distill)
    return data if loss.hybrid else dataclasses.replace(data, n_step=1)


@dataclass(frozen=True)
class OfflinePhase:
    """QDagger's offline phase (``distill.pretrain``): ``teacher_steps`` env steps of the teacher
    acting epsilon-greedily (its own envs, not counted in the student's budget) fill the replay,
    then ``updates`` gradient steps of the student's loss on that replay, before it acts."""

    teacher_steps: int = 0
    updates: int = 0
    epsilon: float = 0.05

    def __post_init__(self) -> None:
        if self.teacher_steps < 0 or self.updates < 0:
            raise ValueError(f"distill.pretrain steps must be >= 0, got {self.teacher_steps}, {self.updates}")
        if self.updates > 0 and self.teacher_steps <= 0:
            raise ValueError("distill.pretrain.updates needs teacher data: set distill.pretrain.teacher_steps > 0")

    @property
    def enabled(self) -> bool:
        return self.updates > 0


class DistillStudent(RLModule):
    def __init__(
        self,
        student: QNetwork,
        teacher: QNetwork,
        spec: EnvSpec,
        env_cfg: dict[str, Any],
        distill: dict[str, Any],
        loss: StudentLoss,
        control: str,
        optimizer: OptimizerFactory,
        seed: int = 0,
        log_interval: int = 250,
        dataset: TeacherDataset | None = None,
    ) -> None:
        if control not in CONTROLS:
            raise ValueError(f"unknown control '{control}' (expected one of {', '.join(CONTROLS)})")
        if dataset is not None and control != "teacher":
            raise ValueError(f"a teacher dataset is the teacher's play: control must be teacher, got '{control}'")
        super().__init__(
            student,
            spec,
            env_cfg,
            student_stream(distill, loss),
            optimizer,
            exploration_schedule(distill["exploration"]),
            seed,
            log_interval,
            distill.get("max_grad_norm"),
        )
        self.teacher = teacher.requires_grad_(False).eval()
        self.dataset = dataset
        self.objective, self.control = loss, control
        self.projection = torch.nn.Linear(student.feature_dim, teacher.feature_dim) if loss.feature_weight > 0 else None
        if loss.hybrid:
            self.target = TargetNetwork(student, int(distill["target_update_interval"]), float(distill.get("tau", 1.0)))
        mix = distill.get("mixed") or {}
        self.beta = LinearSchedule(
            float(mix.get("beta_start", 1.0)), float(mix.get("beta_end", 0.0)), int(mix.get("decay_steps", 0))
        )
        self._rng = generator(seed, "control")  # who acts under control=mixed
        self.teacher_acted = 0
        self.offline = OfflinePhase(**(distill.get("pretrain") or {}))
        self.pretrain_report: dict[str, float] | None = None  # set once the offline phase has run
        # pruning and int8 training (kdrl.modules.components), each None unless distill asks for it
        self.pruning, self.int8 = compression_components(distill)
        self.components: list[StudentComponent] = [c for c in (self.pruning, self.int8) if c is not None]
        self._offline_start: int | None = None  # optimizer_steps when the offline phase began, while it runs

    def frozen(self) -> list[torch.nn.Module]:
        return [self.teacher]

    def build_stream(self) -> ReplayStream:
        if self.dataset is None:
            return super().build_stream()
        assert self.spec is not None and self.data is not None
        return dataset_stream(self.dataset, self.spec, self.data, self.seed)

    # ---- acting -------------------------------------------------------------------------------
    def teacher_greedy(self, obs: np.ndarray) -> np.ndarray:
        return greedy_actions(self.teacher, obs, self.device)

    def behaviour(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions of whoever controls the env at this step (epsilon is added by the collector)."""
        if self.control == "teacher":
            self.teacher_acted += len(obs)
            return self.teacher_greedy(obs)
        if self.control == "student":
            return self.greedy(obs)
        use_teacher = self._rng.random(len(obs)) < self.beta(self.env_steps)
        self.teacher_acted += int(use_teacher.sum())
        actions = self.greedy(obs)
        if use_teacher.any():
            actions[use_teacher] = self.teacher_greedy(obs[use_teacher])
        return actions

    # ---- learning -----------------------------------------------------------------------------
    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h_s = self.q_net.features(batch.obs)
        q_s = self.q_net.head(h_s)
        with torch.no_grad():
            h_t = self.teacher.features(batch.obs)
            q_t = self.teacher.head(h_t)
        obj = self.objective
        out = {"distill_loss": obj.distill(q_s, q_t)}
        total = out["distill_loss"]
        if self.projection is not None:
            out["hint_loss"] = hint_loss(h_s, h_t, self.projection)
            total = total + obj.feature_weight * out["hint_loss"]
        if obj.hybrid:
            out["td_loss"], _ = obj.td(q_s, batch, self.q_net, self.target)
            lam = obj.distill_weight(self.env_steps)
            out["lambda"] = torch.tensor(lam)
            total = out["td_loss"] + lam * total
        with torch.no_grad():
            out["agreement"] = (q_s.argmax(1) == q_t.argmax(1)).float().mean()
        out["loss"] = total
        return total, out

    # ---- components: pruning / int8 weights + distillation fine-tune ------------------------------
    def learn(self, opt: torch.optim.Optimizer, batch: Any) -> None:
        for component in self.components:  # a compression point is checked before each item's updates
            component.before_updates(self)
        super().learn(opt, batch)

    def after_optimizer_step(self) -> None:
        for component in self.components:
            component.after_optimizer_step(self)

    def may_stop_early(self) -> bool:
        """``eval.stop_at_return`` waits for the pruning / int8 point: a student that reaches the
        return before it is compressed first, and stops at the first evaluation of the compressed
        student that reaches the return again (its best policy is chosen among the compressed
        checkpoints only); one that already does needs no fine-tune."""
        return all(component.may_stop_early() for component in self.components)

    @property
    def selection_phase(self) -> int:
        """One more per component applied (pruned, quantised): checkpoints before are not candidates."""
        return sum(component.applied for component in self.components)

    # ---- QDagger's offline phase ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # before the callbacks' on_train_start, so the evaluation callback scores the pretrained
        # student at env step 0 (and QDagger's lambda starts from that score)
        if self.offline.enabled and self.pretrain_report is None:  # a resumed run has done it
            self.pretrain_offline()

    @property
    def evaluate_at_start(self) -> bool:
        return self.pretrain_report is not None

    def target_progress(self) -> int:
        """Env steps online; in the offline phase, the env steps its updates stand for at the
        online update-to-data ratio: each ``gradient_steps`` updates (one round) count as
        ``train_freq`` env steps, so the target net's env-step period means the same number of
        updates in both phases. Called after every update (``sgd_step``)."""
        if self._offline_start is None:
            return self.env_steps
        assert self.data is not None
        updates = self.optimizer_steps - self._offline_start  # offline updates done, this one included
        return -(-updates // self.data.gradient_steps) * self.data.train_freq

    def pretrain_offline(self) -> None:
        """Teacher rollouts into the replay, then ``updates`` steps of the loss on it. The target
        net follows the online schedule mapped to updates (``target_progress``: one target period per
        ``target_update_interval * gradient_steps / train_freq`` updates) and is synced at the end,
        when the online phase starts its own schedule at env step 0."""
        t0 = time.perf_counter()
        data, buffer = self.data, self.collector.buffer
        assert data is not None
        steps = collect_rollouts(
            self.env_cfg,
            buffer,
            self.teacher_greedy,
            self.offline.epsilon,
            self.offline.teacher_steps,
            self.seed,
            ("pretrain",),
            data.reward_clip,
        )
        opt = self.optimizers(use_pl_optimizer=False)
        interval, self.log_interval = self.log_interval, 1 << 62  # one mean over the phase, logged once
        done, chunk = 0, 256  # minibatches sampled 256 at a time; the target schedule counts each update
        self._offline_start = self.optimizer_steps
        try:
            while done < self.offline.updates:
                k = min(chunk, self.offline.updates - done)
                self.run_updates(opt, buffer.sample_stack(k, data.batch_size))
                done += k
        finally:
            self._offline_start = None
        means = {k: (v / max(self._count, 1)).item() for k, v in self._sums.items()}
        self._sums, self._count, self.log_interval = {}, 0, interval  # the online phase's logs start clean
        if self.target is not None:
            update_target(self.target.net, self.q_net, 1.0)
            self.target.next_update = self.target.interval
        self.pretrain_report = {
            "teacher_steps": steps,
            "updates": done,
            "wall_s": time.perf_counter() - t0,
            **{f"mean_{k}": v for k, v in means.items() if k in ("distill_loss", "td_loss", "agreement")},
        }
        self.log_env_metrics({f"pretrain/{k}": v for k, v in self.pretrain_report.items()})

    def on_greedy_evaluation(self, student_return: float, teacher_return: float, random_return: float) -> None:
        if self.objective.hybrid:
            self.objective.distill_weight.observe(student_return, teacher_return, random_return)

    # ---- logging and resuming -------------------------------------------------------------------
    def flush_metrics(self) -> None:
        if self.control != "student":
            acted = (
                self.env_steps if self.dataset is not None else self.teacher_acted
            )  # a dataset is the teacher's play
            self.log_env_metrics(
                {
                    "train/teacher_action_fraction": acted / max(self.env_steps, 1),
                    "train/beta": self.beta(self.env_steps) if self.control == "mixed" else 1.0,
                }
            )
        super().flush_metrics()

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"teacher_acted": self.teacher_acted, "control_rng": self._rng.bit_generator.state}
        if self.objective.hybrid:
            state["distill_weight"] = self.objective.distill_weight.state_dict()
        if self.pretrain_report is not None:
            state["pretrain_report"] = dict(self.pretrain_report)
        for component in self.components:
            state.update(component.state_dict())
        if self.selection_phase:
            state["selection_phase"] = self.selection_phase  # (derived from the components when loaded)
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.teacher_acted = int(state.get("teacher_acted", 0))
        if "control_rng" in state:
            self._rng.bit_generator.state = state["control_rng"]
        if self.objective.hybrid and "distill_weight" in state:
            self.objective.distill_weight.load_state_dict(state["distill_weight"])
        if "pretrain_report" in state:
            self.pretrain_report = {k: float(v) for k, v in state["pretrain_report"].items()}
        for component in self.components:
            component.load_state_dict(state, self)
