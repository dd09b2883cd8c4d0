import threading
from pathlib import Path

import pytest
from django.db import connections

from labeling.models import Comparison
from rewardmodel import pipeline
from rewardmodel.models import ProjectLoop, ResponseReward, RewardModelVersion
from rewardmodel.triggers import request_retrain
from tests.rewardmodel.conftest import marker_project

pytestmark = pytest.mark.django_db


def retrain(project, **kwargs):
    return pipeline.run_retrain(project_id=project.pk, owner="test", force=True, **kwargs)


def test_it_trains_evaluates_scores_activates_and_refreshes(project, tiny_training):
    project.overlap = 3
    project.save()
    marker_project(project)
    before = dict(Comparison.objects.filter(project=project).values_list("pk", "priority"))

    outcome = retrain(project)

    assert outcome.status == "trained", outcome.detail
    version = RewardModelVersion.objects.get(project=project)
    assert version.status == RewardModelVersion.Status.ACTIVE
    assert version.version == 1 and version.device == "cpu"
    assert version.judgments_count == 60
    assert version.data_snapshot["train_comparisons"] + version.data_snapshot["held_out_comparisons"] == 30
    assert 0.0 <= version.metrics["accuracy"] <= 1.0 and version.metrics["n"] > 0
    assert {"log_loss", "ece"} <= set(version.metrics)
    assert set(version.durations) >= {"read_data", "train", "evaluate", "save", "score", "activate", "refresh_pairs"}
    assert (Path(version.artifact_path) / "metadata.json").exists()
    assert version.progress_step == version.progress_total > 0
    # Every response scored by this version.
    assert ResponseReward.objects.filter(version=version).count() == 90
    # The refresh created comparisons for unlabelled candidate pairs and re-prioritised.
    after = dict(Comparison.objects.filter(project=project).values_list("pk", "priority"))
    assert len(after) > len(before)
    assert any(Comparison.objects.filter(project=project).exclude(selected_by="").values_list("pk", flat=True))


def test_a_failed_refresh_after_activation_keeps_the_new_version_serving(project, tiny_training, monkeypatch):
    marker_project(project)

    def refresh_fails(project, **kwargs):
        raise RuntimeError("numpy ran out of memory")

    monkeypatch.setattr(pipeline, "refresh_pairs_for", refresh_fails)
    outcome = retrain(project)

    assert outcome.status == "trained"
    version = RewardModelVersion.objects.get(project=project)
    assert version.status == RewardModelVersion.Status.ACTIVE  # not "failed": that would leave nothing serving
    assert "refreshing the pairs failed: RuntimeError: numpy ran out of memory" in version.error
    assert ResponseReward.objects.filter(version=version).exists()


def test_the_model_learns_what_raters_prefer(project, tiny_training):
    tiny_training.REWARD_MODEL_TRAINING = {**tiny_training.REWARD_MODEL_TRAINING, "epochs": 8}
    marker_project(project, prompts=40)
    retrain(project)
    version = RewardModelVersion.objects.get(project=project)
    rewards = dict(ResponseReward.objects.filter(version=version).values_list("response__text", "reward"))
    marked = [r for text, r in rewards.items() if "marker" in text]
    plain = [r for text, r in rewards.items() if "marker" not in text]
    assert sum(marked) / len(marked) > sum(plain) / len(plain)
    assert version.metrics["accuracy"] >= 0.9


def test_a_failed_training_keeps_the_previous_version_serving(project, tiny_training):
    marker_project(project)
    assert retrain(project).status == "trained"
    first = RewardModelVersion.objects.get(project=project)

    tiny_training.REWARD_MODEL_BACKBONE = "/nonexistent/backbone"
    outcome = retrain(project)

    assert outcome.status == "failed"
    failed = RewardModelVersion.objects.get(project=project, version=2)
    assert failed.status == RewardModelVersion.Status.FAILED
    assert "backbone" in failed.error.lower() or "nonexistent" in failed.error
    first.refresh_from_db()
    assert first.status == RewardModelVersion.Status.ACTIVE
    assert not ProjectLoop.objects.get(project=project).lock_owner  # slot released


