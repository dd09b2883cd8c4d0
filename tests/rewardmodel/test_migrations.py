"""The loop's settings moved from labeling.Project to rewardmodel.LoopSettings without losing a value."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("labeling", "0002_judgment_project_id_index"), ("rewardmodel", "0002_default_schedule")]
AFTER = [("labeling", "0003_move_loop_settings"), ("rewardmodel", "0003_loopsettings")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_every_projects_loop_settings_move_to_their_own_table_and_back():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        old = migrate(BEFORE)
        Project = old.get_model("labeling", "Project")
        common = {"guidelines": "", "criteria": [], "lease_duration": timedelta(minutes=10)}
        tuned = Project.objects.create(
            name="Tuned",
            slug="tuned",
            retrain_every=7,
            acquisition="ensemble",
            exploration_share=0.3,
            activation_tolerance=0.05,
            pair_budget=11,
            train_on_reference_labels=True,
            **common,
        )
        plain = Project.objects.create(name="Plain", slug="plain", **common)

        new = migrate(AFTER)
        rows = {
            row.pop("project_id"): row
            for row in new.get_model("rewardmodel", "LoopSettings").objects.values(
                "project_id",
                "retrain_every",
                "acquisition",
                "exploration_share",
                "activation_tolerance",
                "pair_budget",
                "train_on_reference_labels",
            )
        }
        assert rows == {
            tuned.pk: {
                "retrain_every": 7,
                "acquisition": "ensemble",
                "exploration_share": 0.3,
                "activation_tolerance": 0.05,
                "pair_budget": 11,
                "train_on_reference_labels": True,
            },
            plain.pk: {
                "retrain_every": 50,
                "acquisition": "uncertainty",
                "exploration_share": 0.1,
                "activation_tolerance": 0.02,
                "pair_budget": 200,
                "train_on_reference_labels": False,
            },
        }

        back = migrate(BEFORE)
        assert back.get_model("labeling", "Project").objects.get(slug="tuned").pair_budget == 11
    finally:
        migrate(latest)
