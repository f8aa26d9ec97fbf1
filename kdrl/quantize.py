"""int8 weights of a Q-network, for distillation combined with quantisation.

One scheme, used both by quantisation-aware distillation (``distill.quantize``) and by the
``onnx_int8_weights`` export, so a student fine-tuned on int8 weights exports without any further
rounding: symmetric, one scale per output channel, ``w ~= scale * q`` with ``q`` in [-127, 127]
and ``scale = max|w| / 127`` over the channel.

Quantisation-aware fine-tune (straight-through estimator, Jacob et al. 2018): the network's
parameters hold the int8-representable weights the forward pass (and every evaluation, checkpoint
and exported policy) uses; float32 "master" weights receive each optimiser update and are re-rounded
after it. Updates smaller than half a step accumulate in the master copy instead of being lost.
"""

from __future__ import annotations

import torch
from torch import nn

from kdrl.prune import prunable_weights

INT8_MAX = 127


def int8_symmetric(w: torch.Tensor, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: int8 values and float32 scales along ``axis`` (shaped to broadcast against w)."""
    w = w.detach().to(torch.float32)
    others = [d for d in range(w.ndim) if d != axis]
    amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    # tensor / tensor: a true division on every device (CUDA multiplies by the reciprocal of a scalar
    # divisor, which would give GPU-trained weights other scales than the CPU export computes)
    scale = amax / torch.full_like(amax, INT8_MAX)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w / scale), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def int8_rounded(w: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """The nearest int8-representable weights (dequantised: float, exactly ``scale * q``)."""
    q, scale = int8_symmetric(w, axis)
    return (q.to(torch.float32) * scale).to(w.dtype)


class Int8Weights:
    """Quantisation-aware training state of one network: float32 master weights and the rounding step."""

    def __init__(self, net: nn.Module, master: dict[str, torch.Tensor] | None = None) -> None:
        weights = prunable_weights(net)
        if not weights:
            raise ValueError("the network has no Linear or Conv2d weights to quantise")
        source = master if master is not None else weights
        self.master = {
            k: source[k].detach().to(device=w.device, dtype=torch.float32).clone() for k, w in weights.items()
        }
        self.rounded: dict[str, torch.Tensor] = {}
        self.round_into(net)

    def _follow(self, params: dict[str, nn.Parameter]) -> None:
        """Keep the masters on the net's device (a resume loads them where they were saved, before
        Lightning moves the net)."""
        for name, w in self.master.items():
            if w.device != params[name].device:
                self.master[name] = w.to(params[name].device)
                if name in self.rounded:
                    self.rounded[name] = self.rounded[name].to(params[name].device)

    @torch.no_grad()
    def round_into(self, net: nn.Module) -> None:
        params = dict(net.named_parameters())
        self._follow(params)
        for name, w in self.master.items():
            self.rounded[name] = int8_rounded(w)
            params[name].copy_(self.rounded[name])

    @torch.no_grad()
    def after_step(self, net: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> None:
        """The optimiser moved the rounded weights: move the masters by as much, then re-round."""
        params = dict(net.named_parameters())
        self._follow(params)
        for name, w in self.master.items():
            w.add_(params[name].to(torch.float32) - self.rounded[name])
            if masks is not None and name in masks:
                w.mul_(masks[name])
        self.round_into(net)


def is_int8_representable(net: nn.Module) -> bool:
    """Every Linear/Conv2d weight equals its own int8 rounding (a quantisation-aware student does)."""
    return all(torch.equal(w.detach(), int8_rounded(w)) for w in prunable_weights(net).values())
