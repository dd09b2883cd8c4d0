"""The loop's periodic tasks as celery beat has them: django-celery-beat rows
(created by migration 0002_default_schedule, editable in the admin), with
when each runs next and whether beat seems to have stopped."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

# The loop's tasks (rewardmodel/tasks.py), by their public names, and what each is for.
SCHEDULED_TASKS = {
    "rewardmodel.tasks.reconcile": "Publish missed or due retrains",
    "rewardmodel.tasks.retrain_projects_with_new_judgments": "Retrain projects with new judgments",
}
# Beat runs a task at most a tick (5 s by default) late; a run missed by
# minutes means no beat is running, or it cannot reach the database.
OVERDUE_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class ScheduledTask:
    name: str
    task: str
    purpose: str
    enabled: bool
    schedule: str  # "every minute", "30 2 * * * (m/h/dM/MY/d) UTC"
    last_run_at: datetime | None
    next_run_at: datetime | None  # None: disabled, or a schedule kind we do not compute
    total_run_count: int
    overdue: bool  # an enabled task whose run is well past due: is celery beat running?


def scheduled_tasks(*, now: datetime | None = None) -> list[ScheduledTask]:
    """The loop's django-celery-beat entries, with their next run when it is simple to compute. One query."""
    now = now or timezone.now()
    tasks = PeriodicTask.objects.filter(task__in=SCHEDULED_TASKS).select_related("interval", "crontab")
    return [_scheduled_task(t, now) for t in sorted(tasks, key=lambda t: (t.task, t.name))]


def _scheduled_task(task: PeriodicTask, now: datetime) -> ScheduledTask:
    schedule_obj = task.interval or task.crontab or task.solar or task.clocked
    next_run = next_run_of(task, now) if task.enabled else None
    return ScheduledTask(
        name=task.name,
        task=task.task,
        purpose=SCHEDULED_TASKS.get(task.task, ""),
        enabled=task.enabled,
        schedule=str(schedule_obj) if schedule_obj is not None else "",
        last_run_at=task.last_run_at,
        next_run_at=next_run,
        total_run_count=task.total_run_count,
        overdue=next_run is not None and now - next_run > OVERDUE_AFTER,
    )


def next_run_of(task: PeriodicTask, now: datetime) -> datetime | None:
    """When beat runs the task next, as of `now`: the first due time after its last run.

    In the past when beat has missed it (it then runs as soon as beat is
    back). Interval and crontab schedules only; solar and one-off clocked
    ones are rare enough to show without it.
    """
    if task.interval is not None:
        return (task.last_run_at or now) + timedelta(**{task.interval.period: task.interval.every})
    if task.crontab is not None:
        # Celery's own crontab arithmetic, in the schedule's time zone.
        start, delta, _ = task.crontab.schedule.remaining_delta(task.last_run_at or now)
        return start + delta
    return None
