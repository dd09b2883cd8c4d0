"""The API's doors: who gets in (login, token, CSRF), what stays shut (admin),
and the published contract (schema, docs). Projects/next live in
test_api_projects.py, judgments in test_api_judgments.py."""

import json
import re

import pytest
from django.core.cache import cache
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import Assignment, Judgment
from tests.conftest import PASSWORD
from tests.factories import AssignmentFactory, ComparisonFactory

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/api/projects/"),
    ("get", "/api/projects/{project}/"),
    ("get", "/api/projects/{project}/next/"),
    ("post", "/api/projects/{project}/skip/"),
    ("get", "/api/judgments/"),
    ("post", "/api/judgments/"),
    ("get", "/api/judgments/1/"),
]


@pytest.fixture(autouse=True)
def fresh_throttle_counts():
    # Throttle counts live in the cache, which outlives a test.
    cache.clear()
    yield
    cache.clear()


def a_judgment(comparison_id, **fields):
    return {"comparison": comparison_id, "outcome": "left", "strength": 2, "time_spent_ms": 900} | fields


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_it_requires_a_login_on_every_endpoint(method, url, project):
    comparison = ComparisonFactory(prompt__project=project)
    response = getattr(APIClient(), method)(url.format(project=project.pk), a_judgment(comparison.pk), format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert not Assignment.objects.exists()
    assert not Judgment.objects.exists()


def test_it_issues_a_token_for_a_username_and_password(project, alice):
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=alice).key}

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    listed = client.get("/api/projects/")
    assert listed.status_code == 200
    assert [p["slug"] for p in listed.json()["results"]] == ["demo"]


def test_it_refuses_a_token_for_a_wrong_password(alice):
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "guess"}, format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert not Token.objects.exists()


def test_it_rejects_an_unknown_token(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.get("/api/projects/").status_code == 401


def test_it_throttles_password_guesses_per_address(alice, throttle_clock):
    # A different username each time: one address spraying guesses over many
    # accounts, which the per-(username, address) lockout alone would allow.
    client = APIClient()
    answers = [
        client.post("/api/auth/token/", {"username": f"user{i}", "password": f"guess{i}"}, format="json").status_code
        for i in range(31)
    ]
    assert answers[:30] == [400] * 30
    assert answers[30] == 429
    # Even the right password waits now.
    assert client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}).status_code == 429


def test_the_per_user_rate_is_counted_per_window_and_says_when_to_come_back(alice, monkeypatch, throttle_clock):
    # The suite turns the global throttle off (config/settings_test.py); here it is on, at 3 a minute.
    from labeling.api.throttling import UserRateThrottle
    from labeling.api.views import ProjectListView

    monkeypatch.setattr(ProjectListView, "throttle_classes", [UserRateThrottle])
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/minute"})
    client = APIClient()
    client.force_authenticate(alice)
    throttle_clock.now = 60 * 1000 + 15.0  # 15 s into a minute
    codes = [client.get("/api/projects/").status_code for _ in range(4)]
    refused = client.get("/api/projects/")
    throttle_clock.now += 45.0  # the next minute: a new window
    again = client.get("/api/projects/")

    assert codes == [200, 200, 200, 429]
    assert refused.status_code == 429 and refused["Retry-After"] == "45"
    assert again.status_code == 200


