"""The rater's pages: the project list and the label page.

Thin by design: parse the post with a form, call one domain function
(assignment, judgments), render. A judgment or skip posted by htmx is answered
with the next task's partial, swapped in without a page load; a plain form
post (no script) is answered with a redirect back to the label page.
"""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from labeling.access import get_project_to_label, projects_for
from labeling.assignment import next_comparison_for, skip_comparison
from labeling.forms import JudgmentForm, SkipForm
from labeling.judgments import ComparisonNotFound, InvalidJudgment, LeaseConflict, record_judgment
from labeling.progress import progress_for

TASK_TEMPLATE = "labeling/_task.html"
LABEL_TEMPLATE = "labeling/label.html"


def login_required(view):
    """Django's login_required, but an htmx request whose session has expired
    sends the whole window to the login page instead of swapping the login
    form into the task area."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            login = redirect_to_login(request.htmx.current_url_abs_path or request.get_full_path())
            return HttpResponseClientRedirect(login.url)
        return redirect_to_login(request.get_full_path())

    return wrapped


@require_GET
@login_required
def project_list(request):
    projects = list(projects_for(request.user))
    progress = progress_for(rater=request.user, project_ids=[p.pk for p in projects])
    rows = [{"project": p, "progress": progress[p.pk]} for p in projects]
    return render(request, "labeling/project_list.html", {"rows": rows})


@require_GET
@login_required
def label(request, slug):
    project = get_project_to_label(request.user, slug=slug)
    return _render_task(request, project)


@login_required
def judge(request, slug):
    project = get_project_to_label(request.user, slug=slug)
    if request.method != "POST":
        # A login redirect can land here with GET (?next=.../judge/).
        return redirect("labeling:label", slug=project.slug)
    form = JudgmentForm(request.POST, project=project)
    if not form.is_valid():
        return _render_task(request, project, form=form, status=422)
    try:
        record_judgment(rater=request.user, judgment=form.judgment_input(), project=project)
    except ComparisonNotFound:
        raise Http404("No such comparison in a project you can label.") from None
    except InvalidJudgment as error:
        form.add_domain_errors(error.errors)
        return _render_task(request, project, form=form, status=422)
    except LeaseConflict as error:
        return _next_task(request, project, notice=str(error), notice_kind="warning", status=409)
    return _next_task(request, project, notice="Saved. Here is the next comparison.", notice_kind="success")


@require_POST
@login_required
def skip(request, slug):
    project = get_project_to_label(request.user, slug=slug)
    form = SkipForm(request.POST)
    if not form.is_valid():
        notice = "That skip did not say which comparison."
        return _next_task(request, project, notice=notice, notice_kind="error", status=400)
    skipped = skip_comparison(rater=request.user, project=project, comparison_id=form.cleaned_data["comparison_id"])
    notice = (
        "Skipped. You will not be shown that comparison again."
        if skipped
        else ("That comparison was no longer reserved for you; here is the next one.")
    )
    return _next_task(request, project, notice=notice, notice_kind="info")


def _next_task(request, project, *, notice: str, notice_kind: str, status: int = 200):
    if request.htmx:
        return _render_task(request, project, notice=notice, notice_kind=notice_kind, status=status)
    # Post/redirect/get: a reload must not post the judgment again.
    getattr(messages, notice_kind)(request, notice)  # success, info, warning, error
    return redirect("labeling:label", slug=project.slug)


def _render_task(request, project, *, form=None, notice="", notice_kind="info", status=200):
    assignment = next_comparison_for(rater=request.user, project=project)
    if form is not None and assignment is not None and form.data.get("comparison_id") != str(assignment.comparison_id):
        # The posted task is gone (its lease expired and another was issued):
        # errors about it would sit next to a different pair.
        form, notice, notice_kind = None, "That comparison was no longer reserved for you.", "warning"
    context = {
        "project": project,
        "assignment": assignment,
        "form": form or JudgmentForm(project=project),
        "progress": progress_for(rater=request.user, project_ids=[project.pk])[project.pk],
        "notice": notice,
        "notice_kind": notice_kind,
    }
    template = TASK_TEMPLATE if request.htmx else LABEL_TEMPLATE
    return render(request, template, context, status=status)
