"""The reward-model status page, and its three buttons.

Who may (labeling.access): the project's raters see a read-only page; its
managers (rewardmodel.view_projectloop) and admins see everything. Retrain and
refresh need rewardmodel.change_projectloop, activating a ready version
rewardmodel.change_rewardmodelversion (the permissions the admin's actions ask
for), on a project the user manages: staff status alone grants no button.
Anyone who may not see the project gets 404. Each button calls one function of
rewardmodel.actions and says its outcome in words: nothing heavy runs in the
web process.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from labeling.access import get_project_for_user, may, require
from rewardmodel import actions
from rewardmodel.actions import Handover
from rewardmodel.activation import Activation, VersionNotReady
from rewardmodel.charts import accuracy_chart
from rewardmodel.models import RewardModelVersion, Trigger
from rewardmodel.status import project_status

BROKER_DOWN = "The task queue could not be reached ({error})."
# Real permissions, the same the admin's actions ask for, each on the projects the user manages.
VIEW_LOOP = "rewardmodel.view_projectloop"  # the full view: errors' details, the comparison queue
CHANGE_LOOP = "rewardmodel.change_projectloop"  # retrain, refresh the pairs
ACTIVATE = "rewardmodel.change_rewardmodelversion"  # switch the serving version


@require_GET
@login_required
def status(request, slug):
    project = get_project_for_user(request.user, slug=slug)
    state = project_status(project=project, staff=may(request.user, VIEW_LOOP, project))
    context = {
        "project": project,
        "status": state,
        "chart": accuracy_chart(state.versions),
        "poll_url": reverse("rewardmodel_api:training", args=[project.pk]),
        "can_change_loop": may(request.user, CHANGE_LOOP, project),
        "can_activate": may(request.user, ACTIVATE, project),
    }
    return render(request, "rewardmodel/status.html", context)


@require_POST
@login_required
def retrain(request, slug):
    project = _project_for(request, slug, permission=CHANGE_LOOP)
    requested = actions.request_retrain(project_id=project.pk, reason=Trigger.MANUAL)
    if requested.outcome == Handover.MERGED:
        messages.info(request, "A retrain was already pending; your request was merged into it.")
    elif requested.outcome == Handover.BROKER_DOWN:
        messages.warning(
            request,
            "Retrain requested, but "
            + BROKER_DOWN.format(error=requested.broker_error)
            + " It stays pending, and the reconcile task hands it over once the queue is back.",
        )
    else:
        messages.success(request, "Retrain requested: a worker will pick it up shortly.")
    return redirect("rewardmodel:status", slug=project.slug)


@require_POST
@login_required
def refresh(request, slug):
    project = _project_for(request, slug, permission=CHANGE_LOOP)
    requested = actions.request_refresh(project_id=project.pk)
    if requested.outcome == Handover.BROKER_DOWN:
        messages.error(
            request,
            "Pairs were not refreshed: " + BROKER_DOWN.format(error=requested.broker_error) + " Try again later.",
        )
    else:
        messages.success(request, "Refresh of the pairs requested: a worker will re-rank the queue shortly.")
    return redirect("rewardmodel:status", slug=project.slug)


@require_POST
@login_required
def activate(request, slug, version):
    project = _project_for(request, slug, permission=ACTIVATE)
    target = get_object_or_404(RewardModelVersion, project=project, version=version)
    try:
        activated = actions.activate_version(version=target)
    except VersionNotReady as error:
        messages.error(request, str(error))
    else:
        if activated.activation == Activation.ALREADY_ACTIVE:
            messages.info(request, f"Version {target.version} is already active.")
        else:
            refresh = activated.refresh
            note = (
                " The pairs were not re-ranked: " + BROKER_DOWN.format(error=refresh.broker_error)
                if refresh.outcome == Handover.BROKER_DOWN
                else ""
            )
            messages.success(request, f"Version {target.version} is now active and serves the project.{note}")
    return redirect("rewardmodel:status", slug=project.slug)


def _project_for(request, slug, *, permission: str):
    # Those who may see the project but not act on it learn it exists (they can
    # see its page) and get 403; everyone else gets 404 first.
    project = get_project_for_user(request.user, slug=slug)
    require(request.user, permission, project, message="You may not change this project's reward-model loop.")
    return project
