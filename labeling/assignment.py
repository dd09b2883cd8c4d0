"""Which comparison a rater judges next: the hot path.

Rules (each has a test in tests/labeling/test_assignment.py):
- a rater who holds an unexpired lease in the project gets that one back;
- never a comparison the rater has judged, skipped, or holds;
- never more live leases + judgments on a comparison than the project's overlap;
- highest priority first, then oldest;
- expired leases stop counting, so their comparisons return to the pool;
- a constant number of queries, whatever the table sizes.

Concurrency. On PostgreSQL the candidate row is taken with
SELECT ... FOR UPDATE SKIP LOCKED, so raters asking at once fan out over
different comparisons instead of queueing on the top one. Every code path that
adds a lease or a judgment holds that row lock, so once we hold it, a fresh
count of live leases is exact; the candidate query's own count may be a
statement older than a lease someone committed just before we locked, which is
why the count is taken again under the lock. On SQLite (no row locks) the
IMMEDIATE transaction mode in settings serialises the whole function.
"""

import random

from django.db import transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from labeling.models import Assignment, Comparison, Judgment, Project, Side

# Raters racing for the same last slots can make a locked candidate turn out
# full; then the next one is tried. Bounded, so the query count stays constant.
_MAX_ATTEMPTS = 3
_TASK_RELATED = ("prompt", "response_a", "response_b", "project")


def _live_leases(now):
    return Assignment.objects.filter(state=Assignment.State.ACTIVE, expires_at__gt=now)


def live_lease_for(*, rater, project: Project, now=None) -> Assignment | None:
    """The unexpired lease this rater holds in this project, with its pair loaded."""
    now = now or timezone.now()
    return (
        _live_leases(now)
        .filter(rater=rater, project=project)
        .select_related(*(f"comparison__{name}" for name in _TASK_RELATED))
        .order_by("issued_at")
        .first()
    )


def next_comparison_for(*, rater, project: Project, now=None) -> Assignment | None:
    """Lease the next comparison to this rater, or return the one they hold.

    Returns the Assignment (with comparison, prompt and both responses loaded)
    or None when nothing is left for this rater in this project.
    """
    now = now or timezone.now()
    with transaction.atomic():
        held = live_lease_for(rater=rater, project=project, now=now)
        if held is not None:
            return held
        tried: list[int] = []
        for _ in range(_MAX_ATTEMPTS):
            comparison = _lock_next_candidate(rater=rater, project=project, now=now, exclude=tried)
            if comparison is None:
                return None
            if comparison.judgments_count + _count_live_leases(comparison, now) < project.overlap:
                assignment = Assignment.objects.create(
                    comparison=comparison,
                    rater=rater,
                    project=project,
                    left=random.choice((Side.A, Side.B)),
                    issued_at=now,
                    expires_at=now + project.lease_duration,
                )
                assignment.comparison = comparison
                return assignment
            tried.append(comparison.pk)
        return None


def _lock_next_candidate(*, rater, project: Project, now, exclude: list[int]) -> Comparison | None:
    live_count = Subquery(
        _live_leases(now)
        .filter(comparison=OuterRef("pk"))
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n"),
        output_field=IntegerField(),
    )
    candidates = (
        Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
        .exclude(pk__in=exclude)
        .filter(~Exists(Judgment.objects.filter(comparison=OuterRef("pk"), rater=rater)))
        # Skipped by this rater, or leased to them (an expired lease of their
        # own does not block: they may pick it up again).
        .filter(
            ~Exists(
                Assignment.objects.filter(
                    comparison=OuterRef("pk"), rater=rater, state=Assignment.State.SKIPPED
                )
            )
        )
        .alias(live=Coalesce(live_count, Value(0)))
        .filter(live__lt=Value(project.overlap) - F("judgments_count"))
        .select_related(*_TASK_RELATED)
        .order_by("-priority", "created_at", "pk")
        .select_for_update(skip_locked=True, of=("self",))
    )
    return candidates.first()


def _count_live_leases(comparison: Comparison, now) -> int:
    return _live_leases(now).filter(comparison=comparison).count()


def skip_comparison(*, rater, project: Project, comparison_id: int, now=None) -> bool:
    """Give back a held comparison; this rater will not be offered it again.

    Returns False when the rater held no live lease on it (already expired,
    already answered): skipping is then a no-op, not an error.
    """
    now = now or timezone.now()
    updated = (
        _live_leases(now)
        .filter(rater=rater, project=project, comparison_id=comparison_id)
        .update(state=Assignment.State.SKIPPED)
    )
    return updated > 0
