"""The loop's state per project: its settings, the retrain-pending flag, the
training slot, and the count of judgments since the last version.

Everything here is a row of LoopSettings or ProjectLoop and a few conditional
UPDATEs on it; nothing trains, publishes or knows about Celery. Every other
module reads and writes this state through these functions.

Single flight: at most one training per project across all workers and
machines, by a lease on the ProjectLoop row (owner + expiry) taken with one
conditional UPDATE. The holder renews it while it works; a lease not renewed
for REWARD_MODEL_LOCK_TTL_SECONDS belongs to a dead worker and may be taken.

Exactly one retrain is published however many triggers arrive at once: the
flip of `retrain_pending` from False to True is one conditional UPDATE, and
only the caller that flipped it publishes (mark_retrain_pending).
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from labeling.models import Judgment, Project
from rewardmodel.models import LoopSettings, ProjectLoop, RewardModelVersion

# --- settings ---------------------------------------------------------------


def loop_settings_for(project: Project) -> LoopSettings:
    """The project's loop settings; the defaults (an unsaved row) when it has none.

    At most one query, none when the caller loaded the row with
    select_related("loop_settings"). Never writes: a page that only reads
    settings must not create rows.
    """
    try:
        return project.loop_settings
    except LoopSettings.DoesNotExist:
        return LoopSettings(project=project)


def retrain_is_due(project: Project) -> bool:
    """The judgment-count trigger: retrain_every new judgments since the last version (0: never)."""
    every = loop_settings_for(project).retrain_every
    if every <= 0:
        return False
    judgments, already_read = _judgments_since_last_version(project)
    return at_least(judgments, every + already_read)


def at_least(judgments, n: int) -> bool:
    """judgments holds n rows or more. The publisher thread asks this after every burst of
    judgments: it reads at most n entries of the index (LIMIT 1 OFFSET n - 1) where a COUNT(*)
    would read them all (a project with no version yet: every judgment it has)."""
    return n <= 0 or judgments.order_by().values("pk")[n - 1 : n].exists()


def new_judgments_since_last_version(project: Project) -> int:
    """Judgments recorded after the newest version (not failed) read its data.

    Runs after every judgment, so it counts only the judgments above the last id
    that version read (a range of the (project, id) index, at most about
    retrain_every rows), never all of the project's judgments. A version still
    queued has read nothing yet: every judgment counts. A version without that id
    in its snapshot (made by hand) falls back to total minus its judgments_count.
    """
    judgments, already_read = _judgments_since_last_version(project)
    return judgments.count() - already_read


def _judgments_since_last_version(project: Project):
    """(judgments, how many of them the newest version read): the range above the last id that
    version read, and 0; or, for a version without that id, all of them and its judgments_count."""
    latest = (
        RewardModelVersion.objects.filter(project=project)
        .exclude(status=RewardModelVersion.Status.FAILED)
        .order_by("-version")
        .values_list("data_snapshot", "judgments_count")
        .first()
    )
    snapshot, judgments_read = latest or ({}, 0)
    if isinstance(snapshot, dict) and "last_judgment_id" in snapshot:
        # None: that version read no judgments.
        return _votes_after(project, snapshot["last_judgment_id"]), 0
    return _votes_after(project, None), judgments_read


# --- the pending retrain ------------------------------------------------------


def mark_retrain_pending(*, project_id: int, reason: str) -> bool:
    """Ask for a retrain. True when this call flipped the flag (its caller publishes);
    False when one was already pending, and this request is merged into it."""
    now = timezone.now()
    _loop_row(project_id)
    ProjectLoop.objects.filter(project_id=project_id).update(last_trigger_at=now)
    flipped = ProjectLoop.objects.filter(project_id=project_id, retrain_pending=False).update(
        retrain_pending=True, pending_reason=reason, pending_since=now, enqueued_at=None
    )
    if not flipped:
        _count_coalesced(project_id)
    return bool(flipped)


def take_pending_retrain(*, project_id: int) -> bool:
    """Clear the pending flag as a training starts; True when one was pending."""
    return bool(
        ProjectLoop.objects.filter(project_id=project_id, retrain_pending=True).update(
            retrain_pending=False, pending_reason="", pending_since=None, enqueued_at=None, enqueue_error=""
        )
    )


def is_retrain_pending(project_id: int) -> bool:
    return ProjectLoop.objects.filter(project_id=project_id, retrain_pending=True).exists()


def pending_reason(project_id: int) -> str:
    return ProjectLoop.objects.filter(project_id=project_id).values_list("pending_reason", flat=True).first() or ""


def record_enqueued(*, project_id: int) -> None:
    """The broker took the pending retrain."""
    ProjectLoop.objects.filter(project_id=project_id, retrain_pending=True).update(
        enqueued_at=timezone.now(), enqueue_error=""
    )


def record_enqueue_error(*, project_id: int, error: str) -> None:
    """The broker refused it: it stays pending, and the reconcile hands it over later."""
    ProjectLoop.objects.filter(project_id=project_id).update(enqueue_error=error)


# --- the head refit ------------------------------------------------------------
#
# Between retrains, every refit_every judgments, a light task refits the active
# version's reward heads on its cached embeddings and re-ranks the queue
# (rewardmodel.refit). At most one is handed to the broker at a time: the
# request is a timestamp flipped by one conditional UPDATE, cleared when the
# refit starts, and taken again after REFIT_REQUEST_TTL if it never did (a
# lost message, a broker that was down), so no reconcile is needed for it.

REFIT_REQUEST_TTL = timedelta(minutes=2)


def refit_is_due(project: Project) -> bool:
    """refit_every new judgments since the active version's data or its latest head refit (0: never)."""
    every = loop_settings_for(project).refit_every
    if every == 0:
        return False
    active = (
        RewardModelVersion.objects.filter(project=project, status=RewardModelVersion.Status.ACTIVE)
        .values_list("data_snapshot", "head_refit")
        .first()
    )
    if active is None:
        return False  # nothing to refit: the first version comes from a retrain
    return at_least(_votes_after(project, last_judgment_read(*active)), every)


