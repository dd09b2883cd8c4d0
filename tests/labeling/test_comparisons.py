import pytest

from labeling.assignment import next_comparison_for
from labeling.comparisons import reopen_comparisons, retire_comparisons, status_by_count
from labeling.models import Comparison
from tests.factories import ComparisonFactory, JudgmentFactory

pytestmark = pytest.mark.django_db


def statuses(*comparisons) -> list[str]:
    for comparison in comparisons:
        comparison.refresh_from_db()
    return [comparison.status for comparison in comparisons]


def test_retiring_takes_comparisons_out_of_the_queue_whatever_their_status(project, alice, bob):
    open_one = ComparisonFactory(prompt__project=project)
    complete = ComparisonFactory(prompt__project=project)
    for rater in (alice, bob):
        JudgmentFactory(comparison=complete, rater=rater)
    untouched = ComparisonFactory(prompt__project=project)

    retired = retire_comparisons(comparison_ids=[open_one.pk, complete.pk])

    assert retired == 2
    assert statuses(open_one, complete, untouched) == ["retired", "retired", "open"]
    assert next_comparison_for(rater=alice, project=project).comparison_id == untouched.pk


def test_reopening_gives_back_open_or_complete_by_the_judgments_a_comparison_has(project, alice, bob):
    needs_one = ComparisonFactory(prompt__project=project, status=Comparison.Status.RETIRED)
    JudgmentFactory(comparison=needs_one, rater=alice)
    has_all = ComparisonFactory(prompt__project=project, status=Comparison.Status.RETIRED)
    for rater in (alice, bob):
        JudgmentFactory(comparison=has_all, rater=rater)

    reopened = reopen_comparisons(comparison_ids=[needs_one.pk, has_all.pk])

    assert reopened == 2
    assert statuses(needs_one, has_all) == ["open", "complete"]
    assert next_comparison_for(rater=bob, project=project).comparison_id == needs_one.pk


def test_reopening_leaves_comparisons_that_are_not_retired_alone(project, alice, bob):
    open_one = ComparisonFactory(prompt__project=project)
    complete = ComparisonFactory(prompt__project=project)
    for rater in (alice, bob):
        JudgmentFactory(comparison=complete, rater=rater)

    assert reopen_comparisons(comparison_ids=[open_one.pk, complete.pk]) == 0
    assert statuses(open_one, complete) == ["open", "complete"]


def test_both_take_a_queryset_of_ids(project):
    ComparisonFactory.create_batch(3, prompt__project=project)
    ids = Comparison.objects.filter(project=project).values_list("pk", flat=True)

    assert retire_comparisons(comparison_ids=ids) == 3
    assert reopen_comparisons(comparison_ids=ids) == 3
    assert set(Comparison.objects.values_list("status", flat=True)) == {Comparison.Status.OPEN}


@pytest.mark.parametrize(
    "status, judgments, expected",
    [("open", 1, "open"), ("open", 2, "complete"), ("complete", 1, "open"), ("retired", 2, "retired")],
)
def test_a_status_follows_the_count_unless_retired(project, status, judgments, expected):
    comparison = ComparisonFactory(prompt__project=project, status=status, judgments_count=judgments)

    assert status_by_count(comparison) == expected  # overlap 2
