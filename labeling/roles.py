"""The three roles as Django groups, and what each group holds. labeling.access says what they mean
(which project each permission counts on); this module only keeps the groups in the database.

- Raters: no model permission. A rater's right to label a project is being one of its raters
  (Project.raters); the group says who the raters are.
- Project managers: the permissions below, effective only on the projects whose managers they are
  (Project.managers). Never the adding or deleting of projects, users or groups.
- Admins: every permission, labeling.manage_every_project included, which makes each count on every
  project. Superusers hold every permission anyway.

The groups are made by a data migration (labeling 0007) and made again after every migrate where missing
(a post_migrate receiver, connected in LabelingConfig.ready), as a flush (the test runner's, or manage.py
flush) leaves no group behind. A group gets its permissions when it is created; after that only the Admins
group is topped up (every permission, a later migration's new ones included): permissions an operator took
away from the managers stay away, and a new manager permission needs a migration that adds it.
"""

from django.apps import apps as django_apps
from django.contrib.auth.models import Group, Permission

RATERS = "Raters"
MANAGERS = "Project managers"
ADMINS = "Admins"

# (app label, codename).
MANAGER_PERMISSIONS = (
    # The project: its settings and its raters (the form keeps its managers read-only for them).
    ("labeling", "view_project"),
    ("labeling", "change_project"),
    # Imports (add_comparison), gold answers and retiring (change_comparison), what was imported.
    ("labeling", "view_prompt"),
    ("labeling", "view_response"),
    ("labeling", "view_comparison"),
    ("labeling", "add_comparison"),
    ("labeling", "change_comparison"),
    ("labeling", "view_importjob"),
    ("labeling", "add_importjob"),
    # Exports and what raters did.
    ("labeling", "view_judgment"),
    ("labeling", "view_assignment"),
    # Raters' quality, pausing and excluding raters.
    ("labeling", "view_rater_quality"),
    ("labeling", "manage_raters"),
    # The reward-model loop: the full status view (view_projectloop), retrain and refresh
    # (change_projectloop), activate (change_rewardmodelversion), its settings (the inline on the
    # project's page). Names only: labeling imports nothing of rewardmodel.
    ("rewardmodel", "view_projectloop"),
    ("rewardmodel", "change_projectloop"),
    ("rewardmodel", "view_rewardmodelversion"),
    ("rewardmodel", "change_rewardmodelversion"),
    ("rewardmodel", "view_loopsettings"),
    ("rewardmodel", "add_loopsettings"),
    ("rewardmodel", "change_loopsettings"),
)


def sync_role_groups(*, group_model, permission_model, using: str = "default") -> None:
    """Create the three groups where missing, the managers' with their permissions (among those that
    exist), and give the Admins group every permission it lacks. Takes the models so that a migration can
    pass its historical ones."""
    groups = group_model.objects.using(using)
    permissions = permission_model.objects.using(using)
    groups.get_or_create(name=RATERS)
    managers, created = groups.get_or_create(name=MANAGERS)
    wanted = set(MANAGER_PERMISSIONS) if created else set()
    managers.permissions.add(
        *[
            permission
            for permission in permissions.select_related("content_type")
            if (permission.content_type.app_label, permission.codename) in wanted
        ]
    )
    admins, _ = groups.get_or_create(name=ADMINS)
    admins.permissions.add(*permissions.all())


def sync_after_migrate(sender, using="default", **kwargs) -> None:
    """post_migrate receiver. Django sends post_migrate once per app, in INSTALLED_APPS order, each time
    after creating that app's permissions: only the last app's call sees them all."""
    last = [config for config in django_apps.get_app_configs() if config.models_module is not None][-1]
    if sender.label == last.label:
        sync_role_groups(group_model=Group, permission_model=Permission, using=using)
