import pytest
import torch

from rewardmodel.core.evaluate import evaluate, expected_calibration_error, pairwise_accuracy
from rewardmodel.core.examples import PreferenceExample
from rewardmodel.core.model import load_backbone

from .conftest import marker_pairs


def test_evaluate_reports_accuracy_log_loss_ece_and_n(tiny_config):
    model, tokenizer = load_backbone(tiny_config.backbone)
    tie = PreferenceExample([{"role": "user", "content": "hi"}], "sure", "no", target=0.5)

    metrics = evaluate(model, tokenizer, [*marker_pairs(10), tie], tiny_config)

    assert set(metrics) == {"accuracy", "log_loss", "ece", "n"}
    assert metrics["n"] == 11
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["ece"] <= 0.5
    assert metrics["log_loss"] == pytest.approx(0.693, abs=0.01)  # an untrained head is a coin flip


def test_calibration_and_accuracy_follow_their_definitions():
    # Two confident right calls (p = 0.9), one confident wrong call (p = 0.9 for the loser), one tie at p = 0.5.
    margin = torch.logit(torch.tensor([0.9, 0.1, 0.9, 0.5]))
    target = torch.tensor([1.0, 0.0, 0.0, 0.5])

    assert pairwise_accuracy(margin, target) == pytest.approx(2 / 3)
    # Bin [0.9, 0.95): confidence 0.9, outcome 2/3 -> gap 0.233 over 3 of 4 pairs; the tie sits in bin 0 exactly.
    assert expected_calibration_error(torch.sigmoid(margin), target) == pytest.approx(0.75 * (0.9 - 2 / 3))
    assert pairwise_accuracy(margin[3:], target[3:]) is None
