import base64
import json
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from config.broker import filesystem_transport_options
from rewardmodel.core.checkpoint import save_checkpoint
from rewardmodel.core.config import TrainConfig
from rewardmodel.core.model import load_backbone
from tests.brokers import use_broker
from tests.factories import ComparisonFactory, JudgmentFactory, PromptFactory, ResponseFactory, UserFactory
from tests.rewardmodel.core.conftest import WORDS, build_tiny_backbone
from tests.rewardmodel.factories import LoopSettingsFactory

CLOSED_PORT = "redis://127.0.0.1:1/0"


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


@pytest.fixture
def loop_settings(project):
    """The project's loop settings row (the defaults until a test changes them)."""
    return LoopSettingsFactory(project=project)


# -- brokers -------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    """The embedded filesystem broker in this test's own folder: published messages land in the returned folder."""
    folder = tmp_path / "broker"
    with use_broker("filesystem://", filesystem_transport_options(folder)):
        yield folder / "queue"


@pytest.fixture
def broker_down():
    """Redis on a port nobody listens on, with the web side's fail-fast options."""
    with use_broker(CLOSED_PORT, django_settings.REDIS_BROKER_TRANSPORT_OPTIONS):
        yield


def published(folder) -> list[tuple[str, list, dict]]:
    """(task name, args, kwargs) of every message the filesystem broker holds."""
    messages = []
    for path in sorted(folder.iterdir()):
        message = json.loads(path.read_text())
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args, kwargs))
    return messages


# -- data ------------------------------------------------------------------------


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
                JudgmentFactory(comparison=comparison, rater=rater, outcome=winner, strength=2)
    return comparisons


def make_checkpoint(root: Path, project, number: int, *, seed: int, num_heads: int = 1) -> Path:
    """A tiny BERT reward model, saved by core's save_checkpoint exactly as the pipeline saves one."""
    backbone = build_tiny_backbone(root / f"backbone-{seed}", seed=seed)
    model, tokenizer = load_backbone(backbone, num_heads=num_heads)
    config = TrainConfig(backbone=backbone, max_length=48, device="cpu", eval_batch_size=4, num_heads=num_heads)
    return save_checkpoint(root / "models", project.slug, number, model, tokenizer, config, {"accuracy": 0.7}, {})
