"""rewardmodel.actions: what a request of the loop does, and the outcome it reports."""

import threading

import pytest
from django.db import connections

from rewardmodel import actions, tasks
from rewardmodel.actions import Handover
from rewardmodel.activation import Activation, VersionNotReady
from rewardmodel.models import ProjectLoop, RewardModelVersion, Trigger
from tests.rewardmodel.conftest import published
from tests.rewardmodel.factories import RewardModelVersionFactory

pytestmark = pytest.mark.django_db


def statuses(project):
    return dict(RewardModelVersion.objects.filter(project=project).values_list("version", "status"))


# -- retrain -----------------------------------------------------------------------


def test_a_retrain_request_marks_it_pending_and_hands_it_to_the_broker(project, broker):
    requested = actions.request_retrain(project_id=project.pk, reason=Trigger.MANUAL)

    assert requested == actions.Request(Handover.REQUESTED)
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.pending_reason == "manual" and loop.enqueued_at is not None
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "manual"})]


def test_a_second_request_is_merged_into_the_pending_one(project, broker):
    actions.request_retrain(project_id=project.pk, reason=Trigger.MANUAL)

    requested = actions.request_retrain(project_id=project.pk, reason=Trigger.THRESHOLD)

    assert requested.outcome == Handover.MERGED
    assert len(published(broker)) == 1
    assert ProjectLoop.objects.get(project=project).coalesced_triggers == 1


def test_a_request_the_broker_refuses_stays_pending_with_the_reason(project, broker_down):
    requested = actions.request_retrain(project_id=project.pk, reason=Trigger.MANUAL)

    assert requested.outcome == Handover.BROKER_DOWN
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is None
    assert requested.broker_error and loop.enqueue_error == requested.broker_error


@pytest.mark.django_db(transaction=True)
def test_ten_requests_at_once_publish_one_retrain(project, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.retrain, "apply_async", lambda *a, **k: sent.append(k))
    barrier = threading.Barrier(10)
    outcomes = []

    def trigger():
        try:
            barrier.wait()
            outcomes.append(actions.request_retrain(project_id=project.pk, reason=Trigger.THRESHOLD).outcome)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=trigger) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == sorted([Handover.MERGED] * 9 + [Handover.REQUESTED])
    assert len(sent) == 1
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.coalesced_triggers == 9 and loop.enqueued_at is not None


# -- refresh -------------------------------------------------------------------------


def test_a_refresh_request_is_published_or_says_why_not(project, broker):
    assert actions.request_refresh(project_id=project.pk) == actions.Request(Handover.REQUESTED)
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]


def test_a_refused_refresh_leaves_nothing_pending(project, broker_down):
    requested = actions.request_refresh(project_id=project.pk)
    assert requested.outcome == Handover.BROKER_DOWN and requested.broker_error
    assert not ProjectLoop.objects.filter(project=project).exists()


# -- activate ----------------------------------------------------------------------


def test_activating_a_ready_version_switches_and_re_ranks_the_queue(project, broker):
    RewardModelVersionFactory(project=project, version=1, status="active")
    ready = RewardModelVersionFactory(project=project, version=2, status="ready")

    activated = actions.activate_version(version=ready)

    assert activated == actions.Activated(Activation.ACTIVATED, refresh=actions.Request(Handover.REQUESTED))
    assert statuses(project) == {1: "ready", 2: "active"}
    assert ready.status == "active"
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]


def test_activating_the_active_version_changes_nothing(project, broker):
    active = RewardModelVersionFactory(project=project, version=1, status="active")

    assert actions.activate_version(version=active) == actions.Activated(Activation.ALREADY_ACTIVE, refresh=None)
    assert published(broker) == []


@pytest.mark.parametrize("status", ["queued", "training", "failed"])
def test_a_version_that_is_not_ready_cannot_be_activated(project, broker, status):
    RewardModelVersionFactory(project=project, version=1, status="active")
    other = RewardModelVersionFactory(project=project, version=2, status=status)

    with pytest.raises(VersionNotReady, match="only a ready version can be activated"):
        actions.activate_version(version=other)

    assert statuses(project) == {1: "active", 2: status}
    assert published(broker) == []


def test_activation_reads_the_status_in_the_database_not_a_stale_copy(project, broker):
    version = RewardModelVersionFactory(project=project, version=1, status="ready")
    RewardModelVersion.objects.filter(pk=version.pk).update(status="failed")

    with pytest.raises(VersionNotReady, match="is failed"):
        actions.activate_version(version=version)
