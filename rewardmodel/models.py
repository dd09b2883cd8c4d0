"""Reward-model versions of a project and the rewards they gave its responses."""

from django.db import models
from django.db.models import Q

from labeling.models import Project, Response


class RewardModelVersion(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        TRAINING = "training", "Training"
        READY = "ready", "Ready"  # trained and evaluated, not serving
        ACTIVE = "active", "Active"  # the one version that serves the project
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_models")
    version = models.PositiveIntegerField(help_text="1, 2, 3... per project.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    config = models.JSONField(default=dict, help_text="The training configuration (rewardmodel.core TrainConfig).")
    metrics = models.JSONField(
        default=dict, blank=True, help_text="Held-out metrics: accuracy, log_loss, ece, n (and reference_* when any)."
    )
    artifact_path = models.CharField(max_length=500, blank=True, help_text="Checkpoint folder under MODEL_ROOT.")
    judgments_count = models.PositiveIntegerField(default=0, help_text="Judgments in the project when data was read.")
    data_snapshot = models.JSONField(
        default=dict,
        blank=True,
        help_text="What it was trained on: counts, last judgment id, sha256 of the comparison ids "
        "(the full id lists are in the checkpoint's metadata.json).",
    )
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    progress_loss = models.FloatField(null=True, blank=True)
    trigger = models.CharField(
        max_length=20, blank=True, help_text='What asked for it: "threshold", "schedule", "manual" or "command".'
    )
    task_id = models.CharField(max_length=100, blank=True, help_text="The Celery task that runs it, if any.")
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Deliveries of its task; a task that keeps killing its worker stops after a few."
    )
    durations = models.JSONField(default=dict, blank=True, help_text="Seconds per pipeline step.")
    device = models.CharField(max_length=50, blank=True, help_text='Where it trained: "cpu", "cuda:0", ...')
    error = models.TextField(blank=True, help_text="Why it failed, in plain words.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="rm_version_unique_per_project"),
            models.UniqueConstraint(
                fields=["project"], condition=Q(status="active"), name="rm_one_active_version_per_project"
            ),
        ]

    def __str__(self):
        return f"{self.project.slug} v{self.version} ({self.status})"


class ResponseReward(models.Model):
    """A reward per (version, response).

    Kept per version rather than on Response: a new version is scored before it
    is activated, so the switch is one row update and the previous version's
    rewards stay intact (and comparable) if the new one is never activated.
    """

    version = models.ForeignKey(RewardModelVersion, on_delete=models.CASCADE, related_name="rewards")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="rewards")
    reward = models.FloatField(help_text="Mean over the model's reward heads.")
    head_rewards = models.JSONField(
        null=True, blank=True, help_text="One reward per head of an ensemble model (epistemic uncertainty); else null."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "response"], name="reward_unique_per_version"),
        ]

    def __str__(self):
        return f"v{self.version_id} response {self.response_id}: {self.reward:.3f}"


class ProjectLoop(models.Model):
    """The retraining loop's bookkeeping for one project: what was asked for,
    what was handed to the broker, and who holds the training slot.

    The broker only carries "go look"; this row is the truth. A trigger that
    could not be published stays pending here and the periodic reconcile
    publishes it again.
    """

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="reward_loop")
    retrain_pending = models.BooleanField(default=False, help_text="A retrain was asked for and has not started.")
    pending_reason = models.CharField(max_length=20, blank=True)
    pending_since = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the pending retrain was handed to the broker; empty: not yet."
    )
    enqueue_error = models.TextField(blank=True, help_text="Why the last hand-over to the broker failed.")
    last_trigger_at = models.DateTimeField(null=True, blank=True)
    # Single flight: at most one training per project across all workers and
    # machines. A lease with an expiry, renewed while training, so a worker
    # that dies cannot hold the slot forever.
    lock_owner = models.CharField(max_length=100, blank=True, help_text="Task id holding the training slot.")
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    coalesced_triggers = models.PositiveIntegerField(
        default=0, help_text="Triggers that arrived while a retrain was pending or running and were merged into it."
    )

    def __str__(self):
        return f"loop of {self.project}"
