from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self):
        # Connects the receiver that revokes a deactivated user's API tokens.
        from labeling.api import tokens  # noqa: F401
