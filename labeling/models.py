"""The human side of the loop: projects, the pairs to compare, leases, judgments.

Invariants live twice: in the domain functions (assignment.py, judgments.py,
importing/) and here as database constraints, so that no code path, admin
edit or concurrent request can break them.

One module of ~500 lines because it is one job, the labeling schema: Django
expects an app's models in one place, and most of the length is help texts and
constraints, which are the schema's documentation.
"""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Greatest, Least

# The largest id a row can have (a BIGINT primary key). Inputs that name a row
# are bounded by it: SQLite cannot even bind a larger integer (OverflowError).
MAX_ID = 2**63 - 1


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

    # Data quality (labeling/quality): known-answer and repeat items in each rater's stream.
    class Weighting(models.TextChoices):
        EQUAL = "equal", "Equal: every judgment counts the same"
        RELIABILITY = "reliability", "By rater reliability (the worker model's estimate)"
        EXCLUDE_FLAGGED = "exclude_flagged", "Leave out flagged raters"

    gold_rate = models.FloatField(
        default=0.05,
        help_text="Share of each rater's tasks drawn from the gold comparisons (known answers), e.g. 0.05. Gold items "
        "look like any other task to raters.",
    )
    repeat_rate = models.FloatField(
        default=0.0,
        help_text="Share of tasks that show a rater again, sides swapped, a comparison they judged earlier "
        "(self-consistency), e.g. 0.03. Repeats are not votes.",
    )
    min_time_ms = models.PositiveIntegerField(
        default=3000, help_text="Answers faster than this (milliseconds) count as too fast in the raters' figures."
    )
    lease_grace = models.DurationField(
        default=timedelta(minutes=5),
        help_text="A judgment that arrives this long after its lease expired is still accepted, as long as the "
        "comparison still needs judgments.",
    )
    judgment_weighting = models.CharField(
        max_length=20,
        choices=Weighting.choices,
        default=Weighting.EQUAL,
        help_text="How judgments are weighted in the reward model's training data and the TRL export. Excluded "
        "raters are always left out.",
    )
    raters = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="labeling_projects",
        help_text="Raters who may label this project.",
    )
    managers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="managed_projects",
        help_text="Project managers: they import, export, retrain, activate and manage the raters of this project, "
        "as far as their group's permissions reach. Admins (superusers) manage every project.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        # The Admins group's reach (labeling.access): with it, every other permission the user holds counts on
        # every project, not only on those they manage.
        permissions = [("manage_every_project", "Can act on every project (admins)")]
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_at_least_one"),
            models.CheckConstraint(
                condition=Q(lease_duration__gt=timedelta(0)), name="project_lease_duration_positive"
            ),
            models.CheckConstraint(condition=Q(gold_rate__gte=0, gold_rate__lte=1), name="project_gold_rate_in_0_1"),
            models.CheckConstraint(
                condition=Q(repeat_rate__gte=0, repeat_rate__lte=1), name="project_repeat_rate_in_0_1"
            ),
            models.CheckConstraint(condition=Q(lease_grace__gte=timedelta(0)), name="project_lease_grace_not_negative"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if not isinstance(self.criteria, list) or not all(isinstance(c, str) and c.strip() for c in self.criteria):
            raise ValidationError({"criteria": "Criteria must be a list of non-empty names."})
        if len(set(self.criteria)) != len(self.criteria):
            raise ValidationError({"criteria": "Criteria names must be unique."})


# A foreign key that leads a composite index below gets no index of its own (db_index=False): the
# composite one serves its lookups and cascades, and every row written keeps one index fewer
# (an import of 100,000 pairs writes 400,000 such entries).


class Prompt(models.Model):
    # Indexed by prompt_unique_content_per_project (project, content_hash).
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts", db_index=False)
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
    # Indexed by response_unique_content_per_prompt (prompt, content_hash).
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses", db_index=False)
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
        DOPTIMAL = "doptimal", "D-optimal design"
        # ...and a queue slot the loop gave to a random pick instead of its strategy's best.
        EXPLORATION = "exploration", "Exploration"

    # Denormalised from prompt.project so that the assignment query reads one
    # table through one index.
    # Indexed by comparison_queue_idx (project, status, ...).
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons", db_index=False)
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
    # Gold (honeypot) items: a known answer to measure raters against. They stay out of the open queue
    # (assignment serves them at the project's gold_rate, to every rater, overlap does not cap them) and
    # nothing a rater can see says which tasks are gold.
    is_gold = models.BooleanField(default=False, help_text="A gold comparison with a known answer.")
    gold_label = models.CharField(
        max_length=1,
        choices=[("a", "A is better"), ("b", "B is better")],
        blank=True,
        help_text="The known answer of a gold comparison. Never shown to raters.",
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
            models.CheckConstraint(
                condition=Q(is_gold=False, gold_label="") | Q(is_gold=True, gold_label__in=["a", "b"]),
                name="comparison_gold_has_a_decisive_answer",
            ),
        ]
        indexes = [
            # The assignment hot path: open comparisons of a project that are not gold, best first.
            models.Index(
                "project",
                "status",
                "is_gold",
                F("priority").desc(),
                "created_at",
                "id",
                name="comparison_queue_idx",
            ),
        ]

    def __str__(self):
        return f"Comparison {self.pk} ({self.response_a_id} vs {self.response_b_id})"

    def clean(self):
        if self.is_gold and self.gold_label not in ("a", "b"):
            raise ValidationError({"gold_label": "A gold comparison needs its known answer: A or B is better."})
        if not self.is_gold and self.gold_label:
            raise ValidationError({"gold_label": "Only a gold comparison has a known answer."})
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

    class Kind(models.TextChoices):
        # Never shown to raters: a gold or repeat task looks like any other.
        TASK = "task", "Task from the queue"
        GOLD = "gold", "Gold item"
        REPEAT = "repeat", "Repeat of an earlier judgment (sides swapped)"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    # Denormalised so "does this rater hold a lease in this project?" is one index lookup.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    left = models.CharField(
        max_length=1, choices=Side.choices, help_text="Which response is shown on the left (randomised per lease)."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.TASK)
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
    flags = models.JSONField(default=list, blank=True, help_text='Flag codes, e.g. ["unsafe"].')
    time_spent_ms = models.PositiveIntegerField(help_text="Time from the task being shown to the answer.")
    left = models.CharField(max_length=1, choices=Side.choices, help_text="Which response was shown on the left.")
    # A repeat is the same rater's second look at a comparison (sides swapped): it measures their
    # self-consistency and is never a vote (training, export, agreement and counts read first judgments only).
    repeat_of = models.OneToOneField(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="repeat",
        help_text="The rater's first judgment of this comparison, when this one is its repeat.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "rater"],
                condition=Q(repeat_of__isnull=True),
                name="judgment_one_per_rater",
            ),
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


