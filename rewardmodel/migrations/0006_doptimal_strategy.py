"""LoopSettings.acquisition: the "doptimal" strategy (rewardmodel/acquisition.py, benchmarks/acquisition.py)."""

from django.db import migrations, models

CHOICES = [
    ("random", "Random"),
    ("uncertainty", "Uncertainty: P(A beats B) closest to 0.5"),
    ("ensemble", "Ensemble disagreement (epistemic uncertainty across reward heads)"),
    ("doptimal", "D-optimal: most information per label (Fisher of the reward head)"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("rewardmodel", "0005_fast_refresh"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="loopsettings", name="loop_acquisition_known"),
        migrations.AlterField(
            model_name="loopsettings",
            name="acquisition",
            field=models.CharField(
                choices=CHOICES,
                default="uncertainty",
                help_text="How the loop decides which pairs raters see first once a reward model exists.",
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="loopsettings",
            constraint=models.CheckConstraint(
                condition=models.Q(("acquisition__in", [value for value, _ in CHOICES])),
                name="loop_acquisition_known",
            ),
        ),
    ]
