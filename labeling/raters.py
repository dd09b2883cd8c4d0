"""What admins decide about a rater in a project: pause them (no new tasks)
or exclude them (their judgments stay stored but leave training and export).

Both are reversible, and every change is kept as a RaterAction with who did it,
when and why. Permission checks are the callers': a view or admin action must
check ``labeling.manage_raters`` (through labeling.access) before calling
these, and pass the acting user as ``by``.

Pausing releases the rater's live leases in the project by marking them
expired now (they stay ACTIVE: the record shows they were neither answered nor
skipped), so their comparisons go back to the pool for others at once. A
paused rater gets no task (assignment.next_comparison_for answers None) and
no judgment of theirs is accepted (judgments.record_judgment raises
LeaseConflict), not even within the lease grace. Once resumed, a lease
released less than lease_grace ago may still be answered while its comparison
needs it, like any other expired lease. (A lease issued by a request that
raced the pause is never served nor answered either: both checks read the
standing, not the leases.)
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.models import Assignment, Project, RaterAction, RaterStanding

# The database wants expires_at after issued_at: a lease issued this very
# instant is released one microsecond after it.
_TICK = timedelta(microseconds=1)


def set_paused(*, project: Project, rater, paused: bool, by, reason: str = "", now=None) -> RaterStanding:
    """Pause (no new tasks, live leases released) or resume a rater in a project.

    Records a RaterAction (pause or resume) when the standing changes; asking
    for the state the rater is already in changes and records nothing.
    """
    now = now or timezone.now()
    with transaction.atomic():
        standing = _standing_for_update(project=project, rater=rater)
        if standing.paused == paused:
            return standing
        standing.paused = paused
        standing.save(update_fields=["paused", "updated_at"])
        if paused:
            released_at = ExpressionWrapper(Greatest(Value(now), F("issued_at") + _TICK), output_field=DateTimeField())
            Assignment.objects.filter(
                project=project, rater=rater, state=Assignment.State.ACTIVE, expires_at__gt=now
            ).update(expires_at=released_at)
        action = RaterAction.Action.PAUSE if paused else RaterAction.Action.RESUME
        _record(project=project, rater=rater, action=action, by=by, reason=reason)
    return standing


def set_excluded(*, project: Project, rater, excluded: bool, by, reason: str = "") -> RaterStanding:
    """Exclude a rater's judgments from training and export, or include them again.

    Their judgments stay stored and keep counting toward their comparisons'
    judgments_count (readers filter with excluded_rater_ids). Records a
    RaterAction (exclude or include) when the standing changes.
    """
    with transaction.atomic():
        standing = _standing_for_update(project=project, rater=rater)
        if standing.excluded == excluded:
            return standing
        standing.excluded = excluded
        standing.save(update_fields=["excluded", "updated_at"])
        action = RaterAction.Action.EXCLUDE if excluded else RaterAction.Action.INCLUDE
        _record(project=project, rater=rater, action=action, by=by, reason=reason)
    return standing


def excluded_rater_ids(*, project: Project) -> set[int]:
    """Ids of the raters whose judgments leave this project's training data and export."""
    return set(RaterStanding.objects.filter(project=project, excluded=True).values_list("rater_id", flat=True))


def is_paused(*, project: Project, rater) -> bool:
    return RaterStanding.objects.filter(project=project, rater=rater, paused=True).exists()


def _standing_for_update(*, project: Project, rater) -> RaterStanding:
    # The row lock orders concurrent changes to one rater's standing, so each
    # recorded action describes a real change.
    standing, _ = RaterStanding.objects.select_for_update().get_or_create(project=project, rater=rater)
    return standing


def _record(*, project: Project, rater, action: str, by, reason: str) -> RaterAction:
    record = RaterAction(project=project, rater=rater, action=action, by=by, reason=reason.strip())
    record.full_clean()
    record.save()
    return record
