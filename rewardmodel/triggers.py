"""When to retrain: after every N judgments, on a schedule, or on request.

Listens to labeling's "judgment recorded" signal (sent after commit). The
decision and the record of it live in the database (ProjectLoop); the broker
only carries the "go look". Exactly one retrain is enqueued however many
raters cross the threshold at once: the flip of `retrain_pending` from False to
True is one conditional UPDATE, and only the request that flips it publishes.

A broker that is down never reaches the rater: publishing fails fast (no
retries, short timeouts), the error is logged and kept on the loop row, and
the periodic reconcile (tasks.reconcile) publishes what is still pending.
"""

import logging

from django.db.models import F
from django.dispatch import receiver
from django.utils import timezone

from labeling.models import Project
from labeling.signals import judgment_recorded
from rewardmodel.models import ProjectLoop
from rewardmodel.pipeline import loop_for, new_judgments_since_last_version

log = logging.getLogger(__name__)


@receiver(judgment_recorded, dispatch_uid="rewardmodel.retrain_after_n_judgments")
def on_judgment_recorded(sender, *, project_id: int, **kwargs) -> None:
    retrain_if_due(project_id=project_id)


def retrain_if_due(*, project_id: int) -> bool:
    """Request a retrain when the project has retrain_every new judgments."""
    project = Project.objects.filter(pk=project_id).only("pk", "retrain_every").first()
    if project is None or project.retrain_every == 0:
        return False
    if new_judgments_since_last_version(project) < project.retrain_every:
        return False
    return request_retrain(project_id=project_id, reason="threshold")


def request_retrain(*, project_id: int, reason: str) -> bool:
    """Mark a retrain pending and publish it. Returns True if this call
    published (or tried to); False when one was already pending (coalesced)."""
    now = timezone.now()
    loop_for(project_id)
    ProjectLoop.objects.filter(project_id=project_id).update(last_trigger_at=now)
    flipped = ProjectLoop.objects.filter(project_id=project_id, retrain_pending=False).update(
        retrain_pending=True, pending_reason=reason, pending_since=now, enqueued_at=None
    )
    if not flipped:
        ProjectLoop.objects.filter(project_id=project_id).update(coalesced_triggers=F("coalesced_triggers") + 1)
        return False
    publish_retrain(project_id=project_id)
    return True


def publish_retrain(*, project_id: int) -> bool:
    """Hand a pending retrain to the broker; on failure keep it pending."""
    from rewardmodel.tasks import retrain

    loop = ProjectLoop.objects.filter(project_id=project_id).values("pending_reason").first() or {}
    try:
        retrain.apply_async(
            args=[project_id],
            kwargs={"trigger": loop.get("pending_reason") or "threshold"},
            retry=False,
        )
    except Exception as error:  # kombu raises OperationalError, OSError, redis errors...
        log.warning("could not publish the retrain of project %s: %r (the reconcile will retry)", project_id, error)
        ProjectLoop.objects.filter(project_id=project_id).update(enqueue_error=f"{type(error).__name__}: {error}")
        return False
    ProjectLoop.objects.filter(project_id=project_id, retrain_pending=True).update(
        enqueued_at=timezone.now(), enqueue_error=""
    )
    return True
