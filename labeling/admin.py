"""The admin: campaign setup, imports and exports, and a read-only view of what raters did.

Tables here grow to millions of rows, so changelists avoid full counts
(show_full_result_count=False), load foreign keys in the same query
(list_select_related) and pick related rows by id (raw_id_fields).
Judgments and leases are records of what happened: nobody edits them here.

Who sees what (labeling.access): the model permissions are Django's (a staff user without any sees
nothing), and every page of project data is scoped on top of them (ProjectScopedAdmin): a project
manager sees and acts only on the rows of the projects they manage, admins on every project.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from labeling import access, exporting, importing, tasks
from labeling.comparisons import (
    mark_gold_by_reference_label,
    reopen_comparisons,
    retire_comparisons,
    status_by_count,
    unmark_gold,
)
from labeling.importing import jobs as import_jobs
from labeling.judgments import delete_judgments
from labeling.models import Assignment, Comparison, ImportJob, Judgment, Project, Prompt, Response
from labeling.quality.weights import judgment_weights


class ImportPairsForm(forms.Form):
    file = forms.FileField(help_text="JSONL: one JSON object per line (hh, pairs or responses format).")
    project = forms.SlugField(
        max_length=Project._meta.get_field("slug").max_length,
        help_text="Slug of an existing project, or of a new one to create.",
        widget=forms.TextInput(attrs={"list": "project-slugs"}),  # the page lists the existing slugs
    )
    name = forms.CharField(
        required=False, max_length=Project._meta.get_field("name").max_length, help_text="Name of a new project."
    )
    format = forms.ChoiceField(
        required=False,
        choices=[("", "Detect from the first line")] + [(f, f) for f in importing.FORMATS],
    )
    gold_from_labels = forms.BooleanField(
        required=False,
        label="Make labels gold",
        help_text="Turn the file's reference labels (hh labels, pairs labels a/b) into gold answers. Tie labels "
        'are no known answer and stay ordinary comparisons. Lines with "gold": true are gold either way.',
    )


class ProjectScopedAdmin(admin.ModelAdmin):
    """A model admin whose rows belong to a project: managers get the rows of the projects they manage,
    admins every row. The changelist, the change, delete and history pages and every action read
    get_queryset, so another project's row is "not found" to a manager, whatever their permissions."""

    managers_lookup = "project__managers"  # from a row to its project's managers

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if access.is_admin(request.user):
            return queryset
        return queryset.filter(**{self.managers_lookup: request.user.pk})


class ProjectFilter(admin.RelatedFieldListFilter):
    """The project filter, listing only the projects the user may see here (Django's lists every project)."""

    def field_choices(self, field, request, model_admin):
        return [(project.pk, str(project)) for project in access.managed_projects(request.user).order_by("name")]


