"""Many raters at once, on real connections (one per thread).

On PostgreSQL this exercises SELECT ... FOR UPDATE SKIP LOCKED and the
recount under the row lock; on SQLite, the IMMEDIATE transactions."""

import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections

from labeling.assignment import next_comparison_for
from labeling.judgments import record_judgment
from labeling.models import Assignment, Comparison, Judgment
from tests.factories import ComparisonFactory, JudgmentInputFactory, ProjectFactory, UserFactory

RATERS = 32
COMPARISONS = 40
OVERLAP = 3
# SKIP LOCKED passes over a row another rater holds locked for an instant (to
# lease it, or to record a judgment or a repeat of it), so "nothing for you"
# can be momentary near the end: a rater checks again a few times, as the
# page's "Check again" button lets a person do, before calling it a day.
CHECKS_BEFORE_STOPPING = 5


def _next_or_none(rater, project):
    for _ in range(CHECKS_BEFORE_STOPPING):
        assignment = next_comparison_for(rater=rater, project=project)
        if assignment is not None:
            return assignment
        time.sleep(0.05)
    return None


def _rater_loop(rater, project, barrier, errors, served):
    try:
        barrier.wait()
        while True:
            assignment = _next_or_none(rater, project)
            if assignment is None:
                return
            served.append((rater.pk, assignment.comparison_id))
            judgment = JudgmentInputFactory(comparison_id=assignment.comparison_id)
            # Submit twice, like a client retrying: must stay one judgment.
            for _ in range(2):
                record_judgment(rater=rater, judgment=judgment)
    except Exception as error:  # collected and asserted on below
        import traceback; errors.append(traceback.format_exc())
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_many_raters_at_once_never_double_assign_or_duplicate_judgments():
    project = ProjectFactory(overlap=OVERLAP)
    raters = UserFactory.create_batch(RATERS)
    project.raters.add(*raters)
    ComparisonFactory.create_batch(COMPARISONS, prompt__project=project)

    barrier = threading.Barrier(RATERS)
    errors: list[str] = []
    served: list[tuple[int, int]] = []
    threads = [threading.Thread(target=_rater_loop, args=(rater, project, barrier, errors, served)) for rater in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a rater thread hung"

    assert errors == []
    # No rater was given the same comparison twice.
    assert max(Counter(served).values()) == 1
    assert Assignment.objects.filter(project=project).count() == len(served)
    # No duplicate judgments, and no comparison got more than the overlap.
    per_comparison = Counter(Judgment.objects.filter(project=project).values_list("comparison_id", flat=True))
    assert max(per_comparison.values()) <= OVERLAP
    assert Judgment.objects.filter(project=project).count() == len(served) == COMPARISONS * OVERLAP
    # Every comparison reached its overlap, its counter agrees, and it is complete.
    for comparison in Comparison.objects.filter(project=project):
        assert comparison.judgments_count == per_comparison[comparison.pk] == OVERLAP
        assert comparison.status == Comparison.Status.COMPLETE
    print(f"backend={connection.vendor} raters={RATERS} judgments={len(served)}")


@pytest.mark.django_db(transaction=True)
def test_gold_and_repeats_mixed_in_keep_every_count_true():
    project = ProjectFactory(overlap=OVERLAP, gold_rate=0.2, repeat_rate=0.2)
    # Few raters for many pairs: each judges more than five, so repeats have something to repeat.
    raters = UserFactory.create_batch(6)
    project.raters.add(*raters)
    ComparisonFactory.create_batch(COMPARISONS, prompt__project=project)
    gold = ComparisonFactory.create_batch(3, prompt__project=project, is_gold=True, gold_label="b")

    barrier = threading.Barrier(len(raters))
    errors: list[str] = []
    served: list[tuple[int, int]] = []
    threads = [threading.Thread(target=_rater_loop, args=(rater, project, barrier, errors, served)) for rater in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a rater thread hung"

    assert errors == []
    assert Assignment.objects.filter(project=project).count() == len(served)
    judgments = Judgment.objects.filter(project=project)
    firsts = Counter(judgments.filter(repeat_of__isnull=True).values_list("comparison_id", flat=True))
    for comparison in Comparison.objects.filter(project=project):
        assert comparison.judgments_count == firsts[comparison.pk]
        if comparison.is_gold:
            # Any number of raters, beyond the overlap; never complete.
            assert comparison.status == Comparison.Status.OPEN
        else:
            assert (comparison.judgments_count, comparison.status) == (OVERLAP, Comparison.Status.COMPLETE)
    # Every repeat is its own rater's second look at a non-gold comparison, at most one each.
    repeats = judgments.filter(repeat_of__isnull=False).select_related("repeat_of")
    for repeat in repeats:
        assert (repeat.rater_id, repeat.comparison_id) == (repeat.repeat_of.rater_id, repeat.repeat_of.comparison_id)
        assert repeat.comparison_id not in {g.pk for g in gold}
        assert repeat.left != repeat.repeat_of.left
    assert max(Counter(served).values()) <= 2  # a first look and, at most, a repeat
    kinds = Counter(Assignment.objects.filter(project=project).values_list("kind", flat=True))
    assert kinds[Assignment.Kind.REPEAT] > 0 and kinds[Assignment.Kind.GOLD] > 0
    print(f"backend={connection.vendor} leases by kind={dict(kinds)}")
