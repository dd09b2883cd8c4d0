"""Three foreign keys lose their own index: each leads a composite index that serves it.

Prompt.project (prompt_unique_content_per_project), Response.prompt
(response_unique_content_per_prompt), Comparison.project (comparison_queue_idx).
Every row written keeps one index fewer (an import of 100,000 pairs: 400,000
entries). Django's own AlterField would drop and re-add each foreign-key
constraint on PostgreSQL (and rebuild each table on SQLite), re-checking every
row under a lock; only the index changes, so the database side is DROP INDEX.
"""

import django.db.models.deletion
from django.db import migrations, models

# (table, column, the index Django named for the foreign key)
_INDEXES = [
    ("labeling_comparison", "project_id", "labeling_comparison_project_id_bfe9f039"),
    ("labeling_prompt", "project_id", "labeling_prompt_project_id_311a680d"),
    ("labeling_response", "prompt_id", "labeling_response_prompt_id_f54002e3"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_selected_by_doptimal"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="comparison",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="comparisons",
                        to="labeling.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="prompt",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="prompts",
                        to="labeling.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="response",
                    name="prompt",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="responses",
                        to="labeling.prompt",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{index}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" ("{column}")',
                )
                for table, column, index in _INDEXES
            ],
        ),
    ]
