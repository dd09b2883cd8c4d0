"""What people and events ask of the loop, each one function with its outcome:
retrain a project, refresh its pairs, activate a version.

The status page, the admin and the "judgment recorded" listener call these and
only turn the outcome into words; none of them applies a rule of its own.
Nothing here waits for a worker: a request marks the database and hands the
work to the broker (tasks.py), and an activation is one row switch. A rater's
judgment does not wait for the broker either (request_retrain, wait=False).
"""

from dataclasses import dataclass
from enum import StrEnum

from rewardmodel import loop, tasks
from rewardmodel.activation import Activation, activate
from rewardmodel.models import RewardModelVersion


class Handover(StrEnum):
    REQUESTED = "requested"  # handed to the broker: a worker picks it up shortly
    QUEUED = "queued"  # handed to this process's publisher thread: the broker gets it in moments (retrains only)
    MERGED = "merged"  # a retrain was already pending: this request joined it (retrains only)
    BROKER_DOWN = "broker_down"  # the broker refused; a retrain stays pending and the reconcile hands it over later


@dataclass(frozen=True)
class Request:
    outcome: Handover
    broker_error: str = ""  # why the broker refused, when it did


@dataclass(frozen=True)
class Activated:
    activation: Activation
    refresh: Request | None  # the re-ranking of the queue; None when the version was active already


def request_retrain(*, project_id: int, reason: str, wait: bool = True) -> Request:
    """Ask for a retrain of the project. However many ask at once, one retrain is published.

    wait=False, for a rater's request: the retrain is marked pending here and
    published by the process's publisher thread (QUEUED), so that the caller
    never waits for the broker. Staff asking by hand wait for the broker's
    answer (a few seconds at most) to be told how it went.
    """
    if not loop.mark_retrain_pending(project_id=project_id, reason=reason):
        return Request(Handover.MERGED)
    if not wait:
        error = tasks.publish_retrain_soon(project_id=project_id)
        return Request(Handover.BROKER_DOWN, error) if error else Request(Handover.QUEUED)
    return _handover(tasks.publish_retrain(project_id=project_id))


def request_refresh(*, project_id: int) -> Request:
    """Ask a worker to re-rank the project's queue by its active version."""
    return _handover(tasks.publish_refresh(project_id=project_id))


def activate_version(*, version: RewardModelVersion) -> Activated:
    """Make a ready version serve its project, then have the queue re-ranked by it.

    Raises activation.VersionNotReady for a version that is not ready.
    """
    activation = activate(version)
    if activation is Activation.ALREADY_ACTIVE:
        return Activated(activation, refresh=None)
    # The queue's priorities came from the previous version.
    return Activated(activation, refresh=request_refresh(project_id=version.project_id))


def _handover(broker_error: str) -> Request:
    return Request(Handover.BROKER_DOWN, broker_error) if broker_error else Request(Handover.REQUESTED)
