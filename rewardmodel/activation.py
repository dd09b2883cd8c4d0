"""Which version serves a project: the one switch, and the policy a newly trained version passes to get it.

`activate` is the only way a version becomes active, whoever asks: staff on
the status page or in the admin (through actions.activate_version, which also
re-ranks the queue), or the pipeline after a training (through
`activate_if_not_worse`). Only a ready version can be activated; asking for the
active one changes nothing.
"""

from enum import StrEnum

from django.db import transaction

from labeling.models import Project
from rewardmodel.loop import loop_settings_for
from rewardmodel.metrics import finite_number
from rewardmodel.models import RewardModelVersion


class VersionNotReady(Exception):
    """Only a ready version (trained and evaluated, not serving) can be activated."""


class Activation(StrEnum):
    ACTIVATED = "activated"  # the version serves its project now; the one before it is ready again
    ALREADY_ACTIVE = "already_active"  # it was serving already: nothing changed


def activate(version: RewardModelVersion) -> Activation:
    """Make this ready version the one that serves its project: one atomic switch.

    Raises VersionNotReady for a version queued, training or failed.
    """
    with transaction.atomic():
        # The project row lock serialises activations of one project, so the
        # status read below is still true when the switch is written.
        Project.objects.select_for_update().filter(pk=version.project_id).first()
        status = RewardModelVersion.objects.filter(pk=version.pk).values_list("status", flat=True).get()
        version.status = status
        if status == RewardModelVersion.Status.ACTIVE:
            return Activation.ALREADY_ACTIVE
        if status != RewardModelVersion.Status.READY:
            raise VersionNotReady(
                f"Version {version.version} is {version.get_status_display().lower()}: "
                "only a ready version can be activated."
            )
        RewardModelVersion.objects.filter(
            project_id=version.project_id, status=RewardModelVersion.Status.ACTIVE
        ).update(status=RewardModelVersion.Status.READY)
        RewardModelVersion.objects.filter(pk=version.pk).update(status=RewardModelVersion.Status.ACTIVE)
    version.status = RewardModelVersion.Status.ACTIVE
    return Activation.ACTIVATED


def activate_if_not_worse(version: RewardModelVersion) -> bool:
    """Activate a newly trained (ready) version unless its held-out accuracy is
    worse than the active version's by more than the project's tolerance. The
    first version always activates. Returns whether it did; when not, says why
    on the version.

    Accuracy on the raters' held-out judgments is compared when both versions
    have it; otherwise accuracy on the held-out imported reference labels (a
    project bootstrapped from a labeled dataset, before raters have judged
    enough); with neither measured on both, the new version activates.
    """
    project = version.project
    tolerance = loop_settings_for(project).activation_tolerance
    active = RewardModelVersion.objects.filter(project=project, status=RewardModelVersion.Status.ACTIVE).first()
    if active is not None:
        compared = comparable_accuracy(version.metrics, active.metrics)
        if compared is not None:
            what, new_acc, old_acc = compared
            if new_acc < old_acc - tolerance:
                RewardModelVersion.objects.filter(pk=version.pk).update(
                    error=f"Not activated: {what} {new_acc:.3f} is below the active v{active.version}'s "
                    f"{old_acc:.3f} by more than the tolerance {tolerance:.3f}."
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
