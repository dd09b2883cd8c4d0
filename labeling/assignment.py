"""Which comparison a rater judges next: the hot path.

Rules (each has a test in tests/labeling/test_assignment.py and, for gold and
repeats, tests/labeling/test_gold_and_repeats.py):
- a rater who holds an unexpired lease in the project gets that one back;
- a paused rater (labeling.raters) gets nothing, not even a lease they held;
- otherwise one draw of the module-level `random` picks the kind of task:
  below project.gold_rate a gold item, then (the next repeat_rate of the unit
  interval) a repeat, else the queue; a gold or repeat draw that finds nothing
  for this rater falls back to the queue;
- gold and repeats are mixed into real work only: they are served while the
  queue still has a comparison for this rater, never instead of an empty one;
- the queue: never a gold comparison, never one the rater has judged, skipped,
  or holds; never more live leases + judgments on a comparison than the
  project's overlap; highest priority first, then oldest;
- gold: an open gold comparison this rater has not judged or skipped, chosen at
  random (so raters comparing notes do not see the same gold sequence); the
  overlap does not cap gold, every rater may get every gold item;
- repeats: one of the rater's first judgments (not gold, not repeated yet, not
  of a retired comparison, and not among their 5 most recent judgments, so it
  is not obviously the same pair), chosen at random, shown with the sides
  swapped relative to that judgment; a repeat lease is not a vote and takes no
  overlap slot;
- expired leases stop counting, so their comparisons return to the pool;
- a constant number of queries, whatever the table sizes (the paused check and
  the "is there real work" check are subqueries of the queries below).

Gold and repeat leases have kind GOLD and REPEAT; nothing a rater is sent
names the kind (the task looks the same).

Concurrency. On PostgreSQL the queue's candidate row is taken with
SELECT ... FOR UPDATE SKIP LOCKED, so raters asking at once fan out over
different comparisons instead of queueing on the top one. Every code path that
adds a task lease or a judgment holds that row lock, so once we hold it, a
fresh count of live leases is exact; the candidate query's own count may be a
statement older than a lease someone committed just before we locked, which is
why the count is taken again under the lock. Gold and repeat leases take no
lock: nothing counts them. On SQLite (no row locks) the IMMEDIATE transaction
mode in settings serialises the whole function.
"""

import random

from django.db import transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from labeling.compiled import CompiledQuery
from labeling.models import Assignment, Comparison, Judgment, Project, RaterStanding, Side

# Raters racing for the same last slots can make a locked candidate turn out
# full; then the next one is tried. Bounded, so the query count stays constant.
_MAX_ATTEMPTS = 3
_TASK_RELATED = ("prompt", "response_a", "response_b", "project")
# A repeat is never of one of the rater's latest judgments: they would recognise it.
REPEAT_NOT_AMONG_LATEST = 5


def _live_leases(now):
    return Assignment.objects.filter(state=Assignment.State.ACTIVE, expires_at__gt=now)


def live_vote_leases(now):
    """Live leases that take an overlap slot: a repeat lease is not a vote."""
    return _live_leases(now).exclude(kind=Assignment.Kind.REPEAT)


def _not_paused(*, rater_id: int, project_id: int) -> Q:
    # Uncorrelated: the database evaluates it once per query (PostgreSQL: an InitPlan).
    return ~Q(Exists(RaterStanding.objects.filter(project_id=project_id, rater_id=rater_id, paused=True)))


def _live_lease(*, rater_id: int, project_id: int, now):
    return (
        _live_leases(now)
        .filter(rater_id=rater_id, project_id=project_id)
        .filter(_not_paused(rater_id=rater_id, project_id=project_id))
        .select_related(*(f"comparison__{name}" for name in _TASK_RELATED))
        .order_by("issued_at")[:1]
    )


# Built and compiled once per thread (labeling.compiled): asked on every next.
_LIVE_LEASE = CompiledQuery(_live_lease, ints=("rater_id", "project_id"), times=("now",))


def live_lease_for(*, rater, project: Project, now=None) -> Assignment | None:
    """The unexpired lease this rater holds in this project, with its pair
    loaded; None when they hold none or are paused."""
    return _LIVE_LEASE.first(rater_id=rater.pk, project_id=project.pk, now=now or timezone.now())


def next_comparison_for(*, rater, project: Project, now=None) -> Assignment | None:
    """Lease the next comparison to this rater, or return the one they hold.

    Returns the Assignment (with comparison, prompt and both responses loaded)
    or None when nothing is left for this rater in this project, or they are
    paused in it.
    """
    now = now or timezone.now()
    with transaction.atomic():
        held = live_lease_for(rater=rater, project=project, now=now)
        if held is not None:
            return held
        draw = random.random()
        assignment = None
        if draw < project.gold_rate:
            assignment = _lease_gold(rater=rater, project=project, now=now)
        elif draw < project.gold_rate + project.repeat_rate:
            assignment = _lease_repeat(rater=rater, project=project, now=now)
        return assignment or _lease_from_queue(rater=rater, project=project, now=now)


def _lease(*, comparison: Comparison, rater, project: Project, left: str, kind: str, now) -> Assignment:
    assignment = Assignment.objects.create(
        comparison=comparison,
        rater=rater,
        project=project,
        left=left,
        kind=kind,
        issued_at=now,
        expires_at=now + project.lease_duration,
    )
    assignment.comparison = comparison
    return assignment


def _lease_from_queue(*, rater, project: Project, now) -> Assignment | None:
    tried: list[int] = []
    for _ in range(_MAX_ATTEMPTS):
        comparison = _lock_next_candidate(rater=rater, project=project, now=now, exclude=tried)
        if comparison is None:
            return None
        if comparison.judgments_count + _count_live_leases(comparison, now) < project.overlap:
            return _lease(
                comparison=comparison,
                rater=rater,
                project=project,
                left=random.choice((Side.A, Side.B)),
                kind=Assignment.Kind.TASK,
                now=now,
            )
        tried.append(comparison.pk)
    return None


