from django.apps import AppConfig


class RewardModelConfig(AppConfig):
    name = "rewardmodel"
    verbose_name = "Reward model"

    def ready(self):
        # Imported once the app registry is ready (Django's place to connect
        # signals): connects the "judgment recorded" listener; labeling never imports us.
        from rewardmodel import triggers  # noqa: F401
