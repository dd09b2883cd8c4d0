"""rewardmodel.schedule: the loop's beat entries, when each runs next, and whether beat seems to run."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from rewardmodel.schedule import scheduled_tasks

pytestmark = pytest.mark.django_db


def test_it_shows_the_loops_periodic_tasks_with_their_next_run():
    now = datetime(2026, 11, 23, 17, 0, 30, tzinfo=UTC)
    PeriodicTask.objects.filter(task="rewardmodel.tasks.reconcile").update(last_run_at=now - timedelta(seconds=20))

    tasks = {t.task: t for t in scheduled_tasks(now=now)}

    reconcile = tasks["rewardmodel.tasks.reconcile"]
    assert reconcile.schedule == "every minute" and reconcile.enabled and not reconcile.overdue
    assert reconcile.next_run_at == now + timedelta(seconds=40)
    nightly = tasks["rewardmodel.tasks.retrain_projects_with_new_judgments"]
    assert nightly.schedule.startswith("30 2 * * *")
    assert nightly.next_run_at == datetime(2026, 11, 24, 2, 30, tzinfo=UTC)


def test_it_warns_when_beat_seems_not_to_run():
    now = timezone.now()
    PeriodicTask.objects.filter(task="rewardmodel.tasks.reconcile").update(last_run_at=now - timedelta(minutes=30))
    PeriodicTask.objects.filter(task="rewardmodel.tasks.retrain_projects_with_new_judgments").update(enabled=False)

    tasks = {t.task: t for t in scheduled_tasks(now=now)}

    assert tasks["rewardmodel.tasks.reconcile"].overdue
    assert tasks["rewardmodel.tasks.retrain_projects_with_new_judgments"].next_run_at is None


def test_it_lists_only_the_loops_own_tasks_and_counts_from_now_before_a_first_run():
    now = timezone.now()
    interval = PeriodicTask.objects.get(task="rewardmodel.tasks.reconcile").interval
    PeriodicTask.objects.create(name="someone else's", task="other.tasks.cleanup", interval=interval)
    PeriodicTask.objects.filter(task="rewardmodel.tasks.reconcile").update(last_run_at=None)

    tasks = scheduled_tasks(now=now)

    assert sorted(t.task for t in tasks) == [
        "rewardmodel.tasks.reconcile",
        "rewardmodel.tasks.retrain_projects_with_new_judgments",
    ]
    reconcile = next(t for t in tasks if t.task == "rewardmodel.tasks.reconcile")
    assert reconcile.next_run_at == now + timedelta(minutes=1) and not reconcile.overdue
    assert reconcile.purpose == "Publish missed or due retrains"
