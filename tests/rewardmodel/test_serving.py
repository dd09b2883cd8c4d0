"""rewardmodel.serving: the active version's model, loaded once per process, and the errors a caller can meet."""

import math
import threading
from pathlib import Path

import pytest

from rewardmodel import serving
from rewardmodel.activation import activate
from rewardmodel.core.scoring import score
from tests.rewardmodel.conftest import make_checkpoint
from tests.rewardmodel.factories import RewardModelVersionFactory

pytestmark = pytest.mark.django_db

CONVERSATION = [{"role": "user", "content": "How do I help?"}]


@pytest.fixture(autouse=True)
def empty_cache():
    serving.clear_cache()
    yield
    serving.clear_cache()


@pytest.fixture
def loads(monkeypatch):
    """The checkpoints serving loads, in order."""
    seen = []
    real_load = serving._load

    def counting(version):
        seen.append(version.version)
        return real_load(version)

    monkeypatch.setattr(serving, "_load", counting)
    return seen


def version_with_checkpoint(project, tmp_path, number, *, status="ready", seed=None, num_heads=1):
    path = make_checkpoint(tmp_path, project, number, seed=number if seed is None else seed, num_heads=num_heads)
    return RewardModelVersionFactory(project=project, version=number, status=status, artifact_path=str(path))


def test_it_scores_with_the_active_version(project, tmp_path):
    version_with_checkpoint(project, tmp_path, 1, status="active")

    number, rewards = serving.score_responses(project=project, conversation=CONVERSATION, responses=["Sure.", "No."])

    assert number == 1
    assert len(rewards) == 2 and all(isinstance(r, float) and math.isfinite(r) for r in rewards)


def test_it_loads_a_model_once_and_serves_it_from_memory(project, tmp_path, loads):
    active = version_with_checkpoint(project, tmp_path, 1, status="active")

    first = serving.score_responses(project=project, conversation=CONVERSATION, responses=["Sure."])
    again = serving.score_responses(project=project, conversation=CONVERSATION, responses=["Sure."])

    assert first == again
    assert loads == [1]
    assert serving.cached_version_ids() == [active.pk]


def test_it_follows_activation_and_keeps_the_two_newest_models(project, tmp_path, loads):
    versions = [version_with_checkpoint(project, tmp_path, 1, status="active")]
    versions += [version_with_checkpoint(project, tmp_path, n) for n in (2, 3)]

    for version in versions:
        activate(version)
        served, _ = serving.score_responses(project=project, conversation=CONVERSATION, responses=["x"])
        assert served == version.version

    assert loads == [1, 2, 3]
    assert serving.cached_version_ids() == [versions[1].pk, versions[2].pk]  # the oldest aged out


def test_it_reloads_a_version_whose_checkpoint_moved(project, tmp_path, loads):
    version = version_with_checkpoint(project, tmp_path, 1, status="active")
    serving.model_for(version)
    moved = Path(version.artifact_path).rename(tmp_path / "moved")
    version.artifact_path = str(moved)
    version.save()

    serving.model_for(version)

    assert loads == [1, 1]


def test_racing_requests_for_a_fresh_model_load_it_once(project, tmp_path, loads):
    version = version_with_checkpoint(project, tmp_path, 1, status="active")
    barrier = threading.Barrier(4)
    models = []

    def request():
        barrier.wait()
        models.append(serving.model_for(version))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert loads == [1] and len({id(m) for m in models}) == 1


def test_an_ensemble_model_serves_the_mean_of_its_heads(project, tmp_path):
    version = version_with_checkpoint(project, tmp_path, 1, status="active", num_heads=3)
    loaded = serving.model_for(version)
    heads = score(loaded.model, loaded.tokenizer, [(CONVERSATION, "Sure.")], loaded.config)[0]

    _, rewards = serving.score_responses(project=project, conversation=CONVERSATION, responses=["Sure."])

    assert len(heads) == 3
    assert rewards == [pytest.approx(sum(heads) / 3)]


def test_it_loads_on_the_serving_device(project, tmp_path, settings):
    settings.REWARD_MODEL_SERVING_DEVICE = "cpu"
    version = version_with_checkpoint(project, tmp_path, 1, status="active")
    assert next(serving.model_for(version).model.parameters()).device.type == "cpu"


# -- errors ------------------------------------------------------------------------------


def test_a_project_without_an_active_version_is_told_what_to_do(project):
    RewardModelVersionFactory(project=project, version=1, status="ready")
    with pytest.raises(serving.NoActiveVersion, match="no active reward model yet"):
        serving.score_responses(project=project, conversation=CONVERSATION, responses=["x"])


def test_a_version_without_a_checkpoint_is_unavailable(project):
    version = RewardModelVersionFactory(project=project, version=1, status="active", artifact_path="")
    with pytest.raises(serving.ModelUnavailable, match="no checkpoint on record"):
        serving.model_for(version)
    assert serving.cached_version_ids() == []


@pytest.mark.parametrize("damage", ["tamper", "delete", "pickle"])
def test_a_damaged_checkpoint_is_refused_and_never_cached(project, tmp_path, damage):
    version = version_with_checkpoint(project, tmp_path, 1, status="active")
    folder = Path(version.artifact_path)
    if damage == "tamper":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    elif damage == "delete":
        (folder / "model.safetensors").unlink()
    else:
        (folder / "extra.bin").write_bytes(b"not a pickle, but named like one")

    with pytest.raises(serving.ModelUnavailable, match="could not be loaded") as refused:
        serving.model_for(version)

    assert "sha256" not in str(refused.value) and str(folder) not in str(refused.value)  # details go to the log
    assert serving.cached_version_ids() == []
