"""Several reward heads on one backbone: the bootstrapped ensemble that "ensemble" acquisition reads."""

import dataclasses

import pytest
import torch

from rewardmodel.core.checkpoint import load_checkpoint, save_checkpoint
from rewardmodel.core.config import TrainConfig
from rewardmodel.core.loss import bradley_terry_loss
from rewardmodel.core.scoring import score
from rewardmodel.core.train import bootstrap_weights, train

from .conftest import marker_pairs


def test_one_head_trains_on_every_pair_unweighted():
    assert bootstrap_weights(100, 1, seed=0) is None


def test_bootstrap_weights_are_seeded_poisson_resamples_one_column_per_head():
    weights = bootstrap_weights(20_000, 4, seed=3)

    assert weights.shape == (20_000, 4)
    assert torch.equal(weights, bootstrap_weights(20_000, 4, seed=3))
    assert not torch.equal(weights, bootstrap_weights(20_000, 4, seed=4))
    # Poisson(1): mean 1, and e^-1 = 37% of the pairs left out of each head's resample.
    assert weights.mean().item() == pytest.approx(1.0, abs=0.02)
    assert (weights == 0).float().mean().item() == pytest.approx(0.368, abs=0.02)
    assert torch.equal(weights, weights.round()) and weights.min() >= 0
    # Each head its own resample.
    assert not torch.equal(weights[:, 0], weights[:, 1])


def test_the_loss_of_several_heads_is_the_mean_of_each_head_s_own_weighted_loss():
    torch.manual_seed(0)
    reward_a, reward_b = torch.randn(6, 3), torch.randn(6, 3)
    target = torch.tensor([1.0, 0.0, 0.5, 0.73, 1.0, 0.27])
    weight = torch.tensor([[1.0, 0, 2], [1, 1, 0], [0, 3, 1], [2, 1, 1], [1, 0, 0], [1, 2, 1]])

    together = bradley_terry_loss(reward_a, reward_b, target, weight)

    each = [bradley_terry_loss(reward_a[:, h], reward_b[:, h], target, weight[:, h]) for h in range(3)]
    assert together.item() == pytest.approx(sum(e.item() for e in each) / 3, rel=1e-6)
    shared = bradley_terry_loss(reward_a, reward_b, target, weight[:, 0])
    each_shared = [bradley_terry_loss(reward_a[:, h], reward_b[:, h], target, weight[:, 0]) for h in range(3)]
    assert shared.item() == pytest.approx(sum(e.item() for e in each_shared) / 3, rel=1e-6)


def test_num_heads_must_be_positive():
    with pytest.raises(ValueError, match="num_heads"):
        TrainConfig(num_heads=0)


def test_an_ensemble_learns_the_toy_set_and_its_heads_differ(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, epochs=3, num_heads=3)

    result = train(config, marker_pairs(200), marker_pairs(100, seed=1))

    assert result.model.config.num_labels == 3
    assert result.metrics["eval"]["accuracy"] > 0.95  # judged on the heads' mean reward
    pairs = marker_pairs(30, seed=2)
    items = [(e.conversation, r) for e in pairs for r in (e.response_a, e.response_b)]
    rewards = score(result.model, result.tokenizer, items, config)
    assert len(rewards) == 60 and all(len(r) == 3 for r in rewards)
    heads = torch.tensor(rewards)
    # Every head learned the preference on its own resample ...
    margins = heads[0::2] - heads[1::2]
    wanted = torch.tensor([1.0 if e.target > 0.5 else -1.0 for e in pairs]).unsqueeze(-1)
    assert ((margins * wanted) > 0).float().mean(dim=0).min().item() > 0.9
    # ... and they are not copies of one another: disagreement is what ensemble acquisition reads.
    assert (heads[:, 0] - heads[:, 1]).abs().max().item() > 1e-3
    assert (heads[:, 1] - heads[:, 2]).abs().max().item() > 1e-3

    # A checkpoint keeps every head: the same rewards after a round trip.
    path = save_checkpoint(tmp_path, "toy", 1, result.model, result.tokenizer, config, result.metrics, {})
    model, tokenizer, meta = load_checkpoint(path)
    assert meta["config"]["num_heads"] == 3
    assert torch.allclose(torch.tensor(score(model, tokenizer, items, config)), heads, atol=1e-5)


def test_an_ensemble_run_repeats_exactly_with_its_seed(tiny_config):
    config = dataclasses.replace(tiny_config, num_heads=2)
    first = train(config, marker_pairs(40))
    second = train(config, marker_pairs(40))
    assert first.losses == second.losses
