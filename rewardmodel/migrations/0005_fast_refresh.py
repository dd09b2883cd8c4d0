"""Fast refresh between retrains: LoopSettings.refit_every, the refit request on ProjectLoop, and the latest
head refit on each version (rewardmodel.refit)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("rewardmodel", "0004_trigger_choices"),
    ]

    operations = [
        migrations.AddField(
            model_name="loopsettings",
            name="refit_every",
            field=models.PositiveIntegerField(
                default=10,
                help_text="Between retrains, refit the active model's reward heads on its cached embeddings and "
                "re-rank the queue after this many new judgments (seconds, not a fine-tune); 0 turns it off.",
            ),
        ),
        migrations.AddField(
            model_name="projectloop",
            name="refit_requested_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When a head refit was last handed over and has not started; one is published at a time.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="rewardmodelversion",
            name="head_refit",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="The latest refit of its reward heads on cached embeddings (rewardmodel.refit): the last "
                "judgment it read, pairs, seconds, held-out accuracy; its rewards replaced the version's.",
            ),
        ),
    ]
