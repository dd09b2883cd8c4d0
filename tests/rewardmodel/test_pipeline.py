"""The retrain, step by step, on a tiny backbone: what each step leaves behind, and what fails how."""

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from labeling.models import Comparison
from rewardmodel import pipeline
from rewardmodel.acquisition import refresh_pairs
from rewardmodel.models import ProjectLoop, ResponseReward, RewardModelVersion, Trigger
from rewardmodel.pipeline import RetrainStatus
from tests.rewardmodel.conftest import marker_project
from tests.rewardmodel.factories import ProjectLoopFactory, RewardModelVersionFactory

pytestmark = pytest.mark.django_db


def retrain(project, **kwargs):
    return pipeline.run_retrain(project_id=project.pk, owner="test", force=True, **kwargs)


def test_it_trains_evaluates_scores_activates_and_refreshes(project, tiny_training):
    project.overlap = 3
    project.save()
    marker_project(project)
    before = dict(Comparison.objects.filter(project=project).values_list("pk", "priority"))

    outcome = retrain(project)

    assert outcome.status == RetrainStatus.TRAINED, outcome.detail
    assert outcome.version == RewardModelVersion.objects.get(project=project)
    version = outcome.version
    assert version.status == RewardModelVersion.Status.ACTIVE
    assert version.version == 1 and version.device == "cpu"
    assert version.judgments_count == 60
    assert version.data_snapshot["train_comparisons"] + version.data_snapshot["held_out_comparisons"] == 30
    assert 0.0 <= version.metrics["accuracy"] <= 1.0 and version.metrics["n"] > 0
    assert {"log_loss", "ece"} <= set(version.metrics)
    assert set(version.durations) == {"read_data", "train", "evaluate", "save", "score", "activate", "refresh_pairs"}
    assert (Path(version.artifact_path) / "metadata.json").exists()
    assert version.progress_step == version.progress_total > 0
    assert version.finished_at is not None
    # Every response scored by this version.
    assert ResponseReward.objects.filter(version=version).count() == 90
    # The refresh created comparisons for unlabelled candidate pairs and re-prioritised.
    after = dict(Comparison.objects.filter(project=project).values_list("pk", "priority"))
    assert len(after) > len(before)
    assert Comparison.objects.filter(project=project).exclude(selected_by="").exists()
    # The slot is free again and nothing is left to publish.
    assert not ProjectLoop.objects.get(project=project).lock_owner
    assert not outcome.pending_again


def test_it_renews_the_training_lease_at_every_step_boundary(project, tiny_training, monkeypatch):
    """Each step starts on a live lease, however long the step before it took."""
    marker_project(project)
    seen = []

    def lease_is_live():
        loop = ProjectLoop.objects.get(project=project)
        return loop.lock_owner == "test" and loop.lock_expires_at > timezone.now()

    def lapse_the_lease():
        # As if the step had run longer than the lease: only a renewal brings it back.
        ProjectLoop.objects.filter(project=project).update(lock_expires_at=timezone.now() - timedelta(seconds=1))

    steps = ("train_model", "evaluate_model", "save_model", "store_rewards", "activate_if_not_worse", "refresh_queue")
    for name in steps:
        step = getattr(pipeline, name)

        def watched(*args, _step=step, _name=name, **kwargs):
            seen.append((_name, lease_is_live()))
            try:
                return _step(*args, **kwargs)
            finally:
                lapse_the_lease()

        monkeypatch.setattr(pipeline, name, watched)

    assert retrain(project).status == RetrainStatus.TRAINED
    assert seen == [(name, True) for name in steps]


