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


# Queries of next_comparison_for for a rater who holds no lease, by the kind of
# task the draw picks, counting the SAVEPOINT/RELEASE pair of the test's own
# transaction. The paused check and "is there real work left" are subqueries,
# not queries; a gold or repeat draw that finds nothing falls back to the queue
# at the cost of the one query that found nothing.
FRESH_QUERIES = {
    "queue": 6,  # held lease, locked candidate, live-lease recount, insert
    "gold": 5,  # held lease, gold item, insert
    "repeat": 5,  # held lease, earlier judgment, insert
    "gold, none left": 7,
    "repeat, none left": 7,
}
PATH_RATES = {
    "queue": (0.0, 0.0),
    "gold": (1.0, 0.0),
    "repeat": (0.0, 1.0),
    "gold, none left": (1.0, 0.0),
    "repeat, none left": (0.0, 1.0),
}


def _hot_path_query_counts(size, path="queue"):
    project = ProjectFactory(gold_rate=0, repeat_rate=0)
    rater, other = UserFactory.create_batch(2)
    project.raters.add(rater, other)
    ComparisonFactory.create_batch(size + 10, prompt__project=project)
    if path == "gold":
        ComparisonFactory.create_batch(size, prompt__project=project, is_gold=True, gold_label="a")
    # The other rater has judged the top ones, so this one's query must pass over rows.
    for _ in range(size // 5):
        assignment = next_comparison_for(rater=other, project=project)
        record_judgment(rater=other, judgment=JudgmentInputFactory(comparison_id=assignment.comparison_id))
    if path == "repeat":
        # Judgments enough that some are older than the latest five.
        for _ in range(6 + size // 5):
            assignment = next_comparison_for(rater=rater, project=project)
            record_judgment(rater=rater, judgment=JudgmentInputFactory(comparison_id=assignment.comparison_id))
    project.gold_rate, project.repeat_rate = PATH_RATES[path]
    project.save()

    with CaptureQueriesContext(connection) as fresh:
        assignment = next_comparison_for(rater=rater, project=project)
        # Touch what the page renders: no lazy loads.
        _ = (assignment.left_response.text, assignment.right_response.text, assignment.comparison.prompt.conversation)
    expected_kind = {"gold": Assignment.Kind.GOLD, "repeat": Assignment.Kind.REPEAT}.get(path, Assignment.Kind.TASK)
    assert assignment.kind == expected_kind
    with CaptureQueriesContext(connection) as held:
        next_comparison_for(rater=rater, project=project)
    with CaptureQueriesContext(connection) as submit:
        record_judgment(rater=rater, judgment=JudgmentInputFactory(comparison_id=assignment.comparison_id))
    return len(fresh), len(held), len(submit)


@pytest.mark.parametrize("path", list(FRESH_QUERIES))
def test_it_runs_a_constant_number_of_queries_whatever_the_table_sizes(path):
    small = _hot_path_query_counts(5, path)
    large = _hot_path_query_counts(80, path)
    assert small == large
    fresh, held, submit = large
    assert fresh == FRESH_QUERIES[path], large
    # Submitting a repeat does not save the comparison: one query fewer.
    assert held <= 3 and submit <= (7 if path == "repeat" else 8), large
