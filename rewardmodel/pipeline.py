"""The loop's steps for one reward-model version:
read data -> train -> evaluate -> save -> score (caching the embeddings its
heads read, for the head refits until the next version: rewardmodel.refit) ->
activate -> refresh pairs.

`run_retrain` runs them for a project; tasks.retrain (a worker), the
train_reward_model command and tests call it. It holds the project's training
slot (rewardmodel.loop) for the whole run and renews the slot's lease at every
step boundary and inside the two long steps (after each progress report of the
training, after each batch of scoring), so only a dead worker lets it lapse.
It publishes nothing: when a retrain was asked for while it ran, its outcome
says so (`pending_again`) and the caller hands that one to the broker.

State lives in the database (RewardModelVersion, ProjectLoop), so any worker on
any machine can pick up where another left off. It imports torch (through
rewardmodel.core) at the top: workers and management commands import it, web
processes never do (tasks.py loads it only when a retrain runs).

Failure policy: any exception in a step marks the version failed with the
error in plain words; the previously active version keeps serving, and raters
see nothing of it. Database connection errors are re-raised for the task to
retry (they are the transient kind); everything else is final for that version.
A refresh that fails after activation is the exception to the rule: the new
version serves already, so the error is kept on it and it stays active.

One job, a retrain from taking the slot to finishing the version, and so a
little over 400 lines: each step is a short named function, and starting a
run (adopting what a dead worker left, numbering a new version) belongs to it.
"""

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Max
from django.utils import timezone

from labeling.models import Project, Response
from rewardmodel import embedding_cache, loop
from rewardmodel.acquisition import refresh_pairs
from rewardmodel.activation import activate_if_not_worse
from rewardmodel.core.checkpoint import load_checkpoint, save_checkpoint
from rewardmodel.core.config import TrainConfig
from rewardmodel.core.evaluate import evaluate
from rewardmodel.core.model import resolve_device
from rewardmodel.core.scoring import mean_reward, score, score_with_embeddings
from rewardmodel.core.train import TrainResult, train
from rewardmodel.dataset import ProjectDataset, build_dataset
from rewardmodel.models import ResponseReward, RewardModelVersion, Strategy, Trigger

log = logging.getLogger(__name__)

# A task delivered this many times without finishing (its worker died each
# time: out of memory, a driver crash) is a poison task: stop redelivering it.
MAX_ATTEMPTS = 3
MIN_TRAIN_PAIRS = 2
# Responses scored between two renewals of the lease. api.py measured ~4
# responses/s on 2 CPU cores (MiniLM, 256 tokens): ~2 min a batch there,
# well inside the default 5-minute lease; seconds on a GPU.
SCORE_BATCH = 512


class TrainingSkipped(Exception):
    """Nothing to do (not enough data); not an error."""


class RetrainStatus(StrEnum):
    TRAINED = "trained"  # a new version went through every step (activated or not: see its status)
    COALESCED = "coalesced"  # another training of the project holds the slot; this request waits for it
    SKIPPED = "skipped"  # nothing pending (a duplicate delivery), or too little data to train on
    FAILED = "failed"  # a step raised: the version is failed, the previous one keeps serving
    GAVE_UP = "gave_up"  # the version kept killing its worker: marked failed, not tried again


@dataclass
class RetrainOutcome:
    status: RetrainStatus
    version: RewardModelVersion | None = None
    detail: str = ""
    pending_again: bool = False  # a retrain was asked for while this one ran: the caller publishes it


def default_config(project: Project, **overrides) -> dict:
    """Training settings for a project's reward model (TrainConfig fields)."""
    values = TrainConfig().to_dict()
    if settings.REWARD_MODEL_BACKBONE:
        values["backbone"] = settings.REWARD_MODEL_BACKBONE
    if loop.loop_settings_for(project).acquisition == Strategy.ENSEMBLE:
        # Ensemble acquisition reads the disagreement of bootstrapped heads (see acquisition.py); the heads
        # share one backbone, so H of them cost one extra H x hidden matrix, not H trainings.
        values["num_heads"] = settings.REWARD_MODEL_ENSEMBLE_HEADS
    values.update(settings.REWARD_MODEL_TRAINING)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values).to_dict()


# --- the retrain ---------------------------------------------------------------


