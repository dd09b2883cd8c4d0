"""The reward-model API: versions, status, training progress for polling, and scoring with a real checkpoint."""

import math
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rewardmodel import serving
from rewardmodel.activation import activate
from rewardmodel.api import MAX_RESPONSES
from rewardmodel.models import ProjectLoop, RewardModelVersion
from tests.factories import ComparisonFactory, ProjectFactory
from tests.rewardmodel.conftest import make_checkpoint
from tests.rewardmodel.factories import LoopSettingsFactory, ProjectLoopFactory, RewardModelVersionFactory

pytestmark = pytest.mark.django_db

VERSION_KEYS = {
    "id",
    "version",
    "status",
    "status_label",
    "trigger",
    "metrics",
    "judgments_count",
    "device",
    "progress",
    "created_at",
    "started_at",
    "finished_at",
    "error",
    "durations",
}
TECHNICAL_ERROR = "RuntimeError: CUDA out of memory (in train.py:212)"


@pytest.fixture
def api():
    return APIClient()


def url(name, project):
    return reverse(f"rewardmodel_api:{name}", args=[project.pk])


@pytest.fixture(autouse=True)
def empty_caches():
    # Models from another test must not answer here, and the score throttle's
    # counts live in the cache (user ids repeat across tests on SQLite).
    serving.clear_cache()
    cache.clear()
    yield
    serving.clear_cache()


# -- versions --------------------------------------------------------------------


def test_it_lists_versions_with_metrics_newest_first(api, alice, project):
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.61, n=300)
    RewardModelVersionFactory(project=project, version=2, status="failed", error=TECHNICAL_ERROR)
    RewardModelVersionFactory(
        project=project, version=3, status="training", progress_step=7, progress_total=40, progress_loss=0.68
    )
    api.force_authenticate(alice)

    response = api.get(url("versions", project))

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    versions = body["results"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert all(set(v) == VERSION_KEYS for v in versions)
    assert versions[0]["progress"] == {"step": 7, "total": 40, "loss": 0.68}
    assert versions[2]["metrics"] == {"accuracy": 0.61, "log_loss": 0.65, "ece": 0.04, "n": 300}
    assert versions[2]["durations"] == {"read_data": 0.5, "train": 61.2, "evaluate": 2.0}
    # A rater reads the outcome, not the stack.
    assert versions[1]["error"] == "This training did not finish. The previous version keeps serving."


def test_staff_read_the_whole_error(api, admin_user, project):
    RewardModelVersionFactory(project=project, version=1, status="failed", error=TECHNICAL_ERROR)
    api.force_authenticate(admin_user)
    assert api.get(url("versions", project)).json()["results"][0]["error"] == TECHNICAL_ERROR


def test_it_answers_404_outside_the_project_and_401_without_credentials(api, carol, project):
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6)
    for name in ("versions", "status", "training"):
        assert api.get(url(name, project)).status_code == 401
    api.force_authenticate(carol)
    for name in ("versions", "status", "training"):
        assert api.get(url(name, project)).status_code == 404
    assert api.post(url("score", project), {"prompt": "hi", "responses": ["a"]}, format="json").status_code == 404


def test_it_does_not_mix_up_projects(api, alice, project):
    other = ProjectFactory(slug="other")
    other.raters.add(alice)
    RewardModelVersionFactory(project=other, version=1, status="active", accuracy=0.9)
    api.force_authenticate(alice)
    assert api.get(url("versions", project)).json()["count"] == 0


# -- status ------------------------------------------------------------------------


def test_the_status_endpoint_mirrors_the_page(api, admin_user, project):
    RewardModelVersionFactory(project=project, version=1, status="ready", accuracy=0.58)
    RewardModelVersionFactory(project=project, version=2, status="active", accuracy=0.64)
    RewardModelVersionFactory(
        project=project, version=3, status="training", progress_step=30, progress_total=120, progress_loss=0.61
    )
    ProjectLoopFactory(project=project, retrain_pending=True, pending_reason="threshold", enqueue_error="boom")
    ComparisonFactory(prompt__project=project, priority=0.7, selected_by="uncertainty")
    api.force_authenticate(admin_user)

    body = api.get(url("status", project)).json()

    assert set(body) == {
        "project",
        "staff",
        "active",
        "training",
        "busy",
        "versions",
        "queue",
        "schedule",
        "acquisition",
    }
    assert body["project"] == {"id": project.pk, "slug": "demo", "name": "Demo"}
    assert body["staff"] is True and body["busy"] is True
    assert body["active"]["version"] == 2 and body["active"]["metrics"]["accuracy"] == 0.64
    assert body["training"]["version"]["version"] == 3 and body["training"]["percent"] == 25
    assert [v["version"] for v in body["versions"]] == [3, 2, 1]
    assert body["queue"]["retrain_pending"] is True and body["queue"]["waiting_for_broker"] is True
    assert body["queue"]["enqueue_error"] == "boom"
    assert body["queue"]["retrain_every"] == 50  # no settings row: the defaults
    assert {t["task"] for t in body["schedule"]} == {
        "rewardmodel.tasks.reconcile",
        "rewardmodel.tasks.retrain_projects_with_new_judgments",
    }
    assert all(t["next_run_at"] for t in body["schedule"])
    acquisition = body["acquisition"]
    assert acquisition["strategy"] == "doptimal" and acquisition["open_comparisons"] == 1
    assert acquisition["top"][0]["selected_by"] == "uncertainty" and acquisition["top"][0]["priority"] == 0.7


