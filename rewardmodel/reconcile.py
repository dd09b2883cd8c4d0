"""What the periodic tasks decide: compare the database with what should be
happening, mark the retrains that are due, and say which to hand the broker.

Nothing here publishes: each function returns project ids, and tasks.py (the
tasks `reconcile`, every minute, and `retrain_projects_with_new_judgments`,
nightly, from django-celery-beat entries admins can edit) publishes them.
"""

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from labeling.models import Project
from rewardmodel import loop
from rewardmodel.models import ProjectLoop, RewardModelVersion, Trigger

# A retrain handed to the broker but not started after this long is handed
# over again (a broker that lost it, a worker that never came). The training
# slot makes a duplicate harmless.
REPUBLISH_AFTER = timedelta(minutes=30)


def retrains_to_publish(*, now: datetime | None = None) -> list[int]:
    """Projects whose retrain the broker should get now, each once:

    - due by their judgment count but not asked for (a trigger lost with its
      web process): marked pending here;
    - pending but never handed over (the broker was down), or handed over
      long ago and never started (the broker lost it), while no training
      holds the slot (one that does publishes pending work itself);
    - with a version left queued or training and nobody holding the slot: its
      worker died and no broker will redeliver it (or not before its
      visibility timeout); marked pending for recovery, the run adopts it.
    """
    now = now or timezone.now()
    project_ids = [
        project.pk
        for project in Project.objects.filter(is_active=True).select_related("loop_settings")
        if loop.retrain_is_due(project) and loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.THRESHOLD)
    ]
    project_ids += (
        ProjectLoop.objects.filter(retrain_pending=True)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - REPUBLISH_AFTER))
        .filter(loop.slot_is_free(now))
        .exclude(project_id__in=project_ids)
        .values_list("project_id", flat=True)
    )
    orphaned = (
        RewardModelVersion.objects.filter(status__in=RewardModelVersion.UNFINISHED)
        .filter(loop.slot_is_free(now, through="project__reward_loop__"))
        .values_list("project_id", flat=True)
        .distinct()
    )
    for project_id in orphaned:
        # Published even when it was pending already: the message that would have adopted it may be the
        # one the dead worker had prefetched, which the broker returns only after its visibility timeout
        # (hours). A duplicate delivery is harmless (the slot and the pending flag admit one run).
        loop.mark_retrain_pending(project_id=project_id, reason=Trigger.RECOVERY)
        if project_id not in project_ids:
            project_ids.append(project_id)
    return project_ids


def projects_with_new_judgments() -> list[int]:
    """Active projects with any judgment newer than their last version, marked pending for the schedule."""
    return [
        project.pk
        for project in Project.objects.filter(is_active=True)
        if loop.new_judgments_since_last_version(project) > 0
        and loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.SCHEDULE)
    ]
