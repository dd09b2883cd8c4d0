from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling.assignment import next_comparison_for, skip_comparison
from labeling.judgments import record_judgment
from labeling.models import Assignment, Comparison
from tests.factories import ComparisonFactory, JudgmentInputFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_it_serves_the_highest_priority_then_the_oldest(project, alice):
    low = ComparisonFactory(prompt__project=project, priority=0.1)
    high_old = ComparisonFactory(prompt__project=project, priority=0.9)
    high_new = ComparisonFactory(prompt__project=project, priority=0.9)
    Comparison.objects.filter(pk=high_new.pk).update(created_at=timezone.now() + timedelta(seconds=1))

    served = []
    for _ in range(3):
        assignment = next_comparison_for(rater=alice, project=project)
        served.append(assignment.comparison_id)
        record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=assignment.comparison_id))

    assert served == [high_old.pk, high_new.pk, low.pk]
    assert next_comparison_for(rater=alice, project=project) is None


def test_it_gives_back_the_held_lease_when_asked_again(project, alice):
    ComparisonFactory.create_batch(3, prompt__project=project)
    first = next_comparison_for(rater=alice, project=project)
    again = next_comparison_for(rater=alice, project=project)
    assert again.pk == first.pk
    assert Assignment.objects.filter(rater=alice).count() == 1


def test_it_never_assigns_a_comparison_twice_to_one_rater(project, alice):
    ComparisonFactory.create_batch(4, prompt__project=project)
    seen = []
    while (assignment := next_comparison_for(rater=alice, project=project)) is not None:
        seen.append(assignment.comparison_id)
        record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=assignment.comparison_id))
    assert len(seen) == 4 == len(set(seen))


def test_it_never_hands_out_more_leases_and_judgments_than_the_overlap(project, alice, bob, carol):
    project.overlap = 2
    project.save()
    project.raters.add(carol)
    comparison = ComparisonFactory(prompt__project=project)

    first = next_comparison_for(rater=alice, project=project)
    second = next_comparison_for(rater=bob, project=project)
    assert first.comparison_id == second.comparison_id == comparison.pk
    # Two live leases fill the overlap: a third rater gets nothing.
    assert next_comparison_for(rater=carol, project=project) is None

    record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=comparison.pk))
    assert next_comparison_for(rater=carol, project=project) is None  # 1 judgment + 1 lease
    record_judgment(rater=bob, judgment=JudgmentInputFactory(comparison_id=comparison.pk))
    comparison.refresh_from_db()
    assert comparison.status == Comparison.Status.COMPLETE
    assert comparison.judgments_count == 2
    assert next_comparison_for(rater=carol, project=project) is None


def test_it_returns_expired_leases_to_the_pool(project, alice, bob):
    project.overlap = 1
    project.save()
    comparison = ComparisonFactory(prompt__project=project)
    now = timezone.now()
    lease = next_comparison_for(rater=alice, project=project, now=now)
    assert lease.comparison_id == comparison.pk
    assert next_comparison_for(rater=bob, project=project, now=now) is None

    later = now + project.lease_duration + timedelta(seconds=1)
    bobs = next_comparison_for(rater=bob, project=project, now=later)
    assert bobs.comparison_id == comparison.pk
    # Alice's lease is gone too: asking again does not give her the stale one.
    assert next_comparison_for(rater=alice, project=project, now=later) is None


def test_it_does_not_offer_a_skipped_comparison_again(project, alice):
    first, second = ComparisonFactory.create_batch(2, prompt__project=project)
    lease = next_comparison_for(rater=alice, project=project)
    assert skip_comparison(rater=alice, project=project, comparison_id=lease.comparison_id)
    following = next_comparison_for(rater=alice, project=project)
    assert following.comparison_id != lease.comparison_id
    assert skip_comparison(rater=alice, project=project, comparison_id=following.comparison_id)
    assert next_comparison_for(rater=alice, project=project) is None


def test_a_skipped_comparison_stays_available_to_others(project, alice, bob):
    project.overlap = 1
    project.save()
    comparison = ComparisonFactory(prompt__project=project)
    next_comparison_for(rater=alice, project=project)
    skip_comparison(rater=alice, project=project, comparison_id=comparison.pk)
    assert next_comparison_for(rater=bob, project=project).comparison_id == comparison.pk


def test_it_ignores_retired_and_complete_comparisons_and_other_projects(project, alice):
    ComparisonFactory(prompt__project=project, status=Comparison.Status.RETIRED)
    ComparisonFactory(prompt__project=project, status=Comparison.Status.COMPLETE)
    ComparisonFactory()  # another project
    assert next_comparison_for(rater=alice, project=project) is None


def test_it_randomises_the_left_side_per_lease(project, carol):
    ComparisonFactory.create_batch(40, prompt__project=project)
    sides = set()
    for _ in range(40):
        assignment = next_comparison_for(rater=carol, project=project)
        sides.add(assignment.left)
        assert {assignment.left_response.pk, assignment.right_response.pk} == {
            assignment.comparison.response_a_id,
            assignment.comparison.response_b_id,
        }
        skip_comparison(rater=carol, project=project, comparison_id=assignment.comparison_id)
    assert sides == {"a", "b"}  # (1/2)^39 chance of a false failure


def _hot_path_query_counts(size):
    project = ProjectFactory()
    rater, other = UserFactory.create_batch(2)
    project.raters.add(rater, other)
    ComparisonFactory.create_batch(size, prompt__project=project)
    # The other rater has judged the top ones, so this one's query must pass over rows.
    for _ in range(size // 5):
        assignment = next_comparison_for(rater=other, project=project)
        record_judgment(rater=other, judgment=JudgmentInputFactory(comparison_id=assignment.comparison_id))

    with CaptureQueriesContext(connection) as fresh:
        assignment = next_comparison_for(rater=rater, project=project)
        # Touch what the page renders: no lazy loads.
        _ = (assignment.left_response.text, assignment.right_response.text, assignment.comparison.prompt.conversation)
    with CaptureQueriesContext(connection) as held:
        next_comparison_for(rater=rater, project=project)
    with CaptureQueriesContext(connection) as submit:
        record_judgment(rater=rater, judgment=JudgmentInputFactory(comparison_id=assignment.comparison_id))
    return len(fresh), len(held), len(submit)


def test_it_runs_a_constant_number_of_queries_whatever_the_table_sizes():
    small = _hot_path_query_counts(5)
    large = _hot_path_query_counts(80)
    assert small == large
    fresh, held, submit = large
    # Counts include the SAVEPOINT/RELEASE pair of the test's own transaction.
    assert fresh <= 6 and held <= 3 and submit <= 8, large
