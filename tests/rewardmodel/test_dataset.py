"""rewardmodel.dataset: judgments -> training and held-out examples."""

import math

import pytest
from django.utils import timezone

from labeling.models import Judgment, RaterQuality
from labeling.raters import set_excluded
from rewardmodel.core.examples import soft_target
from rewardmodel.dataset import HELD_OUT_PERCENT, build_dataset, is_held_out
from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture
def raters(project):
    people = [UserFactory(username=f"judge{i}") for i in range(3)]
    project.raters.add(*people)
    return people


def comparison_on_side(project, *, held_out: bool, **fields):
    """A new comparison of the project that the hash split puts on the asked-for side."""
    for _ in range(200):
        comparison = ComparisonFactory(prompt__project=project, **fields)
        if is_held_out(comparison.pk) == held_out:
            return comparison
        comparison.delete()
    raise AssertionError("the hash split never put a comparison on that side")


def example_of(dataset, comparison, *, held_out=False):
    ids = dataset.held_out_comparison_ids if held_out else dataset.train_comparison_ids
    examples = dataset.held_out if held_out else dataset.train
    assert comparison.pk in ids, "the comparison has no example on that side"
    return examples[ids.index(comparison.pk)]


def test_several_raters_make_one_example_with_the_mean_target_and_their_count_as_weight(project, raters):
    comparison = comparison_on_side(project, held_out=False)
    JudgmentFactory(comparison=comparison, rater=raters[0], outcome="a", strength=2)
    JudgmentFactory(comparison=comparison, rater=raters[1], outcome="a", strength=2)
    JudgmentFactory(comparison=comparison, rater=raters[2], outcome="b", strength=2)

    dataset = build_dataset(project=project)

    assert dataset.train_comparison_ids == [comparison.pk]
    example = example_of(dataset, comparison)
    assert example.target == pytest.approx((2 * sigmoid(2) + (1 - sigmoid(2))) / 3)
    assert example.weight == 3.0
    assert example.response_a == comparison.response_a.text and example.response_b == comparison.response_b.text
    assert example.conversation == comparison.prompt.conversation


def test_the_majority_side_wins_and_strength_moves_the_target(project, raters):
    slight = comparison_on_side(project, held_out=False)
    much = comparison_on_side(project, held_out=False)
    JudgmentFactory(comparison=slight, rater=raters[0], outcome="b", strength=1)
    JudgmentFactory(comparison=much, rater=raters[0], outcome="b", strength=3)

    dataset = build_dataset(project=project)

    assert example_of(dataset, slight).target == pytest.approx(1 - sigmoid(1))
    assert example_of(dataset, much).target == pytest.approx(1 - sigmoid(3))
    assert example_of(dataset, much).target < example_of(dataset, slight).target < 0.5


def test_a_tie_is_a_target_of_one_half(project, raters):
    comparison = comparison_on_side(project, held_out=False)
    JudgmentFactory(comparison=comparison, rater=raters[0], outcome="tie")
    JudgmentFactory(comparison=comparison, rater=raters[1], outcome="tie")

    example = example_of(build_dataset(project=project), comparison)

    assert example.target == 0.5 and example.weight == 2.0


def test_both_bad_is_not_preference_evidence(project, raters):
    mixed = comparison_on_side(project, held_out=False)
    JudgmentFactory(comparison=mixed, rater=raters[0], outcome="a", strength=2)
    JudgmentFactory(comparison=mixed, rater=raters[1], outcome="both_bad")
    only_bad = comparison_on_side(project, held_out=False)
    JudgmentFactory(comparison=only_bad, rater=raters[0], outcome="both_bad")

    dataset = build_dataset(project=project)

    assert dataset.train_comparison_ids == [mixed.pk]
    example = example_of(dataset, mixed)
    assert example.target == pytest.approx(sigmoid(2)) and example.weight == 1.0
    assert dataset.snapshot["judgments"] == 3
    assert dataset.snapshot["both_bad_dropped"] == 2


def test_held_out_comparisons_are_evaluated_not_trained_on(project, raters):
    kept = comparison_on_side(project, held_out=True)
    trained = comparison_on_side(project, held_out=False)
    for comparison in (kept, trained):
        JudgmentFactory(comparison=comparison, rater=raters[0], outcome="a", strength=3)

    dataset = build_dataset(project=project)

    assert dataset.held_out_comparison_ids == [kept.pk]
    assert dataset.train_comparison_ids == [trained.pk]
    assert example_of(dataset, kept, held_out=True).target == pytest.approx(sigmoid(3))
    assert dataset.snapshot["held_out_comparisons"] == 1 and dataset.snapshot["train_comparisons"] == 1


