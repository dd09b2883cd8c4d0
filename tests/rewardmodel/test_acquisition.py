"""Refreshing which pairs raters see next: the scoring functions on synthetic
rewards, the ordering with its exploration share, and the database refresh."""

import doctest
import itertools
import math
import threading

import numpy as np
import pytest
from django.db import IntegrityError, connection, connections
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from labeling.assignment import next_comparison_for
from labeling.models import Comparison, Response
from rewardmodel import acquisition, embedding_cache
from rewardmodel.acquisition import (
    Features,
    doptimal_scores,
    ensemble_scores,
    fisher_information,
    queue_order,
    random_scores,
    refresh_pairs,
    uncertainty_scores,
)
from rewardmodel.core.embeddings import EmbeddingCache
from rewardmodel.models import ResponseReward, RewardModelVersion, Strategy
from tests.factories import ComparisonFactory, ProjectFactory, PromptFactory, ResponseFactory
from tests.rewardmodel.factories import LoopSettingsFactory, ResponseRewardFactory, RewardModelVersionFactory

# --- Pure scoring and ordering (no database) ---


def greedy(scores, rng=None):
    order, _ = queue_order(scores, exploration_share=0.0, rng=rng or np.random.default_rng(0))
    return order


def test_it_ranks_near_ties_first_under_uncertainty():
    rewards_a = np.array([3.0, 0.01, 1.0, 0.5, -0.02, -2.0])
    rewards_b = np.zeros(6)
    assert greedy(uncertainty_scores(rewards_a, rewards_b)).tolist() == [1, 4, 3, 2, 5, 0]

    rng = np.random.default_rng(1)
    r_a, r_b = rng.normal(size=5000), rng.normal(size=5000)
    gaps = np.abs(r_a - r_b)[greedy(uncertainty_scores(r_a, r_b))]
    assert np.all(np.diff(gaps) >= 0)


