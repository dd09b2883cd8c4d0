"""Reward-model training: this project's trainer against TRL's RewardTrainer, side by side.

    .venv/bin/pip install -r requirements-bench.txt
    .venv/bin/python benchmarks/rm_training.py [--data PATH] [--epochs 1] [--batch-size 16] [--max-length 256]
                                               [--lr 5e-5] [--limit N] [--threads N] [--seeds 0 1 2]

Both trainers get the same pairs (a seeded 80/20 split of an HH-format file), the same backbone (the offline
all-MiniLM-L6-v2), the same token ids (left-truncated by rewardmodel.core's encoder, so TRL drops no pair for
being too long), batch size, learning rate, epochs, linear schedule with 10% warm-up, weight decay 0.01, gradient
clipping at 1.0, fused AdamW, dropout off, the same precision (--precision; fp32 on CPU and bf16 autocast on
CUDA unless asked otherwise), and the same held-out evaluation code. TRL's own defaults that would make the race
unequal are set explicitly: bf16 as --precision says (RewardConfig defaults to bf16 even on CPU),
gradient checkpointing off, max_length matched. Each trainer runs in its own child process, one after the other,
so peak memory (max RSS) is its own and neither inherits the other's warm caches or thread state.

Throughput is training pairs x epochs / seconds of the training loop (model loading and evaluation excluded);
wall seconds cover everything a trainer's process did after start-up (loading, tokenizing, training, evaluating).

One held-out split of a few hundred pairs says little about accuracy (the 95% interval is about +-5 points), so
--seeds runs the whole comparison once per seed (each seed draws its own 80/20 split, batch order and reward-head
initialisation, the same for both trainers) and ends with the per-seed ratios and the mean paired accuracy
difference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh_harmless_dev.jsonl"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HH-format JSONL (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs of the file")
    parser.add_argument("--seed", type=int, default=0, help="one seed (see --seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", help="run the comparison once per seed and summarise")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default=None,
        help="the same for both trainers (bf16 = autocast, fp32 weights); default: bf16 on CUDA, fp32 on CPU",
    )
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"no data file at {args.data}")
    if args.worker:
        print(json.dumps(_run_worker(args)))
        return 0
    return _compare(args)


def _compare(args) -> int:
    import torch

    seeds = args.seeds or [args.seed]
    settings = (
        f"data {args.data.name}, epochs {args.epochs}, batch {args.batch_size} pairs, max length {args.max_length}, "
        f"lr {args.lr}, seeds {' '.join(map(str, seeds))}, threads {args.threads or torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}, torch {torch.__version__}"
    )
    print(f"Reward-model training benchmark: {settings}", flush=True)
    runs = []
    for seed in seeds:
        results = {}
        for worker in ("ours", "trl"):
            load = os.getloadavg()
            print(
                f"seed {seed}: running {worker} ... (load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
                flush=True,
            )
            command = [sys.executable, __file__, "--worker", worker, *_forwarded(args, seed)]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
            if done.returncode != 0:
                print(f"{worker} failed with exit code {done.returncode}", file=sys.stderr)
                return 1
            results[worker] = json.loads(done.stdout.strip().splitlines()[-1])
        load = os.getloadavg()
        print(f"seed {seed}: load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(_table(results["ours"], results["trl"]), flush=True)
        runs.append((seed, results["ours"], results["trl"]))
    if len(runs) > 1:
        print(_summary(runs))
    return 0


def _forwarded(args, seed: int) -> list[str]:
    flags = ["--data", str(args.data), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    flags += ["--max-length", str(args.max_length), "--lr", str(args.lr), "--seed", str(seed)]
    flags += ["--device", args.device]
    if args.precision is not None:
        flags += ["--precision", args.precision]
    if args.limit is not None:
        flags += ["--limit", str(args.limit)]
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    return flags


def _run_worker(args) -> dict:
    import torch

    from rewardmodel.core.config import TrainConfig
    from rewardmodel.core.evaluate import evaluate
    from rewardmodel.core.examples import holdout_split
    from rewardmodel.core.jsonl import read_preferences
    from rewardmodel.core.model import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_examples, eval_examples = holdout_split(
        read_preferences(args.data, limit=args.limit), eval_fraction=0.2, seed=args.seed
    )
    device = resolve_device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    config = TrainConfig(
        max_length=args.max_length,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        seed=args.seed,
        device=str(device),
        disable_dropout=True,
        precision=precision,
    )
    if args.worker == "ours":
        model, tokenizer, loop_seconds = _train_ours(config, train_examples)
    else:
        model, tokenizer, loop_seconds = _train_trl(config, train_examples, device)
    metrics = evaluate(model, tokenizer, eval_examples, config)
    result = {
        "train_pairs": len(train_examples),
        "eval_pairs": len(eval_examples),
        "pairs_per_second": len(train_examples) * config.epochs / loop_seconds,
        "loop_seconds": loop_seconds,
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision": precision,
        **metrics,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _train_ours(config, train_examples):
    from rewardmodel.core.train import train

    result = train(config, train_examples)
    return result.model, result.tokenizer, result.metrics["train"]["seconds"]


def _train_trl(config, train_examples, device):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rewardmodel.core.data import encode_pairs
    from rewardmodel.core.formatting import SequenceEncoder

    tokenizer = AutoTokenizer.from_pretrained(config.backbone)
    pairs = encode_pairs(SequenceEncoder(tokenizer, config.max_length), train_examples)
    # The same token ids our trainer builds; chosen is whichever side the target prefers (HH: always a).
    dataset = Dataset.from_dict(
        {
            "chosen_ids": [p.ids_a if p.target >= 0.5 else p.ids_b for p in pairs],
            "rejected_ids": [p.ids_b if p.target >= 0.5 else p.ids_a for p in pairs],
        }
    )
    on_cuda = device.type == "cuda"
    bf16 = config.precision == "bf16"
    with tempfile.TemporaryDirectory() as output_dir:
        args = RewardConfig(
            output_dir=output_dir,
            per_device_train_batch_size=config.batch_size,
            num_train_epochs=config.epochs,
            learning_rate=config.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of all steps
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            seed=config.seed,
            max_length=config.max_length,  # every pair already fits, so none is dropped (checked below)
            disable_dropout=config.disable_dropout,
            bf16=bf16,  # RewardConfig's default is bf16=True even on CPU; here both run what --precision says
            # RewardConfig defaults gradient checkpointing (now "activation checkpointing") to on; ours never
            # recomputes activations.
            activation_checkpointing=False,
            use_cpu=not on_cuda,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = RewardTrainer(model=config.backbone, args=args, train_dataset=dataset, processing_class=tokenizer)
        if len(trainer.train_dataset) != len(pairs):
            raise RuntimeError(f"TRL dropped {len(pairs) - len(trainer.train_dataset)} pairs")
        output = trainer.train()
    return trainer.model, tokenizer, output.metrics["train_runtime"]


def _table(ours: dict, trl: dict) -> str:
    def ci(metrics):
        return 1.96 * math.sqrt(max(metrics["accuracy"] * (1 - metrics["accuracy"]), 1e-9) / metrics["eval_pairs"])

    rows = [
        ("training pairs/s", "{:.2f}", "pairs_per_second"),
        ("training loop s", "{:.1f}", "loop_seconds"),
        ("wall s", "{:.1f}", "wall_seconds"),
        ("peak RSS MiB", "{:.0f}", "peak_rss_mib"),
        ("held-out accuracy", "{:.3f}", "accuracy"),
        ("held-out BT log-loss", "{:.4f}", "log_loss"),
        ("held-out ECE", "{:.3f}", "ece"),
    ]
    if "peak_cuda_mib" in ours:
        rows.insert(4, ("peak CUDA MiB", "{:.0f}", "peak_cuda_mib"))
    lines = [
        f"train pairs {ours['train_pairs']}, held-out pairs {ours['eval_pairs']}, precision {ours['precision']}",
        f"{'':24}{'rewardmodel.core':>18}{'TRL RewardTrainer':>20}",
    ]
    for label, fmt, key in rows:
        lines.append(f"{label:24}{fmt.format(ours[key]):>18}{fmt.format(trl[key]):>20}")
    ratio = ours["pairs_per_second"] / trl["pairs_per_second"]
    lines.append(f"throughput ratio (ours / TRL): {ratio:.2f}x")
    lines.append(
        f"accuracy difference (ours - TRL): {100 * (ours['accuracy'] - trl['accuracy']):+.1f} points "
        f"(95% interval of each: about +-{100 * ci(ours):.1f})"
    )
    return "\n".join(lines)


def _summary(runs: list[tuple[int, dict, dict]]) -> str:
    ratios = [ours["pairs_per_second"] / trl["pairs_per_second"] for _seed, ours, trl in runs]
    differences = [100 * (ours["accuracy"] - trl["accuracy"]) for _seed, ours, trl in runs]
    lines = [f"over {len(runs)} seeds:", f"{'seed':>6}{'ours pairs/s':>14}{'TRL pairs/s':>13}{'ratio':>8}"]
    lines[-1] += f"{'ours acc':>10}{'TRL acc':>9}"
    for (seed, ours, trl), ratio in zip(runs, ratios, strict=True):
        lines.append(
            f"{seed:>6}{ours['pairs_per_second']:>14.2f}{trl['pairs_per_second']:>13.2f}{ratio:>7.2f}x"
            f"{ours['accuracy']:>10.3f}{trl['accuracy']:>9.3f}"
        )
    mean_difference = statistics.mean(differences)
    spread = statistics.stdev(differences) / math.sqrt(len(differences))
    lines.append(f"throughput ratio: mean {statistics.mean(ratios):.2f}x, lowest {min(ratios):.2f}x")
    lines.append(
        f"accuracy: ours {statistics.mean(o['accuracy'] for _s, o, _t in runs):.3f}, "
        f"TRL {statistics.mean(t['accuracy'] for _s, _o, t in runs):.3f}; "
        f"paired difference {mean_difference:+.1f} points (standard error {spread:.1f})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