def test_the_status_endpoint_reports_the_projects_loop_settings(api, alice, project):
    LoopSettingsFactory(project=project, retrain_every=12, acquisition="ensemble", exploration_share=0.2)
    api.force_authenticate(alice)

    body = api.get(url("status", project)).json()

    assert body["queue"]["retrain_every"] == 12 and body["queue"]["judgments_to_next_retrain"] == 12
    assert body["acquisition"]["strategy"] == "ensemble" and body["acquisition"]["exploration_share"] == 0.2
    assert body["acquisition"]["strategy_label"].startswith("Ensemble disagreement")


def test_the_status_endpoint_gives_raters_the_read_only_view(api, alice, project):
    RewardModelVersionFactory(project=project, version=1, status="failed", error=TECHNICAL_ERROR)
    ProjectLoopFactory(project=project, retrain_pending=True, enqueue_error="OperationalError: 10.0.0.7")
    ComparisonFactory(prompt__project=project, priority=0.7, selected_by="uncertainty")
    api.force_authenticate(alice)

    body = api.get(url("status", project)).json()

    assert body["staff"] is False
    assert body["queue"]["enqueue_error"] == "" and body["queue"]["retrain_pending"] is True
    assert "CUDA" not in str(body)
    assert body["acquisition"]["top"] == [] and body["acquisition"]["open_comparisons"] is None


# -- polling -----------------------------------------------------------------------


def test_the_training_endpoint_follows_the_progress(api, admin_user, project):
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6)
    ProjectLoopFactory(project=project, retrain_pending=True, pending_reason="manual")
    api.force_authenticate(admin_user)

    waiting = api.get(url("training", project)).json()
    assert waiting["busy"] is True and waiting["training"] is None and waiting["latest"]["version"] == 1

    # A worker picks it up: the pipeline creates the version and reports steps.
    ProjectLoop.objects.filter(project=project).update(retrain_pending=False)
    version = RewardModelVersionFactory(project=project, version=2, status="queued", started_at=None)
    queued = api.get(url("training", project)).json()
    assert queued["training"]["version"]["status"] == "queued" and queued["training"]["percent"] is None

    RewardModelVersion.objects.filter(pk=version.pk).update(
        status="training", started_at=timezone.now() - timedelta(seconds=30), progress_total=200
    )
    for step, loss in [(10, 0.69), (120, 0.55)]:
        RewardModelVersion.objects.filter(pk=version.pk).update(progress_step=step, progress_loss=loss)
        body = api.get(url("training", project)).json()
        assert body["training"]["version"]["progress"] == {"step": step, "total": 200, "loss": loss}
        assert body["training"]["percent"] == round(100 * step / 200)
        assert body["training"]["eta_seconds"] > 0 and body["training"]["eta_text"].endswith("left")
        assert body["busy"] is True

    RewardModelVersion.objects.filter(pk=version.pk).update(
        status="ready", progress_step=200, finished_at=timezone.now()
    )
    done = api.get(url("training", project)).json()
    assert done == {**done, "busy": False, "training": None, "retrain_pending": False}
    assert done["latest"]["status"] == "ready"


def test_polling_takes_few_queries(api, admin_user, project, django_assert_max_num_queries):
    for number in range(1, 30):
        RewardModelVersionFactory(project=project, version=number, status="ready", accuracy=0.6)
    api.force_authenticate(admin_user)
    # project lookup, newest version, loop row
    with django_assert_max_num_queries(3):
        assert api.get(url("training", project)).status_code == 200


# -- scoring -------------------------------------------------------------------------


@pytest.fixture
def active_model(project, tmp_path):
    path = make_checkpoint(tmp_path, project, 1, seed=1)
    return RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.7, artifact_path=str(path))


