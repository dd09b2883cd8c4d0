"""The demo `make run` loads, both sides: labeling.demo puts in the project,
its data and the accounts; this sets the project's loop so that a person
trying it sees the loop turn within minutes."""

from django.db import transaction

from labeling import demo
from rewardmodel.models import LoopSettings

# Every 10 judgments the reward model retrains and the queue is re-ordered.
RETRAIN_EVERY = 10


def load_demo(*, accounts: bool = True, reset_passwords: bool = False, allow_in_production: bool = False):
    """labeling.demo.load_demo, plus the demo's loop settings; all of it commits or none of it does.

    Raises labeling.demo.DemoRefused (accounts asked for in production) and
    labeling.importing.ImportFileError (a broken data file) as it does.
    """
    with transaction.atomic():
        result = demo.load_demo(
            accounts=accounts, reset_passwords=reset_passwords, allow_in_production=allow_in_production
        )
        LoopSettings.objects.update_or_create(project=result.project, defaults={"retrain_every": RETRAIN_EVERY})
    return result
