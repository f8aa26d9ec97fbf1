"""What every kdrl LightningModule shares: an env-backed replay stream and env-step logging."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from kdrl.data import EnvCollector, ReplayStream


def stream_state(stream: ReplayStream) -> dict[str, Any]:
    """A stream's counters, its collector's RNG and its replay buffer (for resuming)."""
    c = stream.collector
    return {"env_steps": c.env_steps, "episodes": c.episodes, "grad_steps": stream.grad_steps,
            "collector_rng": c.rng.bit_generator.state, "buffer": c.buffer.state_dict()}


def load_stream_state(stream: ReplayStream, state: dict[str, Any]) -> None:
    c = stream.collector
    c.env_steps, c.episodes, stream.grad_steps = int(state["env_steps"]), int(state["episodes"]), int(state["grad_steps"])
    c.rng.bit_generator.state = state["collector_rng"]
    c.buffer.load_state_dict(state["buffer"])
    c.epsilon = c.epsilon_fn(c.env_steps)


def global_rng_state() -> dict[str, Any]:
    """torch, Python and numpy global RNG states in a weights_only-loadable form."""
    np_state = np.random.get_state()
    return {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
            "numpy_rng": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    nps = state["numpy_rng"]
    np.random.set_state((nps[0], nps[1].numpy().astype(np.uint32), *nps[2:]))


class NonFiniteLossError(FloatingPointError):
    """A loss or parameter became NaN/inf; training stops and the last good checkpoint stays."""


class RLModule(pl.LightningModule):
    """Owns the collector and stream (built once, in ``setup``); logs against env steps.

    Subclasses implement ``build_stream()``. Metrics are accumulated as detached tensors and
    flushed every ``log_interval`` gradient steps, so the hot loop never syncs or formats strings.
    """

    collector: EnvCollector
    stream: ReplayStream

    def __init__(self, log_interval: int = 250) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.log_interval = int(log_interval)
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._t_last = time.perf_counter()
        self._env_steps_last = 0
        self.sps = 0.0
        self._stream_built = False

    # ---- data -------------------------------------------------------------------------------
    def build_stream(self) -> ReplayStream:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if not self._stream_built:
            self.stream = self.build_stream()
            self.collector = self.stream.collector
            self._stream_built = True

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the stream yields whole batches; workers would copy the env and buffer.
        return DataLoader(self.stream, batch_size=None, num_workers=0,
                          pin_memory=torch.cuda.is_available() and self.device.type == "cuda")

    @property
    def env_steps(self) -> int:
        return self.collector.env_steps

    # ---- resuming: everything beyond the nets and the optimiser ---------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Counters, the replay buffer and every RNG, as tensors and plain Python values so the
        checkpoint loads with ``weights_only=True``. The envs themselves are not saved: a resumed
        run resets them (the episodes in progress at the kill are dropped)."""
        checkpoint["kdrl_stream"] = {**stream_state(self.stream), **global_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("kdrl_stream")
        if state is None:
            return
        self.setup("fit")
        load_stream_state(self.stream, state)
        set_global_rng_state(state)
        self._env_steps_last = self.collector.env_steps
        self.resumed_from_env_steps = self.collector.env_steps

    # ---- logging ----------------------------------------------------------------------------
    def accumulate(self, **metrics: torch.Tensor) -> None:
        for k, v in metrics.items():
            v = v.detach()
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._count += 1
        if self._count >= self.log_interval:
            self.flush_metrics()

    def log_env_metrics(self, metrics: dict[str, Any]) -> None:
        """Send metrics to every logger with env steps as the step (the x-axis RL papers use)."""
        if self._trainer is None:  # driven without a Trainer: nothing to log to
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["env_steps"] = float(self.env_steps)
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=self.env_steps)
            if isinstance(logger, pl.loggers.CSVLogger):
                logger.save()  # append to metrics.csv now: a killed run keeps its curves

    def flush_metrics(self) -> None:
        now = time.perf_counter()
        dt = now - self._t_last
        if dt > 0:
            self.sps = (self.env_steps - self._env_steps_last) / dt
        self._t_last, self._env_steps_last = now, self.env_steps
        out: dict[str, float] = {f"train/{k}": (v / max(self._count, 1)).item() for k, v in self._sums.items()}
        bad = [k for k, v in out.items() if not np.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite {', '.join(b.split('/')[-1] for b in bad)} at env step {self.env_steps}, "
                f"gradient step {self.stream.grad_steps}; stopped, the last good checkpoint is kept "
                "(try a lower learning rate or gradient clipping)")
        self._sums, self._count = {}, 0
        finished = self.collector.drain_finished()
        if finished:
            out["train/episodic_return"] = float(np.mean([r for _, r, _ in finished]))
            out["train/episodic_length"] = float(np.mean([n for _, _, n in finished]))
        out["train/epsilon"] = self.collector.epsilon
        out["train/sps"] = self.sps
        out["train/episodes"] = self.collector.episodes
        out["train/grad_steps"] = self.stream.grad_steps
        self.log_env_metrics(out)
