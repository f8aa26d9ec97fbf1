"""Multi-task Q-learning (Rusu et al. 2016, §4): one network, a shared trunk, one Q head per task.

Two LightningModules train the same ``MultiTaskQNetwork``:

* ``MultiTaskDistill``: n frozen single-task teachers -> one student. Each task has its own vector
  env, replay buffer and collector, filled by *its teacher* acting epsilon-greedily (eps = 0.05,
  the paper's teacher-driven data). Every update round takes one minibatch from each task's replay
  and either steps the optimiser once per task batch, in turn (``update=interleave``, the paper's
  per-task batches), or once on the sum of the per-task losses (``update=sum``).
* ``JointMultiTaskDQN``: the baseline: the same net trained from scratch with the DQN TD loss on all
  tasks at once (each task's collector acts with the net's own head for that task), at the same
  per-task env-step budget.

Counters (``steps_per_task``, ``learning_starts``, ``train_freq``, eps decay, target interval) are
*per-task* env steps, so a setting means what it means in a single-task run; ``env_steps`` is
the total over tasks.

The net, its per-task views and ``ADAPTERS`` live in ``kdrl.nets``; the per-task streams in
``kdrl.data``; the periodic evaluation in ``kdrl.callbacks`` and the policy file in ``kdrl.io``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kdrl.collector import EnvCollector, GreedyFn, greedy_actions
from kdrl.data import MultiTaskStream, StreamConfig, TaskEnv, build_stream
from kdrl.losses import StudentLoss
from kdrl.modules.base import RLModule
from kdrl.modules.dqn import exploration_schedule, td_term
from kdrl.nets import MultiTaskQNetwork, TaskView
from kdrl.optim import OptimizerFactory
from kdrl.replay import Transitions
from kdrl.schedules import LinearSchedule
from kdrl.td import TargetNetwork

UPDATES = ("interleave", "sum")
MODES = ("distill", "joint_dqn")


# ---- the shared learner ----------------------------------------------------------------------------
class MultiTaskModule(RLModule):
    """Per-task collectors and replays, lockstep update rounds, per-task metrics and resume state.

    Subclasses define ``behaviour_of(task)`` (who acts) and ``task_loss(task, batch)``; exploration
    and the target schedule count *per-task* env steps.
    """

    def __init__(
        self,
        net: MultiTaskQNetwork,
        tasks: Sequence[TaskEnv],
        data: dict[str, Any],
        optimizer: OptimizerFactory,
        exploration: LinearSchedule,
        update: str = "interleave",
        seed: int = 0,
        log_interval: int = 250,
    ) -> None:
        if update not in UPDATES:
            raise ValueError(f"unknown update '{update}' (expected one of {', '.join(UPDATES)})")
        if len(tasks) != net.n_tasks:
            raise ValueError(f"the net has {net.n_tasks} heads but {len(tasks)} tasks were given")
        super().__init__(
            net,
            None,
            None,
            StreamConfig.from_dict(data, total_key="steps_per_task"),
            optimizer,
            exploration,
            seed,
            log_interval,
            data.get("max_grad_norm"),
        )
        self.tasks = list(tasks)
        self.names = [t.name for t in self.tasks]
        self.views = [TaskView(net, i) for i in range(net.n_tasks)]  # a plain list: not registered twice
        self.update = update

    # ---- acting and data ----------------------------------------------------------------------
    @property
    def collectors(self) -> list[EnvCollector]:
        return self.stream.collector.collectors

    @property
    def task_env_steps(self) -> int:
        """Env steps of the task that has taken fewest (the per-task progress counter)."""
        return min(c.env_steps for c in self.collectors)

    def target_progress(self) -> int:
        return self.task_env_steps

    def greedy_fn(self, task: int) -> GreedyFn:
        return lambda obs: greedy_actions(self.views[task], obs, self.device)

    def behaviour_of(self, task: int) -> GreedyFn:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_stream(self) -> MultiTaskStream:
        assert self.data is not None
        # distinct env, replay and exploration seeds per task
        return MultiTaskStream(
            [
                build_stream(
                    t.env, t.spec, self.data, self.behaviour_of(i), self.exploration, self.seed, key=("task", i)
                )
                for i, t in enumerate(self.tasks)
            ]
        )

    # ---- learning -----------------------------------------------------------------------------
    def task_loss(self, task: int, batch: Transitions) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def run_round(self, opt: torch.optim.Optimizer, due: list[tuple[int, Transitions]]) -> None:
        """One update round: a minibatch from each task whose stack still has one."""
        outs: dict[int, dict[str, torch.Tensor]] = {}
        if self.update == "interleave":
            for task, batch in due:  # the paper: per-task batches, one step each, tasks in turn
                outs[task] = self.task_loss(task, batch)
                self.sgd_step(opt, outs[task]["loss"])
        else:
            outs = {task: self.task_loss(task, batch) for task, batch in due}
            self.sgd_step(opt, torch.stack([o["loss"] for o in outs.values()]).sum())
        metrics = {f"{self.names[t]}/{k}": v for t, o in outs.items() for k, v in o.items() if k != "loss"}
        metrics["loss"] = torch.stack([o["loss"] for o in outs.values()]).mean()
        self.accumulate(**metrics)  # one accumulation per round: per-task means stay per-task

    def learn(self, opt: torch.optim.Optimizer, batch: Sequence[Transitions]) -> None:
        rounds = max(int(b.actions.shape[0]) for b in batch)
        for k in range(rounds):
            due = [(i, b.at(k)) for i, b in enumerate(batch) if k < b.actions.shape[0]]
            self.run_round(opt, due)

    # ---- logging: per-task episodes (a CartPole and an Acrobot return do not average) ----------
    def episode_metrics(self) -> dict[str, float]:
        per_task: dict[str, float] = {}
        for name, c in zip(self.names, self.collectors):
            finished = c.drain_finished()
            if finished:
                per_task[f"train/{name}/episodic_return"] = float(np.mean([r for _, r, _ in finished]))
            per_task[f"train/{name}/env_steps"] = c.env_steps
        per_task["train/optimizer_steps"] = self.optimizer_steps
        return per_task


class MultiTaskDistill(MultiTaskModule):
    """n frozen teachers -> one multi-task student; each task's data comes from its teacher acting."""

    def __init__(
        self,
        net: MultiTaskQNetwork,
        teachers: Sequence[nn.Module],
        tasks: Sequence[TaskEnv],
        data: dict[str, Any],
        loss: StudentLoss,
        exploration: dict[str, Any],
        optimizer: OptimizerFactory,
        update: str = "interleave",
        seed: int = 0,
        log_interval: int = 250,
    ) -> None:
        super().__init__(net, tasks, data, optimizer, exploration_schedule(exploration), update, seed, log_interval)
        if len(teachers) != len(tasks):
            raise ValueError(f"need one teacher per task, got {len(teachers)} for {len(tasks)} tasks")
        self.teachers = nn.ModuleList(t.requires_grad_(False).eval() for t in teachers)
        self.distill_loss = loss.distill

    def frozen(self) -> list[nn.Module]:
        return list(self.teachers)

    def behaviour_of(self, task: int) -> GreedyFn:
        return lambda obs: greedy_actions(self.teachers[task], obs, self.device)

    def task_loss(self, task: int, batch: Transitions) -> dict[str, torch.Tensor]:
        q_s = self.q_net(batch.obs, task)
        with torch.no_grad():
            q_t = self.teachers[task](batch.obs)
        loss = self.distill_loss(q_s, q_t)
        with torch.no_grad():
            agreement = (q_s.argmax(1) == q_t.argmax(1)).float().mean()
        return {"loss": loss, "distill_loss": loss, "agreement": agreement}


