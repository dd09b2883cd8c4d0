"""The reward-model loop in the Django admin: read-only records, and a few actions.

Versions and loop rows are records of what the pipeline did: nobody edits them
here. What an admin may do goes through the same domain functions the status
page uses: activate a ready version (pipeline.activate), ask for a retrain
(triggers.request_retrain) or a refresh of the pairs (status.publish_refresh).

"Retrain now" and "Refresh pairs now" live on the loop admin ("Project loops"),
which lists one row per project: rows are created on demand, so a project that
never triggered anything gets its (empty) row when the list is opened.
"""

from django.contrib import admin, messages
from django.db.models import F
from django.urls import reverse
from django.utils.html import format_html

from labeling.models import Project
from rewardmodel import pipeline, triggers
from rewardmodel.models import ProjectLoop, RewardModelVersion
from rewardmodel.status import publish_refresh


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted through the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RewardModelVersion)
class RewardModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["project", "version", "status", "accuracy", "judgments_count", "device", "trigger", "finished_at"]
    list_display_links = ["project", "version"]
    list_filter = ["status", "trigger", "device", "project"]
    list_select_related = ["project"]
    search_fields = ["project__name", "project__slug"]
    ordering = ["project__name", "-version"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = ["activate_version"]
    fields = [
        "project",
        "version",
        "status",
        "status_page",
        "trigger",
        "metrics",
        "judgments_count",
        "data_snapshot",
        "config",
        "artifact_path",
        "progress_step",
        "progress_total",
        "progress_loss",
        "device",
        "durations",
        "error",
        "task_id",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields

    @admin.display(description="Held-out accuracy", ordering="metrics__accuracy")
    def accuracy(self, version):
        value = (version.metrics or {}).get("accuracy")
        return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "—"

    @admin.display(description="Status page")
    def status_page(self, version):
        return format_html('<a href="{}">{}</a>', reverse("rewardmodel:status", args=[version.project.slug]), "Open")

    def has_activate_permission(self, request):
        # The form is read-only for everyone; switching the serving version is
        # what "change" means for these rows.
        return request.user.has_perm("rewardmodel.change_rewardmodelversion")

    @admin.action(description="Activate selected version", permissions=["activate"])
    def activate_version(self, request, queryset):
        versions = list(queryset.select_related("project")[:2])
        if len(versions) != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = versions[0]
        if version.status == RewardModelVersion.Status.ACTIVE:
            self.message_user(request, f"{version.project} v{version.version} is already active.", messages.INFO)
            return
        if version.status != RewardModelVersion.Status.READY:
            self.message_user(
                request,
                f"{version.project} v{version.version} is {version.get_status_display().lower()}: "
                "only a ready version can be activated.",
                messages.ERROR,
            )
            return
        pipeline.activate(version)
        # The queue's priorities came from the previous version: re-rank with this one.
        error = publish_refresh(project_id=version.project_id)
        note = f" The pairs were not re-ranked: the task queue could not be reached ({error})." if error else ""
        self.message_user(
            request,
            f"{version.project} v{version.version} is now active.{note}",
            messages.WARNING if error else messages.SUCCESS,
        )


@admin.register(ProjectLoop)
class ProjectLoopAdmin(ReadOnlyAdmin):
    list_display = [
        "project",
        "retrain_pending",
        "pending_reason",
        "pending_since",
        "enqueued_at",
        "broker_error",
        "last_trigger_at",
        "coalesced_triggers",
        "training_slot",
        "status_page",
    ]
    list_filter = ["retrain_pending", "pending_reason"]
    list_select_related = ["project"]
    search_fields = ["project__name", "project__slug"]
    ordering = ["project__name"]
    actions = ["retrain_now", "refresh_pairs_now"]
    readonly_fields = [
        "project",
        "retrain_pending",
        "pending_reason",
        "pending_since",
        "enqueued_at",
        "enqueue_error",
        "last_trigger_at",
        "lock_owner",
        "lock_expires_at",
        "coalesced_triggers",
    ]

    def changelist_view(self, request, extra_context=None):
        # Loop rows appear on a project's first trigger; list every project so
        # that a new one can be retrained from here too. One INSERT ... ON
        # CONFLICT DO NOTHING, whatever the number of projects.
        ProjectLoop.objects.bulk_create(
            [
                ProjectLoop(project_id=pk)
                for pk in Project.objects.filter(reward_loop__isnull=True).values_list("pk", flat=True)
            ],
            ignore_conflicts=True,
        )
        return super().changelist_view(request, extra_context)

    @admin.display(description="Broker error")
    def broker_error(self, loop):
        return loop.enqueue_error[:120] or "—"

    @admin.display(description="Training slot", ordering=F("lock_expires_at").desc(nulls_last=True))
    def training_slot(self, loop):
        if not loop.lock_owner:
            return "free"
        return format_html("held until {} UTC", f"{loop.lock_expires_at:%Y-%m-%d %H:%M:%S}")

    @admin.display(description="Status page")
    def status_page(self, loop):
        return format_html('<a href="{}">{}</a>', reverse("rewardmodel:status", args=[loop.project.slug]), "Open")

    def has_retrain_permission(self, request):
        return request.user.has_perm("rewardmodel.change_projectloop")

    @admin.action(description="Retrain now", permissions=["retrain"])
    def retrain_now(self, request, queryset):
        requested, merged = [], []
        for loop in queryset.select_related("project"):
            published = triggers.request_retrain(project_id=loop.project_id, reason="manual")
            (requested if published else merged).append(loop.project_id)
        failed = dict(
            ProjectLoop.objects.filter(project_id__in=requested)
            .exclude(enqueue_error="")
            .values_list("project__name", "enqueue_error")
        )
        if len(requested) > len(failed):
            self.message_user(
                request, f"Retrain requested for {len(requested) - len(failed)} project(s).", messages.SUCCESS
            )
        if merged:
            self.message_user(
                request, f"{len(merged)} project(s) already had a retrain pending; merged.", messages.INFO
            )
        for name, error in failed.items():
            self.message_user(
                request,
                f"{name}: the task queue could not be reached ({error}); the retrain stays pending and the "
                "reconcile task hands it over when the queue is back.",
                messages.WARNING,
            )

    def has_refresh_permission(self, request):
        return request.user.has_perm("rewardmodel.change_projectloop")

    @admin.action(description="Refresh pairs now", permissions=["refresh"])
    def refresh_pairs_now(self, request, queryset):
        sent = 0
        for loop in queryset.select_related("project"):
            error = publish_refresh(project_id=loop.project_id)
            if error:
                self.message_user(
                    request,
                    f"{loop.project}: the task queue could not be reached ({error}). Try again later.",
                    messages.ERROR,
                )
            else:
                sent += 1
        if sent:
            self.message_user(request, f"Refresh of the pairs requested for {sent} project(s).", messages.SUCCESS)
