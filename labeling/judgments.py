"""Recording a judgment (validate, store once, announce after commit), and
deleting judgments without leaving their comparisons' counts behind.

Callers speak in the rater's terms (left / right as shown on screen); the
database stores A / B plus which one was on the left, so the order effect
can be studied and undone later.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef
from django.utils import timezone

from labeling.access import labelable_projects, projects_for
from labeling.assignment import live_vote_leases
from labeling.comparisons import status_by_count
from labeling.compiled import CompiledQuery
from labeling.models import Assignment, Comparison, Judgment, RaterStanding, Side
from labeling.signals import judgment_recorded

log = logging.getLogger(__name__)

SHOWN_OUTCOMES = ("left", "right", "tie", "both_bad")
SHOWN_CRITERION_OUTCOMES = ("left", "right", "tie")
MAX_RATIONALE = 10_000
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


class JudgmentError(Exception):
    """Something a rater or client did wrong; the message is for people."""


class ComparisonNotFound(JudgmentError):
    """No such comparison in a project this rater may label (maps to 404)."""


class LeaseConflict(JudgmentError):
    """The rater was never given this comparison, or their lease on it is gone (409)."""


LEASE_GONE = (
    "You were not assigned this comparison, or your lease on it ran out and it went to someone else. "
    "Ask for the next comparison."
)


class InvalidJudgment(JudgmentError):
    """Field errors (400): {field: [message, ...]}."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True, kw_only=True)
class JudgmentInput:
    """What a rater's client sends about one comparison, in the rater's terms.

    Built by the label page's form and the API's input serializer, which check
    only types; record_judgment checks the rules (see _errors).
    """

    comparison_id: int
    outcome: str  # "left" | "right" | "tie" | "both_bad", as shown on screen
    strength: int | None = None  # 1-3 for left/right; ignored for tie/both_bad
    criteria: dict[str, str] = field(default_factory=dict)  # criterion -> "left" | "right" | "tie"
    rationale: str = ""
    flags: list[str] = field(default_factory=list)  # Judgment.Flag codes
    time_spent_ms: int
    # Which response ("a"/"b") the caller's screen showed on the left, when it
    # knows: an answer from a stale tab whose lease was replaced by one with
    # the other order is then still mapped as the rater saw it. It must be the
    # order of one of this rater's leases on the comparison.
    shown_left: str | None = None


@dataclass(frozen=True)
class Recorded:
    judgment: Judgment
    created: bool  # False: the rater had already judged it; this is the stored one


def _to_stored(shown: str, left: str) -> str:
    """'left'/'right' as seen on screen -> 'a'/'b' as stored."""
    if shown == "left":
        return left
    if shown == "right":
        return Side.B if left == Side.A else Side.A
    return shown


def allowed_outcomes(project) -> list[str]:
    """The outcomes a rater may give in this project, in shown terms."""
    return (
        ["left", "right"] + (["tie"] if project.allow_ties else []) + (["both_bad"] if project.allow_both_bad else [])
    )


def _errors(judgment: JudgmentInput, project) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    outcome, strength, criteria = judgment.outcome, judgment.strength, judgment.criteria
    allowed = allowed_outcomes(project)
    if outcome not in allowed:
        errors["outcome"] = [f"Must be one of: {', '.join(allowed)}."]
    if outcome in ("left", "right") and strength not in (1, 2, 3):
        errors["strength"] = ["Must be 1 (slightly), 2 (clearly) or 3 (much) better."]
    if not isinstance(criteria, dict):
        errors["criteria"] = ["Must be an object {criterion: left|right|tie}."]
    else:
        unknown = sorted(set(criteria) - set(project.criteria))
        if unknown:
            errors.setdefault("criteria", []).append(
                f"Unknown criteria: {', '.join(unknown)}. This project has: {', '.join(project.criteria) or 'none'}."
            )
        bad = sorted(k for k, v in criteria.items() if v not in SHOWN_CRITERION_OUTCOMES)
        if bad:
            errors.setdefault("criteria", []).append(f"Values must be left, right or tie (bad: {', '.join(bad)}).")
    if not isinstance(judgment.rationale, str) or len(judgment.rationale) > MAX_RATIONALE:
        errors["rationale"] = [f"Must be text of at most {MAX_RATIONALE} characters."]
    valid_flags = set(Judgment.Flag.values)
    if not isinstance(judgment.flags, list) or any(f not in valid_flags for f in judgment.flags):
        errors["flags"] = [f"Each flag must be one of: {', '.join(sorted(valid_flags))}."]
    spent = judgment.time_spent_ms
    if isinstance(spent, bool) or not isinstance(spent, int) or not (0 <= spent <= MAX_TIME_SPENT_MS):
        errors["time_spent_ms"] = [f"Must be an integer between 0 and {MAX_TIME_SPENT_MS}."]
    return errors


