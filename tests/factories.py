"""Test data builders. Content hashes are computed like the importer does.

Two ways to give a comparison a judgment:
- JudgmentFactory writes the stored row (A/B terms) directly, for history a
  test needs (exports, progress, the admin), and keeps the comparison's
  judgments_count and status, and the rater's lease, as record_judgment would
  leave them;
- JudgmentInputFactory builds what a rater's client sends (left/right terms),
  for tests of the flow that pass it to labeling.judgments.record_judgment.
"""

import hashlib
import json

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from labeling.comparisons import status_by_count
from labeling.judgments import JudgmentInput
from labeling.models import Assignment, Comparison, Judgment, Project, Prompt, Response


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    guidelines = "Prefer the response that is more **helpful** and honest."
    criteria = factory.LazyFunction(lambda: ["helpfulness", "harmlessness"])
    overlap = 2


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    conversation = factory.Sequence(lambda n: [{"role": "user", "content": f"Question number {n}?"}])
    content_hash = factory.LazyAttribute(lambda o: sha256_json(o.conversation))


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Answer number {n}.")
    source = "model-x"
    content_hash = factory.LazyAttribute(lambda o: hashlib.sha256(o.text.encode()).hexdigest())


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    prompt = factory.SubFactory(PromptFactory)
    project = factory.SelfAttribute("prompt.project")
    response_a = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))
    response_b = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))


class AssignmentFactory(factory.django.DjangoModelFactory):
    """A lease, live for the project's lease duration from issued_at (now)."""

    class Meta:
        model = Assignment

    comparison = factory.SubFactory(ComparisonFactory)
    rater = factory.SubFactory(UserFactory)
    project = factory.SelfAttribute("comparison.project")
    left = "a"
    issued_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda o: o.issued_at + o.comparison.project.lease_duration)


class JudgmentFactory(factory.django.DjangoModelFactory):
    """A stored judgment, in A/B terms (outcome "a", "b", "tie" or "both_bad").

    After the row is written, its comparison's judgments_count and status are
    recounted and the rater's active lease on it is marked submitted: the
    state record_judgment leaves behind, without its checks (raters need not
    be on the project, and the overlap may be exceeded, as in an export's
    history). The comparison instance passed in is updated in place.
    """

    class Meta:
        model = Judgment
        skip_postgeneration_save = True  # the hook saves what it changes

    comparison = factory.SubFactory(ComparisonFactory)
    rater = factory.SubFactory(UserFactory)
    project = factory.SelfAttribute("comparison.project")
    outcome = "a"
    strength = factory.LazyAttribute(lambda o: 2 if o.outcome in ("a", "b") else None)
    time_spent_ms = 4000
    left = "a"

    @factory.post_generation
    def bookkeeping(judgment, create, extracted, **kwargs):
        if not create:
            return
        Assignment.objects.filter(
            comparison=judgment.comparison, rater=judgment.rater, state=Assignment.State.ACTIVE
        ).update(state=Assignment.State.SUBMITTED)
        comparison = judgment.comparison
        comparison.judgments_count = comparison.judgments.filter(repeat_of__isnull=True).count()  # repeats: no votes
        comparison.status = status_by_count(comparison)
        comparison.save(update_fields=["judgments_count", "status"])


class JudgmentInputFactory(factory.Factory):
    """What a client sends for comparison_id (pass it): "left", clearly better."""

    class Meta:
        model = JudgmentInput

    outcome = "left"
    strength = 2
    time_spent_ms = 1000