def run_retrain(
    *,
    project_id: int,
    owner: str,
    trigger: str = Trigger.THRESHOLD,
    config_overrides: dict | None = None,
    include_reference_labels: bool | None = None,
    force: bool = False,
) -> RetrainOutcome:
    """Train, evaluate, save, score, maybe activate, and refresh pairs for a project.

    `owner` identifies this run for the training slot (a Celery task id: a
    redelivered task keeps its id and so recovers its own version). Without
    `force`, it only runs when a retrain is pending or a version was left
    unfinished by a dead worker: a duplicate message is a no-op.
    """
    if not loop.acquire_training_slot(project_id=project_id, owner=owner):
        loop.slot_taken(project_id=project_id)
        return RetrainOutcome(RetrainStatus.COALESCED, detail="another training of this project is running")
    try:
        outcome = _retrain_holding_the_slot(
            project_id=project_id,
            owner=owner,
            trigger=trigger,
            config_overrides=config_overrides,
            include_reference_labels=include_reference_labels,
            force=force,
        )
    finally:
        loop.release_training_slot(project_id=project_id, owner=owner)
    outcome.pending_again = loop.is_retrain_pending(project_id)
    return outcome


def _retrain_holding_the_slot(
    *, project_id, owner, trigger, config_overrides, include_reference_labels, force
) -> RetrainOutcome:
    pending = loop.take_pending_retrain(project_id=project_id)
    if not (force or pending or _unfinished_versions(project_id).exists()):
        return RetrainOutcome(RetrainStatus.SKIPPED, detail="nothing pending (a duplicate delivery)")
    version = _version_for_run(project_id=project_id, owner=owner, trigger=trigger, overrides=config_overrides)
    if version.status == RewardModelVersion.Status.FAILED:
        return RetrainOutcome(RetrainStatus.GAVE_UP, version, version.error)
    return _run_steps(version, owner=owner, include_reference_labels=include_reference_labels)


def _unfinished_versions(project_id: int):
    return RewardModelVersion.objects.filter(project_id=project_id, status__in=RewardModelVersion.UNFINISHED)


def _version_for_run(*, project_id, owner, trigger, overrides) -> RewardModelVersion:
    """The version this run works on.

    We hold the training slot, so any version still queued or training was
    left by a worker that died. The newest such version is adopted (one
    trigger gives one version, however many deliveries it took); older ones
    are marked failed. With none, a new version is created.
    """
    project = Project.objects.get(pk=project_id)
    unfinished = list(_unfinished_versions(project_id).order_by("-version"))
    if unfinished:
        adopted, abandoned = unfinished[0], unfinished[1:]
        RewardModelVersion.objects.filter(pk__in=[v.pk for v in abandoned]).update(
            status=RewardModelVersion.Status.FAILED,
            error="The worker training this version stopped (killed or lost) before it finished.",
            finished_at=timezone.now(),
        )
        adopted.attempts += 1
        adopted.task_id = owner
        if adopted.attempts > MAX_ATTEMPTS:
            adopted.status = RewardModelVersion.Status.FAILED
            adopted.error = (
                f"Gave up after {MAX_ATTEMPTS} attempts: the worker stopped each time during this training "
                "(out of memory?). The previous version keeps serving."
            )
            adopted.finished_at = timezone.now()
        adopted.save(update_fields=["attempts", "task_id", "status", "error", "finished_at"])
        return adopted
    with transaction.atomic():
        # The project row lock makes version numbers unique without retries.
        Project.objects.select_for_update().filter(pk=project_id).first()
        number = (RewardModelVersion.objects.filter(project_id=project_id).aggregate(n=Max("version"))["n"] or 0) + 1
        return RewardModelVersion.objects.create(
            project=project,
            version=number,
            status=RewardModelVersion.Status.QUEUED,
            config=default_config(project, **(overrides or {})),
            trigger=trigger,
            task_id=owner,
            attempts=1,
        )


