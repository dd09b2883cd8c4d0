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