def test_a_worse_version_is_not_activated(project, tiny_training):
    marker_project(project)
    retrain(project)
    first = RewardModelVersion.objects.get(project=project)
    RewardModelVersion.objects.filter(pk=first.pk).update(metrics={**first.metrics, "accuracy": 1.01})
    project.activation_tolerance = 0.0
    project.save()

    retrain(project)

    second = RewardModelVersion.objects.get(project=project, version=2)
    assert second.status == RewardModelVersion.Status.READY
    assert "Not activated" in second.error
    assert RewardModelVersion.objects.get(project=project, status="active").pk == first.pk


def test_without_rater_accuracy_the_reference_label_accuracy_decides_activation(project):
    # A project bootstrapped from imported labels: no held-out judgments yet, only reference_* metrics.
    project.activation_tolerance = 0.02
    project.save()
    active = RewardModelVersion.objects.create(
        project=project, version=1, status="active", metrics={"reference_accuracy": 0.62, "reference_n": 300}
    )
    worse = RewardModelVersion.objects.create(
        project=project, version=2, status="ready", metrics={"reference_accuracy": 0.55, "reference_n": 300}
    )
    close = RewardModelVersion.objects.create(
        project=project, version=3, status="ready", metrics={"reference_accuracy": 0.61, "reference_n": 300}
    )

    assert not pipeline.activate_if_not_worse(worse)
    worse.refresh_from_db()
    assert worse.status == "ready"
    assert "reference-label accuracy 0.550 is below the active v1's 0.620" in worse.error
    assert pipeline.activate_if_not_worse(close)  # within the tolerance
    active.refresh_from_db()
    assert (active.status, RewardModelVersion.objects.get(status="active").version) == ("ready", 3)


def test_rater_accuracy_is_compared_before_reference_accuracy():
    compare = pipeline.comparable_accuracy
    both_new = {"accuracy": 0.7, "reference_accuracy": 0.5}
    both_old = {"accuracy": 0.6, "reference_accuracy": 0.9}
    assert compare(both_new, both_old) == ("held-out accuracy", 0.7, 0.6)
    assert compare({"reference_accuracy": 0.5}, both_old) == ("reference-label accuracy", 0.5, 0.9)
    assert compare({"accuracy": 0.7}, {"reference_accuracy": 0.9}) is None  # nothing measured on both
    assert compare({}, None) is None


def test_too_little_data_is_said_plainly(project, tiny_training):
    outcome = retrain(project)
    assert outcome.status == "skipped"
    assert "at least" in outcome.detail
    assert not RewardModelVersion.objects.exists()


def test_only_one_owner_holds_the_training_slot(project):
    assert pipeline.acquire_training_slot(project_id=project.pk, owner="one")
    assert not pipeline.acquire_training_slot(project_id=project.pk, owner="two")
    assert pipeline.acquire_training_slot(project_id=project.pk, owner="one")  # a redelivery of the same task
    pipeline.release_training_slot(project_id=project.pk, owner="one")
    assert pipeline.acquire_training_slot(project_id=project.pk, owner="two")


def test_an_expired_slot_can_be_taken_over(project, settings):
    from datetime import timedelta

    from django.utils import timezone

    assert pipeline.acquire_training_slot(project_id=project.pk, owner="dead")
    later = timezone.now() + timedelta(seconds=settings.REWARD_MODEL_LOCK_TTL_SECONDS + 1)
    assert pipeline.acquire_training_slot(project_id=project.pk, owner="alive", now=later)


def test_a_duplicate_delivery_with_nothing_pending_does_nothing(project, tiny_training):
    marker_project(project)
    outcome = pipeline.run_retrain(project_id=project.pk, owner="dup")
    assert outcome.status == "skipped"
    assert not RewardModelVersion.objects.exists()


