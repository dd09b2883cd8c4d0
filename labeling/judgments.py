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
from django.db.models import Count
from django.utils import timezone

from labeling.access import projects_for
from labeling.comparisons import status_by_count
from labeling.models import Assignment, Comparison, Judgment, Side
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
    """The rater holds no lease and the comparison needs no more judgments (409)."""


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
    return ["left", "right"] + (["tie"] if project.allow_ties else []) + (
        ["both_bad"] if project.allow_both_bad else []
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
    """Store a rater's judgment of a comparison, exactly once.

    The judgment is in shown terms (see JudgmentInput). A second call for the
    same (comparison, rater) returns the stored judgment unchanged
    (created=False): clients may retry. `project` (optional) narrows the
    lookup to that project. Raises ComparisonNotFound, LeaseConflict or
    InvalidJudgment.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic(durable=True):
            recorded = _record(rater=rater, judgment=judgment, project=project, now=now)
    except IntegrityError:
        # Only reachable if two requests raced past the row lock (they cannot
        # on PostgreSQL or SQLite-IMMEDIATE); the stored judgment wins.
        existing = Judgment.objects.filter(comparison_id=judgment.comparison_id, rater=rater).first()
        if existing is None:
            raise
        return Recorded(existing, created=False)
    return recorded


def _record(*, rater, judgment: JudgmentInput, project, now) -> Recorded:
    # The row lock serialises everything that changes this comparison's
    # count of leases and judgments (see assignment.py).
    comparisons = Comparison.objects.filter(pk=judgment.comparison_id, project__in=projects_for(rater))
    if project is not None:
        comparisons = comparisons.filter(project=project)
    comparison = (
        comparisons
        .select_related("project")
        .select_for_update(of=("self",))
        .first()
    )
    if comparison is None:
        raise ComparisonNotFound("No such comparison in a project you can label.")
    existing = Judgment.objects.filter(comparison=comparison, rater=rater).first()
    if existing is not None:
        return Recorded(existing, created=False)

    project = comparison.project
    errors = _errors(judgment, project)
    if errors:
        raise InvalidJudgment(errors)

    # The order this rater saw is that of their latest lease on it (even an
    # expired one: that is still what was on their screen).
    lease = Assignment.objects.filter(comparison=comparison, rater=rater).order_by("-issued_at").first()
    holds_live_lease = lease is not None and lease.state == Assignment.State.ACTIVE and lease.expires_at > now
    if not holds_live_lease:
        others_live = Assignment.objects.filter(
            comparison=comparison, state=Assignment.State.ACTIVE, expires_at__gt=now
        ).count()
        if comparison.status != Comparison.Status.OPEN or comparison.judgments_count + others_live >= project.overlap:
            raise LeaseConflict(
                "You hold no live lease on this comparison and it needs no more judgments. "
                "Ask for the next comparison instead."
            )
    left = lease.left if lease is not None else Side.A
    shown_left = judgment.shown_left
    if shown_left is not None and shown_left != left:
        if not Assignment.objects.filter(comparison=comparison, rater=rater, left=shown_left).exists():
            raise InvalidJudgment({"left": ["This order was never shown to you; reload the task."]})
        left = shown_left

    stored = Judgment.objects.create(
        comparison=comparison,
        rater=rater,
        project=project,
        outcome=_to_stored(judgment.outcome, left),
        strength=judgment.strength if judgment.outcome in ("left", "right") else None,
        criteria={name: _to_stored(value, left) for name, value in judgment.criteria.items()},
        rationale=judgment.rationale.strip(),
        flags=sorted(set(judgment.flags)),
        time_spent_ms=judgment.time_spent_ms,
        left=left,
    )
    if holds_live_lease:
        Assignment.objects.filter(pk=lease.pk).update(state=Assignment.State.SUBMITTED)
    comparison.judgments_count += 1
    if comparison.judgments_count >= project.overlap:
        comparison.status = Comparison.Status.COMPLETE
    comparison.save(update_fields=["judgments_count", "status"])

    transaction.on_commit(lambda: _announce(stored))
    return Recorded(stored, created=True)


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
        counts = dict(
            Judgment.objects.filter(comparison__in=comparisons)
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
