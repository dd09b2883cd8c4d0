import dataclasses

import pytest
import torch

from rewardmodel.core.data import length_grouped_batches
from rewardmodel.core.model import load_backbone
from rewardmodel.core.scoring import score
from rewardmodel.core.train import TrainingCancelled, train

from .conftest import marker_pairs


def test_one_training_step_changes_the_parameters(tiny_config):
    initial, _ = load_backbone(tiny_config.backbone)
    config = dataclasses.replace(tiny_config, batch_size=8)

    result = train(config, marker_pairs(8))

    assert result.metrics["train"]["steps"] == 1
    after = dict(result.model.named_parameters())
    for name, before in initial.named_parameters():
        if name == "classifier.bias":
            continue  # the loss sees only reward differences r_a - r_b, in which a shared offset cancels
        assert not torch.equal(before, after[name]), f"{name} did not change"


def test_it_learns_a_separable_toy_set(tiny_config):
    config = dataclasses.replace(tiny_config, epochs=3)

    result = train(config, marker_pairs(200), marker_pairs(100, seed=1))

    assert result.metrics["eval"]["accuracy"] > 0.95
    assert result.metrics["eval"]["log_loss"] < 0.3
    assert result.losses[-1] < result.losses[0]


def test_ties_pull_the_predicted_preference_toward_one_half(tiny_config, tmp_path):
    # First learn a strong opinion (the marker wins), then hear that the same pairs are ties.
    opinionated = train(dataclasses.replace(tiny_config, epochs=3), marker_pairs(160))
    pairs = marker_pairs(40, seed=2)
    items = [(e.conversation, r) for e in pairs for r in (e.response_a, e.response_b)]
    before = score(opinionated.model, opinionated.tokenizer, items, tiny_config)
    opinionated.model.save_pretrained(tmp_path)
    opinionated.tokenizer.save_pretrained(tmp_path)
    ties = [dataclasses.replace(e, target=0.5) for e in marker_pairs(160)]

    untied = train(dataclasses.replace(tiny_config, backbone=str(tmp_path), epochs=2), ties)

    after = score(untied.model, untied.tokenizer, items, tiny_config)
    gap_before = _mean_distance_from_half(before)
    gap_after = _mean_distance_from_half(after)
    assert gap_before > 0.3
    assert gap_after < gap_before / 3


def test_it_reports_every_step_and_stops_between_steps_when_asked(tiny_config):
    seen = []

    def should_stop():
        return len(seen) == 2

    with pytest.raises(TrainingCancelled, match="after 2 of 4 steps") as cancelled:
        train(tiny_config, marker_pairs(32), progress=lambda *args: seen.append(args), should_stop=should_stop)

    assert [(step, total) for step, total, _ in seen] == [(1, 4), (2, 4)]
    assert all(isinstance(loss, float) and loss > 0 for _, _, loss in seen)
    assert (cancelled.value.step, cancelled.value.total) == (2, 4)


def test_the_same_seed_repeats_the_run_exactly(tiny_config):
    first = train(tiny_config, marker_pairs(40))
    second = train(tiny_config, marker_pairs(40))
    other_seed = train(dataclasses.replace(tiny_config, seed=1), marker_pairs(40))

    assert first.losses == second.losses
    assert first.losses != other_seed.losses


def test_gradient_accumulation_takes_one_optimizer_step_per_group(tiny_config):
    seen = []
    config = dataclasses.replace(tiny_config, batch_size=4, gradient_accumulation_steps=3)

    result = train(config, marker_pairs(40), progress=lambda step, total, loss: seen.append(total))

    assert result.metrics["train"]["steps"] == 4  # 10 micro-batches in groups of 3
    assert seen == [4, 4, 4, 4]


def test_zero_weight_pairs_teach_nothing(tiny_config):
    initial, _ = load_backbone(tiny_config.backbone)
    ignored = [dataclasses.replace(e, weight=0.0) for e in marker_pairs(16)]
    config = dataclasses.replace(tiny_config, weight_decay=0.0)

    result = train(config, ignored)

    after = dict(result.model.named_parameters())
    assert all(torch.equal(p, after[name]) for name, p in initial.named_parameters())


def test_length_grouped_batches_cover_every_pair_once_with_little_padding():
    lengths = torch.randint(5, 200, (500,), generator=torch.Generator().manual_seed(0)).tolist()

    batches = length_grouped_batches(lengths, 16, torch.Generator().manual_seed(0))

    assert sorted(i for b in batches for i in b) == list(range(500))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    random_order = torch.randperm(500, generator=torch.Generator().manual_seed(0)).tolist()
    padded_at_random = sum(max(lengths[i] for i in random_order[s : s + 16]) * 16 for s in range(0, 500, 16))
    assert padded < 1.05 * sum(lengths) < padded_at_random * 0.6


def _mean_distance_from_half(scores):
    rewards = torch.tensor(scores).view(-1, 2)
    return (torch.sigmoid(rewards[:, 0] - rewards[:, 1]) - 0.5).abs().mean().item()
