from django.apps import AppConfig


class RewardModelConfig(AppConfig):
    name = "rewardmodel"
    verbose_name = "Reward model"

    def ready(self):
        # Connects the "judgment recorded" listener (labeling never imports us).
        from rewardmodel import triggers  # noqa: F401