def _not_judged_or_skipped_by(rater_id: int) -> Q:
    # Neither judged nor skipped by this rater (an expired lease of their own
    # does not block: they may pick it up again).
    # repeat_of IS NULL: a rater's repeat exists only beside their first
    # judgment, and the condition lets the partial unique index on
    # (comparison, rater) answer with one probe (without it SQLite walks all
    # of the rater's judgments for every candidate).
    judged = Judgment.objects.filter(comparison=OuterRef("pk"), rater_id=rater_id, repeat_of__isnull=True)
    skipped = Assignment.objects.filter(comparison=OuterRef("pk"), rater_id=rater_id, state=Assignment.State.SKIPPED)
    return ~Q(Exists(judged)) & ~Q(Exists(skipped))


def _queue_for(*, rater, project: Project, now):
    """The open, non-gold comparisons this rater may be given, unordered."""
    return _queue(rater_id=rater.pk, project_id=project.pk, overlap=project.overlap, now=now)


def _queue(*, rater_id: int, project_id: int, overlap: int, now):
    live_count = Subquery(
        live_vote_leases(now)
        .filter(comparison=OuterRef("pk"))
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n"),
        output_field=IntegerField(),
    )
    return (
        # is_gold = false, not Django's usual NOT is_gold: SQLite uses an index
        # column for equalities only, and without it could not walk
        # comparison_queue_idx in serving order (a sort of every open row instead).
        Comparison.objects.filter(project_id=project_id, status=Comparison.Status.OPEN, is_gold=Value(False))
        .filter(_not_judged_or_skipped_by(rater_id))
        .filter(_not_paused(rater_id=rater_id, project_id=project_id))
        .alias(live=Coalesce(live_count, Value(0)))
        .filter(live__lt=Value(overlap) - F("judgments_count"))
    )


def candidates_for(*, rater, project: Project, exclude: list[int], now=None):
    """The queue in serving order, locking what it returns (the candidate
    query; tests check its plan walks comparison_queue_idx at 100,000 rows)."""
    return _candidates(
        rater_id=rater.pk, project_id=project.pk, overlap=project.overlap, now=now or timezone.now(), exclude=exclude
    )


def _candidates(*, rater_id: int, project_id: int, overlap: int, now, exclude=()):
    # Not joined to the project, which the caller has: with the project table
    # in the join, SQLite sorts every open row instead of walking the index.
    return (
        _queue(rater_id=rater_id, project_id=project_id, overlap=overlap, now=now)
        .exclude(pk__in=exclude)
        .select_related(*(name for name in _TASK_RELATED if name != "project"))
        .order_by("-priority", "created_at", "pk")
        .select_for_update(skip_locked=True, of=("self",))
    )


# The first candidate, as candidates_for(...).first() with nothing excluded (the first attempt of every next).
_FIRST_CANDIDATE = CompiledQuery(
    lambda **values: _candidates(**values)[:1], ints=("rater_id", "project_id", "overlap"), times=("now",)
)


def _lock_next_candidate(*, rater, project: Project, now, exclude: list[int]) -> Comparison | None:
    if exclude:
        comparison = candidates_for(rater=rater, project=project, exclude=exclude, now=now).first()
    else:
        comparison = _FIRST_CANDIDATE.first(rater_id=rater.pk, project_id=project.pk, overlap=project.overlap, now=now)
    if comparison is not None:
        comparison.project = project
    return comparison


def _real_work_left(*, rater, project: Project, now) -> Q:
    return Q(Exists(_queue_for(rater=rater, project=project, now=now)))


def _lease_gold(*, rater, project: Project, now) -> Assignment | None:
    comparison = (
        Comparison.objects.filter(project=project, status=Comparison.Status.OPEN, is_gold=True)
        .filter(_not_judged_or_skipped_by(rater.pk))
        .filter(_real_work_left(rater=rater, project=project, now=now))
        .select_related(*_TASK_RELATED)
        .order_by("?")
        .first()
    )
    if comparison is None:
        return None
    return _lease(
        comparison=comparison,
        rater=rater,
        project=project,
        left=random.choice((Side.A, Side.B)),
        kind=Assignment.Kind.GOLD,
        now=now,
    )


def _lease_repeat(*, rater, project: Project, now) -> Assignment | None:
    mine = Judgment.objects.filter(rater=rater, project=project)
    latest = mine.order_by("-created_at", "-pk").values("comparison_id")[:REPEAT_NOT_AMONG_LATEST]
    skipped_repeat = Assignment.objects.filter(
        comparison=OuterRef("comparison"), rater=rater, kind=Assignment.Kind.REPEAT, state=Assignment.State.SKIPPED
    )
    first = (
        mine.filter(repeat_of__isnull=True, repeat__isnull=True, comparison__is_gold=False)
        .exclude(comparison__status=Comparison.Status.RETIRED)
        .exclude(comparison_id__in=latest)
        .filter(~Exists(skipped_repeat))
        .filter(_real_work_left(rater=rater, project=project, now=now))
        .select_related(*(f"comparison__{name}" for name in _TASK_RELATED))
        .order_by("?")
        .first()
    )
    if first is None:
        return None
    return _lease(
        comparison=first.comparison,
        rater=rater,
        project=project,
        left=Side.B if first.left == Side.A else Side.A,
        kind=Assignment.Kind.REPEAT,
        now=now,
    )


def _count_live_leases(comparison: Comparison, now) -> int:
    return live_vote_leases(now).filter(comparison=comparison).count()


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