def last_judgment_read(data_snapshot, head_refit) -> int | None:
    """The newest judgment id a version's model has seen: its training data's, or its latest refit's."""
    ids = [
        record.get("last_judgment_id")
        for record in (data_snapshot, head_refit)
        if isinstance(record, dict) and isinstance(record.get("last_judgment_id"), int)
    ]
    return max(ids, default=None)


def judgments_after(project: Project, last_id: int | None) -> int:
    """Votes (not repeats) with an id above last_id: a range of the (project, id) index."""
    return _votes_after(project, last_id).count()


def _votes_after(project: Project, last_id: int | None):
    # Repeats (a rater's second look, for self-consistency) are not votes: they add nothing to train on.
    judgments = Judgment.objects.filter(project=project, repeat_of__isnull=True)
    return judgments if last_id is None else judgments.filter(pk__gt=last_id)


def mark_refit_requested(*, project_id: int, now: datetime | None = None) -> bool:
    """Ask for a head refit. True when this call took the request (its caller publishes); False when one
    was handed over less than REFIT_REQUEST_TTL ago and has not started."""
    now = now or timezone.now()
    _loop_row(project_id)
    return bool(
        ProjectLoop.objects.filter(
            Q(refit_requested_at__isnull=True) | Q(refit_requested_at__lt=now - REFIT_REQUEST_TTL),
            project_id=project_id,
        ).update(refit_requested_at=now)
    )


def take_refit_request(*, project_id: int) -> None:
    """A refit starts: judgments from now on may ask for the next one."""
    ProjectLoop.objects.filter(project_id=project_id).update(refit_requested_at=None)


def forget_refit_request(*, project_id: int) -> None:
    """The broker refused the refit: the next judgment may ask again at once."""
    take_refit_request(project_id=project_id)


# --- the training slot ----------------------------------------------------------


def lock_ttl() -> timedelta:
    """A lease not renewed for this long belongs to a dead worker."""
    return timedelta(seconds=settings.REWARD_MODEL_LOCK_TTL_SECONDS)


def acquire_training_slot(*, project_id: int, owner: str, now: datetime | None = None) -> bool:
    """Take the project's training slot, atomically, across all workers.

    One conditional UPDATE: it succeeds when the slot is free, its lease has
    run out (the holder died), or this owner already holds it (the broker
    redelivered our own task after our worker died).
    """
    now = now or timezone.now()
    _loop_row(project_id)
    taken = ProjectLoop.objects.filter(
        Q(lock_owner="") | Q(lock_expires_at__lt=now) | Q(lock_owner=owner), project_id=project_id
    ).update(lock_owner=owner, lock_expires_at=now + lock_ttl())
    return taken == 1


def renew_training_slot(*, project_id: int, owner: str) -> None:
    ProjectLoop.objects.filter(project_id=project_id, lock_owner=owner).update(
        lock_expires_at=timezone.now() + lock_ttl()
    )


def release_training_slot(*, project_id: int, owner: str) -> None:
    ProjectLoop.objects.filter(project_id=project_id, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


def slot_taken(*, project_id: int) -> None:
    """A worker found another training of the project running: the request stays
    pending (the running training publishes it when it finishes), merged into it.

    Its broker message is consumed, so nothing is in flight any more: enqueued_at
    is cleared, and if the running training dies (SIGKILL) the reconcile publishes
    the pending retrain as soon as that training's lease runs out, instead of
    waiting REPUBLISH_AFTER for a message that no longer exists."""
    _count_coalesced(project_id, retrain_pending=True, enqueued_at=None)


def slot_is_free(now: datetime, *, through: str = "") -> Q:
    """A filter: the training slot nobody holds (free, or its lease ran out).
    `through` is the path to the ProjectLoop from the queried model, e.g. "project__reward_loop__"."""
    return Q(**{f"{through}lock_owner": ""}) | Q(**{f"{through}lock_expires_at__lt": now})


def _count_coalesced(project_id: int, **fields) -> None:
    ProjectLoop.objects.filter(project_id=project_id).update(coalesced_triggers=F("coalesced_triggers") + 1, **fields)


def _loop_row(project_id: int) -> ProjectLoop:
    # Rows appear on a project's first trigger or training; the conditional
    # UPDATEs above need one to act on.
    loop, _ = ProjectLoop.objects.get_or_create(project_id=project_id)
    return loop
