"""What people do to comparisons as a whole: retire and reopen them, mark them gold and unmark them.

A comparison's status follows its judgments: open while it needs more
(judgments_count < project.overlap), complete once it has them; a gold
comparison stays open whatever its count (every rater may judge it).
judgments_count counts first judgments only: a repeat is never a vote. Retired is the
status a person sets: a retired comparison is given to nobody, whatever its
count, until it is reopened. The admin's actions call these; so can a script.
"""

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Case, F, Value, When

from labeling.models import Comparison


def status_by_count(comparison: Comparison) -> str:
    """The status comparison should have by its judgments_count (its project
    loaded): complete with enough judgments, else open; retired stays retired,
    and gold stays open."""
    if comparison.status == Comparison.Status.RETIRED:
        return Comparison.Status.RETIRED
    if comparison.judgments_count >= comparison.project.overlap and not comparison.is_gold:
        return Comparison.Status.COMPLETE
    return Comparison.Status.OPEN


def retire_comparisons(*, comparison_ids: Iterable[int]) -> int:
    """Stop giving these comparisons to raters (a rater who holds a lease on
    one may still answer it). comparison_ids may be a queryset of ids (a
    subquery then). Returns how many comparisons were selected."""
    return Comparison.objects.filter(pk__in=comparison_ids).update(status=Comparison.Status.RETIRED)


def reopen_comparisons(*, comparison_ids: Iterable[int]) -> int:
    """Put the retired ones among these comparisons back: complete if they
    already have all their judgments, open otherwise. Comparisons that are not
    retired are left as they are. Returns how many were reopened."""
    with transaction.atomic():
        retired = Comparison.objects.filter(pk__in=comparison_ids, status=Comparison.Status.RETIRED)
        completed = _complete_the_fully_judged(retired.filter(is_gold=False))
        opened = retired.update(status=Comparison.Status.OPEN)
    return completed + opened


def set_gold(*, comparison: Comparison, gold_label: str) -> Comparison:
    """Make comparison gold with the known answer gold_label ("a" or "b"), or
    give it that answer; raises ValidationError (field errors) for any other
    label. Returns the comparison as stored."""
    comparison.is_gold, comparison.gold_label = True, gold_label
    # The two gold fields and the model's clean(), which holds the rule that ties them.
    others = [f.name for f in Comparison._meta.fields if f.name not in ("is_gold", "gold_label")]
    comparison.full_clean(exclude=others, validate_unique=False, validate_constraints=False)
    mark_gold(comparison_ids=[comparison.pk], gold_label=gold_label)
    comparison.refresh_from_db(fields=["is_gold", "gold_label", "status"])
    return comparison


def unset_gold(*, comparison: Comparison) -> Comparison:
    """Make comparison an ordinary one again. Returns it as stored."""
    unmark_gold(comparison_ids=[comparison.pk])
    comparison.refresh_from_db(fields=["is_gold", "gold_label", "status"])
    return comparison


def mark_gold(*, comparison_ids: Iterable[int], gold_label: str) -> int:
    """Make these comparisons gold with the known answer gold_label ("a" or
    "b"). Gold stays open (every rater may judge it), so complete ones open
    again; retired ones stay retired. Returns how many were selected."""
    return Comparison.objects.filter(pk__in=comparison_ids).update(
        is_gold=True, gold_label=gold_label, status=_open_unless_retired()
    )


def mark_gold_by_reference_label(*, comparison_ids: Iterable[int]) -> int:
    """Make gold, with their reference label as the answer, those of these
    comparisons whose reference label is decisive ("a" or "b"; a tie or no
    label is no known answer). Returns how many were marked."""
    return Comparison.objects.filter(pk__in=comparison_ids, reference_label__in=["a", "b"]).update(
        is_gold=True, gold_label=F("reference_label"), status=_open_unless_retired()
    )


def unmark_gold(*, comparison_ids: Iterable[int]) -> int:
    """Make the gold ones among these comparisons ordinary again: complete if
    they have all their judgments, open otherwise (retired stays retired).
    Returns how many were unmarked."""
    with transaction.atomic():
        gold = Comparison.objects.filter(pk__in=comparison_ids, is_gold=True)
        _complete_the_fully_judged(gold.exclude(status=Comparison.Status.RETIRED))
        return gold.update(is_gold=False, gold_label="")


def _complete_the_fully_judged(comparisons) -> int:
    """Mark complete those of these comparisons that have all their judgments (the rule of status_by_count,
    as one UPDATE). Returns how many."""
    # An UPDATE cannot compare with a joined column (project__overlap): select those first, as a subquery.
    enough = comparisons.filter(judgments_count__gte=F("project__overlap")).values("pk")
    return Comparison.objects.filter(pk__in=enough).update(status=Comparison.Status.COMPLETE)


def _open_unless_retired():
    retired = Comparison.Status.RETIRED
    return Case(When(status=retired, then=Value(retired)), default=Value(Comparison.Status.OPEN))
