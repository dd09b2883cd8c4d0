"""The reward-model loop's tables: its settings per project, its versions and
their rewards, and its bookkeeping per project.

LoopSettings is what an admin configures (edited inline on the project in the
Django admin); ProjectLoop is what the loop itself writes, many times a minute
while it trains. They are two rows on purpose: saving the settings form must
never write back a stale copy of the training lease.
"""

from django.db import models
from django.db.models import Q

from labeling.models import Comparison, Project, Response


class Strategy(models.TextChoices):
    """How a refresh ranks the candidate pairs (rewardmodel/acquisition.py).

    Each value is the Comparison.selected_by a pair ranked by it gets, so it is
    taken from there rather than spelled again.
    """

    RANDOM = Comparison.SelectedBy.RANDOM.value, "Random"
    UNCERTAINTY = Comparison.SelectedBy.UNCERTAINTY.value, "Uncertainty: P(A beats B) closest to 0.5"
    ENSEMBLE = (
        Comparison.SelectedBy.ENSEMBLE.value,
        "Ensemble disagreement (epistemic uncertainty across reward heads)",
    )
    DOPTIMAL = Comparison.SelectedBy.DOPTIMAL.value, "D-optimal: most information per label (Fisher of the reward head)"


class Trigger(models.TextChoices):
    """What asked for a retrain: kept on the pending request and on the version it made."""

    THRESHOLD = "threshold", "Threshold of new judgments"
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual (status page or admin)"
    COMMAND = "command", "Management command"
    RECOVERY = "recovery", "Recovery of a version a dead worker left"


class LoopSettings(models.Model):
    """How the loop treats one project. A project without a row gets the
    defaults below: read it through rewardmodel.loop.loop_settings_for."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="loop_settings")
    retrain_every = models.PositiveIntegerField(
        default=50,
        help_text="Retrain the reward model after this many new judgments; 0 turns the trigger off.",
    )
    acquisition = models.CharField(
        max_length=20,
        choices=Strategy.choices,
        default=Strategy.DOPTIMAL,
        help_text="How the loop decides which pairs raters see first once a reward model exists.",
    )
    exploration_share = models.FloatField(
        default=0.1,
        help_text="Share of the queue's top slots given to random pairs, so the model is not only asked "
        "about what it already thinks is close.",
    )
    activation_tolerance = models.FloatField(
        default=0.02,
        help_text="A new model version is activated unless its held-out accuracy is worse than the active one's by "
        "more than this.",
    )
    pair_budget = models.PositiveIntegerField(
        default=200, help_text="At most this many new comparisons are created per refresh of candidate pairs."
    )
    refit_every = models.PositiveIntegerField(
        default=10,
        help_text="Between retrains, refit the active model's reward heads on its cached embeddings and re-rank "
        "the queue after this many new judgments (seconds, not a fine-tune); 0 turns it off.",
    )
    train_on_reference_labels = models.BooleanField(
        default=False,
        help_text="Bootstrap the reward model from imported reference labels (e.g. HH-RLHF): each counts like one "
        "rater's judgment, alongside the raters' own.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "reward-model loop settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(exploration_share__gte=0) & Q(exploration_share__lte=1),
                name="loop_exploration_share_in_0_1",
            ),
            models.CheckConstraint(condition=Q(acquisition__in=Strategy.values), name="loop_acquisition_known"),
        ]

    def __str__(self):
        return f"loop settings of {self.project}"


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
    config = models.JSONField(
        default=dict, help_text="The training configuration (rewardmodel.core.config.TrainConfig)."
    )
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
    trigger = models.CharField(max_length=20, choices=Trigger.choices, blank=True, help_text="What asked for it.")
    task_id = models.CharField(max_length=100, blank=True, help_text="The Celery task that runs it, if any.")
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Deliveries of its task; a task that keeps killing its worker stops after a few."
    )
    durations = models.JSONField(default=dict, blank=True, help_text="Seconds per pipeline step.")
    head_refit = models.JSONField(
        default=dict,
        blank=True,
        help_text="The latest refit of its reward heads on cached embeddings (rewardmodel.refit): the last "
        "judgment it read, pairs, seconds, held-out accuracy; its rewards replaced the version's.",
    )
    device = models.CharField(max_length=50, blank=True, help_text='Where it trained: "cpu", "cuda:0", ...')
    error = models.TextField(blank=True, help_text="Why it failed, in plain words.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    UNFINISHED = (Status.QUEUED, Status.TRAINING)

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
    publishes it again. Written by rewardmodel.loop only.
    """

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="reward_loop")
    retrain_pending = models.BooleanField(default=False, help_text="A retrain was asked for and has not started.")
    pending_reason = models.CharField(max_length=20, choices=Trigger.choices, blank=True)
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
    refit_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a head refit was last handed over and has not started; one is published at a time.",
    )

    def __str__(self):
        return f"loop of {self.project}"
