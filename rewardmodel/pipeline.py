"""The loop, step by step: train -> evaluate -> score -> activate -> refresh pairs.

Every step runs here, called from a Celery task (rewardmodel/tasks.py), a
management command or a test; nothing here knows about Celery. State lives in
the database (RewardModelVersion, ProjectLoop), so any worker on any machine
can pick up where another left off.

Failure policy: any exception in a step marks the version failed with the
error in plain words; the previously active version keeps serving, and raters
see nothing of it. Database connection errors are re-raised for the task to
retry (they are the transient kind); everything else is final for that version.
"""

import logging
import math
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from labeling.models import Judgment, Project, Response
from rewardmodel.dataset import build_dataset
from rewardmodel.models import ProjectLoop, ResponseReward, RewardModelVersion

log = logging.getLogger(__name__)


def lock_ttl() -> timedelta:
    """A lease not renewed for this long belongs to a dead worker."""
    return timedelta(seconds=settings.REWARD_MODEL_LOCK_TTL_SECONDS)

# A task delivered this many times without finishing (its worker died each
# time: out of memory, a driver crash) is a poison task: stop redelivering it.
MAX_ATTEMPTS = 3
MIN_TRAIN_PAIRS = 2


class TrainingSkipped(Exception):
    """Nothing to do (not enough data); not an error."""


@dataclass
class RetrainOutcome:
    status: str  # "trained", "coalesced", "skipped", "failed", "gave_up"
    version: RewardModelVersion | None = None
    detail: str = ""


