"""What the periodic tasks do: compare the database with what should be
happening, and hand the broker whatever it missed.

Runs every minute (reconcile) and nightly (retrain_projects_with_new_judgments),
from django-celery-beat entries that admins can edit in the Django admin.
"""

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from labeling.models import Project
from rewardmodel.models import ProjectLoop, RewardModelVersion
from rewardmodel.pipeline import new_judgments_since_last_version
from rewardmodel.triggers import publish_retrain, request_retrain

log = logging.getLogger(__name__)

# A retrain handed to the broker but not started after this long is handed
# over again (a broker that lost it, a worker that never came). The task's
# single-flight lock makes a duplicate harmless.
REPUBLISH_AFTER = timedelta(minutes=30)


def reconcile(*, now=None) -> int:
    """Publish retrains that are due or pending but not in the broker. Returns how many."""
    now = now or timezone.now()
    published = 0
    for project in Project.objects.filter(is_active=True, retrain_every__gt=0):
        if new_judgments_since_last_version(project) >= project.retrain_every:
            if request_retrain(project_id=project.pk, reason="threshold"):
                published += 1
    stale = ProjectLoop.objects.filter(retrain_pending=True).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - REPUBLISH_AFTER)
    )
    # Not while a training holds the slot: it re-enqueues pending work itself.
    stale = stale.filter(Q(lock_owner="") | Q(lock_expires_at__lt=now))
    for loop in stale:
        if publish_retrain(project_id=loop.project_id):
            published += 1
    # A version left queued/training with nobody holding the slot: its worker
    # died and no broker will redeliver (or not before its visibility
    # timeout). Ask again; the run adopts that version.
    orphaned = (
        RewardModelVersion.objects.filter(
            status__in=[RewardModelVersion.Status.QUEUED, RewardModelVersion.Status.TRAINING]
        )
        .filter(Q(project__reward_loop__lock_owner="") | Q(project__reward_loop__lock_expires_at__lt=now))
        .values_list("project_id", flat=True)
        .distinct()
    )
    for project_id in orphaned:
        if request_retrain(project_id=project_id, reason="recovery"):
            published += 1
    return published


def retrain_projects_with_new_judgments() -> int:
    published = 0
    for project in Project.objects.filter(is_active=True):
        if new_judgments_since_last_version(project) > 0 and request_retrain(
            project_id=project.pk, reason="schedule"
        ):
            published += 1
    return published
