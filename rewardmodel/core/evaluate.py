"""Held-out metrics: pairwise accuracy, mean Bradley-Terry log-loss, expected calibration error."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import TrainConfig
from .data import encode_pairs
from .examples import PreferenceExample
from .formatting import SequenceEncoder
from .loss import bradley_terry_loss
from .scoring import reward_tensor

ECE_BINS = 10


def evaluate(model, tokenizer, examples: Sequence[PreferenceExample], config: TrainConfig) -> dict[str, float | None]:
    """{"accuracy", "log_loss", "ece", "n"} on held-out pairs (unweighted: every pair counts once).

    - accuracy: share of non-tie pairs where the model ranks the preferred response higher (a zero margin
      counts as half right); ties have no right answer and are left out of it (None when all pairs are ties).
    - log_loss: mean soft-target BT loss over all pairs, ties included; log 2 = 0.693 is a coin flip.
    - ece: expected calibration error of p = sigma(r_a - r_b), see expected_calibration_error.
    """
    if not examples:
        raise ValueError("evaluate() needs at least one held-out pair")
    pairs = encode_pairs(SequenceEncoder(tokenizer, config.max_length), examples)
    scores = reward_tensor(model, tokenizer, [p.ids_a for p in pairs] + [p.ids_b for p in pairs], config)
    if scores.dim() == 2:
        scores = scores.mean(dim=1)  # an ensemble is judged by its reward, the heads' mean
    n = len(pairs)
    margin = scores[:n] - scores[n:]
    target = torch.tensor([p.target for p in pairs], dtype=torch.float32)
    return {
        "accuracy": pairwise_accuracy(margin, target),
        "log_loss": bradley_terry_loss(margin, torch.zeros_like(margin), target).item(),
        "ece": expected_calibration_error(torch.sigmoid(margin), target),
        "n": n,
    }


def pairwise_accuracy(margin: torch.Tensor, target: torch.Tensor) -> float | None:
    decided = target != 0.5
    if not decided.any():
        return None  # not NaN: the metrics go into JSON columns, and PostgreSQL's jsonb refuses NaN
    agree = torch.sign(margin[decided]) * torch.sign(target[decided] - 0.5)
    # sign() of a zero margin is 0: half right, like a coin flip.
    return ((agree + 1) / 2).mean().item()


def expected_calibration_error(p: torch.Tensor, target: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Top-label ECE: which response is called "a" is arbitrary, so the model's confidence is max(p, 1 - p) and
    its outcome is the (soft) target of the side it picked. Pairs fall into equal-width confidence bins over
    [0.5, 1]; ECE = sum over bins of (share of pairs) x |mean confidence - mean outcome|.
    """
    picks_a = p >= 0.5
    confidence = torch.where(picks_a, p, 1 - p)
    outcome = torch.where(picks_a, target, 1 - target)
    bin_of = ((confidence - 0.5) * 2 * bins).long().clamp(0, bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        in_bin = bin_of == b
        if in_bin.any():
            gap = (confidence[in_bin].double().mean() - outcome[in_bin].double().mean()).abs()
            ece += in_bin.double().mean() * gap
    return ece.item()