def record_judgment(*, rater, judgment: JudgmentInput, project=None, now=None) -> Recorded:
    """Store a rater's judgment of a comparison they were given, exactly once.

    The judgment is in shown terms (see JudgmentInput), mapped to A / B
    through the order of the rater's lease. Accepted only from a lease (see
    _lease_holds): a live one, or one that expired less than the project's
    lease_grace ago while the comparison still needs the judgment. A second
    call for a comparison the rater already judged returns the stored
    judgment (created=False): clients may retry. The one exception is a repeat
    lease (assignment.py): the answer to it is stored as a repeat of the first
    judgment, counts for nothing, and is what later retries get back.
    `project` (optional) narrows the lookup to that project. Raises
    ComparisonNotFound, LeaseConflict or InvalidJudgment.
    """
    try:
        with transaction.atomic(durable=True):
            recorded = _record(rater=rater, judgment=judgment, project=project, now=now)
    except IntegrityError:
        # Only reachable if two requests raced past the row lock (they cannot
        # on PostgreSQL or SQLite-IMMEDIATE); the stored judgment wins.
        existing = (
            Judgment.objects.filter(comparison_id=judgment.comparison_id, rater=rater)
            .order_by(F("repeat_of").asc(nulls_last=True))
            .first()
        )
        if existing is None:
            raise
        return Recorded(existing, created=False)
    return recorded


def _comparison_to_lock(comparison_id, *, rater_id: int, projects, project=None):
    """The comparison to judge, in one of `projects` (those the rater may label), with its project and
    whether the rater is paused there, locked for the rest of the transaction."""
    comparisons = Comparison.objects.filter(pk=comparison_id, project__in=projects)
    if project is not None:
        comparisons = comparisons.filter(project=project)
    paused = RaterStanding.objects.filter(project=OuterRef("project"), rater_id=rater_id, paused=True)
    return (
        comparisons.select_related("project")
        .annotate(rater_paused=Exists(paused))
        .select_for_update(of=("self",))
        .order_by("pk")[:1]
    )


# The API's lookup (no project given), built and compiled once per thread and shape (labeling.compiled).
_LOCK_COMPARISON = CompiledQuery(
    lambda *, comparison_id, rater_id, superuser: _comparison_to_lock(
        comparison_id, rater_id=rater_id, projects=labelable_projects(user_id=rater_id, superuser=superuser)
    ),
    ints=("comparison_id", "rater_id"),
    shapes=("superuser",),
)


def _record(*, rater, judgment: JudgmentInput, project, now) -> Recorded:
    # The row lock serialises everything that changes this comparison's
    # count of leases and judgments (see assignment.py).
    comparison_id = judgment.comparison_id
    if project is None and type(comparison_id) is int and rater.is_active:
        comparison = _LOCK_COMPARISON.first(
            comparison_id=comparison_id, rater_id=rater.pk, superuser=rater.is_superuser
        )
    else:
        comparison = _comparison_to_lock(
            comparison_id, rater_id=rater.pk, projects=projects_for(rater), project=project
        ).first()
    if comparison is None:
        raise ComparisonNotFound("No such comparison in a project you can label.")
    # The lease is judged by the clock once the row lock is held, not when the
    # request began: a request that waited seconds for the CPU or the lock
    # would otherwise find its lease still live after another rater, asking
    # next in the meantime, was given the slot it had expired from (two
    # holders beyond the overlap; found by benchmarks/load_faults.py at 200
    # raters with p99 latencies of seconds).
    now = now or timezone.now()
    project = comparison.project
    # At most two: the rater's first judgment and its repeat.
    mine = {j.repeat_of_id is not None: j for j in Judgment.objects.filter(comparison=comparison, rater=rater)}
    first, repeat = mine.get(False), mine.get(True)
    if repeat is not None:
        return Recorded(repeat, created=False)
    lease = Assignment.objects.filter(comparison=comparison, rater=rater).order_by("-issued_at", "-pk").first()
    if first is not None:
        answers_repeat = (
            lease is not None
            and lease.kind == Assignment.Kind.REPEAT
            and lease.state == Assignment.State.ACTIVE
            # The order of the first showing: a retry of the first judgment.
            and judgment.shown_left in (None, lease.left)
        )
        if not answers_repeat:
            return Recorded(first, created=False)

    errors = _errors(judgment, project)
    if errors:
        raise InvalidJudgment(errors)
    repeating = first is not None
    if comparison.rater_paused or not _lease_holds(
        lease, comparison=comparison, rater=rater, repeating=repeating, now=now
    ):
        raise LeaseConflict(LEASE_GONE)
    if repeating:
        return _record_repeat(rater=rater, judgment=judgment, comparison=comparison, first=first, lease=lease)

    left = lease.left
    shown_left = judgment.shown_left
    if shown_left is not None and shown_left != left:
        if not Assignment.objects.filter(comparison=comparison, rater=rater, left=shown_left).exists():
            raise InvalidJudgment({"left": ["This order was never shown to you; reload the task."]})
        left = shown_left

    stored = _create(rater=rater, judgment=judgment, comparison=comparison, left=left)
    Assignment.objects.filter(pk=lease.pk).update(state=Assignment.State.SUBMITTED)
    comparison.judgments_count += 1
    comparison.status = status_by_count(comparison)  # a gold comparison stays open, a retired one retired
    comparison.save(update_fields=["judgments_count", "status"])

    transaction.on_commit(lambda: _announce(stored))
    return Recorded(stored, created=True)


