"""What an attacker or a fault can and cannot do to the site as a whole:
production settings that pass Django's deploy checks, the headers every
answer carries, sessions, mass assignment, nothing announced for a judgment
that was rolled back, payloads that cannot make a 500, and one place that
may mark HTML safe.

The suite runs on PostgreSQL; SQLite (the embedded default) overflows on
integers PostgreSQL takes in stride, so the payload tests also run once on
SQLite, in a pytest of their own (test_the_payload_tests_pass_on_sqlite_too).
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter, PathConverter, SlugConverter
from rest_framework.test import APIClient

from labeling import judgments as judgments_module
from labeling.api.serializers import JudgmentFilterSerializer, JudgmentInputSerializer, SkipInputSerializer
from labeling.forms import JudgmentForm, SkipForm
from labeling.models import MAX_ID, Assignment, Comparison, Judgment
from labeling.signals import judgment_recorded
from rewardmodel import tasks
from tests.conftest import PASSWORD
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentInputFactory, ProjectFactory

ROOT = Path(__file__).resolve().parent.parent
BIG = "99999999999999999999"  # > 2**63: no row has it, and SQLite cannot even bind it
HUGE = 2**70

PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "a-production-secret-for-the-test-that-is-long-enough-0123456789abcdefghij",
    "ALLOWED_HOSTS": "labeling.example.org,testserver",
    "DATABASE_URL": "sqlite://:memory:",
}


def run_python(code: str, env: dict, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "VAR_DIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- production settings ---------------------------------------------------------------------------


def test_production_settings_pass_the_deploy_checks(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VAR_DIR": str(tmp_path), **PRODUCTION},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


PRODUCTION_REQUESTS = """
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
get_user_model().objects.create_user("alice", password=PASSWORD)
# Production serves hashed static names from collectstatic's manifest; the
# test has none, and static file names are not what it is about.
override_settings(STORAGES={
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}).enable()
client = Client()
page = client.get("/login/", secure=True)
signed_in = client.post("/login/", {"username": "alice", "password": PASSWORD}, secure=True)
api = client.get("/api/projects/", secure=True)
plain = Client().get("/login/")
cookies = {
    name: {flag: str(morsel[flag]) for flag in ("secure", "httponly", "samesite")}
    for name, morsel in signed_in.cookies.items()
}
cookies["csrftoken"] = {flag: str(page.cookies["csrftoken"][flag]) for flag in ("secure", "httponly", "samesite")}
print(json.dumps({
    "page": dict(page.headers), "api": dict(api.headers), "api_status": api.status_code,
    "signed_in": signed_in.status_code, "cookies": cookies,
    "plain_http": [plain.status_code, plain.headers.get("Location", "")],
}))
"""


@pytest.fixture(scope="module")
def production_answers(tmp_path_factory):
    """A page, a sign-in and an API answer from a process running the production settings."""
    code = f"PASSWORD = {PASSWORD!r}\n{PRODUCTION_REQUESTS}"
    result = run_python(code, PRODUCTION, tmp_path_factory.mktemp("production"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_answers_carry_hsts_and_redirect_plain_http(production_answers):
    for answer in ("page", "api"):
        hsts = production_answers[answer]["Strict-Transport-Security"]
        assert "max-age=31536000" in hsts and "includeSubDomains" in hsts, answer
    assert production_answers["api_status"] == 200
    assert production_answers["plain_http"] == [301, "https://testserver/login/"]


def test_production_cookies_are_secure_httponly_and_samesite(production_answers):
    assert production_answers["signed_in"] == 302
    session = production_answers["cookies"]["sessionid"]
    assert session == {"secure": "True", "httponly": "True", "samesite": "Lax"}
    # The label page's script reads the CSRF cookie to send it back: secure and same-site, not HttpOnly.
    assert production_answers["cookies"]["csrftoken"] == {"secure": "True", "httponly": "", "samesite": "Lax"}


def test_production_answers_carry_the_same_protective_headers(production_answers):
    for answer in ("page", "api"):
        assert_protective_headers(production_answers[answer])


def assert_protective_headers(headers):
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_a_page_and_an_api_answer_carry_csp_frame_nosniff_and_referrer_headers(client, alice):
    assert_protective_headers(client.get("/login/").headers)
    api = APIClient()
    api.force_login(alice)
    response = api.get("/api/projects/")
    assert response.status_code == 200
    assert_protective_headers(response.headers)


# -- sessions --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_signing_in_gives_a_new_session_key(client, alice):
    session = client.session
    session["seen_the_login_page"] = True
    session.save()
    before = session.session_key
    client.cookies["sessionid"] = before

    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302

    assert client.cookies["sessionid"].value != before
    assert client.session["_auth_user_id"] == str(alice.pk)


@pytest.mark.django_db
def test_a_session_is_dead_after_logging_out(client, alice):
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    key = client.cookies["sessionid"].value
    assert client.get("/").status_code == 200

    client.post("/logout/")
    client.cookies["sessionid"] = key  # the old cookie, replayed

    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_a_session_is_dead_once_the_user_is_deactivated(client, alice):
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert client.get("/").status_code == 200

    alice.is_active = False
    alice.save()

    assert client.get("/").status_code == 302
    api = APIClient()
    api.cookies = client.cookies
    assert api.get("/api/projects/").status_code in (401, 403)


# -- mass assignment -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_extra_fields_in_a_judgment_are_ignored(project, alice, bob):
    comparison = ComparisonFactory(prompt__project=project)
    elsewhere = ProjectFactory()
    client = APIClient()
    client.force_login(alice)
    task = client.get(f"/api/projects/{project.pk}/next/").json()
    shown_left = Assignment.objects.get(rater=alice).left

    response = client.post(
        "/api/judgments/",
        {
            "comparison": task["comparison"],
            "outcome": "left",
            "strength": 2,
            "time_spent_ms": 900,
            # None of these is the client's to say.
            "id": 424242,
            "rater": bob.pk,
            "project": elsewhere.pk,
            "created_at": "2001-01-01T00:00:00Z",
            "left": "b" if shown_left == "a" else "a",
            "shown_left": "b" if shown_left == "a" else "a",
            "outcome_stored": "b",
            "repeat_of": 1,
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    judgment = Judgment.objects.get()
    assert judgment.pk != 424242
    assert (judgment.rater, judgment.project, judgment.comparison) == (alice, project, comparison)
    assert judgment.left == shown_left and judgment.outcome == shown_left  # "left" as the rater saw it
    assert judgment.created_at.year > 2001 and judgment.repeat_of is None


# -- nothing announced for a judgment that did not happen ----------------------------------------


@pytest.mark.django_db
def test_a_judgment_whose_transaction_rolls_back_announces_and_publishes_nothing(
    project, alice, monkeypatch, django_capture_on_commit_callbacks
):
    comparison = ComparisonFactory(prompt__project=project)
    AssignmentFactory(comparison=comparison, rater=alice)
    heard, handed = [], []
    monkeypatch.setattr(tasks, "publish_retrain_soon", lambda **kwargs: handed.append(kwargs) or "")
    monkeypatch.setattr(tasks, "publish_retrain", lambda **kwargs: handed.append(kwargs) or "")

    def listener(**kwargs):
        heard.append(kwargs)

    judgment_recorded.connect(listener, weak=False)
    original_save = Comparison.save

    def failing_save(self, *args, **kwargs):
        raise RuntimeError("the database went away mid-transaction")

    try:
        judgment = JudgmentInputFactory(comparison_id=comparison.pk)
        monkeypatch.setattr(Comparison, "save", failing_save)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with pytest.raises(RuntimeError):
                judgments_module.record_judgment(rater=alice, judgment=judgment)
        assert callbacks == [] and heard == [] and handed == []
        assert not Judgment.objects.exists()

        # The same judgment, committed: announced once (the test can fail).
        monkeypatch.setattr(Comparison, "save", original_save)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            judgments_module.record_judgment(rater=alice, judgment=judgment)
        assert len(callbacks) == 1 and len(heard) == 1
    finally:
        judgment_recorded.disconnect(listener)


# -- payloads that must not make a 500 --------------------------------------------------------------


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_deeply_nested_json_is_refused_with_400_before_anyone_parses_it(project, alice, admin_user):
    body = "[" * 50_000
    anonymous = APIClient().post("/api/auth/token/", body, content_type="application/json")
    rater = api_as(alice).post("/api/judgments/", body, content_type="application/json")
    staff = api_as(admin_user).put(f"/api/comparisons/{BIG}/gold/", body, content_type="application/json")
    a_page = api_as(alice).post("/login/", body, content_type="application/json")

    for response in (anonymous, rater, staff, a_page):
        assert response.status_code == 400, response.content
        assert response.json() == {"detail": "JSON nested deeper than 32 levels (or its brackets do not pair up)."}
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_json_up_to_32_levels_deep_reaches_the_view(project, alice):
    client = api_as(alice)
    at_limit = {"comparison": 1, "outcome": "left", "criteria": json.loads("[" * 31 + "]" * 31)}
    over = {"comparison": 1, "outcome": "left", "criteria": json.loads("[" * 32 + "]" * 32)}

    reached = client.post("/api/judgments/", at_limit, format="json")
    refused = client.post("/api/judgments/", over, format="json")

    assert reached.status_code == 400 and "criteria" in reached.json()  # the serializer's own answer
    assert refused.status_code == 400 and "nested deeper" in refused.json()["detail"]


@pytest.mark.django_db
def test_brackets_inside_strings_do_not_count(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    client = api_as(alice)
    client.get(f"/api/projects/{project.pk}/next/")
    rationale = "[" * 5000 + '"\\{'
    response = client.post(
        "/api/judgments/",
        {"comparison": comparison.pk, "outcome": "tie", "time_spent_ms": 10, "rationale": rationale},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Judgment.objects.get().rationale == rationale


@pytest.mark.django_db
def test_a_json_body_over_the_upload_limit_is_refused_with_413(settings, alice):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    body = json.dumps({"username": "alice", "password": "x" * (2 * 1024 * 1024)})
    response = APIClient().post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 413 and response.json() == {"detail": "The request body is larger than 1 MB."}


@pytest.mark.django_db
def test_out_of_range_integers_in_the_api_are_field_errors(project, alice):
    client = api_as(alice)
    comparison = ComparisonFactory(prompt__project=project)
    client.get(f"/api/projects/{project.pk}/next/")

    listed = client.get(f"/api/judgments/?project={BIG}")
    skipped = client.post(f"/api/projects/{project.pk}/skip/", {"comparison": HUGE}, format="json")
    judged = client.post(
        "/api/judgments/", {"comparison": HUGE, "outcome": "left", "strength": 1, "time_spent_ms": 5}, format="json"
    )
    slow = client.post(
        "/api/judgments/",
        {"comparison": comparison.pk, "outcome": "left", "strength": 1, "time_spent_ms": HUGE},
        format="json",
    )

    limit = f"Ensure this value is less than or equal to {MAX_ID}."
    assert (listed.status_code, listed.json()) == (400, {"project": [limit]})
    assert (skipped.status_code, skipped.json()) == (400, {"comparison": [limit]})
    assert (judged.status_code, judged.json()) == (400, {"comparison": [limit]})
    assert slow.status_code == 400 and "time_spent_ms" in slow.json()
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_out_of_range_integers_in_the_label_page_forms_are_not_server_errors(project, alice):
    ComparisonFactory(prompt__project=project)
    client = APIClient()
    client.force_login(alice)
    skip = client.post(f"/projects/{project.slug}/skip/", {"comparison_id": BIG})
    judge = client.post(f"/projects/{project.slug}/judge/", {"comparison_id": BIG, "outcome": "left", "strength": 1})
    clocks = [
        client.post(
            f"/projects/{project.slug}/judge/",
            {"comparison_id": 1, "outcome": "left", "strength": 1, "shown_at_ms": shown_at},
        )
        for shown_at in ("²", "9" * 5000, BIG)
    ]
    # A plain form post is answered with a redirect to the label page and the reason as a message.
    assert skip.status_code == 302 and skip["Location"] == f"/projects/{project.slug}/label/"
    assert judge.status_code == 422
    assert all(response.status_code < 500 for response in clocks), [r.status_code for r in clocks]


def test_the_input_bounds_refuse_ids_beyond_a_bigint():
    assert not JudgmentFilterSerializer(data={"project": BIG}).is_valid()
    assert JudgmentFilterSerializer(data={"project": str(MAX_ID)}).is_valid()
    assert not SkipInputSerializer(data={"comparison": MAX_ID + 1}).is_valid()
    judgment = {"outcome": "left", "strength": 1, "time_spent_ms": 5}
    assert not JudgmentInputSerializer(data={"comparison": MAX_ID + 1, **judgment}).is_valid()
    assert not SkipForm(data={"comparison_id": str(MAX_ID + 1)}).is_valid()
    assert "comparison_id" in JudgmentForm(data={"comparison_id": BIG}, project=ProjectFactory.build()).errors


def int_url_patterns(resolver=None, namespace=""):
    """(name, converters) of every URL pattern that takes an integer, the admin's included."""
    found = []
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            found += int_url_patterns(pattern, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            converters = pattern.pattern.converters
            if any(isinstance(c, (IntConverter, PathConverter)) for c in converters.values()):
                found.append((namespace + pattern.name, converters))
    return found


@pytest.mark.django_db
def test_no_url_that_takes_an_integer_answers_500_to_one_beyond_a_bigint(project, admin_user, alice):
    names = int_url_patterns()
    assert {"api:project-next", "api:project-skip", "rewardmodel:activate", "admin:labeling_project_change"} <= {
        name for name, _ in names
    }
    answers = {}
    for user in (admin_user, alice):
        client = api_as(user)
        client.raise_request_exception = False  # collect every 500, do not stop at the first
        for name, converters in names:
            kwargs = {}
            for key, converter in converters.items():
                if isinstance(converter, (IntConverter, PathConverter)):
                    kwargs[key] = BIG
                elif isinstance(converter, SlugConverter):
                    kwargs[key] = project.slug
                else:
                    kwargs[key] = "alice"
            try:
                url = reverse(name, kwargs=kwargs)
            except Exception:  # a pattern whose other parts these values do not fit (admin's app_label choices)
                continue
            for method in ("get", "post", "put", "delete"):
                status = getattr(client, method)(url, {}, format="json").status_code
                answers[(user.username, method, url)] = status
    assert len(answers) > 100
    assert {key: status for key, status in answers.items() if status >= 500} == {}


@pytest.mark.slow
@pytest.mark.skipif(connection.vendor == "sqlite", reason="this run is on SQLite already")
def test_the_payload_tests_pass_on_sqlite_too(tmp_path):
    # SQLite is the embedded default and where out-of-range integers were 500s;
    # the suite runs on PostgreSQL, so these few run once more on SQLite.
    selected = " or ".join(
        [
            "runs_on_the_expected_database",
            "deeply_nested",
            "out_of_range_integers",
            "no_url_that_takes_an_integer",
            "extra_fields",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", selected],
        cwd=ROOT,
        env={
            # Not this run's DATABASE_URL (settings_test set it to PostgreSQL).
            **{name: value for name, value in os.environ.items() if name != "DATABASE_URL"},
            "TEST_DB": "sqlite",
            "EXPECT_DATABASE": "sqlite",
            "VAR_DIR": str(tmp_path),
            "TEST_DB_SUFFIX": "_payloads",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.fullmatch(r"6 passed, \d+ deselected in .*", summary), summary


@pytest.mark.skipif("EXPECT_DATABASE" not in os.environ, reason="only in the SQLite rerun above")
def test_the_rerun_runs_on_the_expected_database():
    assert connection.vendor == os.environ["EXPECT_DATABASE"]


# -- one place marks HTML safe ----------------------------------------------------------------------

SANITISER = ROOT / "labeling" / "rendering.py"
NOT_OURS = {".venv", "var", "staticfiles", "node_modules", ".git", "tests"}
SAFE_NAMES = {"mark_safe", "SafeString", "SafeText", "SafeData", "html_safe", "mark_for_escaping"}
# In templates: the |safe and |safeseq filters, and autoescape switched off.
SAFE_IN_TEMPLATES = re.compile(r"\|\s*safe(seq)?\b|{%\s*autoescape\s+off\s*%}")
TEMPLATE_COMMENT = re.compile(r"{#.*?#}|{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", re.DOTALL)


def source_files(*suffixes):
    for path in ROOT.rglob("*"):
        if path.suffix in suffixes and path.is_file() and not NOT_OURS & set(path.relative_to(ROOT).parts):
            yield path


def names_marking_safe(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Name) and node.id in SAFE_NAMES:
            found.append(f"{node.id} (line {node.lineno})")
        elif isinstance(node, ast.Attribute) and node.attr in SAFE_NAMES:
            found.append(f"{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and node.module == "django.utils.safestring":
            found += [f"import {a.name} (line {node.lineno})" for a in node.names if a.name in SAFE_NAMES]
    return found


def test_only_the_sanitiser_marks_html_safe():
    python = {str(p.relative_to(ROOT)): names_marking_safe(p) for p in source_files(".py") if p != SANITISER}
    templates = {
        str(p.relative_to(ROOT)): SAFE_IN_TEMPLATES.findall(TEMPLATE_COMMENT.sub("", p.read_text(encoding="utf-8")))
        for p in source_files(".html", ".svg", ".txt", ".xml")
    }
    assert len(python) > 50 and len(templates) > 5  # it looked
    assert {path: found for path, found in python.items() if found} == {}
    assert {path: found for path, found in templates.items() if found} == {}
    assert names_marking_safe(SANITISER), "the sanitiser itself is found by the same rule"


def test_the_rule_catches_what_it_is_for(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from django.utils import safestring\nhtml = safestring.mark_safe(text)\n")
    assert names_marking_safe(sneaky) == ["mark_safe (line 2)"]
    assert SAFE_IN_TEMPLATES.findall("{{ response.text|safe }}") and SAFE_IN_TEMPLATES.findall("{% autoescape off %}")
    assert not SAFE_IN_TEMPLATES.findall(TEMPLATE_COMMENT.sub("", "{# never |safe #}{{ text|safety }}"))
