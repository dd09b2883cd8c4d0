"""LoopSettings.acquisition defaults to "doptimal": benchmarks/acquisition.py (README, "Which pairs raters
see first") found it never below random on HH and the best on the oracle task. Existing rows keep theirs."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("rewardmodel", "0006_doptimal_strategy"),
    ]

    operations = [
        migrations.AlterField(
            model_name="loopsettings",
            name="acquisition",
            field=models.CharField(
                choices=[
                    ("random", "Random"),
                    ("uncertainty", "Uncertainty: P(A beats B) closest to 0.5"),
                    ("ensemble", "Ensemble disagreement (epistemic uncertainty across reward heads)"),
                    ("doptimal", "D-optimal: most information per label (Fisher of the reward head)"),
                ],
                default="doptimal",
                help_text="How the loop decides which pairs raters see first once a reward model exists.",
                max_length=20,
            ),
        ),
    ]
