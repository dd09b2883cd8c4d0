"""The reward-model status page, and the three buttons staff have on it.

Raters who are members of the project see a read-only page; staff see
everything and may retrain, refresh pairs or activate a ready version. Anyone
else gets 404 (labeling.access). The buttons only hand work to the workers
(or flip one row, for activation): nothing heavy runs in the web process.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from labeling.access import get_project_for_user
from rewardmodel import pipeline, triggers
from rewardmodel.charts import accuracy_chart
from rewardmodel.models import ProjectLoop, RewardModelVersion
from rewardmodel.status import project_status, publish_refresh

BROKER_DOWN = "The task queue could not be reached ({error})."


@require_GET
@login_required
def status(request, slug):
    project = get_project_for_user(request.user, slug=slug)
    state = project_status(project=project, staff=request.user.is_staff)
    context = {
        "project": project,
        "status": state,
        "chart": accuracy_chart(state.versions),
        "poll_url": reverse("rewardmodel_api:training", args=[project.pk]),
    }
    return render(request, "rewardmodel/status.html", context)


@require_POST
@login_required
def retrain(request, slug):
    project = _project_for_staff(request, slug)
    published = triggers.request_retrain(project_id=project.pk, reason="manual")
    loop = ProjectLoop.objects.get(project=project)
    if not published:
        messages.info(request, "A retrain was already pending; your request was merged into it.")
    elif loop.enqueue_error:
        messages.warning(
            request,
            "Retrain requested, but "
            + BROKER_DOWN.format(error=loop.enqueue_error)
            + " It stays pending, and the reconcile task hands it over once the queue is back.",
        )
    else:
        messages.success(request, "Retrain requested: a worker will pick it up shortly.")
    return redirect("rewardmodel:status", slug=project.slug)


@require_POST
@login_required
def refresh(request, slug):
    project = _project_for_staff(request, slug)
    error = publish_refresh(project_id=project.pk)
    if error:
        messages.error(request, "Pairs were not refreshed: " + BROKER_DOWN.format(error=error) + " Try again later.")
    else:
        messages.success(request, "Refresh of the pairs requested: a worker will re-rank the queue shortly.")
    return redirect("rewardmodel:status", slug=project.slug)


@require_POST
@login_required
def activate(request, slug, version):
    project = _project_for_staff(request, slug)
    target = get_object_or_404(RewardModelVersion, project=project, version=version)
    if target.status == RewardModelVersion.Status.ACTIVE:
        messages.info(request, f"Version {target.version} is already active.")
    elif target.status != RewardModelVersion.Status.READY:
        messages.error(
            request,
            f"Version {target.version} is {target.get_status_display().lower()}: "
            "only a ready version can be activated.",
        )
    else:
        pipeline.activate(target)
        # The queue's priorities came from the previous version: re-rank with this one.
        error = publish_refresh(project_id=project.pk)
        note = "" if not error else " The pairs were not re-ranked: " + BROKER_DOWN.format(error=error)
        messages.success(request, f"Version {target.version} is now active and serves the project.{note}")
    return redirect("rewardmodel:status", slug=project.slug)


def _project_for_staff(request, slug):
    # Members who are not staff learn the project exists (they can see its
    # page) but may not act on it; everyone else gets 404 first.
    project = get_project_for_user(request.user, slug=slug)
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can change the reward-model loop.")
    return project
