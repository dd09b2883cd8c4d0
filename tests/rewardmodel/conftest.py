import pytest

from labeling.models import Comparison, Judgment
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory, UserFactory
from tests.rewardmodel.core.conftest import WORDS, build_tiny_backbone


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> str:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone"))


@pytest.fixture
def tiny_training(settings, tiny_backbone_dir, tmp_path):
    """Point the pipeline at a tiny BERT and a throwaway model root."""
    settings.REWARD_MODEL_BACKBONE = tiny_backbone_dir
    settings.REWARD_MODEL_TRAINING = {
        "max_length": 48,
        "batch_size": 8,
        "epochs": 3,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "device": "cpu",
    }
    settings.MODEL_ROOT = tmp_path / "models"
    return settings


def marker_project(project, *, prompts: int = 30, judge=True):
    """Prompts with a 'marker' response (which raters prefer) and a plain one,
    plus a third response so there are unlabelled candidate pairs."""
    raters = [UserFactory(username=f"rater{i}") for i in range(2)]
    project.raters.add(*raters)
    filler = WORDS[8:-1]
    comparisons = []
    for i in range(prompts):
        conversation = [{"role": "user", "content": f"question {filler[i % 20]} {i}"}]
        prompt = PromptFactory(project=project, conversation=conversation)
        marked = ResponseFactory(prompt=prompt, text=f"{filler[i % 17]} marker {filler[(i + 3) % 19]} {i}")
        plain = ResponseFactory(prompt=prompt, text=f"{filler[(i + 5) % 17]} {filler[(i + 7) % 19]} {i}")
        ResponseFactory(prompt=prompt, text=f"{filler[(i + 2) % 13]} maybe {i}")
        a, b = (marked, plain) if i % 2 else (plain, marked)
        comparisons.append(ComparisonFactory(prompt=prompt, project=project, response_a=a, response_b=b))
    if judge:
        for comparison in comparisons:
            winner = "a" if "marker" in comparison.response_a.text else "b"
            for rater in raters:
                Judgment.objects.create(
                    comparison=comparison,
                    rater=rater,
                    project=project,
                    outcome=winner,
                    strength=2,
                    time_spent_ms=1000,
                    left="a",
                )
            Comparison.objects.filter(pk=comparison.pk).update(
                judgments_count=len(raters), status=Comparison.Status.COMPLETE if project.overlap <= 2 else "open"
            )
    return comparisons
