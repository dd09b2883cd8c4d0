"""The training loop: Bradley-Terry on length-grouped, dynamically padded pairs.

One process on one device (CPU, or one CUDA GPU with bf16 autocast) by default. Started by torchrun with
torch.distributed initialised (python -m rewardmodel.core does that), the same loop runs data-parallel: each
process takes every world-th batch of the same seeded order and DistributedDataParallel averages gradients.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import EncodedPair, collate_pairs, encode_pairs, length_grouped_batches
from .evaluate import evaluate
from .examples import PreferenceExample
from .formatting import SequenceEncoder
from .loss import bradley_terry_loss
from .model import (
    autocast,
    check_cpu_precision,
    first_token_only_last_layer,
    load_backbone,
    resolve_device,
    resolve_precision,
    rewards,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, float], None]


class TrainingCancelled(Exception):
    """should_stop() said stop; the partly trained model is discarded with it."""

    def __init__(self, step: int, total: int):
        super().__init__(f"training cancelled after {step} of {total} steps")
        self.step = step
        self.total = total


@dataclass
class TrainResult:
    model: Any  # the trained transformers model, in eval mode, on the training device
    tokenizer: Any
    config: TrainConfig
    # {"train": {loss, steps, pairs, seconds, pairs_per_second, processes, precision},
    #  "eval": evaluate()'s dict if asked for}
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # the loss of every optimizer step, in order


def train(
    config: TrainConfig,
    train_examples: Sequence[PreferenceExample],
    eval_examples: Sequence[PreferenceExample] | None = None,
    *,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune config.backbone as a reward model on train_examples; evaluate on eval_examples if given.

    progress(step, total, loss) is called after every optimizer step; should_stop() is asked before every step
    and, when it returns True, the run ends with TrainingCancelled. Under torchrun both are rank 0's, and only
    rank 0 evaluates.
    """
    if not train_examples:
        raise ValueError("train() needs at least one training pair")
    rank, world = _process_group()
    seed_everything(config.seed)
    device = _device_for(config.device, world)
    if rank == 0 and (warning := check_cpu_precision(device, config.precision)):
        logger.warning(warning)
    # Loaded after seeding: the new reward head's random init is part of what the seed fixes (on every rank).
    model, tokenizer = load_backbone(
        config.backbone, disable_dropout=config.disable_dropout, num_heads=config.num_heads
    )
    model.to(device).train()
    net = (
        model if world == 1 else DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    )
    pairs = encode_pairs(SequenceEncoder(tokenizer, config.max_length), train_examples)

    batches_per_rank = math.ceil(len(pairs) / config.batch_size) // world
    if batches_per_rank == 0:
        raise ValueError(f"{len(pairs)} pairs make fewer batches of {config.batch_size} than the {world} processes")
    steps_per_epoch = math.ceil(batches_per_rank / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _adamw(model, config)
    scheduler = _linear_warmup_then_decay(optimizer, warmup=round(config.warmup_ratio * total_steps), total=total_steps)
    generator = torch.Generator().manual_seed(config.seed)
    head_weights = bootstrap_weights(len(pairs), config.num_heads, config.seed)

    losses: list[float] = []
    step = 0
    started = time.perf_counter()
    with (
        tqdm(total=total_steps, desc="training", unit="step", disable=None if rank == 0 else True) as bar,
        first_token_only_last_layer(model),
    ):
        for _epoch in range(config.epochs):
            # Every rank draws the same batch order from the same seed and takes its own share of it.
            batches = length_grouped_batches([p.length for p in pairs], config.batch_size, generator)
            batches = batches[rank::world][:batches_per_rank]
            for first in range(0, len(batches), config.gradient_accumulation_steps):
                if _stop_requested(should_stop, rank, world, device):
                    raise TrainingCancelled(step, total_steps)
                group = batches[first : first + config.gradient_accumulation_steps]
                loss = _optimizer_step(
                    net, optimizer, pairs, head_weights, group, tokenizer.pad_token_id, device, config, world
                )
                scheduler.step()
                step += 1
                losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if progress is not None and rank == 0:
                    progress(step, total_steps, loss)
    seconds = time.perf_counter() - started

    model.eval()
    last_epoch = losses[-steps_per_epoch:]
    trained_pairs = sum(len(b) for b in batches) * world  # of the last epoch; world > 1 drops a ragged tail
    metrics = {
        "train": {
            "loss": sum(last_epoch) / len(last_epoch),
            "steps": step,
            "pairs": trained_pairs,
            "seconds": seconds,
            "pairs_per_second": trained_pairs * config.epochs / seconds,
            "processes": world,
            "precision": resolve_precision(device, config.precision),
        }
    }
    if eval_examples and rank == 0:
        metrics["eval"] = evaluate(model, tokenizer, eval_examples, config)
    return TrainResult(model=model, tokenizer=tokenizer, config=config, metrics=metrics, losses=losses)


def bootstrap_weights(pairs: int, heads: int, seed: int) -> torch.Tensor | None:
    """(pairs, heads) Poisson(1) weights, one column per reward head; None for a single head (all weights 1).

    Poisson(1) is the online bootstrap (Oza & Russell 2001; Osband et al. 2016 for bootstrapped heads): each
    head sees each pair 0, 1, 2, ... times, as if it had its own resample of the data. The draw depends on the
    seed alone, so every process of a torchrun job, and every rerun, gives a head the same resample.
    """
    if heads == 1:
        return None
    generator = torch.Generator().manual_seed(seed + 7919)  # its own stream: the batch order stays seed's own
    return torch.poisson(torch.ones(pairs, heads), generator=generator)


def _optimizer_step(
    net, optimizer, pairs: list[EncodedPair], head_weights, group: list[list[int]], pad_id: int, device, config, world
) -> float:
    """Forward/backward every micro-batch of the group, then one clipped AdamW step; returns the group's loss."""
    group_pairs = sum(len(b) for b in group)
    group_loss = torch.zeros((), device=device)
    for index, indices in enumerate(group):
        micro = [pairs[i] for i in indices]
        batch = collate_pairs(micro, pad_id)
        if head_weights is not None:
            batch["weight"] = batch["weight"].unsqueeze(-1) * head_weights[indices]
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        # Under DDP, gradients are averaged across processes once per group, on its last backward.
        sync = world == 1 or index == len(group) - 1
        with contextlib.nullcontext() if sync else net.no_sync():
            with autocast(device, config.precision):
                # Both sides in one forward pass: one set of kernel launches, same padding width.
                r = rewards(net, batch["input_ids"], batch["attention_mask"])
            n = len(micro)
            # Each micro-batch's mean is scaled so that the group's gradient is the mean over all its pairs.
            loss = bradley_terry_loss(r[:n], r[n:], batch["target"], batch["weight"]) * (n / group_pairs)
            loss.backward()
        group_loss += loss.detach()
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        dist.all_reduce(group_loss, op=dist.ReduceOp.AVG)
    return group_loss.item()


def _process_group() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless a launcher such as torchrun started several processes and the caller
    initialised torch.distributed (the CLI does)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device_for(name: str, world: int) -> torch.device:
    device = resolve_device(name)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _stop_requested(should_stop, rank: int, world: int, device) -> bool:
    asked = bool(should_stop is not None and rank == 0 and should_stop())
    if world == 1:
        return asked
    # Rank 0 decides for everyone: a rank that stopped alone would leave the others waiting in all_reduce.
    flag = torch.tensor([1.0 if asked else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _adamw(model, config: TrainConfig) -> torch.optim.Optimizer:
    # Biases and norm gains (the 1-D tensors) are not decayed: shrinking them toward 0 is not regularisation.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)


def _linear_warmup_then_decay(optimizer, *, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
