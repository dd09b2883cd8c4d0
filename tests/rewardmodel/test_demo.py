"""The demo's reward-model side: `load_demo` (rewardmodel's command) sets the demo project's loop."""

from io import StringIO

import pytest
from django.core.management import call_command

from labeling.models import Project
from rewardmodel.loop import loop_settings_for
from rewardmodel.models import LoopSettings

pytestmark = pytest.mark.django_db


def load_demo(*args) -> str:
    out = StringIO()
    call_command("load_demo", *args, stdout=out)
    return out.getvalue()


def test_the_demo_project_retrains_every_ten_judgments():
    load_demo("--no-accounts")

    assert loop_settings_for(Project.objects.get(slug="demo")).retrain_every == 10


def test_a_rerun_sets_the_demo_loop_back_and_keeps_its_other_settings():
    load_demo("--no-accounts")
    LoopSettings.objects.filter(project__slug="demo").update(retrain_every=99, pair_budget=7)

    load_demo("--no-accounts")

    settings = LoopSettings.objects.get(project__slug="demo")
    assert (settings.retrain_every, settings.pair_budget) == (10, 7)
