"""Reward-model training core: plain torch + transformers, no Django.

The whole surface a caller (the Django pipeline, the CLI, a notebook) needs:

    config = TrainConfig(epochs=2)                     # backbone defaults to the offline all-MiniLM-L6-v2
    result = train(config, train_examples, eval_examples, progress=on_step, should_stop=cancelled)
    path = save_checkpoint(default_model_root(), "my-project", 3, result.model, result.tokenizer,
                           config, result.metrics, data_snapshot={"judgments": 1234})
    model, tokenizer, metadata = load_checkpoint(path)
    rewards = score(model, tokenizer, [(conversation, response), ...], config)
"""

from .checkpoint import (
    CheckpointError,
    default_model_root,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from .config import TrainConfig, default_backbone
from .evaluate import evaluate
from .examples import Conversation, PreferenceExample, holdout_split, soft_target
from .loss import bradley_terry_loss
from .model import load_backbone
from .scoring import score
from .train import TrainingCancelled, TrainResult, train

__all__ = [
    "CheckpointError",
    "Conversation",
    "PreferenceExample",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "bradley_terry_loss",
    "default_backbone",
    "default_model_root",
    "evaluate",
    "holdout_split",
    "load_backbone",
    "load_checkpoint",
    "save_checkpoint",
    "score",
    "soft_target",
    "train",
    "verify_checkpoint",
]