def test_it_scores_a_predicted_tie_one_and_a_sure_call_near_zero_whichever_side_is_a():
    scores = uncertainty_scores(np.array([0.7, 0.0, 40.0]), np.array([0.7, 2.0, 0.0]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(1 - abs(2 / (1 + math.exp(2.0)) - 1))  # 1 − |2σ(−2) − 1|
    assert 0 < scores[2] < 1e-15  # far apart, yet still distinct from "no information"
    assert np.array_equal(uncertainty_scores([0.0, 2.0], [2.0, 0.0]), uncertainty_scores([2.0, 0.0], [0.0, 2.0]))


def test_it_ranks_head_disagreement_first_under_ensemble():
    # Five heads each. Rewards of B are 0, so each row is the heads' r_a − r_b.
    heads_a = np.array(
        [
            [2.0, 2.1, 1.9, 2.0, 2.0],  # 0: all heads sure A wins
            [0.0, 0.0, 0.0, 0.0, 0.0],  # 1: all heads say coin flip (a true tie)
            [4.0, -4.0, 4.0, -4.0, 0.0],  # 2: confident heads contradict each other
            [1.0, -1.0, 1.0, -1.0, 0.0],  # 3: milder disagreement
            [0.3, 0.1, 0.2, 0.0, 0.2],  # 4: slight spread around a near-tie
        ]
    )
    heads_b = np.zeros_like(heads_a)
    scores = ensemble_scores(heads_a, heads_b)

    assert greedy(scores).tolist()[:3] == [2, 3, 4]
    assert scores[1] == pytest.approx(0.0, abs=1e-12)  # agreement on 0.5 is not epistemic
    assert scores[0] < 0.01
    assert np.all((scores >= 0) & (scores <= math.log(2)))
    # Uncertainty on the mean reward cannot tell the true tie from the disagreements.
    assert uncertainty_scores(heads_a.mean(axis=1), heads_b.mean(axis=1))[[1, 2, 3]].tolist() == [1.0, 1.0, 1.0]


def test_it_gives_identical_heads_no_ensemble_score():
    rng = np.random.default_rng(2)
    same = np.repeat(rng.normal(size=(100, 1)), 4, axis=1)
    assert np.allclose(ensemble_scores(same, np.zeros_like(same)), 0.0, atol=1e-12)


def test_it_orders_uniformly_at_random_under_random():
    n, trials = 8, 2000
    positions = np.zeros((n, n))  # positions[candidate, slot]
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        order = greedy(random_scores(n, rng), rng)
        positions[order, np.arange(n)] += 1

    def chi_square(counts):
        expected = trials / n
        return float(((counts - expected) ** 2 / expected).sum())

    # 49 degrees of freedom: the 0.1% critical value is 85.4.
    assert chi_square(positions) < 85.4
    assert np.allclose(positions.sum(axis=0), trials)
    # The statistic can fail: a scored (non-random) order is far off uniform.
    biased = np.zeros((n, n))
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        scores = uncertainty_scores(np.arange(n) * 0.1 + rng.normal(0, 0.1, n), np.zeros(n))
        biased[greedy(scores, rng), np.arange(n)] += 1
    assert chi_square(biased) > 1000


def test_it_gives_the_exploration_share_of_slots_to_random_picks():
    n, share, top = 20_000, 0.25, 2_000
    rng = np.random.default_rng(3)
    scores = uncertainty_scores(rng.normal(size=n), rng.normal(size=n))
    score_rank = np.empty(n, dtype=np.int64)
    score_rank[greedy(scores)] = np.arange(n)

    order, explored = queue_order(scores, exploration_share=share, rng=np.random.default_rng(4))

    assert sorted(order.tolist()) == list(range(n))  # every candidate exactly once
    # Binomial standard deviations: 0.003 over all slots, 0.0097 over the top 2,000.
    assert explored.mean() == pytest.approx(share, abs=0.01)
    assert explored[:top].mean() == pytest.approx(share, abs=0.03)
    # Greedy slots take the best remaining; exploration slots take any remaining one.
    assert score_rank[order[:top][~explored[:top]]].max() < top
    assert score_rank[order[:top][explored[:top]]].mean() == pytest.approx(n / 2, rel=0.1)
    # Over many seeds, the share is ε on average.
    shares = [
        queue_order(scores[:1000], exploration_share=share, rng=np.random.default_rng(seed))[1].mean()
        for seed in range(100)
    ]
    assert np.mean(shares) == pytest.approx(share, abs=0.005)


def test_it_gives_no_exploration_picks_at_zero_share_and_only_those_at_one():
    scores = np.random.default_rng(5).random(1000)
    order, explored = queue_order(scores, exploration_share=0.0, rng=np.random.default_rng(6))
    assert not explored.any()
    assert order.tolist() == np.argsort(-scores).tolist()

    order, explored = queue_order(scores, exploration_share=1.0, rng=np.random.default_rng(6))
    assert explored.all()
    assert sorted(order.tolist()) == list(range(1000))
    # All random: the top 100 are not the 100 best scores, only about a tenth of them.
    assert len(set(order[:100].tolist()) & set(np.argsort(-scores)[:100].tolist())) < 30


def test_it_places_new_candidates_only_up_to_the_budget():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    new = np.array([True, False, True, True, False, True, True])
    for share in (0.0, 0.5):
        order, explored = queue_order(scores, exploration_share=share, rng=np.random.default_rng(7), new=new, budget=2)
        assert len(order) == len(explored) == 2 + 2  # both old candidates, two new ones
        assert set(order[~new[order]].tolist()) == {1, 4}
    order, _ = queue_order(scores, exploration_share=0.0, rng=np.random.default_rng(7), new=new, budget=2)
    assert order.tolist() == [0, 1, 2, 4]


def test_it_keeps_the_docstring_examples_true():
    assert doctest.testmod(acquisition).failed == 0


def test_every_strategy_names_what_it_ranked_as_a_comparisons_selected_by():
    # The refresh writes the strategy's own value; every strategy labeling knows is one of ours, and every
    # value fits the column.
    reasons = set(Comparison.SelectedBy.values) - {"import", "exploration"}
    assert reasons <= set(Strategy.values)
    width = Comparison._meta.get_field("selected_by").max_length
    assert all(len(value) <= width for value in Strategy.values)


# --- D-optimal design (Shen et al., ICML 2025) ---


def log_det(matrix):
    sign, value = np.linalg.slogdet(matrix)
    assert sign > 0
    return value


def test_it_ranks_by_the_log_det_gain_of_one_label_under_doptimal():
    rng = np.random.default_rng(8)
    diff, p = rng.normal(size=(40, 3)), rng.uniform(0.02, 0.98, size=40)
    judged = rng.normal(size=(10, 3))
    information = fisher_information(judged, rng.uniform(0.1, 0.9, size=10), prior_precision=0.5)

    scores = doptimal_scores(diff, p, information, batch=0)

    # The definition: how much one label x grows log det M, M + p(1-p)·d dᵀ.
    gains = [
        log_det(information + p[i] * (1 - p[i]) * np.outer(diff[i], diff[i])) - log_det(information) for i in range(40)
    ]
    assert scores == pytest.approx(gains)
    assert greedy(scores).tolist() == np.argsort(gains)[::-1].tolist()


def test_it_picks_the_greedy_d_optimal_batch_one_pick_given_the_ones_before():
    rng = np.random.default_rng(9)
    diff, p = rng.normal(size=(30, 4)), rng.uniform(0.05, 0.95, size=30)
    information = np.eye(4)

    order = greedy(doptimal_scores(diff, p, information, batch=6))

    # Brute force: each pick maximises log det of M plus every pick so far.
    m, expected = information.copy(), []
    for _ in range(6):
        best = max(
            (i for i in range(30) if i not in expected),
            key=lambda i: log_det(m + p[i] * (1 - p[i]) * np.outer(diff[i], diff[i])),
        )
        expected.append(best)
        m = m + p[best] * (1 - p[best]) * np.outer(diff[best], diff[best])
    assert order[:6].tolist() == expected


def test_it_asks_about_a_new_direction_before_a_known_one_and_near_ties_before_sure_calls():
    # Three candidates, the same length: one along a judged direction, one orthogonal to it, and one
    # orthogonal but already a sure call (p = 0.99).
    # 200 judged near-ties along the first direction: it is known well enough that even a sure call elsewhere
    # (information 0.99·0.01 = 0.0099) teaches more than one more label there (0.25 / 51).
    judged = np.tile([[1.0, 0.0, 0.0]], (200, 1))
    information = fisher_information(judged, np.full(200, 0.5), prior_precision=1.0)
    diff = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    p = np.array([0.5, 0.5, 0.99])

    assert greedy(doptimal_scores(diff, p, information, batch=0)).tolist() == [1, 2, 0]
    # Uncertainty alone cannot tell the first two apart.
    assert uncertainty_scores(np.log(p / (1 - p)), np.zeros(3))[:2].tolist() == [1.0, 1.0]


def test_it_does_not_spend_a_d_optimal_batch_on_duplicates():
    diff = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.9]])
    p = np.full(4, 0.5)
    one_by_one = greedy(doptimal_scores(diff, p, np.eye(2), batch=0))
    batch = greedy(doptimal_scores(diff, p, np.eye(2), batch=2))
    assert set(one_by_one[:2].tolist()) <= {0, 1, 2}  # alone, the duplicates look best
    assert 3 in batch[:2].tolist()  # in a batch, the second pick covers the other direction


