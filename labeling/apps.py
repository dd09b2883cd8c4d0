from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self):
        from django.db.models.signals import post_migrate

        # Connects the receiver that revokes a deactivated user's API tokens.
        from labeling.api import tokens  # noqa: F401
        from labeling.roles import sync_after_migrate

        # The role groups, kept after every migrate and flush (labeling/roles.py says why).
        post_migrate.connect(sync_after_migrate, dispatch_uid="labeling.sync_role_groups")