def test_a_long_scoring_step_keeps_the_lease(project, tiny_training, monkeypatch):
    """Scoring renews the lease after every batch, not only when the step ends."""
    marker_project(project)  # 90 responses
    monkeypatch.setattr(pipeline, "SCORE_BATCH", 20)
    # Scoring keeps each response's embedding in the same pass (the embedding cache): score_with_embeddings.
    real_score = pipeline.score_with_embeddings
    live = []

    def slow_batch(*args, **kwargs):
        loop = ProjectLoop.objects.get(project=project)
        live.append(loop.lock_owner == "test" and loop.lock_expires_at > timezone.now())
        rewards = real_score(*args, **kwargs)
        # This batch took longer than the lease.
        ProjectLoop.objects.filter(project=project).update(lock_expires_at=timezone.now() - timedelta(seconds=1))
        return rewards

    monkeypatch.setattr(pipeline, "score_with_embeddings", slow_batch)

    assert retrain(project).status == RetrainStatus.TRAINED
    assert live == [True] * 5  # 90 responses in batches of 20, each started on a renewed lease
    assert ResponseReward.objects.filter(version__project=project).count() == 90


def test_a_failed_refresh_after_activation_keeps_the_new_version_serving(project, tiny_training, monkeypatch):
    marker_project(project)

    def refresh_fails(**kwargs):
        raise RuntimeError("numpy ran out of memory")

    monkeypatch.setattr(pipeline, "refresh_pairs", refresh_fails)
    outcome = retrain(project)

    assert outcome.status == RetrainStatus.TRAINED
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
    assert retrain(project).status == RetrainStatus.TRAINED
    first = RewardModelVersion.objects.get(project=project)

    tiny_training.REWARD_MODEL_BACKBONE = "/nonexistent/backbone"
    outcome = retrain(project)

    assert outcome.status == RetrainStatus.FAILED
    failed = RewardModelVersion.objects.get(project=project, version=2)
    assert failed.status == RewardModelVersion.Status.FAILED
    assert "backbone" in failed.error.lower() or "nonexistent" in failed.error
    assert set(failed.durations) == {"read_data"}  # the steps that finished, timed
    first.refresh_from_db()
    assert first.status == RewardModelVersion.Status.ACTIVE
    assert not ProjectLoop.objects.get(project=project).lock_owner  # slot released


def test_a_worse_version_is_not_activated(project, loop_settings, tiny_training):
    marker_project(project)
    retrain(project)
    first = RewardModelVersion.objects.get(project=project)
    RewardModelVersion.objects.filter(pk=first.pk).update(metrics={**first.metrics, "accuracy": 1.01})
    loop_settings.activation_tolerance = 0.0
    loop_settings.save()

    retrain(project)

    second = RewardModelVersion.objects.get(project=project, version=2)
    assert second.status == RewardModelVersion.Status.READY
    assert "Not activated" in second.error
    assert RewardModelVersion.objects.get(project=project, status="active").pk == first.pk
    assert "refresh_pairs" not in second.durations  # the queue keeps the active version's order


def test_too_little_data_is_said_plainly(project, tiny_training):
    outcome = retrain(project)
    assert outcome.status == RetrainStatus.SKIPPED
    assert "at least" in outcome.detail
    assert not RewardModelVersion.objects.exists()


def test_a_duplicate_delivery_with_nothing_pending_does_nothing(project, tiny_training):
    marker_project(project)
    outcome = pipeline.run_retrain(project_id=project.pk, owner="dup")
    assert outcome.status == RetrainStatus.SKIPPED
    assert not RewardModelVersion.objects.exists()


def test_a_pending_retrain_is_taken_by_the_run_and_its_trigger_recorded(project, tiny_training):
    marker_project(project)
    ProjectLoopFactory(project=project, retrain_pending=True, pending_reason=Trigger.MANUAL)

    outcome = pipeline.run_retrain(project_id=project.pk, owner="task-1", trigger=Trigger.MANUAL)

    assert outcome.status == RetrainStatus.TRAINED and not outcome.pending_again
    assert outcome.version.trigger == Trigger.MANUAL and outcome.version.task_id == "task-1"
    assert not ProjectLoop.objects.get(project=project).retrain_pending


