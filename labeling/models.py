"""The human side of the loop: projects, the pairs to compare, leases, judgments.

Invariants live twice: in the domain functions (assignment.py, judgments.py,
importing.py) and here as database constraints, so that no code path, admin
edit or concurrent request can break them.
"""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Greatest, Least


class Project(models.Model):
    name = models.CharField(max_length=200, help_text="Shown to raters and admins.")
    slug = models.SlugField(
        max_length=100, unique=True, help_text="Stable identifier used by the import/export commands."
    )
    guidelines = models.TextField(
        blank=True, help_text="Markdown shown to raters in a collapsible panel on every task."
    )
    criteria = models.JSONField(
        default=list,
        blank=True,
        help_text='Names of criteria a rater may judge separately, e.g. ["helpfulness", "harmlessness", "honesty"].',
    )
    overlap = models.PositiveSmallIntegerField(
        default=3, help_text="Judgments required per comparison, each from a different rater."
    )
    lease_duration = models.DurationField(
        default=timedelta(minutes=10),
        help_text="How long a rater holds a comparison before it returns to the pool.",
    )
    allow_ties = models.BooleanField(default=True, help_text='Whether raters may answer "about the same".')
    allow_both_bad = models.BooleanField(default=True, help_text='Whether raters may answer "both are bad".')
    is_active = models.BooleanField(default=True, help_text="Inactive projects are hidden from raters.")
    raters = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="labeling_projects",
        help_text="Raters who may label this project. Staff may label every project.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_at_least_one"),
            models.CheckConstraint(
                condition=Q(lease_duration__gt=timedelta(0)), name="project_lease_duration_positive"
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if not isinstance(self.criteria, list) or not all(
            isinstance(c, str) and c.strip() for c in self.criteria
        ):
            raise ValidationError({"criteria": "Criteria must be a list of non-empty names."})
        if len(set(self.criteria)) != len(self.criteria):
            raise ValidationError({"criteria": "Criteria names must be unique."})


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    conversation = models.JSONField(
        help_text='The conversation so far: a list of turns {"role": "user"|"assistant"|"system", "content": str}; '
        "the responses under comparison continue it."
    )
    external_id = models.CharField(max_length=200, blank=True, help_text="Identifier in the source dataset, if any.")
    metadata = models.JSONField(default=dict, blank=True, help_text="Free-form data carried from the import file.")
    content_hash = models.CharField(
        max_length=64, help_text="sha256 of the canonical conversation JSON; re-imports of the same prompt match it."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_content_per_project"),
        ]

    def __str__(self):
        last = self.conversation[-1]["content"] if self.conversation else ""
        return last[:80]


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField(
        help_text="The model's (or a person's) reply. Untrusted: rendered only through rendering.py."
    )
    source = models.CharField(max_length=200, blank=True, help_text='Model name, or "human".')
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, help_text="sha256 of the text; unique per prompt.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prompt", "content_hash"], name="response_unique_content_per_prompt"),
        ]

    def __str__(self):
        return self.text[:80]