def test_a_version_left_by_a_dead_worker_is_adopted_not_duplicated(project, tiny_training):
    marker_project(project)
    orphan = RewardModelVersion.objects.create(
        project=project,
        version=1,
        status="training",
        config=pipeline.default_config(project),
        task_id="dead",
        attempts=1,
    )
    outcome = pipeline.run_retrain(project_id=project.pk, owner="new-task")
    assert outcome.status == "trained"
    assert RewardModelVersion.objects.filter(project=project).count() == 1
    orphan.refresh_from_db()
    assert orphan.status == "active" and orphan.attempts == 2 and orphan.task_id == "new-task"


def test_a_poison_task_stops_after_a_few_attempts(project, tiny_training):
    marker_project(project)
    RewardModelVersion.objects.create(
        project=project,
        version=1,
        status="training",
        config=pipeline.default_config(project),
        task_id="t",
        attempts=pipeline.MAX_ATTEMPTS,
    )
    outcome = pipeline.run_retrain(project_id=project.pk, owner="t")
    assert outcome.status == "gave_up"
    assert "Gave up" in RewardModelVersion.objects.get(project=project).error


@pytest.mark.django_db(transaction=True)
def test_ten_triggers_at_once_publish_one_retrain(project, monkeypatch):
    from rewardmodel import tasks

    published = []
    monkeypatch.setattr(tasks.retrain, "apply_async", lambda *a, **k: published.append(k))
    barrier = threading.Barrier(10)
    results = []

    def trigger():
        try:
            barrier.wait()
            results.append(request_retrain(project_id=project.pk, reason="threshold"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=trigger) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [False] * 9 + [True]
    assert len(published) == 1
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.coalesced_triggers == 9 and loop.enqueued_at is not None


@pytest.mark.django_db(transaction=True)
def test_ten_workers_at_once_run_one_training(project, tiny_training):
    marker_project(project)
    ProjectLoop.objects.create(project=project, retrain_pending=True)
    barrier = threading.Barrier(10)
    outcomes = []

    def worker(i):
        try:
            barrier.wait()
            outcomes.append(pipeline.run_retrain(project_id=project.pk, owner=f"task-{i}").status)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert outcomes.count("trained") == 1, outcomes
    assert RewardModelVersion.objects.filter(project=project).count() == 1


def test_an_ensemble_project_trains_heads_and_ranks_pairs_by_their_disagreement(project, tiny_training):
    tiny_training.REWARD_MODEL_ENSEMBLE_HEADS = 4
    project.acquisition = "ensemble"
    project.save()
    marker_project(project)

    outcome = retrain(project)

    assert outcome.status == "trained", outcome.detail
    version = RewardModelVersion.objects.get(project=project)
    assert version.config["num_heads"] == 4
    stored = list(ResponseReward.objects.filter(version=version).values_list("reward", "head_rewards"))
    assert len(stored) == 90
    for reward, heads in stored:
        assert len(heads) == 4
        assert reward == pytest.approx(sum(heads) / 4, abs=1e-6)
    assert any(max(heads) - min(heads) > 1e-4 for _, heads in stored)
    # The refresh read the heads: ensemble, not the single-head fallback.
    assert pipeline.refresh_pairs_for(project, seed=1).strategy == "ensemble"
    assert Comparison.objects.filter(project=project, selected_by="ensemble").exists()


def test_other_strategies_train_a_single_head(project, tiny_training):
    marker_project(project)
    retrain(project)
    version = RewardModelVersion.objects.get(project=project)
    assert version.config["num_heads"] == 1
    assert not ResponseReward.objects.filter(version=version, head_rewards__isnull=False).exists()
    assert pipeline.refresh_pairs_for(project, seed=1).strategy == "uncertainty"
