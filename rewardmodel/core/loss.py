"""The Bradley-Terry loss on soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    reward_a: torch.Tensor, reward_b: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean of -[t log sigma(r_a - r_b) + (1 - t) log sigma(r_b - r_a)].

    With t = 1 this is the usual -log sigma(r_chosen - r_rejected). A tie (t = 0.5) is smallest at a zero margin,
    so it pulls sigma(r_a - r_b) toward 0.5; a soft target t is smallest at margin logit(t) (see soft_target).
    A weight w scales one example's term (w = 2 counts it twice, w = 0 drops it); the sum is divided by the number
    of examples, not by the sum of weights, so a batch of low-weight examples moves the model less.

    Rewards of shape (n, H) are H heads: each head's loss is taken with its own column of an (n, H) weight (or
    the shared (n,) one), and the result is the mean over heads of the per-head means.

    >>> r = torch.tensor([0.0]); bradley_terry_loss(r, r, torch.tensor([1.0])).item() == -F.logsigmoid(r).item()
    True
    """
    margin = reward_a.float() - reward_b.float()
    if margin.dim() == 2:
        target = target.unsqueeze(-1)
        if weight is not None and weight.dim() == 1:
            weight = weight.unsqueeze(-1)
    per_example = -(target * F.logsigmoid(margin) + (1.0 - target) * F.logsigmoid(-margin))
    if weight is not None:
        per_example = per_example * weight
    return per_example.mean()
