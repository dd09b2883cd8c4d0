"""What people see of the reward-model loop: selectors for the status page and its API.

`project_status` gathers everything the page shows in a constant number of
queries (seven for staff, five for raters), whatever the number of versions,
judgments or comparisons. `training_progress` is the cheap subset the page polls
every two seconds (two queries). The schedule's part is rewardmodel.schedule.

Two audiences: staff see everything; raters (project members) get a read-only
view with errors reduced to plain words (no exception types, file names,
broker addresses or task ids) and without the comparison queue.

Just over 400 lines, one job: the status page's read model (its dataclasses
are most of it); the schedule part already lives in rewardmodel.schedule.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count
from django.utils import timezone

from labeling.models import Comparison, Project
from rewardmodel.loop import loop_settings_for, new_judgments_since_last_version
from rewardmodel.metrics import accuracy_interval, finite_number, too_few_to_judge
from rewardmodel.models import LoopSettings, ProjectLoop, RewardModelVersion
from rewardmodel.schedule import ScheduledTask, scheduled_tasks

# The page charts and lists at most this many versions (newest first).
HISTORY_LIMIT = 200
QUEUE_TOP = 10
# Fields a version row needs; config and data_snapshot can be large and are never shown.
_VERSION_FIELDS = (
    "id",
    "project_id",
    "version",
    "status",
    "trigger",
    "metrics",
    "judgments_count",
    "device",
    "durations",
    "error",
    "progress_step",
    "progress_total",
    "progress_loss",
    "created_at",
    "started_at",
    "finished_at",
)


@dataclass(frozen=True)
class VersionRow:
    id: int
    version: int
    status: str
    status_label: str
    trigger: str
    metrics: dict
    judgments_count: int
    device: str
    durations: dict
    error: str  # full text for staff, plain words for raters, "" when none
    step: int
    total: int
    loss: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def accuracy(self) -> float | None:
        return finite_number(self.metrics.get("accuracy"))

    @property
    def accuracy_interval(self) -> tuple[float, float] | None:
        """The 95% Wilson interval (low, high) of held-out accuracy."""
        return accuracy_interval(self.accuracy, self.n)

    @property
    def accuracy_percent(self) -> float | None:
        return None if self.accuracy is None else 100 * self.accuracy

    @property
    def interval_percent(self) -> tuple[float, float] | None:
        """The interval in percent, as the page shows it: 61.0% (56.0–65.8%)."""
        interval = self.accuracy_interval
        return None if interval is None else (100 * interval[0], 100 * interval[1])

    @property
    def too_few_to_judge(self) -> bool:
        """Evaluated on too few held-out pairs for the accuracy to mean anything (metrics.MIN_PAIRS_TO_JUDGE)."""
        return self.accuracy is not None and too_few_to_judge(self.n)

    @property
    def log_loss(self) -> float | None:
        return finite_number(self.metrics.get("log_loss"))

    @property
    def ece(self) -> float | None:
        return finite_number(self.metrics.get("ece"))

    @property
    def n(self) -> int | None:
        n = self.metrics.get("n")
        return n if isinstance(n, int) else None

    @property
    def reference_accuracy(self) -> float | None:
        return finite_number(self.metrics.get("reference_accuracy"))

    @property
    def reference_accuracy_percent(self) -> float | None:
        return None if self.reference_accuracy is None else 100 * self.reference_accuracy

    @property
    def reference_interval_percent(self) -> tuple[float, float] | None:
        interval = accuracy_interval(self.reference_accuracy, self.reference_n)
        return None if interval is None else (100 * interval[0], 100 * interval[1])

    @property
    def reference_too_few_to_judge(self) -> bool:
        return self.reference_accuracy is not None and too_few_to_judge(self.reference_n)

    @property
    def reference_n(self) -> int | None:
        n = self.metrics.get("reference_n")
        return n if isinstance(n, int) else None

    @property
    def total_seconds(self) -> float | None:
        values = [v for v in self.durations.values() if isinstance(v, (int, float))]
        return round(sum(values), 3) if values else None

    @property
    def is_unfinished(self) -> bool:
        return self.status in RewardModelVersion.UNFINISHED

    @property
    def can_activate(self) -> bool:
        return self.status == RewardModelVersion.Status.READY


@dataclass(frozen=True)
class Training:
    """The version being trained now (or queued for a worker)."""

    version: VersionRow
    eta_seconds: float | None  # rough: elapsed time per step so far times the steps left
    stalled: bool  # the worker stopped renewing its training lease (staff only; always False for raters)

    @property
    def percent(self) -> int | None:
        if not self.version.total:
            return None
        return min(100, round(100 * self.version.step / self.version.total))

    @property
    def eta_text(self) -> str:
        """The same words as static/rewardmodel/status.js writes while polling."""
        return eta_text(self.eta_seconds)


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return "under a minute left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


@dataclass(frozen=True)
class QueueState:
    retrain_pending: bool
    pending_reason: str
    pending_since: datetime | None
    enqueued_at: datetime | None
    enqueue_error: str  # staff: the broker's error; raters: ""
    last_trigger_at: datetime | None
    coalesced_triggers: int
    slot_held_until: datetime | None  # a live training lease: a worker is on it
    judgments_since_last_version: int
    retrain_every: int

    @property
    def waiting_for_broker(self) -> bool:
        return self.retrain_pending and self.enqueued_at is None

    @property
    def judgments_to_next_retrain(self) -> int | None:
        if not self.retrain_every:
            return None
        return max(0, self.retrain_every - self.judgments_since_last_version)


@dataclass(frozen=True)
class QueueItem:
    comparison_id: int
    priority: float
    selected_by: str
    judgments_count: int


# Why the queue is in the order it is, one sentence per strategy (the evidence: benchmarks/acquisition.py).
STRATEGY_REASONS = {
    "random": "Pairs are served in random order: on real, noisy preference data no ordering measured here beat it.",
    "uncertainty": "Pairs the model calls closest to a tie come first; on noisy data those are often true ties "
    "that a person cannot call either, so this can waste labels early on.",
    "ensemble": "Pairs on which the model's bootstrapped reward heads disagree most come first: the labels most "
    "likely to change the model.",
    "doptimal": "Pairs that would teach the reward model most come first: those it cannot call yet, in directions "
    "earlier judgments have not covered (D-optimal design on its Fisher information).",
}


@dataclass(frozen=True)
class Acquisition:
    strategy: str
    strategy_label: str
    why: str  # one sentence: why pairs are ordered as they are (STRATEGY_REASONS)
    exploration_share: float
    pair_budget: int
    open_comparisons: int | None  # None for raters (not counted)
    open_by_selected_by: dict[str, int] = field(default_factory=dict)
    top: list[QueueItem] = field(default_factory=list)


@dataclass(frozen=True)
class ProjectStatus:
    project: Project
    staff: bool
    active: VersionRow | None
    training: Training | None
    versions: list[VersionRow]  # newest first, at most HISTORY_LIMIT
    queue: QueueState
    schedule: list[ScheduledTask]
    acquisition: Acquisition

    @property
    def latest(self) -> VersionRow | None:
        return self.versions[0] if self.versions else None

    @property
    def busy(self) -> bool:
        """Something is happening or about to: the page keeps polling while so."""
        return self.training is not None or self.queue.retrain_pending


@dataclass(frozen=True)
class TrainingProgress:
    """What the status page polls: the newest version and whether a retrain is pending."""

    latest: VersionRow | None
    training: Training | None
    retrain_pending: bool
    waiting_for_broker: bool

    @property
    def busy(self) -> bool:
        return self.training is not None or self.retrain_pending


# --- selectors ----------------------------------------------------------------


def project_status(*, project: Project, staff: bool, now: datetime | None = None) -> ProjectStatus:
    """Everything the status page shows for one project, for staff or for a rater."""
    now = now or timezone.now()
    versions = [
        version_row(v, staff=staff)
        for v in RewardModelVersion.objects.filter(project=project)
        .only(*_VERSION_FIELDS)
        .order_by("-version")[:HISTORY_LIMIT]
    ]
    loop, settings = _loop_rows(project)
    active = next((v for v in versions if v.status == RewardModelVersion.Status.ACTIVE), None)
    return ProjectStatus(
        project=project,
        staff=staff,
        active=active,
        training=_training(versions[0] if versions else None, loop, staff=staff, now=now),
        versions=versions,
        queue=_queue_state(project, loop, settings, staff=staff, now=now),
        schedule=scheduled_tasks(now=now),
        acquisition=_acquisition(project, settings, staff=staff),
    )


def training_progress(*, project: Project, staff: bool, now: datetime | None = None) -> TrainingProgress:
    """The newest version's progress and the pending flag: two queries, for polling."""
    now = now or timezone.now()
    newest = RewardModelVersion.objects.filter(project=project).only(*_VERSION_FIELDS).order_by("-version").first()
    latest = version_row(newest, staff=staff) if newest is not None else None
    loop = (
        ProjectLoop.objects.filter(project=project)
        .only("project_id", "retrain_pending", "enqueued_at", "lock_owner", "lock_expires_at")
        .first()
    )
    pending = bool(loop and loop.retrain_pending)
    return TrainingProgress(
        latest=latest,
        training=_training(latest, loop, staff=staff, now=now),
        retrain_pending=pending,
        waiting_for_broker=pending and loop.enqueued_at is None,
    )


