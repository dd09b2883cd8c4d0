"""Command line: train a reward model on a preference file, or evaluate a saved one.

    python -m rewardmodel.core train data.jsonl --project demo --version 1 [--epochs 2 ...]
    python -m rewardmodel.core evaluate var/models/demo/1 held_out.jsonl
    torchrun --nproc_per_node 4 -m rewardmodel.core train data.jsonl --project demo --version 2   # 4 GPUs

Files are HH or TRL preference JSONL (see jsonl.py). train holds out --eval-fraction of the pairs (seeded split),
shows a progress bar, prints the metrics as JSON and saves a checkpoint under --model-root (default: MODEL_ROOT).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch.distributed as dist

from .checkpoint import default_model_root, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate
from .examples import holdout_split
from .jsonl import read_preferences
from .model import resolve_device
from .train import train

_CONFIG_FLAGS = {f.name: f for f in fields(TrainConfig)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewardmodel.core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train_cmd = commands.add_parser("train", help="train, evaluate on a held-out split, save a checkpoint")
    train_cmd.add_argument("data", type=Path, help="HH or TRL preference JSONL")
    train_cmd.add_argument("--project", required=True, help="checkpoint folder name under the model root")
    train_cmd.add_argument("--version", required=True, type=int)
    train_cmd.add_argument("--model-root", type=Path, default=None, help="default: $MODEL_ROOT or var/models")
    train_cmd.add_argument("--eval-fraction", type=float, default=0.2)
    train_cmd.add_argument("--limit", type=int, default=None, help="read only the first N pairs")
    for name, spec in _CONFIG_FLAGS.items():
        kind = {"int": int, "float": float, "bool": _boolean}.get(spec.type, str)
        train_cmd.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)

    eval_cmd = commands.add_parser("evaluate", help="metrics of a saved checkpoint on a preference file")
    eval_cmd.add_argument("checkpoint", type=Path)
    eval_cmd.add_argument("data", type=Path)

    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        return _evaluate(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(args) -> int:
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in _CONFIG_FLAGS and v is not None})
    examples = read_preferences(args.data, limit=args.limit)
    train_examples, eval_examples = holdout_split(examples, eval_fraction=args.eval_fraction, seed=config.seed)
    with _process_group_from_launcher(config) as rank:
        result = train(config, train_examples, eval_examples)
        if rank != 0:
            return 0  # rank 0 holds the same weights and writes the one checkpoint
    path = save_checkpoint(
        args.model_root or default_model_root(),
        args.project,
        args.version,
        result.model,
        result.tokenizer,
        config,
        result.metrics,
        data_snapshot={"file": str(args.data), "pairs": len(examples), "eval_fraction": args.eval_fraction},
    )
    print(json.dumps({"checkpoint": str(path), "metrics": result.metrics}, indent=2))
    return 0


def _evaluate(args) -> int:
    model, tokenizer, metadata = load_checkpoint(args.checkpoint)
    config = TrainConfig.from_dict(metadata["config"])
    print(json.dumps(evaluate(model, tokenizer, read_preferences(args.data), config), indent=2))
    return 0


@contextlib.contextmanager
def _process_group_from_launcher(config: TrainConfig):
    """Joins the process group torchrun describes in the environment (WORLD_SIZE > 1); yields this rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0
        return
    backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
