"""Data-parallel training under torchrun: two CPU processes (gloo) must equal one process accumulating two batches."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewardmodel.core.checkpoint import load_checkpoint
from rewardmodel.core.examples import holdout_split
from rewardmodel.core.jsonl import read_preferences
from rewardmodel.core.scoring import score
from rewardmodel.core.train import train

from .conftest import marker_pairs

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_two_processes_train_like_one_that_accumulates_two_batches(tiny_config, tmp_path):
    data = tmp_path / "pairs.jsonl"
    with open(data, "w") as f:
        for e in marker_pairs(80):
            chosen, rejected = (e.response_a, e.response_b) if e.target == 1.0 else (e.response_b, e.response_a)
            f.write(json.dumps({"prompt": e.conversation, "chosen": chosen, "rejected": rejected}) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "rewardmodel.core",
            "train",
            str(data),
            "--project",
            "demo",
            "--version",
            "1",
            "--model-root",
            str(tmp_path / "models"),
            "--backbone",
            tiny_config.backbone,
            "--max-length",
            "48",
            "--batch-size",
            "8",
            "--learning-rate",
            "1e-3",
            "--warmup-ratio",
            "0",
            "--epochs",
            "2",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=240,
        check=False,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    distributed = json.loads(run.stdout)["metrics"]
    assert distributed["train"]["processes"] == 2
    model, tokenizer, _ = load_checkpoint(tmp_path / "models" / "demo" / "1")

    train_pairs, held_out = holdout_split(read_preferences(data), eval_fraction=0.2, seed=0)
    config = dataclasses.replace(tiny_config, batch_size=8, gradient_accumulation_steps=2, epochs=2)
    single = train(config, train_pairs, held_out)

    assert distributed["train"]["steps"] == single.metrics["train"]["steps"] == 8
    assert distributed["train"]["loss"] == pytest.approx(single.metrics["train"]["loss"], rel=1e-4)
    items = [(e.conversation, e.response_a) for e in held_out]
    assert score(model, tokenizer, items, config) == pytest.approx(
        score(single.model, single.tokenizer, items, config), abs=1e-4
    )