@dataclass
class _Run:
    """One run's hold on the training slot, and how long each step took."""

    project_id: int
    owner: str
    durations: dict[str, float] = field(default_factory=dict)

    def renew(self) -> None:
        loop.renew_training_slot(project_id=self.project_id, owner=self.owner)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step. The lease is renewed as it starts: a long step before it
        must not leave this one to start on a lease about to lapse."""
        self.renew()
        started = time.perf_counter()
        yield
        self.durations[name] = round(time.perf_counter() - started, 3)


def _run_steps(version: RewardModelVersion, *, owner: str, include_reference_labels=None) -> RetrainOutcome:
    run = _Run(project_id=version.project_id, owner=owner)
    try:
        config = TrainConfig.from_dict(version.config)
        with run.step("read_data"):
            dataset = read_data(version, config, include_reference_labels=include_reference_labels)
        with run.step("train"):
            result = train_model(version, dataset, config, renew=run.renew)
        with run.step("evaluate"):
            metrics = evaluate_model(result, dataset, config)
        with run.step("save"):
            save_model(version, result, dataset, config, metrics)
        with run.step("score"):
            store_rewards(
                version=version, model=result.model, tokenizer=result.tokenizer, config=config, renew=run.renew
            )
        with run.step("activate"):
            mark_ready(version)
            activated = activate_if_not_worse(version)
        if activated:
            with run.step("refresh_pairs"):
                refresh_queue(version)
        embedding_cache.prune(version)  # this version's and the active one's stay
        return RetrainOutcome(RetrainStatus.TRAINED, finish(version, durations=run.durations))
    except OperationalError:
        raise  # the database went away: transient, the task retries
    except TrainingSkipped as skipped:
        # Nothing was trained: no version to show, just the reason, logged.
        log.info("retrain of %s skipped: %s", version.project.slug, skipped)
        version.delete()
        return RetrainOutcome(RetrainStatus.SKIPPED, None, str(skipped))
    except Exception as error:
        log.exception("training %s failed", version)
        _fail(version, _plain_error(error), run.durations)
        return RetrainOutcome(RetrainStatus.FAILED, version, version.error)


# --- the steps -------------------------------------------------------------------


def read_data(
    version: RewardModelVersion, config: TrainConfig, *, include_reference_labels: bool | None = None
) -> ProjectDataset:
    """The project's judgments as examples; the version records what it read and starts training.

    Raises TrainingSkipped when there are too few judged comparisons to train on.
    """
    dataset = build_dataset(project=version.project, include_reference_labels=include_reference_labels)
    version.judgments_count = dataset.snapshot["judgments"]
    version.data_snapshot = dataset.snapshot
    version.status = RewardModelVersion.Status.TRAINING
    version.started_at = timezone.now()
    version.device = str(resolve_device(config.device))
    version.error = ""
    version.save(update_fields=["judgments_count", "data_snapshot", "status", "started_at", "device", "error"])
    if len(dataset.train) < MIN_TRAIN_PAIRS:
        raise TrainingSkipped(
            f"Only {len(dataset.train)} judged comparisons to train on; at least {MIN_TRAIN_PAIRS} are needed."
        )
    return dataset


def train_model(
    version: RewardModelVersion, dataset: ProjectDataset, config: TrainConfig, *, renew: Callable[[], None]
) -> TrainResult:
    """Train on the training split, writing progress to the version (and renewing the lease) at most once a second."""
    last_write = 0.0

    def progress(step: int, total: int, loss: float) -> None:
        nonlocal last_write
        now = time.monotonic()
        if step == total or now - last_write >= 1.0:
            last_write = now
            RewardModelVersion.objects.filter(pk=version.pk).update(
                progress_step=step, progress_total=total, progress_loss=loss
            )
            renew()

    return train(config, dataset.train, progress=progress)


def evaluate_model(result: TrainResult, dataset: ProjectDataset, config: TrainConfig) -> dict:
    """Held-out metrics against the raters' judgments, and reference_* against imported labels when any."""
    metrics = {"train": result.metrics.get("train", {})}
    if dataset.held_out:
        metrics.update(evaluate(result.model, result.tokenizer, dataset.held_out, config))
    if dataset.held_out_reference:
        reference = evaluate(result.model, result.tokenizer, dataset.held_out_reference, config)
        metrics.update({f"reference_{k}": v for k, v in reference.items()})
    return metrics