def _lease_holds(lease: Assignment | None, *, comparison: Comparison, rater, repeating: bool, now) -> bool:
    """Whether the rater's latest lease on the comparison still lets them answer it.

    Live (active, not expired): yes. Active and expired less than lease_grace
    ago: yes while the comparison still needs the answer: it is open and (gold,
    which every rater may judge, or) its judgments plus others' live leases
    leave a slot. A repeat answers for nothing, so it needs no slot. Skipped,
    submitted, or expired longer ago: no.
    """
    if lease is None or lease.state != Assignment.State.ACTIVE:
        return False
    if lease.expires_at > now:
        return True
    if lease.expires_at <= now - comparison.project.lease_grace:
        return False
    if repeating:
        return True
    if comparison.status != Comparison.Status.OPEN:
        return False
    if comparison.is_gold:
        return True
    others = live_vote_leases(now).filter(comparison=comparison).exclude(rater=rater).count()
    return comparison.judgments_count + others < comparison.project.overlap


def _record_repeat(
    *, rater, judgment: JudgmentInput, comparison: Comparison, first: Judgment, lease: Assignment
) -> Recorded:
    # Mapped through the repeat lease's own order (the sides swapped): that is
    # what was on the rater's screen. Not a vote: no count, no status, no
    # announcement (the listeners react to new training data).
    stored = _create(rater=rater, judgment=judgment, comparison=comparison, left=lease.left, repeat_of=first)
    Assignment.objects.filter(pk=lease.pk).update(state=Assignment.State.SUBMITTED)
    return Recorded(stored, created=True)


def _create(*, rater, judgment: JudgmentInput, comparison: Comparison, left: str, repeat_of=None) -> Judgment:
    return Judgment.objects.create(
        comparison=comparison,
        rater=rater,
        project=comparison.project,
        outcome=_to_stored(judgment.outcome, left),
        strength=judgment.strength if judgment.outcome in ("left", "right") else None,
        criteria={name: _to_stored(value, left) for name, value in judgment.criteria.items()},
        rationale=judgment.rationale.strip(),
        flags=sorted(set(judgment.flags)),
        time_spent_ms=judgment.time_spent_ms,
        left=left,
        repeat_of=repeat_of,
    )


def delete_judgments(*, judgment_ids: Iterable[int]) -> int:
    """Delete judgments, and keep their comparisons' counts and statuses true.

    A comparison's judgments_count drives assignment: it is recounted, and a
    complete comparison that now lacks judgments is reopened (a retired one
    stays retired). judgment_ids may be a queryset of ids (a subquery then).
    Returns the number of judgments deleted.
    """
    with transaction.atomic():
        judgments = Judgment.objects.filter(pk__in=judgment_ids)
        # record_judgment's row lock, taken before the delete: no judgment of
        # these comparisons is recorded between the delete and the recount.
        comparisons = list(
            Comparison.objects.select_for_update(of=("self",))
            .filter(pk__in=judgments.values("comparison_id"))
            .select_related("project")
            .order_by("pk")
        )
        deleted, _ = judgments.delete()
        # Only first judgments are votes; a repeat never counts.
        counts = dict(
            Judgment.objects.filter(comparison__in=comparisons, repeat_of__isnull=True)
            .values_list("comparison_id")
            .annotate(n=Count("pk"))
            .values_list("comparison_id", "n")
        )
        for comparison in comparisons:
            comparison.judgments_count = counts.get(comparison.pk, 0)
            comparison.status = status_by_count(comparison)
        Comparison.objects.bulk_update(comparisons, ["judgments_count", "status"])
    return deleted


def _announce(judgment: Judgment) -> None:
    # A listener's failure (say, a broker that is down) must never turn a
    # stored judgment into an error for the rater.
    for receiver, result in judgment_recorded.send_robust(
        sender=Judgment,
        judgment_id=judgment.pk,
        project_id=judgment.project_id,
        comparison_id=judgment.comparison_id,
    ):
        if isinstance(result, Exception):
            log.error("judgment_recorded listener %r failed: %r", receiver, result, exc_info=result)