def test_it_computes_the_fisher_information_of_the_judged_pairs_leaving_out_unknown_rows():
    diff = np.array([[1.0, 2.0], [np.nan, 1.0], [0.5, -1.0]])
    p = np.array([0.3, 0.5, 0.9])
    expected = 2.0 * np.eye(2) + 0.21 * np.outer([1.0, 2.0], [1.0, 2.0]) + 0.09 * np.outer([0.5, -1.0], [0.5, -1.0])
    assert fisher_information(diff, p, prior_precision=2.0) == pytest.approx(expected)
    assert np.isnan(doptimal_scores(diff, p, np.eye(2), batch=1)[1])


def test_it_ranks_unscored_candidates_last():
    scores = np.array([0.2, np.nan, 0.9, np.nan, 0.1])
    assert greedy(scores).tolist()[:3] == [2, 0, 4]


# --- The refresh, on the database ---


@pytest.fixture
def version(project, loop_settings):
    loop_settings.exploration_share = 0.0
    loop_settings.pair_budget = 0
    loop_settings.save()
    return RewardModelVersionFactory(project=project, version=1, status=RewardModelVersion.Status.ACTIVE)


def responses_with_rewards(project, version, rewards, heads=None):
    """One prompt whose responses the version scored with these (mean) rewards and heads."""
    prompt = PromptFactory(project=project)
    responses = Response.objects.bulk_create(ResponseFactory.build_batch(len(rewards), prompt=prompt))
    ResponseReward.objects.bulk_create(
        ResponseRewardFactory.build(version=version, response=response, reward=reward, head_rewards=h)
        for response, reward, h in zip(responses, rewards, heads or [None] * len(rewards), strict=True)
    )
    return responses