class JointMultiTaskDQN(MultiTaskModule):
    """The multi-task net trained with (Double) DQN on every task at once, its own heads acting."""

    def __init__(
        self,
        net: MultiTaskQNetwork,
        tasks: Sequence[TaskEnv],
        data: dict[str, Any],
        dqn: dict[str, Any],
        optimizer: OptimizerFactory,
        update: str = "interleave",
        seed: int = 0,
        log_interval: int = 250,
    ) -> None:
        # n-step returns as single-task DQN has them: each task's replay sums them (kdrl.replay) with
        # the TD term's gamma, and the TD term bootstraps with their per-sample gamma^m (kdrl.td)
        data = {**data, "n_step": int(dqn.get("n_step", 1)), "gamma": float(dqn["gamma"])}
        super().__init__(
            net, tasks, data, optimizer, exploration_schedule(dqn["exploration"]), update, seed, log_interval
        )
        self.td = td_term(dqn)
        self.target = TargetNetwork(net, int(dqn["target_update_interval"]), float(dqn["tau"]))

    def behaviour_of(self, task: int) -> GreedyFn:
        return self.greedy_fn(task)

    def task_loss(self, task: int, batch: Transitions) -> dict[str, torch.Tensor]:
        assert self.target is not None
        target = self.target
        loss, q_taken = self.td(
            self.q_net(batch.obs, task), batch, lambda x: self.q_net(x, task), lambda x: target(x, task)
        )
        return {"loss": loss, "td_loss": loss, "q_mean": q_taken.detach().mean()}