class Comparison(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETE = "complete", "Complete"
        RETIRED = "retired", "Retired"

    class Label(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "Tie"

    class SelectedBy(models.TextChoices):
        IMPORT = "import", "Import order"
        # The reward-model loop's acquisition strategies (rewardmodel.models.Strategy uses these values)...
        RANDOM = "random", "Random"
        UNCERTAINTY = "uncertainty", "Uncertainty"
        ENSEMBLE = "ensemble", "Ensemble disagreement"
        # ...and a queue slot the loop gave to a random pick instead of its strategy's best.
        EXPLORATION = "exploration", "Exploration"

    # Denormalised from prompt.project so that the assignment query reads one
    # table through one index.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    priority = models.FloatField(default=0.0, help_text="Higher is served first; the reward-model loop sets it.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    judgments_count = models.PositiveIntegerField(default=0, help_text="Judgments received so far.")
    selected_by = models.CharField(
        max_length=20,
        choices=SelectedBy.choices,
        blank=True,
        help_text="Why this pair is in the queue where it is (the reward-model loop sets it on every refresh).",
    )
    reference_label = models.CharField(
        max_length=3,
        choices=Label.choices,
        blank=True,
        help_text="Label from an imported dataset (e.g. HH-RLHF). Never shown to raters.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(response_a=F("response_b")), name="comparison_responses_differ"),
            # Unique per unordered pair: (a, b) and (b, a) are the same comparison.
            models.UniqueConstraint(
                Least("response_a", "response_b"),
                Greatest("response_a", "response_b"),
                name="comparison_unique_unordered_pair",
            ),
        ]
        indexes = [
            # The assignment hot path: open comparisons of a project, best first.
            models.Index(
                "project",
                "status",
                F("priority").desc(),
                "created_at",
                "id",
                name="comparison_queue_idx",
            ),
        ]

    def __str__(self):
        return f"Comparison {self.pk} ({self.response_a_id} vs {self.response_b_id})"

    def clean(self):
        if self.response_a_id and self.response_a_id == self.response_b_id:
            raise ValidationError("A comparison needs two different responses.")
        for response in (self.response_a, self.response_b):
            if response.prompt_id != self.prompt_id:
                raise ValidationError("Both responses must answer the comparison's prompt.")
        if self.prompt.project_id != self.project_id:
            raise ValidationError("The prompt belongs to another project.")


class Side(models.TextChoices):
    A = "a", "A"
    B = "b", "B"


class Assignment(models.Model):
    """A lease: one rater holds one comparison until it expires or they answer."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    # Denormalised so "does this rater hold a lease in this project?" is one index lookup.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    left = models.CharField(
        max_length=1, choices=Side.choices, help_text="Which response is shown on the left (randomised per lease)."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(expires_at__gt=F("issued_at")), name="assignment_expires_after_issue"),
        ]
        indexes = [
            models.Index(fields=["rater", "project", "state", "expires_at"], name="assignment_rater_idx"),
            models.Index(fields=["comparison", "state", "expires_at"], name="assignment_live_idx"),
        ]

    def __str__(self):
        return f"{self.rater} holds {self.comparison_id} until {self.expires_at:%H:%M}"


class Judgment(models.Model):
    class Outcome(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "About the same"
        BOTH_BAD = "both_bad", "Both are bad"

    class Strength(models.IntegerChoices):
        SLIGHT = 1, "Slightly"
        CLEAR = 2, "Clearly"
        STRONG = 3, "Much"

    class CriterionOutcome(models.TextChoices):
        A = "a", "A"
        B = "b", "B"
        TIE = "tie", "Tie"

    class Flag(models.TextChoices):
        UNSAFE = "unsafe", "Unsafe or harmful content"
        BROKEN_PROMPT = "broken_prompt", "Prompt is broken or unclear"
        BROKEN_RESPONSE = "broken_response", "A response is broken (truncated, wrong language, empty)"
        PII = "pii", "Personal data"
        OTHER = "other", "Other (see rationale)"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judgments")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    strength = models.PositiveSmallIntegerField(
        choices=Strength.choices,
        null=True,
        blank=True,
        help_text="How much better the preferred response is; empty for ties and both-bad.",
    )
    criteria = models.JSONField(
        default=dict, blank=True, help_text='Per-criterion outcomes, e.g. {"harmlessness": "a", "honesty": "tie"}.'
    )
    rationale = models.TextField(blank=True)
    flags = models.JSONField(default=list, blank=True, help_text="Flag codes, e.g. [\"unsafe\"].")
    time_spent_ms = models.PositiveIntegerField(help_text="Time from the task being shown to the answer.")
    left = models.CharField(max_length=1, choices=Side.choices, help_text="Which response was shown on the left.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "rater"], name="judgment_one_per_rater"),
            models.CheckConstraint(
                condition=(
                    Q(outcome__in=["a", "b"], strength__in=[1, 2, 3])
                    | Q(outcome__in=["tie", "both_bad"], strength__isnull=True)
                ),
                name="judgment_strength_only_for_a_preference",
            ),
        ]
        indexes = [
            models.Index(fields=["rater", "project", "created_at"], name="judgment_rater_idx"),
            models.Index(fields=["project", "created_at"], name="judgment_project_idx"),
            # "Judgments since the last reward model" after every judgment: a range of this index, not a count of
            # all the project's judgments (rewardmodel.loop.new_judgments_since_last_version).
            models.Index(fields=["project", "id"], name="judgment_project_id_idx"),
        ]

    def __str__(self):
        return f"{self.rater} on {self.comparison_id}: {self.outcome}"


def _response_on(comparison: Comparison, side: str) -> Response:
    return comparison.response_a if side == Side.A else comparison.response_b


def _other(side: str) -> str:
    return Side.B if side == Side.A else Side.A


# Shown order helpers, used by the views and the API alike.
Assignment.left_response = property(lambda self: _response_on(self.comparison, self.left))
Assignment.right_response = property(lambda self: _response_on(self.comparison, _other(self.left)))
