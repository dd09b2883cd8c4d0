"""Reward heads on frozen embeddings (rewardmodel.core.head): the fit, the bootstrap, the prior, the embedding."""

import numpy as np
import pytest
import torch

from rewardmodel.core.head import embed, fisher_information, fit_heads, score_heads
from rewardmodel.core.model import load_backbone
from tests.rewardmodel.core.conftest import marker_pairs


def linear_pairs(n, dim=8, *, seed=0, scale=3.0):
    """Pairs whose true reward is w·e: (emb_a, emb_b, P(a preferred), w)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    a, b = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    p = 1 / (1 + np.exp(-scale * (a - b) @ w / np.linalg.norm(w)))
    return a, b, p, w


def test_it_learns_the_preferences_of_a_linear_reward():
    a, b, p, w = linear_pairs(400)
    target = (p > 0.5).astype(float)

    heads = fit_heads(a, b, target=target)

    margin = score_heads(heads, a)[:, 0] - score_heads(heads, b)[:, 0]
    assert ((margin > 0) == (target > 0.5)).mean() > 0.95
    cosine = heads.weight[0] @ w / np.linalg.norm(heads.weight[0]) / np.linalg.norm(w)
    assert cosine > 0.9


def test_it_solves_the_map_objective_it_documents():
    a, b, p, _ = linear_pairs(60, dim=4, seed=2)
    weight = np.random.default_rng(3).uniform(0.5, 2.0, size=60)
    heads = fit_heads(a, b, target=p, weight=weight, l2=2.0)

    # At the optimum the gradient of Σ weight·BT(target) + (l2/2)|w|² is zero.
    d = a - b
    q = 1 / (1 + np.exp(-(d @ heads.weight[0])))
    gradient = d.T @ (weight * (q - p)) + 2.0 * heads.weight[0]
    assert np.abs(gradient).max() < 1e-5


def test_it_ignores_pairs_of_weight_zero_and_pulls_toward_the_prior_mean():
    a, b, p, _ = linear_pairs(80, seed=4)
    target = (p > 0.5).astype(float)
    weight = np.ones(80)
    weight[40:] = 0.0
    flipped = target.copy()
    flipped[40:] = 1 - flipped[40:]

    same = fit_heads(a[:40], b[:40], target=target[:40])
    ignored = fit_heads(a, b, target=flipped, weight=weight)
    assert ignored.weight == pytest.approx(same.weight, abs=1e-6)

    centre = np.full(8, 5.0)
    assert np.allclose(fit_heads(a[:0], b[:0]).weight, 0.0)
    far = fit_heads(a[:5], b[:5], target=target[:5], prior_mean=centre, l2=100.0)
    assert np.abs(far.weight[0] - centre).max() < 0.5  # a strong prior and five pairs: near its centre


def test_its_bootstrapped_heads_disagree_where_the_data_is_thin_and_not_by_seed_alone():
    a, b, p, _ = linear_pairs(30, seed=5)
    heads = fit_heads(a, b, target=(p > 0.5).astype(float), num_heads=5, seed=7)

    assert heads.num_heads == 5
    assert np.linalg.norm(heads.weight - heads.mean, axis=1).min() > 1e-3
    again = fit_heads(a, b, target=(p > 0.5).astype(float), num_heads=5, seed=7)
    assert np.array_equal(heads.weight, again.weight)
    assert not np.array_equal(heads.weight, fit_heads(a, b, target=(p > 0.5).astype(float), num_heads=5, seed=8).weight)
    assert score_heads(heads, a).shape == (30, 5)


def test_it_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one shape"):
        fit_heads(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="one value per pair"):
        fit_heads(np.zeros((3, 2)), np.ones((3, 2)), target=np.ones(2))
    with pytest.raises(ValueError, match="l2 > 0"):
        fit_heads(np.zeros((3, 2)), np.ones((3, 2)), l2=0.0)


def test_its_fisher_information_is_the_prior_plus_the_weighted_outer_products():
    a, b, _, _ = linear_pairs(10, dim=3, seed=6)
    heads = fit_heads(a, b, l2=0.5)
    d = a - b
    q = 1 / (1 + np.exp(-(d @ heads.weight[0])))
    expected = 0.5 * np.eye(3) + sum(q[i] * (1 - q[i]) * np.outer(d[i], d[i]) for i in range(10))
    assert fisher_information(heads, d) == pytest.approx(expected)


def test_it_embeds_each_response_as_the_mean_of_its_real_tokens(tiny_backbone, tiny_config):
    model, tokenizer = load_backbone(tiny_backbone)
    examples = marker_pairs(6)
    items = [(e.conversation, e.response_a) for e in examples]

    together = embed(model, tokenizer, items, tiny_config)
    alone = np.stack([embed(model, tokenizer, [item], tiny_config)[0] for item in items])

    assert together.shape == (6, 32) and together.dtype == np.float32
    assert together == pytest.approx(alone, abs=1e-5)  # padding in a batch changes nothing
    from rewardmodel.core.formatting import SequenceEncoder

    ids = torch.tensor([SequenceEncoder(tokenizer, tiny_config.max_length).encode(items[:1])[0]])
    with torch.inference_mode():
        states = model.base_model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert together[0] == pytest.approx(states[0].mean(dim=0).numpy(), abs=1e-5)


def test_a_head_on_frozen_embeddings_learns_the_toy_marker_task(tiny_backbone, tiny_config):
    model, tokenizer = load_backbone(tiny_backbone)
    train, test = marker_pairs(120, seed=1), marker_pairs(60, seed=2)

    def sides(examples):
        return (
            embed(model, tokenizer, [(e.conversation, e.response_a) for e in examples], tiny_config),
            embed(model, tokenizer, [(e.conversation, e.response_b) for e in examples], tiny_config),
        )

    heads = fit_heads(*sides(train), target=np.array([e.target for e in train]), l2=0.1)
    a, b = sides(test)
    margin = score_heads(heads, a)[:, 0] - score_heads(heads, b)[:, 0]
    accuracy = ((margin > 0) == (np.array([e.target for e in test]) > 0.5)).mean()
    assert accuracy > 0.8  # a random 32-wide encoder still carries "marker" in its mean