def version_row(version: RewardModelVersion, *, staff: bool) -> VersionRow:
    return VersionRow(
        id=version.pk,
        version=version.version,
        status=version.status,
        status_label=version.get_status_display(),
        trigger=version.trigger,
        metrics=version.metrics if isinstance(version.metrics, dict) else {},
        judgments_count=version.judgments_count,
        device=version.device,
        durations=version.durations if isinstance(version.durations, dict) else {},
        error=version.error if staff else plain_error(version),
        step=version.progress_step,
        total=version.progress_total,
        loss=finite_number(version.progress_loss),
        created_at=version.created_at,
        started_at=version.started_at,
        finished_at=version.finished_at,
    )


def plain_error(version: RewardModelVersion) -> str:
    """What a rater may read about a version that did not go live: the outcome, not the cause.

    The stored error can name exception types, files and paths (pipeline._plain_error);
    that is for the people who can fix it.
    """
    if not version.error:
        return ""
    if version.status == RewardModelVersion.Status.FAILED:
        return "This training did not finish. The previous version keeps serving."
    if version.status == RewardModelVersion.Status.READY:
        return "Trained, but not activated: it was less accurate on held-out judgments than the active version."
    return ""


# --- parts ------------------------------------------------------------------


def _training(latest: VersionRow | None, loop: ProjectLoop | None, *, staff: bool, now: datetime) -> Training | None:
    # Versions are numbered under the project's training slot, and a new run
    # marks older unfinished ones failed: only the newest can be in progress.
    if latest is None or not latest.is_unfinished:
        return None
    eta = None
    if latest.started_at and 0 < latest.step < latest.total:
        elapsed = (now - latest.started_at).total_seconds()
        eta = max(0.0, elapsed / latest.step * (latest.total - latest.step))
    stalled = bool(
        staff
        and latest.status == RewardModelVersion.Status.TRAINING
        and loop is not None
        and (not loop.lock_owner or (loop.lock_expires_at is not None and loop.lock_expires_at < now))
    )
    return Training(version=latest, eta_seconds=eta, stalled=stalled)


