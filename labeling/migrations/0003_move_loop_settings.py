"""The reward-model loop's six settings leave Project: rewardmodel's
0003_loopsettings has copied them into its own table (LoopSettings), so this
runs after it. Comparison.selected_by gets its choices (the values stored are
unchanged)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0002_judgment_project_id_index"),
        ("rewardmodel", "0003_loopsettings"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="project",
            name="project_exploration_share_in_0_1",
        ),
        migrations.RemoveField(model_name="project", name="acquisition"),
        migrations.RemoveField(model_name="project", name="activation_tolerance"),
        migrations.RemoveField(model_name="project", name="exploration_share"),
        migrations.RemoveField(model_name="project", name="pair_budget"),
        migrations.RemoveField(model_name="project", name="retrain_every"),
        migrations.RemoveField(model_name="project", name="train_on_reference_labels"),
        migrations.AlterField(
            model_name="comparison",
            name="selected_by",
            field=models.CharField(
                blank=True,
                choices=[
                    ("import", "Import order"),
                    ("random", "Random"),
                    ("uncertainty", "Uncertainty"),
                    ("ensemble", "Ensemble disagreement"),
                    ("exploration", "Exploration"),
                ],
                help_text="Why this pair is in the queue where it is (the reward-model loop sets it on every refresh).",
                max_length=20,
            ),
        ),
    ]
