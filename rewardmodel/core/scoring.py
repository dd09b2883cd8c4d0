"""Rewards for (conversation, response) items: batched, length-sorted, no autograd."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .config import TrainConfig
from .data import pad_sequences
from .examples import Conversation
from .formatting import SequenceEncoder
from .model import autocast, first_token_only_last_layer, head_count, rewards


def score(
    model, tokenizer, items: Sequence[tuple[Conversation, str]], config: TrainConfig
) -> list[float] | list[list[float]]:
    """One reward per (conversation, response), in the order given; a list of H rewards each for H > 1 heads."""
    return score_encoded(model, tokenizer, SequenceEncoder(tokenizer, config.max_length).encode(items), config)


def mean_reward(reward: float | list[float]) -> float:
    """One number per item from what score() gave it: an H-head model's reward is the mean of its heads.

    >>> mean_reward(0.5), mean_reward([1.0, 2.0, 3.0])
    (0.5, 2.0)
    """
    return float(sum(reward) / len(reward)) if isinstance(reward, (list, tuple)) else float(reward)


def score_encoded(model, tokenizer, sequences: Sequence[list[int]], config: TrainConfig) -> list:
    return reward_tensor(model, tokenizer, sequences, config).tolist()


def reward_tensor(model, tokenizer, sequences: Sequence[list[int]], config: TrainConfig) -> torch.Tensor:
    """Rewards as a CPU float32 tensor: (sequences,) for one head, (sequences, H) for H heads."""
    return _forward(model, tokenizer, sequences, config, with_embeddings=False)[0]


def score_with_embeddings(
    model, tokenizer, items: Sequence[tuple[Conversation, str]], config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, embeddings) of each (conversation, response), in the order given, from one forward pass.

    Rewards are shaped as reward_tensor's; embeddings are core.head.embed's (the mean-pooled last hidden
    state), (items, hidden) CPU float32, for the embedding cache (core.embeddings).
    """
    sequences = SequenceEncoder(tokenizer, config.max_length).encode(items)
    return _forward(model, tokenizer, sequences, config, with_embeddings=True)


def _forward(
    model, tokenizer, sequences: Sequence[list[int]], config: TrainConfig, *, with_embeddings: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from .embeddings import capture_embeddings  # only callers that cache embeddings need it

    heads = head_count(model)
    out = torch.empty((len(sequences), heads) if heads > 1 else (len(sequences),), dtype=torch.float32)
    embeddings = torch.empty((len(sequences), int(model.config.hidden_size)), dtype=torch.float32)
    if not sequences:
        return out, embeddings if with_embeddings else None
    device = next(model.parameters()).device
    # Sorting by length keeps each batch's padding near zero; results go back to the caller's order.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    was_training = model.training
    model.eval()
    # Mean pooling reads every position of the last layer, which first_token_only_last_layer skips.
    capture = capture_embeddings(model) if with_embeddings else contextlib.nullcontext()
    last_layer = contextlib.nullcontext() if with_embeddings else first_token_only_last_layer(model)
    try:
        with torch.inference_mode(), autocast(device, config.precision), last_layer, capture as captured:
            for start in range(0, len(order), config.eval_batch_size):
                chunk = order[start : start + config.eval_batch_size]
                input_ids, attention_mask = pad_sequences([sequences[i] for i in chunk], tokenizer.pad_token_id)
                batch_rewards = rewards(model, input_ids.to(device), attention_mask.to(device))
                out[chunk] = batch_rewards.float().cpu()
                if with_embeddings:
                    embeddings[chunk] = captured.pop(attention_mask)
    finally:
        model.train(was_training)
    return out, embeddings if with_embeddings else None
