"""The reward-model loop in the Django admin: its settings on each project,
its buttons, and read-only records of what it did.

The project's page gets the loop's settings as an inline and the changelist
two actions, "Retrain now" and "Refresh pairs now": rewardmodel extends
labeling's Project admin (it may import labeling; labeling never imports it)
by registering a subclass in its place, as one extends the User admin.

Versions and loop rows are records of what the pipeline did: nobody edits them
here. Every action goes through the same functions the status page uses
(rewardmodel.actions) and only says their outcome in words.

Who may (labeling.access): the permission each action names, on the projects
the user manages (every page here is scoped to them: ProjectScopedAdmin);
admins on every project.
"""

from django.contrib import admin, messages
from django.db.models import F
from django.urls import reverse
from django.utils.html import format_html

from labeling.admin import ProjectAdmin as LabelingProjectAdmin
from labeling.admin import ProjectFilter, ProjectScopedAdmin
from labeling.models import Project
from rewardmodel import actions
from rewardmodel.actions import Handover
from rewardmodel.activation import Activation, VersionNotReady
from rewardmodel.models import LoopSettings, ProjectLoop, RewardModelVersion, Trigger

BROKER_DOWN = "the task queue could not be reached ({error})"


class LoopSettingsInline(admin.StackedInline):
    """A project without a row runs on the defaults shown here; saving the project unchanged creates none."""

    model = LoopSettings
    can_delete = False
    verbose_name = verbose_name_plural = "Reward-model loop"
    fields = [
        "retrain_every",
        "refit_every",
        "acquisition",
        "exploration_share",
        "pair_budget",
        "activation_tolerance",
        "train_on_reference_labels",
    ]


admin.site.unregister(Project)


@admin.register(Project)
class ProjectAdmin(LabelingProjectAdmin):
    inlines = [*LabelingProjectAdmin.inlines, LoopSettingsInline]
    actions = [*(LabelingProjectAdmin.actions or ()), "retrain_now", "refresh_pairs_now"]

    def has_loop_permission(self, request):
        return request.user.has_perm("rewardmodel.change_projectloop")

    @admin.action(description="Retrain the reward model now", permissions=["loop"])
    def retrain_now(self, request, queryset):
        outcomes = {outcome: [] for outcome in Handover}
        for project in queryset:
            requested = actions.request_retrain(project_id=project.pk, reason=Trigger.MANUAL)
            outcomes[requested.outcome].append((project, requested.broker_error))
        if outcomes[Handover.REQUESTED]:
            self.message_user(
                request, f"Retrain requested for {len(outcomes[Handover.REQUESTED])} project(s).", messages.SUCCESS
            )
        if outcomes[Handover.MERGED]:
            self.message_user(
                request,
                f"{len(outcomes[Handover.MERGED])} project(s) already had a retrain pending; merged.",
                messages.INFO,
            )
        for project, error in outcomes[Handover.BROKER_DOWN]:
            self.message_user(
                request,
                f"{project}: {BROKER_DOWN.format(error=error)}; the retrain stays pending and the reconcile task "
                "hands it over when the queue is back.",
                messages.WARNING,
            )

    @admin.action(description="Refresh pairs now", permissions=["loop"])
    def refresh_pairs_now(self, request, queryset):
        sent = 0
        for project in queryset:
            requested = actions.request_refresh(project_id=project.pk)
            if requested.outcome == Handover.BROKER_DOWN:
                self.message_user(
                    request,
                    f"{project}: {BROKER_DOWN.format(error=requested.broker_error)}. Try again later.",
                    messages.ERROR,
                )
            else:
                sent += 1
        if sent:
            self.message_user(request, f"Refresh of the pairs requested for {sent} project(s).", messages.SUCCESS)


class ReadOnlyAdmin(ProjectScopedAdmin):
    """Viewable (the rows of the projects one manages), never added, changed or deleted through the admin."""

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
    list_filter = ["status", "trigger", "device", ("project", ProjectFilter)]
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
        try:
            activated = actions.activate_version(version=version)
        except VersionNotReady as error:
            self.message_user(request, f"{version.project}: {error}", messages.ERROR)
            return
        if activated.activation == Activation.ALREADY_ACTIVE:
            self.message_user(request, f"{version.project} v{version.version} is already active.", messages.INFO)
            return
        refresh = activated.refresh
        refused = refresh.outcome == Handover.BROKER_DOWN
        note = f" The pairs were not re-ranked: {BROKER_DOWN.format(error=refresh.broker_error)}." if refused else ""
        self.message_user(
            request,
            f"{version.project} v{version.version} is now active.{note}",
            messages.WARNING if refused else messages.SUCCESS,
        )


@admin.register(ProjectLoop)
class ProjectLoopAdmin(ReadOnlyAdmin):
    """One row per project that has had a trigger or a training; Retrain/Refresh are actions on the projects."""

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
