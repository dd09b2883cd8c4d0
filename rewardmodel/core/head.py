"""Reward heads on frozen embeddings: a Bradley-Terry linear model refit in milliseconds, no backbone training.

A full retrain fine-tunes the whole backbone (minutes on a CPU). Between retrains, and in the acquisition
benchmark's cheap mode, the backbone stays frozen: each response is embedded once (`embed`), and only a linear
reward r = w·e per head is fitted on the judged pairs (`fit_heads`), which takes well under a second for
thousands of pairs. The heads score any embedded response (`score_heads`).

    emb = embed(model, tokenizer, [(conversation, response), ...], config)   # (n, hidden) float32
    heads = fit_heads(emb[a], emb[b], target=t, weight=w, num_heads=5, seed=0)
    rewards = score_heads(heads, emb)                                          # (n, 5)

The embedding is the mean over real tokens of the backbone's last hidden state (`model.base_model`, so any
architecture with a base model), the pooling all-MiniLM-L6-v2 was trained with (its 1_Pooling config); the
inputs go through the trainer's own SequenceEncoder, so the conversation is formatted and truncated as in
training. It is not the input of the fine-tuned model's classifier (BERT's [CLS] pooler): a head fitted here is
its own small reward model on the version's frozen features, not a patch to the checkpoint.

The fit. Each head minimises the weighted soft-target BT loss of loss.py (summed over pairs, not averaged)
plus a Gaussian prior (l2 / 2)·|w|²: the MAP of Bayesian logistic regression on the embedding difference,
so the prior matters less as judgments accumulate. No bias: a constant added to every reward changes no
preference. With H > 1 heads, head h weighs each pair by its own Poisson(1) draw (train.bootstrap_weights, the
same online bootstrap as the fine-tuned heads), so the heads disagree where the data is thin. Full-batch
L-BFGS on a convex objective: deterministic for given inputs and seed.

`fisher_information` is the Laplace posterior precision of one head, l2·I + Σ weight·p(1−p)·d dᵀ: what
D-optimal acquisition (rewardmodel/acquisition.py) reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import TrainConfig
from .data import pad_sequences
from .examples import Conversation
from .formatting import SequenceEncoder
from .loss import bradley_terry_loss
from .model import autocast
from .train import bootstrap_weights

DEFAULT_L2 = 1.0


@dataclass(frozen=True)
class Heads:
    """H linear reward heads over one embedding space: reward = embedding @ weight.T."""

    weight: np.ndarray  # (H, hidden) float64
    l2: float  # the prior precision they were fitted with (the Fisher's starting point)

    @property
    def num_heads(self) -> int:
        return int(self.weight.shape[0])

    @property
    def mean(self) -> np.ndarray:
        """The heads' mean weight: reward of the mean head = the mean of the heads' rewards (it is linear)."""
        return self.weight.mean(axis=0)


def embed(model, tokenizer, items: Sequence[tuple[Conversation, str]], config: TrainConfig) -> np.ndarray:
    """(n, hidden) float32: mean-pooled last hidden state of each (conversation, response), in the order given."""
    return embed_encoded(model, tokenizer, SequenceEncoder(tokenizer, config.max_length).encode(items), config)


def embed_encoded(model, tokenizer, sequences: Sequence[list[int]], config: TrainConfig) -> np.ndarray:
    """embed() for sequences already encoded by SequenceEncoder."""
    base = model.base_model
    hidden = int(model.config.hidden_size)
    out = np.empty((len(sequences), hidden), dtype=np.float32)
    if not sequences:
        return out
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # little padding per batch
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, config.precision):
            for start in range(0, len(order), config.eval_batch_size):
                chunk = order[start : start + config.eval_batch_size]
                input_ids, attention_mask = pad_sequences([sequences[i] for i in chunk], tokenizer.pad_token_id)
                input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
                states = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
                mask = attention_mask.unsqueeze(-1).float()
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                out[chunk] = pooled.cpu().numpy()
    finally:
        model.train(was_training)
    return out


def fit_heads(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    *,
    target: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    num_heads: int = 1,
    l2: float = DEFAULT_L2,
    seed: int = 0,
    prior_mean: np.ndarray | None = None,
    max_iter: int = 200,
) -> Heads:
    """Fit num_heads linear BT heads on pairs (emb_a[i], emb_b[i]).

    target: P(a preferred) per pair (soft_target's values; default 1.0, "a is the chosen one").
    weight: how much each pair counts (default 1.0; 0 leaves it out), as in PreferenceExample.
    l2: the Gaussian prior's precision on each head's weight; > 0 keeps the fit defined on few pairs.
    seed: the heads' bootstrap draw (num_heads > 1); one head sees every pair with its weight.
    prior_mean: where the prior is centred, (hidden,) or (H, hidden); default 0. A refit between fine-tunes
        can centre it on the version's own head, so few new judgments move the head a little, not to zero.
    """
    emb_a = np.asarray(emb_a, dtype=np.float64)
    emb_b = np.asarray(emb_b, dtype=np.float64)
    if emb_a.ndim != 2 or emb_a.shape != emb_b.shape:
        raise ValueError(f"emb_a and emb_b must be (pairs, hidden) of one shape, got {emb_a.shape} and {emb_b.shape}")
    if num_heads < 1 or l2 <= 0:
        raise ValueError(f"num_heads must be >= 1 and l2 > 0, got {num_heads} and {l2}")
    n, hidden = emb_a.shape
    if n == 0:
        return Heads(weight=np.zeros((num_heads, hidden)), l2=l2)
    diff = torch.from_numpy(emb_a - emb_b)
    t = torch.ones(n, dtype=torch.float64) if target is None else torch.as_tensor(target, dtype=torch.float64)
    w = torch.ones(n, dtype=torch.float64) if weight is None else torch.as_tensor(weight, dtype=torch.float64)
    if t.shape != (n,) or w.shape != (n,):
        raise ValueError(f"target and weight need one value per pair ({n})")
    per_head = w.unsqueeze(-1)
    if num_heads > 1:
        per_head = per_head * bootstrap_weights(n, num_heads, seed).double()
    zeros = torch.zeros(n, num_heads, dtype=torch.float64)

    centre = torch.zeros(hidden, num_heads, dtype=torch.float64)
    if prior_mean is not None:
        centre = centre + torch.as_tensor(np.asarray(prior_mean, dtype=np.float64)).reshape(-1, hidden).T
    theta = centre.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        # bradley_terry_loss averages over pairs (and heads); times n·H it is the sum the MAP objective wants.
        loss = bradley_terry_loss(diff @ theta, zeros, t, per_head) * (n * num_heads)
        loss = loss + 0.5 * l2 * ((theta - centre) ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return Heads(weight=theta.detach().numpy().T.copy(), l2=l2)


def score_heads(heads: Heads, embeddings: np.ndarray) -> np.ndarray:
    """(n, H) rewards of embedded responses under each head (float64)."""
    return np.asarray(embeddings, dtype=np.float64) @ heads.weight.T


def fisher_information(
    heads: Heads, diff: np.ndarray, weight: np.ndarray | None = None, *, head: int | None = None
) -> np.ndarray:
    """(hidden, hidden) posterior precision of one head's weight (Laplace): l2·I + Σ_i weight_i·p_i(1−p_i)·d_i d_iᵀ.

    diff: (pairs, hidden) embedding differences of the judged pairs; p_i = σ(w·d_i) under the head (None: the
    heads' mean weight). This is the Fisher information of the last (here: only) layer that Active Reward
    Modeling's D-optimal design grows (rewardmodel/acquisition.py).
    """
    diff = np.asarray(diff, dtype=np.float64)
    theta = heads.mean if head is None else heads.weight[head]
    p = 1.0 / (1.0 + np.exp(-(diff @ theta)))
    c = p * (1.0 - p) * (1.0 if weight is None else np.asarray(weight, dtype=np.float64))
    return heads.l2 * np.eye(diff.shape[1]) + (diff * c[:, None]).T @ diff