def test_the_split_is_a_stable_fifth_by_comparison_id():
    ids = range(1, 20001)
    held = [i for i in ids if is_held_out(i)]
    assert abs(len(held) / len(ids) - HELD_OUT_PERCENT / 100) < 0.015
    # A function of the id alone: asking again (another process, another version) gives the same side.
    assert held == [i for i in ids if is_held_out(i)]
    # Not a pattern of the ids (e.g. every fifth): both sides hold odd and even, low and high ids.
    assert {i % 5 for i in held} == {0, 1, 2, 3, 4}


def test_more_judgments_later_never_move_a_comparison_across_the_split(project, raters):
    comparisons = [ComparisonFactory(prompt__project=project) for _ in range(30)]
    for comparison in comparisons[:15]:
        JudgmentFactory(comparison=comparison, rater=raters[0], outcome="a", strength=2)
    first = build_dataset(project=project)
    for comparison in comparisons:
        JudgmentFactory(comparison=comparison, rater=raters[1], outcome="b", strength=1)
    second = build_dataset(project=project)

    assert set(first.held_out_comparison_ids) <= set(second.held_out_comparison_ids)
    assert set(first.train_comparison_ids) <= set(second.train_comparison_ids)
    assert not set(second.held_out_comparison_ids) & set(second.train_comparison_ids)
    assert second.snapshot["train_comparison_ids_sha256"] != first.snapshot["train_comparison_ids_sha256"]


def test_reference_labels_count_as_one_judgment_only_when_the_project_says_so(project, loop_settings, raters):
    judged = comparison_on_side(project, held_out=False, reference_label="a")
    JudgmentFactory(comparison=judged, rater=raters[0], outcome="b", strength=2)
    unjudged = comparison_on_side(project, held_out=False, reference_label="b")

    without = build_dataset(project=project)
    assert without.train_comparison_ids == [judged.pk]
    assert example_of(without, judged).weight == 1.0
    assert without.snapshot["reference_labels_used_for_training"] is False

    loop_settings.train_on_reference_labels = True
    loop_settings.save()
    with_labels = build_dataset(project=project)
    assert with_labels.train_comparison_ids == [judged.pk, unjudged.pk]
    both = example_of(with_labels, judged)
    assert both.weight == 2.0
    assert both.target == pytest.approx(((1 - sigmoid(2)) + sigmoid(2)) / 2)  # the rater and the label disagree
    assert example_of(with_labels, unjudged).target == pytest.approx(1 - sigmoid(2))
    # The command-line switch overrides the project setting, both ways.
    assert build_dataset(project=project, include_reference_labels=False).train_comparison_ids == [judged.pk]


def test_held_out_reference_labels_are_a_second_evaluation_never_training(project, loop_settings, raters):
    loop_settings.train_on_reference_labels = True
    loop_settings.save()
    comparison = comparison_on_side(project, held_out=True, reference_label="tie")
    JudgmentFactory(comparison=comparison, rater=raters[0], outcome="a", strength=1)

    dataset = build_dataset(project=project)

    assert dataset.train == []
    assert example_of(dataset, comparison, held_out=True).target == pytest.approx(sigmoid(1))  # raters only
    assert [e.target for e in dataset.held_out_reference] == [0.5]


def test_other_projects_judgments_stay_out(project, raters):
    other = ProjectFactory(slug="other")
    other.raters.add(raters[0])
    theirs = comparison_on_side(other, held_out=False)
    JudgmentFactory(comparison=theirs, rater=raters[0], outcome="a", strength=2)
    ours = comparison_on_side(project, held_out=False)
    JudgmentFactory(comparison=ours, rater=raters[1], outcome="b", strength=2)

    dataset = build_dataset(project=project)

    assert dataset.train_comparison_ids == [ours.pk]
    assert dataset.snapshot["judgments"] == 1
    assert dataset.snapshot["last_judgment_id"] == Judgment.objects.get(comparison=ours).pk


# --- weighting (labeling.quality.weights): the same weights as the TRL export ---


def with_weighting(project, weighting):
    project.judgment_weighting = weighting
    project.save()


def quality(project, rater, *, reliability=None, flagged=False):
    RaterQuality.objects.create(
        project=project, rater=rater, reliability=reliability, flagged=flagged, computed_at=timezone.now()
    )


