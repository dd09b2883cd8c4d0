"""What people do to comparisons as a whole: retire them and reopen them.

A comparison's status follows its judgments: open while it needs more
(judgments_count < project.overlap), complete once it has them. Retired is the
status a person sets: a retired comparison is given to nobody, whatever its
count, until it is reopened. The admin's actions call these; so can a script.
"""

from collections.abc import Iterable

from django.db import transaction
from django.db.models import F

from labeling.models import Comparison


def status_by_count(comparison: Comparison) -> str:
    """The status comparison should have by its judgments_count (its project
    loaded): complete with enough judgments, else open; retired stays retired."""
    if comparison.status == Comparison.Status.RETIRED:
        return Comparison.Status.RETIRED
    if comparison.judgments_count >= comparison.project.overlap:
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
        # An UPDATE cannot compare with a joined column (project__overlap):
        # select those first, as a subquery.
        enough = retired.filter(judgments_count__gte=F("project__overlap")).values("pk")
        completed = Comparison.objects.filter(pk__in=enough).update(status=Comparison.Status.COMPLETE)
        opened = retired.update(status=Comparison.Status.OPEN)
    return completed + opened
