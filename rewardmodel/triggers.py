"""Retrain after every N judgments: the listener of labeling's "judgment recorded" signal.

The signal is sent after the judgment's transaction commits, in the rater's
request. The receiver only hands the project to the process's publisher thread
(tasks.check_triggers_soon: no query on the request; at most one check per
project every TRIGGER_CHECK_INTERVAL seconds, however many judgments arrive).
The check (check_triggers) asks rewardmodel.loop whether the project is due
(retrain_every new judgments since the last version) and, if so, requests a
retrain like any other (actions.request_retrain: one published however many
raters cross the threshold at once): marked pending, then published by the
same thread (tasks.publish_retrain_soon), which keeps the broker's error on the
loop row; the periodic reconcile publishes what is still pending. A broker
that is down or silent never reaches the rater. A process that dies between a
judgment and its check loses only the check: the next judgment's check, or
the nightly schedule, sees the same count.

The same check asks for a head refit every refit_every judgments
(loop.refit_is_due: counted since the active version's data or its latest
refit), published the same way (tasks.publish_refit_soon): the queue's
priorities follow the judgments within seconds, between full retrains. Both
can fire on one judgment; the refit re-ranks at once, the retrain when it ends.

The other two triggers are the schedule (tasks.retrain_projects_with_new_judgments)
and staff pressing "Retrain now" (views, admin).
"""

from django.dispatch import receiver

from labeling.models import Project
from labeling.signals import judgment_recorded
from rewardmodel import actions, loop, tasks
from rewardmodel.models import Trigger


@receiver(judgment_recorded, dispatch_uid="rewardmodel.retrain_after_n_judgments")
def on_judgment_recorded(sender, *, project_id: int, **kwargs) -> None:
    tasks.check_triggers_soon(project_id=project_id, check=check_triggers)


def check_triggers(*, project_id: int) -> None:
    """What a judgment may have made due: a retrain, a head refit (run by the publisher thread)."""
    retrain_if_due(project_id=project_id)
    refit_if_due(project_id=project_id)


def retrain_if_due(*, project_id: int) -> actions.Request | None:
    """Request a retrain when the project has retrain_every new judgments; None when it is not due."""
    project = Project.objects.select_related("loop_settings").filter(pk=project_id).first()
    if project is None or not loop.retrain_is_due(project):
        return None
    return actions.request_retrain(project_id=project_id, reason=Trigger.THRESHOLD, wait=False)


def refit_if_due(*, project_id: int) -> str | None:
    """Hand a head refit to the publisher thread when the project has refit_every new judgments.

    None when none is due or one was handed over already; else "" or why the
    publisher could not take it.
    """
    project = Project.objects.select_related("loop_settings").filter(pk=project_id).first()
    if project is None or not loop.refit_is_due(project) or not loop.mark_refit_requested(project_id=project_id):
        return None
    return tasks.publish_refit_soon(project_id=project_id)