@pytest.fixture
def split_two_one(project, raters):
    """A 2-1 split on a training comparison: judge0 and judge1 "clearly A", judge2 "much B"."""
    comparison = comparison_on_side(project, held_out=False)
    for rater, outcome, strength in zip(raters, ("a", "a", "b"), (2, 2, 3), strict=True):
        JudgmentFactory(comparison=comparison, rater=rater, outcome=outcome, strength=strength)
    return comparison


def test_reliability_weights_move_a_two_one_splits_target_as_computed_by_hand(project, raters, split_two_one):
    equal = example_of(build_dataset(project=project), split_two_one)
    assert equal.target == pytest.approx((2 * sigmoid(2) + (1 - sigmoid(3))) / 3)
    quality(project, raters[0], reliability=0.9)
    quality(project, raters[1], reliability=0.3)
    quality(project, raters[2], reliability=0.6)

    with_weighting(project, "reliability")
    dataset = build_dataset(project=project)

    example = example_of(dataset, split_two_one)
    assert example.target == pytest.approx((0.9 * sigmoid(2) + 0.3 * sigmoid(2) + 0.6 * (1 - sigmoid(3))) / 1.8)
    assert example.weight == pytest.approx(1.8)
    assert dataset.snapshot["weighting"] == {
        "mode": "reliability",
        "raters_excluded": 0,
        "raters_left_out": 0,
        "raters_down_weighted": 3,
        "judgments_left_out": 0,
    }


def test_exclude_flagged_drops_a_flagged_raters_judgments(project, raters, split_two_one):
    quality(project, raters[2], reliability=0.8, flagged=True)
    lone = comparison_on_side(project, held_out=False)
    JudgmentFactory(comparison=lone, rater=raters[2], outcome="b", strength=1)

    with_weighting(project, "exclude_flagged")
    dataset = build_dataset(project=project)

    assert dataset.train_comparison_ids == [split_two_one.pk]  # the flagged rater's lone judgment leaves
    example = example_of(dataset, split_two_one)
    assert example.target == pytest.approx(sigmoid(2)) and example.weight == 2.0
    assert dataset.snapshot["weighting"]["raters_left_out"] == 1
    assert dataset.snapshot["weighting"]["judgments_left_out"] == 2


def test_an_excluded_raters_judgments_leave_the_training_set_and_come_back_when_included(
    project, raters, split_two_one, admin_user
):
    before = build_dataset(project=project)

    set_excluded(project=project, rater=raters[0], excluded=True, by=admin_user)
    excluded = build_dataset(project=project)

    example = example_of(excluded, split_two_one)
    assert example.weight == 2.0
    assert example.target == pytest.approx((sigmoid(2) + 1 - sigmoid(3)) / 2)
    assert excluded.snapshot["weighting"]["raters_excluded"] == 1
    assert excluded.snapshot["weighting"]["judgments_left_out"] == 1
    assert Judgment.objects.filter(rater=raters[0]).exists()  # nothing is deleted

    set_excluded(project=project, rater=raters[0], excluded=False, by=admin_user)
    after = build_dataset(project=project)
    assert example_of(after, split_two_one) == example_of(before, split_two_one)
    assert after.snapshot == before.snapshot


def test_equal_weighting_is_the_plain_mean_and_count(project, raters, split_two_one):
    dataset = build_dataset(project=project)

    example = example_of(dataset, split_two_one)
    targets = [soft_target("a", 2), soft_target("a", 2), soft_target("b", 3)]
    assert example.target == sum(targets) / 3  # the same float as before weighting existed, not just close
    assert example.weight == 3.0
    assert dataset.snapshot["weighting"] == {
        "mode": "equal",
        "raters_excluded": 0,
        "raters_left_out": 0,
        "raters_down_weighted": 0,
        "judgments_left_out": 0,
    }


def test_a_repeat_is_not_a_second_vote(project, raters, split_two_one):
    first = Judgment.objects.get(comparison=split_two_one, rater=raters[2])
    Judgment.objects.create(
        comparison=split_two_one,
        rater=raters[2],
        project=project,
        outcome="b",
        strength=3,
        time_spent_ms=900,
        left="b",
        repeat_of=first,
    )

    dataset = build_dataset(project=project)

    assert example_of(dataset, split_two_one).weight == 3.0
    assert dataset.snapshot["judgments"] == 3
    assert dataset.snapshot["last_judgment_id"] == Judgment.objects.latest("pk").pk  # the newest one read
