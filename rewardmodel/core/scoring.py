"""Rewards for (conversation, response) items: batched, length-sorted, no autograd."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import TrainConfig
from .data import pad_sequences
from .examples import Conversation
from .formatting import SequenceEncoder
from .model import autocast, first_token_only_last_layer, rewards


def score(model, tokenizer, items: Sequence[tuple[Conversation, str]], config: TrainConfig) -> list[float]:
    """One reward per (conversation, response), in the order given."""
    return score_encoded(model, tokenizer, SequenceEncoder(tokenizer, config.max_length).encode(items), config)


def score_encoded(model, tokenizer, sequences: Sequence[list[int]], config: TrainConfig) -> list[float]:
    if not sequences:
        return []
    device = next(model.parameters()).device
    # Sorting by length keeps each batch's padding near zero; results go back to the caller's order.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = torch.empty(len(sequences), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, config.precision), first_token_only_last_layer(model):
            for start in range(0, len(order), config.eval_batch_size):
                chunk = order[start : start + config.eval_batch_size]
                input_ids, attention_mask = pad_sequences([sequences[i] for i in chunk], tokenizer.pad_token_id)
                batch_rewards = rewards(model, input_ids.to(device), attention_mask.to(device))
                out[chunk] = batch_rewards.float().cpu()
    finally:
        model.train(was_training)
    return out.tolist()
