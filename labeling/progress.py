"""How far along a project is, for a rater and overall. Two grouped queries
for any number of projects, so the project list stays cheap.

Repeats (a rater's second look at a pair, labeling.assignment) are not votes
and count nowhere here. Gold comparisons count like any other: raters see these
figures after every task, and a figure that moved differently after a gold task
would tell them which tasks are gold.
"""

from dataclasses import dataclass

from django.db.models import Count, Exists, F, OuterRef, Q

from labeling.models import Assignment, Comparison, Judgment


@dataclass(frozen=True)
class Progress:
    judged_by_you: int  # comparisons this rater has judged in the project (repeats not counted again)
    left_for_you: int  # open comparisons this rater has neither judged nor skipped
    total: int  # comparisons in the project, less those retired before any judgment
    complete: int  # comparisons with all the judgments they need (open, complete or retired since)


def progress_for(*, rater, project_ids: list[int]) -> dict[int, Progress]:
    judged = dict(
        Judgment.objects.filter(rater=rater, project_id__in=project_ids, repeat_of__isnull=True)
        .values_list("project_id")
        .annotate(n=Count("pk"))
        .values_list("project_id", "n")
    )
    mine = Judgment.objects.filter(comparison=OuterRef("pk"), rater=rater)
    skipped = Assignment.objects.filter(comparison=OuterRef("pk"), rater=rater, state=Assignment.State.SKIPPED)
    rows = (
        Comparison.objects.filter(project_id__in=project_ids)
        .exclude(status=Comparison.Status.RETIRED, judgments_count=0)
        .alias(mine=Exists(mine), skipped=Exists(skipped))
        .values("project_id")
        .annotate(
            total=Count("pk"),
            complete=Count("pk", filter=Q(judgments_count__gte=F("project__overlap"))),
            left=Count("pk", filter=Q(status=Comparison.Status.OPEN, mine=False, skipped=False)),
        )
    )
    by_project = {row["project_id"]: row for row in rows}
    return {
        pid: Progress(
            judged_by_you=judged.get(pid, 0),
            left_for_you=by_project.get(pid, {}).get("left", 0),
            total=by_project.get(pid, {}).get("total", 0),
            complete=by_project.get(pid, {}).get("complete", 0),
        )
        for pid in project_ids
    }