def _loop_rows(project: Project) -> tuple[ProjectLoop | None, LoopSettings]:
    """The project's loop row (None before its first trigger) and its settings, in one query."""
    project = Project.objects.select_related("reward_loop", "loop_settings").get(pk=project.pk)
    # A missing reverse one-to-one raises an AttributeError subclass: getattr's default catches it.
    return getattr(project, "reward_loop", None), loop_settings_for(project)


def _queue_state(
    project: Project, loop: ProjectLoop | None, settings: LoopSettings, *, staff: bool, now: datetime
) -> QueueState:
    loop = loop or ProjectLoop(project=project)
    held = loop.lock_owner and loop.lock_expires_at is not None and loop.lock_expires_at >= now
    return QueueState(
        retrain_pending=loop.retrain_pending,
        pending_reason=loop.pending_reason,
        pending_since=loop.pending_since,
        enqueued_at=loop.enqueued_at,
        enqueue_error=loop.enqueue_error if staff else "",
        last_trigger_at=loop.last_trigger_at,
        coalesced_triggers=loop.coalesced_triggers,
        slot_held_until=loop.lock_expires_at if held else None,
        # Negative when judgments were deleted after the last version read them.
        judgments_since_last_version=max(0, new_judgments_since_last_version(project)),
        retrain_every=settings.retrain_every,
    )


def _acquisition(project: Project, settings: LoopSettings, *, staff: bool) -> Acquisition:
    common = {
        "strategy": settings.acquisition,
        "strategy_label": settings.get_acquisition_display(),
        "why": STRATEGY_REASONS.get(settings.acquisition, ""),
        "exploration_share": settings.exploration_share,
        "pair_budget": settings.pair_budget,
    }
    if not staff:
        return Acquisition(open_comparisons=None, **common)
    open_comparisons = Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
    counts = Counter()
    for row in open_comparisons.order_by().values("selected_by").annotate(n=Count("id")):
        # Rows imported before selected_by was recorded have none: they are in import order too.
        counts[row["selected_by"] or Comparison.SelectedBy.IMPORT.value] += row["n"]
    # The assignment engine's own order (comparison_queue_idx): what raters get next.
    top = open_comparisons.order_by("-priority", "created_at", "id").values_list(
        "id", "priority", "selected_by", "judgments_count"
    )[:QUEUE_TOP]
    return Acquisition(
        open_comparisons=sum(counts.values()),
        open_by_selected_by=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        top=[QueueItem(pk, priority, selected_by, judged) for pk, priority, selected_by, judged in top],
        **common,
    )