def save_model(
    version: RewardModelVersion, result: TrainResult, dataset: ProjectDataset, config: TrainConfig, metrics: dict
) -> Path:
    """Write the checkpoint under MODEL_ROOT (with the ids it was trained and evaluated on) and record it."""
    path = save_checkpoint(
        Path(settings.MODEL_ROOT),
        version.project.slug,
        version.version,
        result.model,
        result.tokenizer,
        config,
        metrics,
        {
            **dataset.snapshot,
            "train_comparison_ids": dataset.train_comparison_ids,
            "held_out_comparison_ids": dataset.held_out_comparison_ids,
        },
    )
    version.metrics = metrics
    version.artifact_path = str(path)
    version.save(update_fields=["metrics", "artifact_path"])
    return path


def store_rewards(
    *, version: RewardModelVersion, model, tokenizer, config: TrainConfig, renew: Callable[[], None] | None = None
) -> int:
    """Score every response of the project with this version and store the rewards (replacing its old ones,
    and any head refit's), and the embeddings its heads read in the same pass (rewardmodel.embedding_cache),
    for the refits until the next version (rewardmodel.refit).

    Scores SCORE_BATCH responses at a time, calling `renew` after each batch;
    the rewards are written in one transaction at the end.
    """
    rows = list(
        Response.objects.filter(prompt__project=version.project_id)
        .order_by("pk")
        .values_list("pk", "prompt__conversation", "text")
    )
    caching = bool(version.artifact_path)  # the cache is keyed by the checkpoint
    rewards, vectors = [], []
    for start in range(0, len(rows), SCORE_BATCH):
        batch = rows[start : start + SCORE_BATCH]
        items = [(conversation, text) for _, conversation, text in batch]
        if caching:
            batch_rewards, batch_vectors = score_with_embeddings(model, tokenizer, items, config)
            rewards += batch_rewards.tolist()
            vectors.append(batch_vectors.numpy())
        else:
            rewards += score(model, tokenizer, items, config)
        if renew is not None:
            renew()
    if caching:
        embedding_cache.save_from_scoring(version, [pk for pk, _, _ in rows], vectors)
    with transaction.atomic():
        ResponseReward.objects.filter(version=version).delete()
        ResponseReward.objects.bulk_create(
            [
                ResponseReward(version=version, response_id=pk, reward=mean_reward(r), head_rewards=_heads(r))
                for (pk, _, _), r in zip(rows, rewards, strict=True)
            ],
            batch_size=2000,
        )
        RewardModelVersion.objects.filter(pk=version.pk).update(head_refit={})
    return len(rows)


def mark_ready(version: RewardModelVersion) -> None:
    """Trained, evaluated, saved and scored: the version can serve."""
    version.status = RewardModelVersion.Status.READY
    version.save(update_fields=["status"])


def refresh_queue(version: RewardModelVersion) -> None:
    """Re-rank the project's queue by the version just activated.

    A failure here is kept on the version, not raised: the new version serves
    already and only the queue's order is stale. Marking it failed would leave
    no version serving at all (activation made the previous one ready).
    """
    try:
        refresh_pairs(project=version.project)
    except OperationalError:
        raise
    except Exception as error:
        log.exception("refreshing the pairs of %s after activating %s failed", version.project.slug, version)
        RewardModelVersion.objects.filter(pk=version.pk).update(
            error=f"Activated, but refreshing the pairs failed: {_plain_error(error)}. "
            "Refresh them from the status page."
        )


def finish(version: RewardModelVersion, *, durations: dict[str, float]) -> RewardModelVersion:
    RewardModelVersion.objects.filter(pk=version.pk).update(durations=durations, finished_at=timezone.now())
    version.refresh_from_db()
    return version


def score_with_checkpoint(version: RewardModelVersion) -> int:
    """Load a version's checkpoint (verified, safetensors only) and store its rewards."""
    config = TrainConfig.from_dict(version.config)
    model, tokenizer, _ = load_checkpoint(Path(version.artifact_path), device=str(resolve_device(config.device)))
    return store_rewards(version=version, model=model, tokenizer=tokenizer, config=config)


# --- helpers -----------------------------------------------------------------------


def _fail(version: RewardModelVersion, error: str, durations: dict) -> None:
    RewardModelVersion.objects.filter(pk=version.pk).update(
        status=RewardModelVersion.Status.FAILED, error=error, durations=durations, finished_at=timezone.now()
    )
    version.refresh_from_db()


def _plain_error(error: Exception) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    place = f" (in {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(error).__name__}: {error}{place}"


def _heads(reward):
    return [float(x) for x in reward] if isinstance(reward, (list, tuple)) else None
