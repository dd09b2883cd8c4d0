"""rewardmodel.triggers: the "judgment recorded" listener retrains after every retrain_every judgments.

The listener marks the retrain pending on the rater's request and leaves the
publishing to the process's publisher thread (rewardmodel.tasks): tests that
look at what was published wait for that thread, and run with committed
transactions (transaction=True), since the thread has its own connection.
"""

import time

import pytest
from rest_framework.test import APIClient

from labeling.models import Judgment
from labeling.signals import judgment_recorded
from rewardmodel import tasks
from rewardmodel.actions import Handover
from rewardmodel.models import ProjectLoop
from rewardmodel.tasks import wait_for_publisher
from rewardmodel.triggers import retrain_if_due
from tests.factories import ComparisonFactory, JudgmentFactory
from tests.rewardmodel.conftest import published
from tests.rewardmodel.factories import RewardModelVersionFactory

pytestmark = pytest.mark.django_db


def recorded(judgment):
    """What labeling sends once the judgment's transaction has committed."""
    judgment_recorded.send(
        sender=Judgment,
        judgment_id=judgment.pk,
        project_id=judgment.project_id,
        comparison_id=judgment.comparison_id,
    )


def judge(project, rater):
    return JudgmentFactory(comparison__prompt__project=project, rater=rater)


@pytest.mark.django_db(transaction=True)
def test_it_requests_a_retrain_when_the_project_reaches_retrain_every_new_judgments(
    project, loop_settings, alice, broker
):
    loop_settings.retrain_every = 2
    loop_settings.save()

    recorded(judge(project, alice))
    assert not ProjectLoop.objects.filter(project=project).exists()

    recorded(judge(project, alice))
    assert wait_for_publisher()
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.pending_reason == "threshold" and loop.enqueued_at is not None
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "threshold"})]


@pytest.mark.django_db(transaction=True)
def test_judgments_past_the_threshold_join_the_pending_retrain(project, loop_settings, alice, broker):
    loop_settings.retrain_every = 1
    loop_settings.save()

    recorded(judge(project, alice))
    recorded(judge(project, alice))

    assert wait_for_publisher()
    assert len(published(broker)) == 1
    assert ProjectLoop.objects.get(project=project).coalesced_triggers == 1


def test_it_counts_only_the_judgments_since_the_last_version(project, loop_settings, alice, broker):
    loop_settings.retrain_every = 2
    loop_settings.save()
    read = judge(project, alice)
    RewardModelVersionFactory(project=project, version=1, status="active", data_snapshot={"last_judgment_id": read.pk})

    new = judge(project, alice)

    assert retrain_if_due(project_id=project.pk) is None
    recorded(new)
    assert wait_for_publisher() and published(broker) == []


def test_it_stays_quiet_when_the_trigger_is_off(project, loop_settings, alice, broker):
    loop_settings.retrain_every = 0
    loop_settings.save()
    for _ in range(3):
        recorded(judge(project, alice))
    assert wait_for_publisher() and published(broker) == [] and not ProjectLoop.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_project_without_settings_retrains_every_50_judgments(project, alice, broker):
    JudgmentFactory.create_batch(49, comparison__prompt__project=project, rater=alice)
    assert retrain_if_due(project_id=project.pk) is None

    judgment = judge(project, alice)
    assert retrain_if_due(project_id=judgment.project_id).outcome == Handover.QUEUED
    assert wait_for_publisher()
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "threshold"})]


def test_a_project_that_is_gone_is_ignored():
    assert retrain_if_due(project_id=987654321) is None


@pytest.mark.django_db(transaction=True)
def test_a_judgment_through_the_api_triggers_once_it_commits(project, loop_settings, alice, broker):
    loop_settings.retrain_every = 1
    loop_settings.save()
    ComparisonFactory(prompt__project=project)
    client = APIClient()
    client.force_authenticate(alice)
    task = client.get(f"/api/projects/{project.pk}/next/").json()

    response = client.post(
        "/api/judgments/",
        {"comparison": task["comparison"], "outcome": "left", "strength": 2, "time_spent_ms": 900},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert wait_for_publisher()
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "threshold"})]


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_down_never_reaches_the_rater(project, loop_settings, alice, broker_down):
    loop_settings.retrain_every = 1
    loop_settings.save()
    ComparisonFactory(prompt__project=project)
    client = APIClient()
    client.force_authenticate(alice)
    task = client.get(f"/api/projects/{project.pk}/next/").json()

    started = time.monotonic()
    response = client.post(
        "/api/judgments/",
        {"comparison": task["comparison"], "outcome": "right", "strength": 1, "time_spent_ms": 900},
        format="json",
    )

    assert response.status_code == 201 and time.monotonic() - started < 1
    assert wait_for_publisher()
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is None and loop.enqueue_error  # the reconcile hands it over


def test_the_rater_request_only_hands_the_check_over(project, alice, django_assert_num_queries):
    judgment = judge(project, alice)
    with django_assert_num_queries(0):
        recorded(judgment)
    assert wait_for_publisher()


def test_a_burst_of_judgments_is_checked_once_per_interval_and_after_the_last_one(project):
    checks = []
    handed = []
    for _ in range(50):
        assert tasks.check_triggers_soon(project_id=project.pk, check=lambda **kwargs: checks.append(time.monotonic()))
        handed.append(time.monotonic())
    assert wait_for_publisher()

    # The first at once, then the 49 others in one: at most one check per interval, and none missed.
    assert 1 <= len(checks) <= 2, checks
    assert checks[-1] >= handed[-1]
    assert all(b - a >= tasks.TRIGGER_CHECK_INTERVAL for a, b in zip(checks, checks[1:], strict=False))
