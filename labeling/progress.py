"""How far along a project is, for a rater and overall. Two grouped queries
for any number of projects, so the project list stays cheap."""

from dataclasses import dataclass

from django.db.models import Count, Exists, F, OuterRef, Q

from labeling.models import Assignment, Comparison, Judgment


@dataclass(frozen=True)
class Progress:
    judged_by_you: int  # judgments this rater has made in the project
    left_for_you: int  # open comparisons this rater has neither judged nor skipped
    total: int  # comparisons in the project, less those retired before any judgment
    complete: int  # comparisons with all the judgments they need (open, complete or retired since)


def progress_for(*, rater, project_ids: list[int]) -> dict[int, Progress]:
    judged = dict(
        Judgment.objects.filter(rater=rater, project_id__in=project_ids)
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