def test_a_retrain_asked_for_while_one_runs_is_reported_pending_again(project, tiny_training, monkeypatch):
    marker_project(project)
    real_evaluate = pipeline.evaluate_model

    def a_trigger_arrives_meanwhile(*args):
        ProjectLoop.objects.filter(project=project).update(retrain_pending=True, pending_reason=Trigger.THRESHOLD)
        return real_evaluate(*args)

    monkeypatch.setattr(pipeline, "evaluate_model", a_trigger_arrives_meanwhile)

    outcome = retrain(project)

    assert outcome.status == RetrainStatus.TRAINED
    assert outcome.pending_again  # the caller (tasks.retrain) publishes it; the pipeline publishes nothing
    assert ProjectLoop.objects.get(project=project).enqueued_at is None


def test_a_run_that_finds_the_slot_taken_leaves_the_request_pending(project):
    ProjectLoopFactory(project=project, lock_owner="other", lock_expires_at=timezone.now() + timedelta(minutes=5))

    outcome = pipeline.run_retrain(project_id=project.pk, owner="me")

    assert outcome.status == RetrainStatus.COALESCED and not outcome.pending_again
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.coalesced_triggers == 1 and loop.lock_owner == "other"


def test_a_version_left_by_a_dead_worker_is_adopted_not_duplicated(project, tiny_training):
    marker_project(project)
    orphan = RewardModelVersionFactory(
        project=project,
        version=1,
        status="training",
        config=pipeline.default_config(project),
        task_id="dead",
        attempts=1,
    )
    outcome = pipeline.run_retrain(project_id=project.pk, owner="new-task")
    assert outcome.status == RetrainStatus.TRAINED
    assert RewardModelVersion.objects.filter(project=project).count() == 1
    orphan.refresh_from_db()
    assert orphan.status == "active" and orphan.attempts == 2 and orphan.task_id == "new-task"


def test_a_poison_task_stops_after_a_few_attempts(project, tiny_training):
    marker_project(project)
    RewardModelVersionFactory(
        project=project,
        version=1,
        status="training",
        config=pipeline.default_config(project),
        task_id="t",
        attempts=pipeline.MAX_ATTEMPTS,
    )
    outcome = pipeline.run_retrain(project_id=project.pk, owner="t")
    assert outcome.status == RetrainStatus.GAVE_UP
    assert "Gave up" in RewardModelVersion.objects.get(project=project).error


@pytest.mark.django_db(transaction=True)
def test_ten_workers_at_once_run_one_training(project, tiny_training):
    marker_project(project)
    ProjectLoopFactory(project=project, retrain_pending=True)
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
    assert outcomes.count(RetrainStatus.TRAINED) == 1, outcomes
    assert RewardModelVersion.objects.filter(project=project).count() == 1


def test_an_ensemble_project_trains_heads_and_ranks_pairs_by_their_disagreement(project, loop_settings, tiny_training):
    tiny_training.REWARD_MODEL_ENSEMBLE_HEADS = 4
    loop_settings.acquisition = "ensemble"
    loop_settings.save()
    marker_project(project)

    outcome = retrain(project)

    assert outcome.status == RetrainStatus.TRAINED, outcome.detail
    version = RewardModelVersion.objects.get(project=project)
    assert version.config["num_heads"] == 4
    stored = list(ResponseReward.objects.filter(version=version).values_list("reward", "head_rewards"))
    assert len(stored) == 90
    for reward, heads in stored:
        assert len(heads) == 4
        assert reward == pytest.approx(sum(heads) / 4, abs=1e-6)
    assert any(max(heads) - min(heads) > 1e-4 for _, heads in stored)
    # The refresh read the heads: ensemble, not the single-head fallback.
    assert refresh_pairs(project=project, seed=1).strategy == "ensemble"
    assert Comparison.objects.filter(project=project, selected_by="ensemble").exists()


def test_other_strategies_train_a_single_head(project, tiny_training):
    marker_project(project)
    retrain(project)
    version = RewardModelVersion.objects.get(project=project)
    assert version.config["num_heads"] == 1
    assert not ResponseReward.objects.filter(version=version, head_rewards__isnull=False).exists()
    assert refresh_pairs(project=project, seed=1).strategy == "doptimal"  # the default, on the cached embeddings
