"""Test data builders for the reward-model side (the labeling rows are tests/factories.py's)."""

from datetime import timedelta

import factory
from django.utils import timezone

from rewardmodel.models import LoopSettings, ProjectLoop, ResponseReward, RewardModelVersion, Trigger
from tests.factories import ProjectFactory, ResponseFactory


class LoopSettingsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LoopSettings
        django_get_or_create = ("project",)

    project = factory.SubFactory(ProjectFactory)


class ProjectLoopFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProjectLoop

    project = factory.SubFactory(ProjectFactory)


def _finished(status) -> bool:
    return status not in RewardModelVersion.UNFINISHED


class RewardModelVersionFactory(factory.django.DjangoModelFactory):
    """A version as the pipeline leaves it in `status`: finished ones have a finish time and step durations.

    accuracy (with n) fills the held-out metrics the pipeline records; reference_accuracy
    (with reference_n) the ones against imported labels. Pass metrics= to set them whole.
    """

    class Meta:
        model = RewardModelVersion

    class Params:
        accuracy = None
        n = 200
        reference_accuracy = None
        reference_n = None

    project = factory.SubFactory(ProjectFactory)
    version = factory.Sequence(lambda n: n + 1)
    status = RewardModelVersion.Status.READY
    trigger = Trigger.THRESHOLD
    # What it read when its data was read: nothing yet while queued.
    judgments_count = factory.LazyAttribute(
        lambda o: 0 if o.status == RewardModelVersion.Status.QUEUED else 50 * o.version
    )
    device = "cpu"
    started_at = factory.LazyFunction(lambda: timezone.now() - timedelta(minutes=5))
    finished_at = factory.LazyAttribute(
        lambda o: timezone.now() - timedelta(minutes=1) if _finished(o.status) else None
    )
    durations = factory.LazyAttribute(
        lambda o: {"read_data": 0.5, "train": 61.2, "evaluate": 2.0} if _finished(o.status) else {}
    )

    @factory.lazy_attribute
    def metrics(self):
        metrics = {}
        if self.accuracy is not None:
            metrics |= {"accuracy": self.accuracy, "log_loss": 0.65, "ece": 0.04, "n": self.n}
        if self.reference_accuracy is not None:
            metrics["reference_accuracy"] = self.reference_accuracy
            if self.reference_n is not None:
                metrics["reference_n"] = self.reference_n
        return metrics


class ResponseRewardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ResponseReward

    version = factory.SubFactory(RewardModelVersionFactory)
    response = factory.SubFactory(ResponseFactory, prompt__project=factory.SelfAttribute("...version.project"))
    reward = 0.0
    head_rewards = None
