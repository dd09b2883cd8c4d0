"""The loop's settings move from labeling.Project to a table of their own.

Creates LoopSettings and copies every project's six values into its row, while
Project still has them; labeling's 0003_move_loop_settings then removes them.
Reversible: going back copies the rows' values onto the projects again.
"""

import django.db.models.deletion
from django.db import migrations, models

FIELDS = (
    "retrain_every",
    "acquisition",
    "exploration_share",
    "activation_tolerance",
    "pair_budget",
    "train_on_reference_labels",
)


def copy_from_projects(apps, schema_editor):
    Project = apps.get_model("labeling", "Project")
    LoopSettings = apps.get_model("rewardmodel", "LoopSettings")
    LoopSettings.objects.bulk_create(
        (LoopSettings(project_id=row.pop("pk"), **row) for row in Project.objects.values("pk", *FIELDS)),
        batch_size=1000,
    )


def copy_to_projects(apps, schema_editor):
    Project = apps.get_model("labeling", "Project")
    LoopSettings = apps.get_model("rewardmodel", "LoopSettings")
    for row in LoopSettings.objects.values("project_id", *FIELDS):
        Project.objects.filter(pk=row.pop("project_id")).update(**row)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0002_judgment_project_id_index"),
        ("rewardmodel", "0002_default_schedule"),
    ]

    operations = [
        migrations.CreateModel(
            name="LoopSettings",
            fields=[
                (
                    "project",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="loop_settings",
                        serialize=False,
                        to="labeling.project",
                    ),
                ),
                (
                    "retrain_every",
                    models.PositiveIntegerField(
                        default=50,
                        help_text="Retrain the reward model after this many new judgments; 0 turns the trigger off.",
                    ),
                ),
                (
                    "acquisition",
                    models.CharField(
                        choices=[
                            ("random", "Random"),
                            ("uncertainty", "Uncertainty: P(A beats B) closest to 0.5"),
                            ("ensemble", "Ensemble disagreement (epistemic uncertainty across reward heads)"),
                        ],
                        default="uncertainty",
                        help_text="How the loop decides which pairs raters see first once a reward model exists.",
                        max_length=20,
                    ),
                ),
                (
                    "exploration_share",
                    models.FloatField(
                        default=0.1,
                        help_text="Share of the queue's top slots given to random pairs, so the model is not only "
                        "asked about what it already thinks is close.",
                    ),
                ),
                (
                    "activation_tolerance",
                    models.FloatField(
                        default=0.02,
                        help_text="A new model version is activated unless its held-out accuracy is worse than the "
                        "active one's by more than this.",
                    ),
                ),
                (
                    "pair_budget",
                    models.PositiveIntegerField(
                        default=200,
                        help_text="At most this many new comparisons are created per refresh of candidate pairs.",
                    ),
                ),
                (
                    "train_on_reference_labels",
                    models.BooleanField(
                        default=False,
                        help_text="Bootstrap the reward model from imported reference labels (e.g. HH-RLHF): each "
                        "counts like one rater's judgment, alongside the raters' own.",
                    ),
                ),
            ],
            options={
                "verbose_name": "reward-model loop settings",
                "verbose_name_plural": "reward-model loop settings",
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("exploration_share__gte", 0), ("exploration_share__lte", 1)),
                        name="loop_exploration_share_in_0_1",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("acquisition__in", ["random", "uncertainty", "ensemble"])),
                        name="loop_acquisition_known",
                    ),
                ],
            },
        ),
        migrations.RunPython(copy_from_projects, copy_to_projects),
    ]
