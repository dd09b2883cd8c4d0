"""rewardmodel.loop: the settings accessor, the pending flag, the training slot, and the judgment count."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling.models import Project
from rewardmodel import loop
from rewardmodel.models import LoopSettings, ProjectLoop, RewardModelVersion, Strategy, Trigger
from tests.factories import JudgmentFactory
from tests.rewardmodel.factories import LoopSettingsFactory, RewardModelVersionFactory

pytestmark = pytest.mark.django_db


# -- settings ----------------------------------------------------------------------


def test_a_project_without_settings_runs_on_the_defaults_and_no_row_is_written(project):
    settings = loop.loop_settings_for(project)

    assert (settings.retrain_every, settings.acquisition, settings.exploration_share) == (50, Strategy.DOPTIMAL, 0.1)
    assert (settings.activation_tolerance, settings.pair_budget, settings.train_on_reference_labels) == (
        0.02,
        200,
        False,
    )
    assert not LoopSettings.objects.exists()


def test_a_projects_own_settings_are_read_in_at_most_one_query(project, django_assert_num_queries):
    LoopSettingsFactory(project=project, retrain_every=7, acquisition=Strategy.ENSEMBLE)
    fresh = Project.objects.get(pk=project.pk)
    with django_assert_num_queries(1):
        assert loop.loop_settings_for(fresh).retrain_every == 7
    loaded = Project.objects.select_related("loop_settings").get(pk=project.pk)
    with django_assert_num_queries(0):
        assert loop.loop_settings_for(loaded).acquisition == Strategy.ENSEMBLE


def test_it_refuses_an_exploration_share_outside_0_1(project):
    with pytest.raises(ValidationError, match="loop_exploration_share_in_0_1"):
        LoopSettings(project=project, exploration_share=1.5).full_clean()


# -- the pending retrain ---------------------------------------------------------------


def test_only_the_first_of_several_requests_flips_the_pending_flag(project):
    assert loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.MANUAL)
    assert not loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.THRESHOLD)

    row = ProjectLoop.objects.get(project=project)
    assert row.retrain_pending and row.pending_reason == Trigger.MANUAL  # the first reason stays
    assert row.coalesced_triggers == 1 and row.last_trigger_at is not None
    assert loop.pending_reason(project.pk) == "manual"


def test_a_training_takes_the_pending_retrain_once(project):
    loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.SCHEDULE)
    loop.record_enqueue_error(project_id=project.pk, error="OSError: refused")

    assert loop.take_pending_retrain(project_id=project.pk)
    assert not loop.take_pending_retrain(project_id=project.pk)
    row = ProjectLoop.objects.get(project=project)
    assert (row.retrain_pending, row.pending_reason, row.enqueue_error) == (False, "", "")


def test_handing_over_clears_the_last_broker_error(project):
    loop.mark_retrain_pending(project_id=project.pk, reason=Trigger.MANUAL)
    loop.record_enqueue_error(project_id=project.pk, error="OSError: refused")
    loop.record_enqueued(project_id=project.pk)

    row = ProjectLoop.objects.get(project=project)
    assert row.enqueued_at is not None and row.enqueue_error == ""


# -- the training slot -------------------------------------------------------------------


def test_only_one_owner_holds_the_training_slot(project):
    assert loop.acquire_training_slot(project_id=project.pk, owner="one")
    assert not loop.acquire_training_slot(project_id=project.pk, owner="two")
    assert loop.acquire_training_slot(project_id=project.pk, owner="one")  # a redelivery of the same task
    loop.release_training_slot(project_id=project.pk, owner="one")
    assert loop.acquire_training_slot(project_id=project.pk, owner="two")


def test_an_expired_slot_can_be_taken_over(project, settings):
    assert loop.acquire_training_slot(project_id=project.pk, owner="dead")
    later = timezone.now() + timedelta(seconds=settings.REWARD_MODEL_LOCK_TTL_SECONDS + 1)
    assert loop.acquire_training_slot(project_id=project.pk, owner="alive", now=later)


def test_renewing_extends_only_the_holders_lease(project):
    loop.acquire_training_slot(project_id=project.pk, owner="one")
    ProjectLoop.objects.filter(project=project).update(lock_expires_at=timezone.now() - timedelta(seconds=1))

    loop.renew_training_slot(project_id=project.pk, owner="two")
    assert ProjectLoop.objects.get(project=project).lock_expires_at < timezone.now()
    loop.renew_training_slot(project_id=project.pk, owner="one")
    assert ProjectLoop.objects.get(project=project).lock_expires_at > timezone.now()


# -- judgments since the last version ------------------------------------------------------


def test_new_judgments_are_counted_above_the_last_one_the_version_read(project, alice):
    old = JudgmentFactory.create_batch(3, comparison__prompt__project=project, rater=alice)
    version = RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6)
    RewardModelVersion.objects.filter(pk=version.pk).update(
        data_snapshot={"judgments": 3, "last_judgment_id": old[-1].pk}
    )
    JudgmentFactory.create_batch(2, comparison__prompt__project=project, rater=alice)
    old[0].delete()  # deleting what the version read is not a new judgment

    with CaptureQueriesContext(connection) as queries:
        assert loop.new_judgments_since_last_version(project) == 2
    count = next(q["sql"] for q in queries.captured_queries if "COUNT(*)" in q["sql"].upper())
    assert f'"id" > {old[-1].pk}' in count  # a range above the last id read, not every judgment

    RewardModelVersionFactory(project=project, version=2, status="queued")  # has read nothing yet
    assert loop.new_judgments_since_last_version(project) == 4


def test_a_retrain_is_due_at_retrain_every_new_judgments_and_never_at_zero(project, loop_settings, alice):
    loop_settings.retrain_every = 3
    loop_settings.save()
    JudgmentFactory.create_batch(2, comparison__prompt__project=project, rater=alice)
    assert not loop.retrain_is_due(project)

    JudgmentFactory(comparison__prompt__project=project, rater=alice)
    assert loop.retrain_is_due(project)

    loop_settings.retrain_every = 0
    loop_settings.save()
    assert not loop.retrain_is_due(project)


def test_the_retrain_check_reads_at_most_retrain_every_judgments(project, loop_settings, alice):
    # The publisher thread asks after every burst of judgments; a project without a version
    # would otherwise count every judgment it has, each time.
    loop_settings.retrain_every = 3
    loop_settings.save()
    JudgmentFactory.create_batch(5, comparison__prompt__project=project, rater=alice)
    hand_made = RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6)
    RewardModelVersion.objects.filter(pk=hand_made.pk).update(judgments_count=3, data_snapshot={})

    with CaptureQueriesContext(connection) as queries:
        assert not loop.retrain_is_due(project)  # 5 - 3 read by a version without a last id: 2
    probe = queries.captured_queries[-1]["sql"].upper()
    assert "COUNT(" not in probe and "LIMIT 1 OFFSET 5" in probe

    JudgmentFactory(comparison__prompt__project=project, rater=alice)
    assert loop.retrain_is_due(project)