def test_scoring_without_an_active_version_is_a_conflict(api, alice, project):
    RewardModelVersionFactory(project=project, version=1, status="ready", accuracy=0.6)
    api.force_authenticate(alice)
    response = api.post(url("score", project), {"prompt": "Hello?", "responses": ["Hi."]}, format="json")
    assert response.status_code == 409
    assert "no active reward model" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"prompt": "Hi?"}, "responses"),
        ({"prompt": "Hi?", "responses": []}, "responses"),
        ({"prompt": "Hi?", "responses": "not a list"}, "responses"),
        ({"prompt": "Hi?", "responses": ["x"] * (MAX_RESPONSES + 1)}, "responses"),
        ({"prompt": "Hi?", "responses": ["x" * 16_001]}, "responses"),
        ({"prompt": "Hi?", "responses": [3]}, "responses"),
        ({"responses": ["a"]}, "conversation"),
        ({"prompt": "Hi?", "conversation": [{"role": "user", "content": "Hi?"}], "responses": ["a"]}, "conversation"),
        ({"conversation": [], "responses": ["a"]}, "conversation"),
        ({"conversation": [{"role": "robot", "content": "Hi?"}], "responses": ["a"]}, "conversation"),
        ({"conversation": [{"role": "user"}], "responses": ["a"]}, "conversation"),
        ({"conversation": [{"role": "user", "content": "x" * 16_000}] * 3, "responses": ["a"]}, "conversation"),
        ({"prompt": "x" * 16_001, "responses": ["a"]}, "prompt"),
    ],
)
def test_scoring_rejects_bad_payloads_field_by_field(api, alice, project, active_model, payload, field):
    api.force_authenticate(alice)
    response = api.post(url("score", project), payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert serving.cached_version_ids() == []  # rejected before any model was loaded


def test_scoring_accepts_only_json(api, alice, project, active_model):
    api.force_authenticate(alice)
    response = api.post(url("score", project), {"prompt": "Hi?", "responses": ["a"]})  # multipart
    assert response.status_code == 415


def test_scoring_returns_one_finite_reward_per_response_from_the_active_version(api, alice, project, active_model):
    api.force_authenticate(alice)  # a rater of the project may score
    responses = ["Sure, here is how.", "No.", "Sure, here is how.", ""]

    first = api.post(url("score", project), {"prompt": "How do I help?", "responses": responses}, format="json")

    assert first.status_code == 200, first.content
    body = first.json()
    assert body["version"] == 1
    rewards = body["rewards"]
    assert len(rewards) == 4 and all(isinstance(r, float) and math.isfinite(r) for r in rewards)
    assert rewards[0] == rewards[2]  # identical inputs, identical rewards
    assert rewards[0] != rewards[1]
    # The same question as a conversation, asked again: the same numbers, from the cached model.
    again = api.post(
        url("score", project),
        {"conversation": [{"role": "user", "content": "How do I help?"}], "responses": responses},
        format="json",
    )
    assert again.json() == body
    assert serving.cached_version_ids() == [active_model.pk]


def test_scoring_works_with_a_token(api, project, active_model):
    bob_token = Token.objects.create(user=project.raters.get(username="bob"))
    api.credentials(HTTP_AUTHORIZATION=f"Token {bob_token.key}")
    response = api.post(url("score", project), {"prompt": "Hi?", "responses": ["Hello."]}, format="json")
    assert response.status_code == 200 and len(response.json()["rewards"]) == 1


def test_scoring_follows_the_activated_version(api, admin_user, project, active_model, tmp_path):
    second = RewardModelVersionFactory(
        project=project,
        version=2,
        status="ready",
        accuracy=0.72,
        artifact_path=str(make_checkpoint(tmp_path, project, 2, seed=2)),
    )
    api.force_authenticate(admin_user)
    payload = {"prompt": "Which is better?", "responses": ["This one.", "That one."]}
    before = api.post(url("score", project), payload, format="json").json()

    activate(second)
    after = api.post(url("score", project), payload, format="json").json()

    assert before["version"] == 1 and after["version"] == 2
    assert before["rewards"] != after["rewards"]
    assert serving.cached_version_ids() == [active_model.pk, second.pk]


def test_a_tampered_checkpoint_is_refused_with_503(api, admin_user, project, active_model):
    weights = Path(active_model.artifact_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    api.force_authenticate(admin_user)

    response = api.post(url("score", project), {"prompt": "Hi?", "responses": ["a"]}, format="json")

    assert response.status_code == 503
    assert "could not be loaded" in response.json()["detail"]
    assert serving.cached_version_ids() == []


def test_scoring_is_throttled_per_user(api, alice, project, throttle_clock):
    api.force_authenticate(alice)
    payload = {"prompt": "Hi?", "responses": ["a"]}
    codes = [api.post(url("score", project), payload, format="json").status_code for _ in range(31)]
    assert codes[:30] == [409] * 30  # no active model, but every call counts
    assert codes[30] == 429


def test_the_score_throttles_429_is_declared_in_the_schema(api, alice, project):
    # Found by tests/test_fuzz.py: the 31st call in a minute got a 429 the schema did not list.
    api.force_authenticate(alice)
    payload = {"prompt": "Hi?", "responses": ["a"]}
    codes = {api.post(url("score", project), payload, format="json").status_code for _ in range(31)}

    declared = SchemaGenerator().get_schema(request=None, public=True)["paths"]["/api/projects/{id}/score/"]["post"]
    assert codes == {409, 429}
    assert {str(code) for code in codes} <= set(declared["responses"])