def compare(project, a, b, **fields):
    return ComparisonFactory(prompt=a.prompt, project=project, response_a=a, response_b=b, **fields)


def queue(project):
    """Open comparison ids in the order the assignment engine serves them."""
    return list(
        Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
        .order_by("-priority", "created_at", "pk")
        .values_list("pk", flat=True)
    )


@pytest.mark.django_db
def test_it_serves_near_ties_first_under_uncertainty(project, loop_settings, version, alice):
    loop_settings.acquisition = "uncertainty"
    loop_settings.save()
    far = compare(project, *responses_with_rewards(project, version, [0.0, 3.0]))
    tie = compare(project, *responses_with_rewards(project, version, [1.0, 1.05]))
    mid = compare(project, *responses_with_rewards(project, version, [2.0, 1.2]))

    result = refresh_pairs(project=project, seed=0)

    assert result.strategy == "uncertainty"
    assert (result.comparisons_scored, result.comparisons_updated, result.comparisons_created) == (3, 3, 0)
    assert queue(project) == [tie.pk, mid.pk, far.pk]
    assert set(Comparison.objects.values_list("selected_by", flat=True)) == {"uncertainty"}
    assert next_comparison_for(rater=alice, project=project).comparison_id == tie.pk


@pytest.mark.django_db
def test_it_serves_head_disagreement_first_under_ensemble(project, loop_settings, version):
    loop_settings.acquisition = "ensemble"
    loop_settings.save()
    # Same mean reward gap (0) for the first two, but only one has heads that disagree.
    agreed = compare(project, *responses_with_rewards(project, version, [0.0, 0.0], [[0.0, 0.0, 0.0]] * 2))
    split = compare(project, *responses_with_rewards(project, version, [0.0, 0.0], [[3.0, -3.0, 0.0], [0.0, 0.0, 0.0]]))
    sure = compare(project, *responses_with_rewards(project, version, [0.0, 2.0], [[0.0] * 3, [2.0, 2.1, 1.9]]))

    result = refresh_pairs(project=project, seed=0)

    assert result.strategy == "ensemble"
    assert queue(project)[0] == split.pk
    assert set(queue(project)) == {agreed.pk, split.pk, sure.pk}
    assert set(Comparison.objects.values_list("selected_by", flat=True)) == {"ensemble"}


def two_open_pairs_one_direction_known(project, version):
    """Two open pairs with the same reward gap, and a judged pair that already covers the first one's
    direction. Returns (known, new, response ids ascending, their embeddings)."""
    judged_a, judged_b = responses_with_rewards(project, version, [0.0, 0.0])
    known_a, known_b = responses_with_rewards(project, version, [0.0, 0.0])
    new_a, new_b = responses_with_rewards(project, version, [0.0, 0.0])
    compare(project, judged_a, judged_b, status=Comparison.Status.COMPLETE, judgments_count=3)
    known, new = compare(project, known_a, known_b), compare(project, new_a, new_b)
    vectors = {judged_a: [3.0, 0.0], judged_b: [0.0, 0.0], known_a: [1.0, 0.0], known_b: [0.0, 0.0]}
    vectors |= {new_a: [0.0, 1.0], new_b: [0.0, 0.0]}
    ids = sorted(r.pk for r in vectors)
    by_id = {r.pk: v for r, v in vectors.items()}
    return known, new, np.array(ids, dtype=np.int64), np.array([by_id[i] for i in ids], dtype=np.float32)


