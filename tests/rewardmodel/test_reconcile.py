"""rewardmodel.reconcile decides what the broker missed; tasks.reconcile and the schedule publish it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from rewardmodel import loop, pipeline, reconcile, tasks
from rewardmodel.models import ProjectLoop, Trigger
from tests.factories import JudgmentFactory, ProjectFactory
from tests.rewardmodel.conftest import published
from tests.rewardmodel.factories import LoopSettingsFactory, ProjectLoopFactory, RewardModelVersionFactory

pytestmark = pytest.mark.django_db


def judged(project, count, rater):
    JudgmentFactory.create_batch(count, comparison__prompt__project=project, rater=rater)


def test_it_marks_a_project_due_by_its_judgment_count_and_names_it(project, loop_settings, alice):
    loop_settings.retrain_every = 2
    loop_settings.save()
    judged(project, 2, alice)  # a trigger lost with its web process: nothing pending yet

    assert reconcile.retrains_to_publish() == [project.pk]
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.pending_reason == Trigger.THRESHOLD
    assert loop.enqueued_at is None  # reconcile decides; it publishes nothing


def test_it_leaves_projects_that_are_not_due_inactive_or_switched_off(project, loop_settings, alice):
    loop_settings.retrain_every = 5
    loop_settings.save()
    judged(project, 4, alice)
    off = LoopSettingsFactory(retrain_every=0).project
    judged(off, 3, alice)
    inactive = ProjectFactory(is_active=False)
    LoopSettingsFactory(project=inactive, retrain_every=1)
    judged(inactive, 3, alice)

    assert reconcile.retrains_to_publish() == []
    assert not ProjectLoop.objects.exists()


def test_it_names_a_pending_retrain_the_broker_never_got_or_lost(project):
    now = timezone.now()
    never = ProjectLoopFactory(project=project, retrain_pending=True, enqueued_at=None)
    lost = ProjectLoopFactory(retrain_pending=True, enqueued_at=now - reconcile.REPUBLISH_AFTER - timedelta(minutes=1))
    ProjectLoopFactory(retrain_pending=True, enqueued_at=now - timedelta(minutes=1))  # handed over just now
    ProjectLoopFactory(retrain_pending=False)

    assert sorted(reconcile.retrains_to_publish(now=now)) == sorted([never.pk, lost.pk])


def test_it_leaves_a_pending_retrain_to_the_training_that_holds_the_slot(project):
    now = timezone.now()
    ProjectLoopFactory(
        project=project, retrain_pending=True, lock_owner="task-1", lock_expires_at=now + timedelta(minutes=2)
    )
    assert reconcile.retrains_to_publish(now=now) == []

    ProjectLoop.objects.filter(project=project).update(lock_expires_at=now - timedelta(seconds=1))  # it died
    assert reconcile.retrains_to_publish(now=now) == [project.pk]


def test_it_recovers_a_version_a_dead_worker_left(project):
    now = timezone.now()
    RewardModelVersionFactory(project=project, version=1, status="training")
    ProjectLoopFactory(project=project, lock_owner="dead", lock_expires_at=now - timedelta(seconds=1))

    assert reconcile.retrains_to_publish(now=now) == [project.pk]
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.pending_reason == Trigger.RECOVERY


def test_it_names_each_project_once(project, loop_settings, alice):
    loop_settings.retrain_every = 1
    loop_settings.save()
    judged(project, 1, alice)
    RewardModelVersionFactory(project=project, version=1, status="queued")
    ProjectLoopFactory(project=project)

    assert reconcile.retrains_to_publish() == [project.pk]


def test_the_schedule_names_active_projects_with_any_new_judgment(project, alice):
    judged(project, 1, alice)
    quiet = ProjectFactory()
    asleep = ProjectFactory(is_active=False)
    judged(asleep, 1, alice)

    assert reconcile.projects_with_new_judgments() == [project.pk]
    assert ProjectLoop.objects.get(project=project).pending_reason == Trigger.SCHEDULE
    assert not ProjectLoop.objects.filter(project__in=[quiet, asleep]).exists()


# -- the tasks publish what reconcile names --------------------------------------------


def test_the_reconcile_task_publishes_what_is_due_and_counts_what_the_broker_took(project, broker):
    ProjectLoopFactory(project=project, retrain_pending=True, pending_reason=Trigger.MANUAL)

    assert tasks.reconcile() == 1
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "manual"})]
    assert ProjectLoop.objects.get(project=project).enqueued_at is not None
    assert tasks.reconcile() == 0  # handed over: nothing to do until REPUBLISH_AFTER


def test_the_reconcile_task_with_the_broker_down_keeps_it_pending(project, broker_down):
    ProjectLoopFactory(project=project, retrain_pending=True)

    assert tasks.reconcile() == 0
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is None and loop.enqueue_error


def test_the_schedule_task_publishes_a_retrain_per_project_with_new_judgments(project, alice, broker):
    judged(project, 1, alice)

    assert tasks.retrain_projects_with_new_judgments() == 1
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "schedule"})]


def a_trains_v1_while_the_next_retrain_is_handed_over(project):
    """Worker A holds the slot and trains v1; the next retrain is pending and handed to the broker."""
    loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.THRESHOLD)
    assert loop.acquire_training_slot(project_id=project.pk, owner="task-A")
    assert loop.take_pending_retrain(project_id=project.pk)
    RewardModelVersionFactory(project=project, version=1, status="training", task_id="task-A", attempts=1)
    assert loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.THRESHOLD)
    loop.record_enqueued(project_id=project.pk)


def test_a_retrain_merged_into_a_training_that_then_died_is_published_once_its_lease_runs_out(project):
    """Worker A trains; the next retrain is marked pending and handed to the broker; A is SIGKILLed; worker
    B gets that message while A's lease still runs and merges it (COALESCED). The message is consumed, so
    the reconcile must publish the pending retrain as soon as A's lease lapses, not 30 minutes later."""
    a_trains_v1_while_the_next_retrain_is_handed_over(project)

    outcome = pipeline.run_retrain(project_id=project.pk, owner="task-B")
    assert outcome.status == pipeline.RetrainStatus.COALESCED

    assert reconcile.retrains_to_publish(now=timezone.now()) == []  # A's lease still runs
    after_the_lease = timezone.now() + loop.lock_ttl() + timedelta(minutes=1)
    assert reconcile.retrains_to_publish(now=after_the_lease) == [project.pk]


def test_a_version_a_killed_worker_left_is_published_even_when_its_retrain_was_pending_and_handed_over(project):
    """Seen in benchmarks/load_faults.py: the next retrain was published while v1 trained, and the SIGKILLed
    worker had prefetched that message (the broker returns it only after its visibility timeout). The
    orphan must be published as soon as the dead worker's lease lapses, though the flag was already set."""
    a_trains_v1_while_the_next_retrain_is_handed_over(project)

    assert reconcile.retrains_to_publish(now=timezone.now()) == []  # A's lease still runs
    after_the_lease = timezone.now() + loop.lock_ttl() + timedelta(minutes=1)
    assert reconcile.retrains_to_publish(now=after_the_lease) == [project.pk]
