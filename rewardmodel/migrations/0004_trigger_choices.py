"""What asked for a retrain, as choices (models.Trigger); the values stored are unchanged."""

from django.db import migrations, models

TRIGGERS = [
    ("threshold", "Threshold of new judgments"),
    ("schedule", "Schedule"),
    ("manual", "Manual (status page or admin)"),
    ("command", "Management command"),
    ("recovery", "Recovery of a version a dead worker left"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("rewardmodel", "0003_loopsettings"),
    ]

    operations = [
        migrations.AlterField(
            model_name="projectloop",
            name="pending_reason",
            field=models.CharField(blank=True, choices=TRIGGERS, max_length=20),
        ),
        migrations.AlterField(
            model_name="rewardmodelversion",
            name="trigger",
            field=models.CharField(blank=True, choices=TRIGGERS, help_text="What asked for it.", max_length=20),
        ),
        migrations.AlterField(
            model_name="rewardmodelversion",
            name="config",
            field=models.JSONField(
                default=dict, help_text="The training configuration (rewardmodel.core.config.TrainConfig)."
            ),
        ),
    ]