class RaterStanding(models.Model):
    """An admin's decisions about one rater in one project: paused (no new tasks) and excluded (their
    judgments stay stored but leave training and export). Reversible; every change is also kept as a
    RaterAction with who and when."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rater_standings")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="standings")
    paused = models.BooleanField(default=False)
    excluded = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "rater"], name="rater_standing_unique")]
        permissions = [
            ("view_rater_quality", "Can see raters' quality figures and the source leaderboard"),
            ("manage_raters", "Can pause raters and exclude their judgments"),
        ]

    def __str__(self):
        return f"{self.rater} in {self.project}"


class RaterAction(models.Model):
    """The record of a pause, resume, exclusion or inclusion: who did it, when, and why."""

    class Action(models.TextChoices):
        PAUSE = "pause", "Paused"
        RESUME = "resume", "Resumed"
        EXCLUDE = "exclude", "Excluded from training and export"
        INCLUDE = "include", "Included again"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=10, choices=Action.choices)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["project", "rater", "at"], name="rater_action_idx")]

    def __str__(self):
        return f"{self.by} {self.action} {self.rater} in {self.project}"


class RaterQuality(models.Model):
    """The latest computed quality figures of one rater in one project (labeling.quality.service writes
    them on a schedule, so pages read one row per rater instead of recomputing over every judgment)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rater_quality")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    judgments = models.PositiveIntegerField(default=0)
    reliability = models.FloatField(null=True, blank=True)
    flagged = models.BooleanField(default=False)
    figures = models.JSONField(default=dict, help_text="The rater's row as the raters page and API show it.")
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "rater"], name="rater_quality_unique")]

    def __str__(self):
        return f"quality of {self.rater} in {self.project}"


class ProjectQuality(models.Model):
    """The latest project-level figures (agreement, Krippendorff's alpha, over time, the source leaderboard)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="quality")
    last_judgment_id = models.BigIntegerField(null=True, blank=True, help_text="The newest judgment the figures read.")
    figures = models.JSONField(default=dict)
    leaderboard = models.JSONField(default=list)
    computed_at = models.DateTimeField()

    def __str__(self):
        return f"quality of {self.project}"


class ImportJob(models.Model):
    """One upload through the admin's import page: the file streamed to disk, imported by a Celery task
    (labeling.tasks.run_import) with the same all-or-nothing rule as the command, and its progress and
    result kept here for the progress and result page."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Imported"
        FAILED = "failed", "Failed: nothing imported"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    filename = models.CharField(max_length=255, help_text="The uploaded file's name, as the browser sent it.")
    path = models.CharField(max_length=1000, help_text="Where the upload waits on disk until it is imported.")
    size_bytes = models.BigIntegerField(default=0)
    options = models.JSONField(default=dict, blank=True, help_text="The import's options (format, gold, ...).")
    bytes_done = models.BigIntegerField(default=0, help_text="How far the import has read (for the progress bar).")
    lines_done = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True, help_text="Counts of what was imported.")
    errors = models.JSONField(default=list, blank=True, help_text='[{"line": n, "message": "..."}] when it failed.')

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "created_at"], name="import_job_project_idx")]

    def __str__(self):
        return f"import {self.pk} of {self.filename} into {self.project}"