@pytest.mark.django_db
def test_it_serves_the_least_known_direction_first_under_doptimal(project, loop_settings, version):
    loop_settings.acquisition = "doptimal"
    loop_settings.save()
    known, new, ids, rows = two_open_pairs_one_direction_known(project, version)
    features = Features(ids, rows, prior_precision=1.0)

    result = refresh_pairs(project=project, seed=0, features=features)

    assert result.strategy == "doptimal"
    assert queue(project) == [new.pk, known.pk]
    assert set(Comparison.objects.filter(status="open").values_list("selected_by", flat=True)) == {"doptimal"}
    # Without the embeddings it cannot score, and says it ranked at random.
    assert refresh_pairs(project=project, seed=0).strategy == "random"


@pytest.mark.django_db
def test_it_falls_back_to_uncertainty_when_the_model_has_a_single_head(project, loop_settings, version):
    loop_settings.acquisition = "ensemble"
    loop_settings.save()
    far = compare(project, *responses_with_rewards(project, version, [0.0, 3.0]))
    tie = compare(project, *responses_with_rewards(project, version, [0.0, 0.1]))

    result = refresh_pairs(project=project, seed=0)

    assert result.strategy == "uncertainty"
    assert queue(project) == [tie.pk, far.pk]
    assert set(Comparison.objects.values_list("selected_by", flat=True)) == {"uncertainty"}