def default_config(project: Project, **overrides) -> dict:
    """Training settings for a project's reward model (TrainConfig fields)."""
    from rewardmodel.core.config import TrainConfig

    values = TrainConfig().to_dict()
    backbone = getattr(settings, "REWARD_MODEL_BACKBONE", "")
    if backbone:
        values["backbone"] = backbone
    if project.acquisition == "ensemble":
        # Ensemble acquisition reads the disagreement of bootstrapped heads (see acquisition.py); the heads
        # share one backbone, so H of them cost one extra H x hidden matrix, not H trainings.
        values["num_heads"] = getattr(settings, "REWARD_MODEL_ENSEMBLE_HEADS", 5)
    values.update(getattr(settings, "REWARD_MODEL_TRAINING", {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values).to_dict()


# --- single flight -----------------------------------------------------------


def loop_for(project_id: int) -> ProjectLoop:
    loop, _ = ProjectLoop.objects.get_or_create(project_id=project_id)
    return loop


def acquire_training_slot(*, project_id: int, owner: str, now=None) -> bool:
    """Take the project's training slot, atomically, across all workers.

    One conditional UPDATE: it succeeds when the slot is free, its lease has
    run out (the holder died), or this owner already holds it (the broker
    redelivered our own task after our worker died).
    """
    now = now or timezone.now()
    loop_for(project_id)
    taken = ProjectLoop.objects.filter(
        Q(lock_owner="") | Q(lock_expires_at__lt=now) | Q(lock_owner=owner), project_id=project_id
    ).update(lock_owner=owner, lock_expires_at=now + lock_ttl())
    return taken == 1


def renew_training_slot(*, project_id: int, owner: str) -> None:
    ProjectLoop.objects.filter(project_id=project_id, lock_owner=owner).update(
        lock_expires_at=timezone.now() + lock_ttl()
    )


def release_training_slot(*, project_id: int, owner: str) -> None:
    ProjectLoop.objects.filter(project_id=project_id, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


# --- the retrain -----------------------------------------------------------


def run_retrain(
    *,
    project_id: int,
    owner: str,
    trigger: str = "threshold",
    config_overrides: dict | None = None,
    include_reference_labels: bool | None = None,
    force: bool = False,
) -> RetrainOutcome:
    """Train, evaluate, score, maybe activate, and refresh pairs for a project.

    `owner` identifies this run for the single-flight lock (a Celery task id:
    a redelivered task keeps its id and so recovers its own version).
    Without `force`, it only runs when a retrain is pending or a version was
    left unfinished by a dead worker: a duplicate message is a no-op.
    """
    if not acquire_training_slot(project_id=project_id, owner=owner):
        # Someone is training this project now. The request stays pending on
        # the loop row; the running training re-enqueues it when it finishes.
        ProjectLoop.objects.filter(project_id=project_id).update(
            retrain_pending=True, coalesced_triggers=F("coalesced_triggers") + 1
        )
        return RetrainOutcome("coalesced", detail="another training of this project is running")
    try:
        consumed = ProjectLoop.objects.filter(project_id=project_id, retrain_pending=True).update(
            retrain_pending=False, pending_reason="", pending_since=None, enqueued_at=None, enqueue_error=""
        )
        unfinished = _unfinished_versions(project_id).exists()
        if not (force or consumed or unfinished):
            return RetrainOutcome("skipped", detail="nothing pending (a duplicate delivery)")
        version = _version_for_run(project_id=project_id, owner=owner, trigger=trigger, overrides=config_overrides)
        if version.status == RewardModelVersion.Status.FAILED:
            return RetrainOutcome("gave_up", version, version.error)
        return _run_steps(version, owner=owner, include_reference_labels=include_reference_labels)
    finally:
        release_training_slot(project_id=project_id, owner=owner)
        _requeue_if_pending(project_id)


def _unfinished_versions(project_id: int):
    return RewardModelVersion.objects.filter(
        project_id=project_id, status__in=[RewardModelVersion.Status.QUEUED, RewardModelVersion.Status.TRAINING]
    )


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


def _run_steps(version: RewardModelVersion, *, owner: str, include_reference_labels=None) -> RetrainOutcome:
    from rewardmodel.core.checkpoint import save_checkpoint
    from rewardmodel.core.config import TrainConfig
    from rewardmodel.core.model import resolve_device
    from rewardmodel.core.train import train

    project = version.project
    durations: dict[str, float] = {}
    step_started = time.perf_counter()

    def lap(name: str):
        nonlocal step_started
        now = time.perf_counter()
        durations[name] = round(now - step_started, 3)
        step_started = now

    try:
        config = TrainConfig.from_dict(version.config)
        dataset = build_dataset(project=project, include_reference_labels=include_reference_labels)
        lap("read_data")
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

        last_write = [0.0]

        def progress(step: int, total: int, loss: float) -> None:
            # Throttled: a row update per second at most, and the lease renewed.
            now = time.monotonic()
            if step == total or now - last_write[0] >= 1.0:
                last_write[0] = now
                RewardModelVersion.objects.filter(pk=version.pk).update(
                    progress_step=step, progress_total=total, progress_loss=loss
                )
                renew_training_slot(project_id=project.pk, owner=owner)

        result = train(config, dataset.train, progress=progress)
        lap("train")

        metrics = _evaluate(result, dataset, config)
        lap("evaluate")

        path = save_checkpoint(
            Path(settings.MODEL_ROOT),
            project.slug,
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
        lap("save")
        version.metrics = metrics
        version.artifact_path = str(path)
        version.save(update_fields=["metrics", "artifact_path"])

        store_rewards(version=version, model=result.model, tokenizer=result.tokenizer, config=config)
        lap("score")

        activated = activate_if_not_worse(version)
        lap("activate")
        if activated:
            try:
                refresh_pairs_for(project)
            except OperationalError:
                raise
            except Exception as error:
                # The new version serves already; only the queue's order is
                # stale. Marking the version failed would leave no version
                # serving at all (activation retired the previous one).
                log.exception("refreshing the pairs of %s after activating %s failed", project.slug, version)
                RewardModelVersion.objects.filter(pk=version.pk).update(
                    error=f"Activated, but refreshing the pairs failed: {_plain_error(error)}. "
                    "Refresh them from the status page."
                )
            lap("refresh_pairs")
        version.refresh_from_db()
        if version.status == RewardModelVersion.Status.TRAINING:
            version.status = RewardModelVersion.Status.READY
        version.durations = durations
        version.finished_at = timezone.now()
        version.save(update_fields=["status", "durations", "finished_at"])
        return RetrainOutcome("trained", version)
    except OperationalError:
        raise  # the database went away: transient, the task retries
    except TrainingSkipped as skipped:
        # Nothing was trained: no version to show, just the reason, logged.
        log.info("retrain of %s skipped: %s", project.slug, skipped)
        version.delete()
        return RetrainOutcome("skipped", None, str(skipped))
    except Exception as error:
        log.exception("training %s failed", version)
        _fail(version, _plain_error(error), durations)
        return RetrainOutcome("failed", version, version.error)


def _evaluate(result, dataset, config) -> dict:
    from rewardmodel.core.evaluate import evaluate

    metrics = {"train": result.metrics.get("train", {})}
    if dataset.held_out:
        metrics.update(evaluate(result.model, result.tokenizer, dataset.held_out, config))
    if dataset.held_out_reference:
        reference = evaluate(result.model, result.tokenizer, dataset.held_out_reference, config)
        metrics.update({f"reference_{k}": v for k, v in reference.items()})
    return metrics


def _fail(version: RewardModelVersion, error: str, durations: dict) -> None:
    RewardModelVersion.objects.filter(pk=version.pk).update(
        status=RewardModelVersion.Status.FAILED, error=error, durations=durations, finished_at=timezone.now()
    )
    version.refresh_from_db()


def _plain_error(error: Exception) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    place = f" (in {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(error).__name__}: {error}{place}"


def _requeue_if_pending(project_id: int) -> None:
    loop = ProjectLoop.objects.filter(project_id=project_id, retrain_pending=True).first()
    if loop is not None:
        from rewardmodel.triggers import publish_retrain

        publish_retrain(project_id=project_id)


# --- scoring, activation, refresh -------------------------------------------


def store_rewards(*, version: RewardModelVersion, model, tokenizer, config) -> int:
    """Score every response of the project with this version and store the rewards."""
    from rewardmodel.core.scoring import score

    rows = list(
        Response.objects.filter(prompt__project=version.project_id)
        .order_by("pk")
        .values_list("pk", "prompt__conversation", "text")
    )
    rewards = score(model, tokenizer, [(conversation, text) for _, conversation, text in rows], config)
    with transaction.atomic():
        ResponseReward.objects.filter(version=version).delete()
        ResponseReward.objects.bulk_create(
            [
                ResponseReward(version=version, response_id=pk, reward=float(_mean(r)), head_rewards=_heads(r))
                for (pk, _, _), r in zip(rows, rewards, strict=True)
            ],
            batch_size=2000,
        )
    return len(rows)


def _mean(reward):
    return sum(reward) / len(reward) if isinstance(reward, (list, tuple)) else reward


def _heads(reward):
    return [float(x) for x in reward] if isinstance(reward, (list, tuple)) else None


def activate_if_not_worse(version: RewardModelVersion) -> bool:
    """Activate unless held-out accuracy is worse than the active version's
    by more than the project's tolerance. The first version always activates.

    Accuracy on the raters' held-out judgments is compared when both versions
    have it; otherwise accuracy on the held-out imported reference labels (a
    project bootstrapped from a labeled dataset, before raters have judged
    enough); with neither measured on both, the new version activates."""
    project = version.project
    active = RewardModelVersion.objects.filter(project=project, status=RewardModelVersion.Status.ACTIVE).first()
    if active is not None:
        compared = comparable_accuracy(version.metrics, active.metrics)
        if compared is not None:
            what, new_acc, old_acc = compared
            if new_acc < old_acc - project.activation_tolerance:
                RewardModelVersion.objects.filter(pk=version.pk).update(
                    error=f"Not activated: {what} {new_acc:.3f} is below the active v{active.version}'s "
                    f"{old_acc:.3f} by more than the tolerance {project.activation_tolerance:.3f}."
                )
                return False
    activate(version)
    return True


def comparable_accuracy(new: dict, old: dict) -> tuple[str, float, float] | None:
    """(what was compared, new, old): the first accuracy both metrics dicts have."""
    for key, what in (("accuracy", "held-out accuracy"), ("reference_accuracy", "reference-label accuracy")):
        new_acc, old_acc = finite_number((new or {}).get(key)), finite_number((old or {}).get(key))
        if new_acc is not None and old_acc is not None:
            return what, new_acc, old_acc
    return None


def finite_number(value) -> float | None:
    """A metric read back from JSON as a float, or None when it is missing, not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def activate(version: RewardModelVersion) -> None:
    """Make this version the one that serves its project: one atomic switch."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=version.project_id).first()
        RewardModelVersion.objects.filter(
            project_id=version.project_id, status=RewardModelVersion.Status.ACTIVE
        ).exclude(pk=version.pk).update(status=RewardModelVersion.Status.READY)
        RewardModelVersion.objects.filter(pk=version.pk).update(status=RewardModelVersion.Status.ACTIVE)
    version.status = RewardModelVersion.Status.ACTIVE


def refresh_pairs_for(project: Project, *, seed: int | None = None):
    from rewardmodel.acquisition import refresh_pairs

    return refresh_pairs(project=project, seed=seed)


def new_judgments_since_last_version(project: Project) -> int:
    """Judgments recorded after the newest version (not failed) read its data.

    Runs after every judgment, so it counts only the judgments above the last id
    that version read (a range of the (project, id) index, at most about
    retrain_every rows), never all of the project's judgments. A version still
    queued has read nothing yet: every judgment counts. A version without that id
    in its snapshot (made by hand) falls back to total minus its judgments_count."""
    latest = (
        RewardModelVersion.objects.filter(project=project)
        .exclude(status=RewardModelVersion.Status.FAILED)
        .order_by("-version")
        .values_list("data_snapshot", "judgments_count")
        .first()
    )
    snapshot, judgments_read = latest or ({}, 0)
    judgments = Judgment.objects.filter(project=project)
    if isinstance(snapshot, dict) and "last_judgment_id" in snapshot:
        last_id = snapshot["last_judgment_id"]  # None: that version read no judgments
        return (judgments if last_id is None else judgments.filter(pk__gt=last_id)).count()
    return judgments.count() - judgments_read


def refresh_pairs_for_id(project_id: int):
    return refresh_pairs_for(Project.objects.get(pk=project_id))


def score_with_checkpoint(version: RewardModelVersion) -> int:
    """Load a version's checkpoint (verified, safetensors only) and store its rewards."""
    from rewardmodel.core.checkpoint import load_checkpoint
    from rewardmodel.core.config import TrainConfig
    from rewardmodel.core.model import resolve_device

    config = TrainConfig.from_dict(version.config)
    model, tokenizer, _ = load_checkpoint(Path(version.artifact_path), device=str(resolve_device(config.device)))
    return store_rewards(version=version, model=model, tokenizer=tokenizer, config=config)
