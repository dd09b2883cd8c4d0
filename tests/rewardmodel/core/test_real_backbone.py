"""The real all-MiniLM-L6-v2 backbone (shipped in a wheel, no download) on real HH preference pairs."""

import time
from pathlib import Path

import pytest
import torch

from rewardmodel.core.config import TrainConfig
from rewardmodel.core.evaluate import evaluate
from rewardmodel.core.jsonl import read_preferences
from rewardmodel.core.model import load_backbone
from rewardmodel.core.train import train

HH_DEV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "hh_harmless_dev.jsonl"


@pytest.fixture
def all_cores(one_torch_thread):
    # A real backbone does gain from every core (the autouse fixture pins tiny-model tests to one).
    torch.set_num_threads(torch.get_num_interop_threads())


@pytest.mark.slow
@pytest.mark.skipif(not HH_DEV.is_file(), reason=f"{HH_DEV} is not there (it is shared data, not in the repo)")
def test_one_epoch_on_200_hh_pairs_beats_the_untrained_model(all_cores):
    pairs = read_preferences(HH_DEV, limit=400)
    train_pairs, held_out = pairs[:200], pairs[200:]
    # lr 3e-4 learns visibly in the 13 steps one epoch of 200 pairs allows. Measured on these 200 held-out
    # pairs: untrained 0.465 -> trained 0.605 (log-loss 0.6936 -> 0.6886), the same with 1 or 2 threads; with
    # seed 1, 0.530 -> 0.560 (0.6928 -> 0.6829). One epoch this short is a small step, so the bar is "better
    # than the untrained model and than a coin", not a target accuracy.
    config = TrainConfig(max_length=128, batch_size=16, epochs=1, learning_rate=3e-4, seed=0, device="cpu")
    started = time.perf_counter()

    torch.manual_seed(config.seed)  # the same random reward head train() starts from
    untrained, tokenizer = load_backbone(config.backbone)
    before = evaluate(untrained, tokenizer, held_out, config)
    result = train(config, train_pairs, held_out)

    after = result.metrics["eval"]
    assert after["n"] == before["n"] == 200
    assert after["accuracy"] > max(before["accuracy"], 0.55), (before, after)
    assert after["log_loss"] < before["log_loss"]
    # Measured: 39 s on 2 cores at load average 1.5; 140 s while other jobs held the cores (load 3-4).
    assert time.perf_counter() - started < 300
