"""Magnitude pruning of a Q-network, for distillation combined with compression.

One-shot, global, unstructured: the fraction ``amount`` of all Linear and Conv2d weights with the
smallest |w| (biases kept) is set to zero, and the masks keep them at zero through the training
that follows (re-applied after every optimiser step), which is the distillation fine-tune that
recovers what pruning lost (Han et al. 2015's prune-then-retrain, with the teacher as the target).
"""

from __future__ import annotations

import torch
from torch import nn

PRUNABLE = (nn.Linear, nn.Conv2d)


def prunable_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of the Linear and Conv2d layers, by parameter name."""
    return {
        f"{name}.weight" if name else "weight": m.weight for name, m in net.named_modules() if isinstance(m, PRUNABLE)
    }


def magnitude_masks(net: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    """Masks (1 = kept) zeroing the ``amount`` fraction of prunable weights smallest in magnitude,
    one threshold over all layers."""
    if not 0.0 <= float(amount) < 1.0:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    weights = prunable_weights(net)
    if not weights:
        raise ValueError("the network has no Linear or Conv2d weights to prune")
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    k = int(round(float(amount) * flat.numel()))
    if k == 0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    threshold = torch.kthvalue(flat, k).values
    masks, budget = {}, k
    for name, w in weights.items():  # ties at the threshold: prune exactly k weights in all
        below = w.detach().abs() < threshold
        at = (w.detach().abs() == threshold) & ~below
        take = max(0, min(int(at.sum()), budget - int(below.sum())))
        prune = below.clone()
        if take:
            idx = torch.nonzero(at.flatten()).squeeze(1)[:take]
            prune.view(-1)[idx] = True
        budget -= int(prune.sum())
        masks[name] = ~prune
    return masks


@torch.no_grad()
def apply_masks(net: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(net.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def nonzero_params(net: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in net.parameters()))
