"""What one training example is, and how a rater's answer becomes its target.

A conversation is a list of chat messages, ``{"role": "user" | "assistant" | "system", "content": str}``,
ending with the turn that both responses answer.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

Conversation = list[dict[str, str]]

# Stated strength k (labeling's Judgment.Strength: 1 slightly, 2 clearly, 3 much better) -> target sigma(k)
# for the preferred side. The soft-target Bradley-Terry loss is smallest at the margin r_win - r_lose = logit(target)
# = k: each step of stated strength asks for one more logit of reward margin, the margin schedule of Llama 2's
# reward models (Touvron et al. 2023, sec. 3.2.2), without ever asking for an infinite margin the way a hard label
# does. At margin 0 the gradient is (target - 0.5): 0.23 for "slightly", 0.38 for "clearly", 0.45 for "much", so a
# strong preference pulls about twice as hard as a slight one.
STRENGTH_TARGETS = {k: 1.0 / (1.0 + math.exp(-k)) for k in (1, 2, 3)}


def soft_target(outcome: str, strength: int | None = None) -> float | None:
    """P(response a is preferred) for one judgment; None for "both_bad".

    >>> round(soft_target("a", 3), 3), round(soft_target("b", 1), 3), soft_target("tie"), soft_target("both_bad")
    (0.953, 0.269, 0.5, None)

    "both_bad" says nothing about which response is better, so it is not preference evidence: callers drop it
    from the pairwise loss (it may still mark a prompt as hard or both responses as poor elsewhere).
    """
    if outcome == "tie":
        return 0.5
    if outcome == "both_bad":
        return None
    if outcome not in ("a", "b"):
        raise ValueError(f"unknown outcome {outcome!r}: expected 'a', 'b', 'tie' or 'both_bad'")
    if strength not in STRENGTH_TARGETS:
        raise ValueError(f"a preference for {outcome!r} needs a strength of 1, 2 or 3, got {strength!r}")
    target = STRENGTH_TARGETS[strength]
    return target if outcome == "a" else 1.0 - target


@dataclass(frozen=True)
class PreferenceExample:
    """One comparison: which of two responses to the same conversation is better, and how sure we are."""

    conversation: Conversation  # the messages both responses answer
    response_a: str
    response_b: str
    target: float  # P(a is preferred), in [0, 1]: 1 = a wins outright, 0.5 = tie (see soft_target)
    weight: float = 1.0  # how much this example counts in the loss (e.g. rater reliability); 0 ignores it

    def __post_init__(self):
        if not 0.0 <= self.target <= 1.0:
            raise ValueError(f"PreferenceExample.target must be in [0, 1], got {self.target!r}")
        if not (math.isfinite(self.weight) and self.weight >= 0.0):
            raise ValueError(f"PreferenceExample.weight must be a finite number >= 0, got {self.weight!r}")
        if not self.conversation:
            raise ValueError("PreferenceExample.conversation must hold at least one message")


def holdout_split(
    examples: list[PreferenceExample], *, eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """(train, held-out): a seeded shuffle, the last eval_fraction held out; the same inputs give the same split."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(examples) * eval_fraction)
    cut = len(order) - n_eval
    return [examples[i] for i in order[:cut]], [examples[i] for i in order[cut:]]
