import dataclasses

from rewardmodel.core.model import load_backbone
from rewardmodel.core.scoring import score

from .conftest import marker_pairs


def test_it_returns_one_reward_per_item_in_the_order_given(tiny_config):
    model, tokenizer = load_backbone(tiny_config.backbone)
    items = [(e.conversation, r) for e in marker_pairs(20) for r in (e.response_a, e.response_b)]
    items[3] = (items[3][0], "sure " * 30)  # one long item, sorted away from its neighbours

    together = score(model, tokenizer, items, tiny_config)
    one_by_one = [
        score(model, tokenizer, [item], dataclasses.replace(tiny_config, eval_batch_size=1))[0] for item in items
    ]

    assert len(together) == len(items)
    assert all(abs(a - b) < 1e-5 for a, b in zip(together, one_by_one, strict=True))
    assert score(model, tokenizer, [], tiny_config) == []


def test_scoring_needs_no_gradient_and_leaves_the_mode_alone(tiny_config):
    model, tokenizer = load_backbone(tiny_config.backbone)
    model.train()

    score(model, tokenizer, [([{"role": "user", "content": "hi"}], "sure")], tiny_config)

    assert model.training
    assert all(p.grad is None for p in model.parameters())