def test_token_requests_need_no_csrf_token(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    AssignmentFactory(comparison=comparison, rater=alice)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    assert client.post("/api/judgments/", a_judgment(comparison.pk), format="json").status_code == 201
    assert Judgment.objects.filter(rater=alice, comparison=comparison).exists()


def test_session_requests_must_carry_the_csrf_token(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    AssignmentFactory(comparison=comparison, rater=alice)
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)

    refused = client.post("/api/judgments/", a_judgment(comparison.pk), format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not Judgment.objects.exists()

    secret = "k" * 32
    client.cookies["csrftoken"] = secret
    accepted = client.post("/api/judgments/", a_judgment(comparison.pk), format="json", HTTP_X_CSRFTOKEN=secret)
    assert accepted.status_code == 201
    assert Judgment.objects.filter(rater=alice, comparison=comparison).count() == 1


def test_a_rater_cannot_reach_the_admin(alice):
    client = APIClient()
    client.force_login(alice)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_schema_generates_without_warnings_and_lists_every_endpoint(tmp_path):
    path = tmp_path / "schema.json"
    # --fail-on-warn turns any drf-spectacular warning (an unannotated view,
    # an unresolvable field) into a failure.
    call_command("spectacular", "--fail-on-warn", "--validate", "--format", "openapi-json", "--file", str(path))
    schema = json.loads(path.read_text())
    assert set(schema["paths"]) == {
        "/api/auth/token/",
        "/api/auth/tokens/",
        "/api/auth/tokens/{prefix}/",
        "/api/projects/",
        "/api/projects/{id}/",
        "/api/projects/{id}/next/",
        "/api/projects/{id}/skip/",
        "/api/judgments/",
        "/api/judgments/{id}/",
        "/api/comparisons/{id}/gold/",  # staff only
        # Rater quality (labeling/quality/api.py).
        "/api/projects/{id}/raters/",
        "/api/projects/{id}/leaderboard/",
        "/api/projects/{id}/raters/{username}/pause/",
        "/api/projects/{id}/raters/{username}/resume/",
        "/api/projects/{id}/raters/{username}/exclude/",
        "/api/projects/{id}/raters/{username}/include/",
        # The reward model's (rewardmodel/api.py).
        "/api/projects/{id}/reward-models/",
        "/api/projects/{id}/status/",
        "/api/projects/{id}/training/",
        "/api/projects/{id}/score/",
    }
    post = schema["paths"]["/api/judgments/"]["post"]
    assert set(post["responses"]) == {"200", "201", "400", "404", "409"}
    assert set(schema["paths"]["/api/projects/{id}/next/"]["get"]["responses"]) == {"200", "204", "404"}
    task = schema["components"]["schemas"]["Task"]["properties"]
    assert set(task) == {"comparison", "lease_expires_at", "conversation", "left", "right", "criteria"}


def test_the_schema_is_served(alice):
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert "/api/judgments/" in response.json()["paths"]


def test_the_docs_page_loads_only_scripts_from_this_server():
    client = APIClient()
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    scripts = re.findall(r"<script([^>]*)>", html)
    sources = [re.search(r'src="([^"]+)"', attrs).group(1) for attrs in scripts]
    # No inline script: the CSP (script-src 'self') would block it.
    assert len(sources) == len(scripts) == 3
    assert all(src.startswith(("/static/", "/api/docs/")) for src in sources)
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "unsafe-inline" not in response["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    for src in sources:
        asset = client.get(src)
        assert asset.status_code == 200, src
        assert "javascript" in asset["Content-Type"], src


# -- what tests/test_fuzz.py found: answers the schema did not declare ------------


def openapi_schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def allowed_values(schema: dict, field: dict) -> set:
    """The enum values a field's schema allows, through $ref, oneOf and allOf."""
    if "$ref" in field:
        field = schema["components"]["schemas"][field["$ref"].rsplit("/", 1)[1]]
    values = set(field.get("enum", []))
    for part in field.get("oneOf", []) + field.get("allOf", []):
        values |= allowed_values(schema, part)
    return values


@pytest.mark.parametrize("path,page", [("/api/projects/", 2), ("/api/judgments/", 0)])
def test_a_page_that_does_not_exist_is_a_404_the_schema_declares(path, page, project, alice):
    client = APIClient()
    client.force_authenticate(alice)

    response = client.get(path, {"page": page})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid page."}
    assert "404" in openapi_schema()["paths"][path]["get"]["responses"]


def test_a_gold_comparison_without_a_reference_label_is_answered_as_the_schema_says(project, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    client = APIClient()
    client.force_authenticate(admin_user)

    response = client.put(f"/api/comparisons/{comparison.pk}/gold/", {"gold_label": "a"}, format="json")

    assert response.status_code == 200
    assert response.json()["reference_label"] == ""
    schema = openapi_schema()
    fields = schema["components"]["schemas"]["ComparisonGold"]["properties"]
    assert allowed_values(schema, fields["reference_label"]) == {"a", "b", "tie", ""}
    assert allowed_values(schema, fields["gold_label"]) == {"a", "b", ""}


@pytest.mark.parametrize("path", ["/api/projects/abc/", "/api/projects/-1/next/", "/api/judgments/1.5/"])
def test_an_id_that_is_no_integer_is_the_json_404_the_schema_declares(path, alice):
    # The int converters turned these away before any view ran, and Django answered with its HTML page.
    client = APIClient()
    client.force_authenticate(alice)

    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_pages_outside_the_api_keep_the_html_404(alice):
    client = APIClient()
    client.force_login(alice)

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