@admin.register(Project)
class ProjectAdmin(ProjectScopedAdmin):
    list_display = ["name", "slug", "is_active", "overlap", "rater_count", "links"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["raters", "managers"]
    readonly_fields = ["created_at"]
    managers_lookup = "managers"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(rater_count=Count("raters", distinct=True))

    def get_readonly_fields(self, request, obj=None):
        # Who manages a project is the admins' decision: a manager who could add managers could hand
        # their rights to anyone.
        if access.is_admin(request.user):
            return self.readonly_fields
        return [*self.readonly_fields, "managers"]

    @admin.display(description="Raters", ordering="rater_count")
    def rater_count(self, project):
        return project.rater_count

    @admin.display(description="")
    def links(self, project):
        return format_html(
            '<a href="{}">Comparisons</a> · <a href="{}">Judgments</a> · '
            'Export <a href="{}">TRL</a> / <a href="{}">raw</a>',
            reverse("admin:labeling_comparison_changelist") + f"?project__id__exact={project.pk}",
            reverse("admin:labeling_judgment_changelist") + f"?project__id__exact={project.pk}",
            reverse("admin:labeling_project_export", args=[project.pk, "trl"]),
            reverse("admin:labeling_project_export", args=[project.pk, "raw"]),
        )

    def get_urls(self):
        return [
            # csrf_exempt only so that the admin does not read the upload before import_view has chosen where
            # it goes; import_view checks the CSRF token itself (csrf_protect) right after.
            path("import/", self.admin_site.admin_view(csrf_exempt(self.import_view)), name="labeling_project_import"),
            path(
                "import/<int:job_id>/",
                self.admin_site.admin_view(self.import_job_view),
                name="labeling_project_import_job",
            ),
            path(
                "import/<int:job_id>/progress/",
                self.admin_site.admin_view(self.import_progress_view),
                name="labeling_project_import_progress",
            ),
            path(
                "<int:project_id>/export/<str:format>/",
                self.admin_site.admin_view(self.export_view),
                name="labeling_project_export",
            ),
        ] + super().get_urls()

    def import_view(self, request):
        if not request.user.has_perm(access.IMPORT):
            raise PermissionDenied
        too_large = _upload_too_large(request)
        if too_large:
            return too_large
        # The upload goes to a file under VAR_DIR/imports/, 64 KiB at a time, never into memory.
        request.upload_handlers = [import_jobs.ImportUploadHandler(request)]
        try:
            return csrf_protect(self._import_form)(request)
        finally:
            # A file no job took (a form error, a refused token): nobody will read it.
            for upload in request.FILES.values() if request.method == "POST" else ():
                if isinstance(upload, import_jobs.StoredUpload) and not getattr(upload, "taken", False):
                    upload.discard()

    def _import_form(self, request):
        form = ImportPairsForm(
            request.POST or None, request.FILES or None, initial={"project": request.GET.get("project")}
        )
        if request.method == "POST" and form.is_valid():
            slug = form.cleaned_data["project"]
            refusal = access.import_refusal(request.user, project_slug=slug)
            if refusal:
                raise PermissionDenied(refusal)
            upload = form.cleaned_data["file"]
            try:
                job = import_jobs.start_import_job(
                    user=request.user,
                    project_slug=slug,
                    project_name=form.cleaned_data["name"] or None,
                    upload=upload,
                    format=form.cleaned_data["format"] or None,
                    gold_from_labels=form.cleaned_data["gold_from_labels"],
                )
            except ValidationError as error:
                form.add_error("project", error)
            else:
                upload.taken = True
                self._hand_over(request, job)
                return redirect("admin:labeling_project_import_job", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import pairs",
            "form": form,
            "max_mb": settings.IMPORT_MAX_BYTES // 2**20,
            "projects": access.projects_where(request.user, access.IMPORT)
            .order_by("slug")
            .values_list("slug", flat=True),
        }
        return TemplateResponse(request, "admin/labeling/project/import.html", context)

    def import_job_view(self, request, job_id):
        """An import's page: its progress while it runs, then its counts or its line-numbered error. A job
        the broker did not take can be handed over again, or run here and now (this request waits)."""
        job = _import_job_for(request.user, job_id)
        if request.method == "POST":
            if job.status == ImportJob.Status.QUEUED and request.POST.get("action") == "publish":
                self._hand_over(request, job)
            elif _may_run_here(job) and request.POST.get("action") == "run":
                import_jobs.run_import_job(job_id=job.pk)
            return redirect("admin:labeling_project_import_job", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Import of {job.filename}",
            **_import_job_context(job),
        }
        return TemplateResponse(request, "admin/labeling/project/import_job.html", context)

    def import_progress_view(self, request, job_id):
        """The progress part of the job page alone, which the page polls (htmx) until the job ends."""
        job = _import_job_for(request.user, job_id)
        return TemplateResponse(request, "admin/labeling/project/import_progress.html", _import_job_context(job))

    def _hand_over(self, request, job):
        error = tasks.publish_run_import(job_id=job.pk)
        if error:
            self.message_user(
                request,
                f"The task queue did not take the import ({error}). The file is kept and the import waits, "
                "queued: hand it over again below once the broker is back, or import it here and now.",
                messages.WARNING,
            )

    def export_view(self, request, project_id, format):
        # Raw exports carry every judgment's rationale: only for those who may read judgments, of the
        # projects they manage (another project is "not found").
        if not request.user.has_perm(access.EXPORT):
            raise PermissionDenied
        if format not in exporting.FORMATS:
            raise Http404("No such export format.")
        project = get_object_or_404(access.projects_where(request.user, access.EXPORT), pk=project_id)
        # Read before the first byte goes out, so that a header can say which weighting the lines use.
        weights = judgment_weights(project=project)
        response = StreamingHttpResponse(
            exporting.stream_preferences(project=project, format=format, weights=weights),
            content_type="application/x-ndjson",
        )
        response["Content-Disposition"] = f'attachment; filename="{project.slug}-{format}.jsonl"'
        response["X-Export-Weighting"] = weights.summary()
        return response


@admin.register(Prompt)
class PromptAdmin(ProjectScopedAdmin):
    list_display = ["id", "preview", "project", "turns", "external_id", "created_at"]
    list_filter = [("project", ProjectFilter)]
    search_fields = ["=id", "=external_id", "=content_hash"]
    list_select_related = ["project"]
    readonly_fields = ["content_hash", "created_at"]
    show_full_result_count = False

    @admin.display(description="Last turn")
    def preview(self, prompt):
        return Truncator(str(prompt)).chars(80)

    @admin.display(description="Turns")
    def turns(self, prompt):
        return len(prompt.conversation)

    # Prompts and responses come in through imports (which hash them); changing
    # a text would change what earlier judgments were about.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Response)
class ResponseAdmin(ProjectScopedAdmin):
    managers_lookup = "prompt__project__managers"
    list_display = ["id", "preview", "source", "prompt_id", "created_at"]
    search_fields = ["=id", "=prompt__id", "=content_hash", "source"]
    raw_id_fields = ["prompt"]
    readonly_fields = ["content_hash", "created_at"]
    show_full_result_count = False

    @admin.display(description="Text")
    def preview(self, response):
        return Truncator(response.text).chars(80)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class JudgmentInline(admin.TabularInline):
    model = Judgment
    fields = ["rater", "outcome", "strength", "left", "flags", "rationale", "time_spent_ms", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("rater")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PriorityFilter(admin.SimpleListFilter):
    title = "priority"
    parameter_name = "priority"

    def lookups(self, request, model_admin):
        return [("positive", "Above zero"), ("zero", "Zero"), ("negative", "Below zero")]

    def queryset(self, request, queryset):
        lookup = {"positive": "priority__gt", "zero": "priority", "negative": "priority__lt"}.get(self.value())
        return queryset.filter(**{lookup: 0}) if lookup else queryset


@admin.register(Comparison)
class ComparisonAdmin(ProjectScopedAdmin):
    list_display = [
        "id",
        "project",
        "prompt_id",
        "status",
        "priority",
        "judgments_count",
        "reference_label",
        "is_gold",
        "gold_label",
        "selected_by",
        "created_at",
    ]
    # Only filters with fixed choices (or the short project list): a filter on a
    # free-text column would run SELECT DISTINCT over the whole table.
    list_filter = ["status", PriorityFilter, ("project", ProjectFilter), "reference_label", "is_gold", "gold_label"]
    search_fields = ["=id", "=prompt__id"]
    list_select_related = ["project"]
    raw_id_fields = ["prompt", "response_a", "response_b"]
    readonly_fields = ["judgments_count", "created_at"]
    ordering = ["-id"]
    show_full_result_count = False
    inlines = [JudgmentInline]
    actions = ["retire", "reopen", "mark_as_gold", "unmark_as_gold"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        # Judgments refer to these responses as A and B; swapping them would flip every vote.
        return [*self.readonly_fields, "project", "prompt", "response_a", "response_b"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "project":  # a manager adds comparisons to their own projects only
            kwargs["queryset"] = access.projects_where(request.user, access.IMPORT)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if {"is_gold", "gold_label"} & set(form.changed_data):
            obj.status = status_by_count(obj)  # gold stays open; an ordinary one again may be complete
        super().save_model(request, obj, form, change)

    @admin.action(description="Retire selected comparisons (no more judgments)", permissions=["change"])
    def retire(self, request, queryset):
        retired = retire_comparisons(comparison_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Retired {retired} comparisons.", messages.SUCCESS)

    @admin.action(description="Reopen selected retired comparisons", permissions=["change"])
    def reopen(self, request, queryset):
        reopened = reopen_comparisons(comparison_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Reopened {reopened} comparisons.", messages.SUCCESS)

    # Gold answers can also be set one at a time on the change form (is_gold, gold_label; Comparison.clean()
    # checks that they go together), and through the API (PUT /api/comparisons/{id}/gold/).
    @admin.action(description="Mark as gold using the reference label", permissions=["change"])
    def mark_as_gold(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        marked = mark_gold_by_reference_label(comparison_ids=ids)
        self.message_user(request, f"Marked {marked} comparisons as gold.", messages.SUCCESS)
        if marked < len(ids):
            self.message_user(
                request,
                f"{len(ids) - marked} had no decisive reference label (a tie or none is no known answer) and were "
                "left as they were.",
                messages.WARNING,
            )

    @admin.action(description="Unmark gold", permissions=["change"])
    def unmark_as_gold(self, request, queryset):
        unmarked = unmark_gold(comparison_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Unmarked {unmarked} gold comparisons.", messages.SUCCESS)


class RecordAdmin(ProjectScopedAdmin):
    """What raters did is a record: nobody adds or edits it here. Admins
    may delete (so that deleting a project or comparison still works)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return access.is_admin(request.user) and super().has_delete_permission(request, obj)


@admin.register(Assignment)
class AssignmentAdmin(RecordAdmin):
    list_display = ["id", "rater", "project", "comparison_id", "state", "left", "issued_at", "expires_at"]
    list_filter = ["state", ("project", ProjectFilter)]
    search_fields = ["rater__username", "=comparison__id"]
    list_select_related = ["rater", "project"]
    show_full_result_count = False


@admin.register(Judgment)
class JudgmentAdmin(RecordAdmin):
    list_display = [
        "id",
        "rater",
        "project",
        "comparison_id",
        "outcome",
        "strength",
        "left",
        "time_spent_ms",
        "created_at",
    ]
    list_filter = ["outcome", "strength", ("project", ProjectFilter), "left"]
    search_fields = ["rater__username", "=comparison__id"]
    list_select_related = ["rater", "project"]
    show_full_result_count = False

    # Deleting a judgment changes its comparison's count (and maybe status):
    # both go through the domain function that keeps them true.
    def delete_model(self, request, obj):
        delete_judgments(judgment_ids=[obj.pk])

    def delete_queryset(self, request, queryset):
        delete_judgments(judgment_ids=queryset.values_list("pk", flat=True))


def _may_import_into(user, project: Project) -> bool:
    """The one rule of the import job pages: who may import into project may follow its imports."""
    return access.may(user, access.IMPORT, project)


def _import_job_for(user, job_id) -> ImportJob:
    """The import job, for those who may import into its project; 404 for anyone else."""
    job = ImportJob.objects.select_related("project").filter(pk=job_id).first()
    if job is None or not _may_import_into(user, job.project):
        raise Http404("No such import.")
    return job


def _may_run_here(job: ImportJob) -> bool:
    return job.status == ImportJob.Status.QUEUED or import_jobs.is_stale(job)


def _import_job_context(job: ImportJob) -> dict:
    bytes_done, lines_done = import_jobs.progress_of(job)
    finished = job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED)
    return {
        "job": job,
        "finished": finished,
        "bytes_done": bytes_done,
        "lines_done": lines_done,
        "percent": 100 if finished else min(99, int(100 * bytes_done / job.size_bytes)) if job.size_bytes else 0,
        "may_run_here": _may_run_here(job),
        "stale": import_jobs.is_stale(job),
    }


def _upload_too_large(request) -> HttpResponse | None:
    """413 for an import upload above IMPORT_MAX_BYTES, judged by its Content-Length before a byte is read."""
    if request.method != "POST":
        return None
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = settings.IMPORT_MAX_BYTES
    if length <= limit:
        return None
    return HttpResponse(
        f"The upload is {length / 2**20:.0f} MB; imports through this page are limited to {limit / 2**20:.0f} MB "
        "(IMPORT_MAX_MB). Nothing was imported. Import larger files with `manage.py import_pairs`.",
        status=413,
        content_type="text/plain; charset=utf-8",
    )