@pytest.mark.django_db
def test_it_ranks_at_random_without_an_active_version(project, loop_settings):
    loop_settings.acquisition = "uncertainty"
    loop_settings.exploration_share = 0.5
    loop_settings.save()
    ready = RewardModelVersionFactory(project=project, version=1, status=RewardModelVersion.Status.READY)
    for _ in range(5):
        compare(project, *responses_with_rewards(project, ready, [0.0, 1.0]))

    result = refresh_pairs(project=project, seed=0)

    assert result.strategy == "random"
    assert result.exploration_picks == 0  # under random every pick is already random
    assert set(Comparison.objects.values_list("selected_by", flat=True)) == {"random"}
    assert sorted(Comparison.objects.values_list("priority", flat=True)) == [0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.mark.django_db
def test_it_ranks_at_random_when_the_active_version_scored_nothing(project, loop_settings, version):
    loop_settings.acquisition = "uncertainty"
    loop_settings.save()
    prompt = PromptFactory(project=project)
    ComparisonFactory(prompt=prompt)

    assert refresh_pairs(project=project, seed=0).strategy == "random"
    assert Comparison.objects.get().selected_by == "random"


@pytest.mark.django_db
def test_it_ranks_by_the_version_it_is_given(project, loop_settings, version):
    loop_settings.acquisition = "uncertainty"
    loop_settings.save()
    a, b = responses_with_rewards(project, version, [0.0, 0.0])
    c, d = responses_with_rewards(project, version, [0.0, 5.0])
    first, second = compare(project, a, b), compare(project, c, d)
    other = RewardModelVersionFactory(project=project, version=2, status=RewardModelVersion.Status.READY)
    ResponseReward.objects.bulk_create(
        ResponseRewardFactory.build(version=other, response=r, reward=x)
        for r, x in [(a, 0.0), (b, 5.0), (c, 0.0), (d, 0.0)]
    )

    refresh_pairs(project=project, version=other, seed=0)
    assert queue(project) == [second.pk, first.pk]
    refresh_pairs(project=project, seed=0)  # the active one
    assert queue(project) == [first.pk, second.pk]


@pytest.mark.django_db
def test_it_creates_the_best_new_pairs_up_to_the_budget_never_duplicating_one(project, loop_settings, version):
    loop_settings.acquisition = "uncertainty"
    loop_settings.pair_budget = 2
    loop_settings.save()
    r0, r1, r2, r3 = responses_with_rewards(project, version, [0.0, 0.05, 1.0, 1.2])
    # Existing comparisons, stored "backwards" and in every status, must not come back.
    existing = [
        compare(project, r1, r0).pk,
        compare(project, r3, r2, status=Comparison.Status.COMPLETE, judgments_count=2).pk,
        compare(project, r2, r0, status=Comparison.Status.RETIRED).pk,
    ]
    lone = PromptFactory(project=project)
    ResponseFactory(prompt=lone)  # one response: no pair to make

    result = refresh_pairs(project=project, seed=0)

    # Unlabelled: (r0, r3) gap 1.2, (r1, r2) gap 0.95, (r1, r3) gap 1.15: the two closest win.
    new = list(Comparison.objects.exclude(pk__in=existing))
    assert (result.comparisons_scored, result.comparisons_created) == (1 + 3, 2)
    assert {frozenset((c.response_a_id, c.response_b_id)) for c in new} == {
        frozenset((r1.pk, r2.pk)),
        frozenset((r1.pk, r3.pk)),
    }
    assert all(c.project_id == project.pk and c.prompt_id == r0.prompt_id for c in new)
    assert all(c.status == Comparison.Status.OPEN and c.selected_by == "uncertainty" for c in new)
    assert not Comparison.objects.filter(response_a__in=[r0, r3], response_b__in=[r0, r3]).exists()

    loop_settings.pair_budget = 100
    loop_settings.save()
    assert refresh_pairs(project=project, seed=1).comparisons_created == 1  # only (r0, r3) is left
    assert refresh_pairs(project=project, seed=2).comparisons_created == 0
    pairs = [frozenset(p) for p in Comparison.objects.values_list("response_a_id", "response_b_id")]
    assert len(pairs) == len(set(pairs)) == 6  # all pairs of four responses, each once


@pytest.mark.django_db
def test_it_puts_new_pairs_in_the_queue_by_the_same_ranking(project, loop_settings, version, alice):
    loop_settings.acquisition = "uncertainty"
    loop_settings.pair_budget = 1
    loop_settings.save()
    far = compare(project, *responses_with_rewards(project, version, [0.0, 3.0]))
    a, b = responses_with_rewards(project, version, [0.0, 0.01])

    refresh_pairs(project=project, seed=0)

    new = Comparison.objects.get(response_a__in=[a, b], response_b__in=[a, b])
    assert queue(project) == [new.pk, far.pk]
    assert next_comparison_for(rater=alice, project=project).comparison_id == new.pk


@pytest.mark.django_db
def test_it_randomises_which_response_of_a_new_pair_is_a(project, loop_settings, version):
    loop_settings.acquisition = "uncertainty"
    loop_settings.pair_budget = 100
    loop_settings.save()
    for _ in range(40):
        responses_with_rewards(project, version, [0.0, 1.0])

    assert refresh_pairs(project=project, seed=0).comparisons_created == 40
    lower_first = Comparison.objects.filter(response_a__lt=F("response_b")).count()
    assert 10 <= lower_first <= 30  # a fair coin: 20 ± 10 is beyond 3 standard deviations


@pytest.mark.django_db
def test_it_retires_complete_comparisons_and_leaves_judged_open_ones_alone(project, loop_settings, version):
    loop_settings.acquisition = "uncertainty"
    loop_settings.save()
    complete = compare(
        project, *responses_with_rewards(project, version, [0.0, 1.0]), status="complete", judgments_count=2
    )
    half = compare(project, *responses_with_rewards(project, version, [0.0, 1.0]), judgments_count=1)
    retired = compare(project, *responses_with_rewards(project, version, [0.0, 1.0]), status="retired")
    elsewhere = ComparisonFactory(status="complete", judgments_count=2)  # another project

    result = refresh_pairs(project=project, seed=0)

    assert result.comparisons_retired == 1
    assert result.comparisons_scored == 1  # only the open one is a candidate
    assert Comparison.objects.get(pk=complete.pk).status == "retired"
    assert Comparison.objects.values_list("status", "judgments_count").get(pk=half.pk) == ("open", 1)
    assert Comparison.objects.get(pk=retired.pk).status == "retired"
    assert Comparison.objects.get(pk=elsewhere.pk).status == "complete"


@pytest.mark.django_db
def test_it_marks_exploration_picks_and_respects_the_share(project, loop_settings, version):
    loop_settings.acquisition = "uncertainty"
    loop_settings.exploration_share = 0.25
    loop_settings.pair_budget = 50
    loop_settings.save()
    rng = np.random.default_rng(8)
    for _ in range(100):
        responses = responses_with_rewards(project, version, rng.normal(size=4).tolist())
        Comparison.objects.bulk_create(
            ComparisonFactory.build(prompt=a.prompt, project=project, response_a=a, response_b=b)
            for a, b in itertools.combinations(responses, 2)
            if {a, b} != {responses[0], responses[3]}  # leave one pair per prompt unlabelled
        )

    result = refresh_pairs(project=project, seed=9)

    # 500 open comparisons and 50 new ones (of 100 unlabelled pairs) fill 550 queue slots.
    assert (result.comparisons_scored, result.comparisons_updated, result.comparisons_created) == (600, 500, 50)
    explored = Comparison.objects.filter(selected_by="exploration").count()
    assert explored == result.exploration_picks
    assert Comparison.objects.filter(selected_by="uncertainty").count() == 550 - explored
    # The binomial standard deviation of the share over 550 slots is 0.018.
    assert explored / 550 == pytest.approx(0.25, abs=0.06)

    loop_settings.exploration_share = 0.0
    loop_settings.save()
    assert refresh_pairs(project=project, seed=9).exploration_picks == 0
    assert not Comparison.objects.filter(selected_by="exploration").exists()


@pytest.mark.django_db
def test_it_gives_the_same_queue_for_the_same_seed(project, loop_settings, version):
    loop_settings.acquisition = "uncertainty"
    loop_settings.exploration_share = 0.5
    loop_settings.save()
    rng = np.random.default_rng(10)
    for _ in range(30):
        compare(project, *responses_with_rewards(project, version, rng.normal(size=2).tolist()))

    def snapshot(seed):
        refresh_pairs(project=project, seed=seed)
        return list(Comparison.objects.order_by("pk").values_list("priority", "selected_by"))

    assert snapshot(11) == snapshot(11)
    assert snapshot(11) != snapshot(12)


@pytest.mark.django_db
def test_it_runs_the_same_number_of_queries_whatever_the_size(project, loop_settings, version):
    loop_settings.acquisition = "ensemble"
    loop_settings.pair_budget = 1
    loop_settings.save()

    def queries_for(prompts):
        for _ in range(prompts):
            a, b, c = responses_with_rewards(project, version, [0.0, 1.0, 2.0], [[0.0, 1.0]] * 3)
            compare(project, a, b)
        with CaptureQueriesContext(connection) as queries:
            refresh_pairs(project=project, seed=0)
        return len(queries)

    assert queries_for(2) == queries_for(40)


@pytest.mark.django_db
def test_it_rejects_a_version_of_another_project(project):
    other = RewardModelVersionFactory(project=ProjectFactory(), version=1)
    with pytest.raises(ValueError, match="another project"):
        refresh_pairs(project=project, version=other)


@pytest.mark.django_db(transaction=True)
def test_a_failed_insert_leaves_the_old_queue(project, loop_settings, monkeypatch):
    loop_settings.acquisition = "uncertainty"
    loop_settings.pair_budget = 5
    loop_settings.save()
    version = RewardModelVersionFactory(project=project, version=1, status="active")
    for gap in (0.1, 1.0, 2.0):
        compare(project, *responses_with_rewards(project, version, [0.0, gap]), priority=gap)
    responses_with_rewards(project, version, [0.0, 0.5])  # an unlabelled pair
    done = compare(project, *responses_with_rewards(project, version, [0.0, 1.0]), status="complete")
    before = list(Comparison.objects.order_by("pk").values_list("pk", "priority", "selected_by", "status"))

    def insert_fails(*args, **kwargs):
        raise IntegrityError("a pair imported meanwhile")

    monkeypatch.setattr(Comparison.objects, "bulk_create", insert_fails)
    with pytest.raises(IntegrityError):
        refresh_pairs(project=project, seed=0)

    assert list(Comparison.objects.order_by("pk").values_list("pk", "priority", "selected_by", "status")) == before
    assert Comparison.objects.get(pk=done.pk).status == "complete"  # the retirement rolled back with it


def four_open_comparisons(project):
    """An active version and four open comparisons that uncertainty ranks in this order (nearest tie first),
    each with its reward gap as its old priority."""
    LoopSettingsFactory(project=project, acquisition="uncertainty", exploration_share=0.0)
    version = RewardModelVersionFactory(project=project, version=1, status="active")
    return version, [
        compare(project, *responses_with_rewards(project, version, [0.0, gap]), priority=gap)
        for gap in (0.1, 1.0, 2.0, 3.0)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_write_that_fails_midway_leaves_a_queue_partly_refreshed(project, monkeypatch):
    version, comparisons = four_open_comparisons(project)
    done = compare(project, *responses_with_rewards(project, version, [0.0, 1.0]), status="complete")
    real_update = acquisition._update_batch
    calls = []

    def fail_after_first_batch(*args):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("database went away")
        real_update(*args)

    monkeypatch.setattr(acquisition, "_BATCH_SIZE", 2)
    monkeypatch.setattr(acquisition, "_update_batch", fail_after_first_batch)
    with pytest.raises(RuntimeError, match="went away"):
        refresh_pairs(project=project, seed=0)

    assert len(calls) == 2
    priorities = dict(Comparison.objects.filter(status="open").values_list("pk", "priority"))
    nearest, second, third, farthest = comparisons  # uncertainty ranks the nearest tie first
    # The best two got their new priorities (committed); the other two keep their old ones.
    assert (priorities[nearest.pk], priorities[second.pk]) == (1.0, 0.75)
    assert (priorities[third.pk], priorities[farthest.pk]) == (2.0, 3.0)
    assert Comparison.objects.get(pk=done.pk).status == "retired"


@pytest.mark.django_db(transaction=True)
def test_raters_still_get_the_top_task_while_priorities_are_written(project, alice, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and SKIP LOCKED need PostgreSQL (SQLite locks the whole file)")
    _version, comparisons = four_open_comparisons(project)
    real_update = acquisition._update_batch
    served = []

    def ask_for_a_task_from_another_connection():
        try:
            assignment = next_comparison_for(rater=alice, project=project)
            served.append(assignment and assignment.comparison_id)
        finally:
            connections.close_all()

    def second_batch_asks(*args):
        real_update(*args)
        if args[1] == [comparisons[2].pk, comparisons[3].pk]:
            # The second batch's rows are locked now, by this uncommitted UPDATE.
            rater = threading.Thread(target=ask_for_a_task_from_another_connection)
            rater.start()
            rater.join(timeout=30)

    monkeypatch.setattr(acquisition, "_BATCH_SIZE", 2)
    monkeypatch.setattr(acquisition, "_update_batch", second_batch_asks)
    refresh_pairs(project=project, seed=0)

    # Under one long transaction every open comparison was locked here and the rater got None.
    assert served == [comparisons[0].pk]  # the new top of the queue, written and released by the first batch


@pytest.mark.django_db
def test_the_live_loop_reads_doptimal_features_from_the_version_s_embedding_cache(
    project, loop_settings, version, settings, tmp_path
):
    """pipeline.refresh_queue, the refit and the refresh task call refresh_pairs without features: under
    "doptimal" it reads the embeddings the version's scoring pass cached, and a cache of another checkpoint
    is no cache (random, said so)."""
    settings.MODEL_ROOT = tmp_path / "models"
    loop_settings.acquisition = "doptimal"
    loop_settings.save()
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "metadata.json").write_text('{"weights": "v1"}')
    version.artifact_path = str(checkpoint)
    version.save()
    known, new, ids, rows = two_open_pairs_one_direction_known(project, version)
    embedding_cache.save(version, EmbeddingCache(ids, rows, embedding_cache.fingerprint_of(version)))

    result = refresh_pairs(project=project, seed=0)

    assert result.strategy == "doptimal"
    assert queue(project) == [new.pk, known.pk]
    (checkpoint / "metadata.json").write_text('{"weights": "v1, retrained"}')  # another checkpoint now
    assert refresh_pairs(project=project, seed=0).strategy == "random"
