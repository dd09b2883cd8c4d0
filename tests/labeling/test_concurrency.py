"""Many raters at once, on real connections (one per thread).

On PostgreSQL this exercises SELECT ... FOR UPDATE SKIP LOCKED and the
recount under the row lock; on SQLite, the IMMEDIATE transactions."""

import threading
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


def _rater_loop(rater, project, barrier, errors, served):
    try:
        barrier.wait()
        while True:
            assignment = next_comparison_for(rater=rater, project=project)
            if assignment is None:
                return
            served.append((rater.pk, assignment.comparison_id))
            judgment = JudgmentInputFactory(comparison_id=assignment.comparison_id)
            # Submit twice, like a client retrying: must stay one judgment.
            for _ in range(2):
                record_judgment(rater=rater, judgment=judgment)
    except Exception as error:  # collected and asserted on below
        errors.append(repr(error))
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
    threads = [
        threading.Thread(target=_rater_loop, args=(rater, project, barrier, errors, served)) for rater in raters
    ]
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
