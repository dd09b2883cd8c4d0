"""Who gets what, everywhere: the access matrix.

Every URL pattern the resolver knows (walked recursively, the admin's included) and every operation of
the OpenAPI schema (drf-spectacular's generator, as /api/schema/ serves it) has a row below saying what
each of seven people gets: nobody signed in, a rater of project P, a rater of another project Q, a staff
user without permissions or projects, a manager of P, a manager of Q, and an admin (the Admins group,
not a superuser: the group's permissions are what is tested). A URL or an operation without a row fails
test_every_url_and_operation_is_classified, so a new one is classified before it ships.

The answers are classes, not exact codes: OK (the access check let the request through: 2xx, a redirect
elsewhere than the sign-in page, or a 400/409/422 from the payload or the state after it), LOGIN (401, or
a redirect to a sign-in page), DENIED (403) and MISSING (404, or the admin's "does not exist" redirect
to its index). One request per cell: GET for pages that read, the documented method with a payload for
those that change something (valid, or failing only after the access check).
"""

import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_celery_beat.models import ClockedSchedule, SolarSchedule
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.views import APIView

from config.broker import filesystem_transport_options
from labeling import roles
from labeling.models import ImportJob, RaterStanding
from tests.brokers import use_broker
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, ProjectFactory, UserFactory
from tests.rewardmodel.factories import ProjectLoopFactory, RewardModelVersionFactory

OK, LOGIN, DENIED, MISSING = "ok", "login", "403", "404"
ROLES = ("anonymous", "rater_p", "rater_q", "staff", "manager_p", "manager_q", "admin")


def row(*answers: str) -> dict[str, str]:
    assert len(answers) == len(ROLES)
    return dict(zip(ROLES, answers, strict=True))


#                  anonymous  rater of P  rater of Q  bare staff  manager P  manager Q  admin
EVERYONE = row(OK, OK, OK, OK, OK, OK, OK)
SIGNED_IN = row(LOGIN, OK, OK, OK, OK, OK, OK)
# Labeling is a rater's act: P's raters and admins; everyone else learns nothing (a manager labels a
# project by being one of its raters too).
LABEL = row(LOGIN, OK, MISSING, MISSING, MISSING, MISSING, OK)
# Seeing a project (its reward-model status, its raters' list with one's own row): raters, managers, admins.
SEE = row(LOGIN, OK, MISSING, MISSING, OK, MISSING, OK)
# A manager's act: P's managers and admins; P's raters are told no, anyone else learns nothing.
MANAGE = row(LOGIN, DENIED, MISSING, MISSING, OK, MISSING, OK)
# One's own things (a judgment, a token): only its owner, the rater of P here.
OWN = row(LOGIN, OK, MISSING, MISSING, MISSING, MISSING, MISSING)

# The Django admin: raters are not staff (sent to its sign-in page); staff without permissions see an
# empty index and are refused every model.
ADMIN_SITE = row(LOGIN, LOGIN, LOGIN, OK, OK, OK, OK)
ADMIN_ONLY = row(LOGIN, LOGIN, LOGIN, DENIED, DENIED, DENIED, OK)
NOBODY = row(LOGIN, LOGIN, LOGIN, DENIED, DENIED, DENIED, DENIED)
# Rows of a project: every manager has the model permission, and sees only the rows of their projects.
SCOPED_LIST = row(LOGIN, LOGIN, LOGIN, DENIED, OK, OK, OK)
SCOPED_ROW = row(LOGIN, LOGIN, LOGIN, DENIED, OK, MISSING, OK)


@dataclass(frozen=True)
class Page:
    method: str
    expect: dict[str, str]
    data: dict | None = None


# Every pattern outside the admin and the API operations, by URL name.
PAGES = {
    "login": Page("GET", EVERYONE),
    # Signing out (or not being signed in) ends on the sign-in page: LOGOUT_REDIRECT_URL.
    "logout": Page("POST", row(LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN)),
    "labeling:projects": Page("GET", SIGNED_IN),
    "labeling:label": Page("GET", LABEL),
    "labeling:judge": Page("POST", LABEL, {}),  # an empty form: 422 after the access check
    "labeling:skip": Page("POST", LABEL, {}),
    "quality:raters": Page("GET", MANAGE),
    "quality:raters-csv": Page("GET", MANAGE),
    "quality:leaderboard": Page("GET", MANAGE),
    "quality:compute": Page("POST", MANAGE),
    "quality:rater-pause": Page("POST", MANAGE, {"reason": "matrix"}),
    "quality:rater-resume": Page("POST", MANAGE, {"reason": "matrix"}),
    "quality:rater-exclude": Page("POST", MANAGE, {"reason": "matrix"}),
    "quality:rater-include": Page("POST", MANAGE, {"reason": "matrix"}),
    "rewardmodel:status": Page("GET", SEE),
    "rewardmodel:retrain": Page("POST", MANAGE),
    "rewardmodel:refresh": Page("POST", MANAGE),
    "rewardmodel:activate": Page("POST", MANAGE),
    "api-schema": Page("GET", EVERYONE),
    "api-docs": Page("GET", EVERYONE),
    # The admin's own pages (its models' pages are in ADMIN_MODELS).
    "admin:index": Page("GET", ADMIN_SITE),
    "admin:login": Page("GET", EVERYONE),
    # Those who are not staff are sent to the admin's index (which sends them to sign in); staff sign out.
    "admin:logout": Page("POST", row(OK, OK, OK, LOGIN, LOGIN, LOGIN, LOGIN)),
    "admin:password_change": Page("GET", ADMIN_SITE),
    "admin:password_change_done": Page("GET", ADMIN_SITE),
    "admin:jsi18n": Page("GET", ADMIN_SITE),
    # Without the model and field to complete (none of our forms uses autocompletion): 403 for all.
    "admin:autocomplete": Page("GET", NOBODY),
    "admin:app_list": Page("GET", row(LOGIN, LOGIN, LOGIN, MISSING, OK, OK, OK)),  # the labeling app
    # "View on site" for a project: no model of ours has a public page, so 404 for every staff user.
    "admin:view_on_site": Page("GET", row(LOGIN, LOGIN, LOGIN, MISSING, MISSING, MISSING, MISSING)),
    "admin:<catch-all>": Page("GET", row(LOGIN, LOGIN, LOGIN, MISSING, MISSING, MISSING, MISSING)),
    "admin:auth_user_password_change": Page("GET", ADMIN_ONLY),
    # The import page: every manager may import (into the projects they manage, checked on submit).
    "admin:labeling_project_import": Page("GET", SCOPED_LIST),
    "admin:labeling_project_export": Page("GET", SCOPED_ROW),
    # An import's page and its progress: for those who may import into its project; 404 for anyone else.
    "admin:labeling_project_import_job": Page("GET", row(LOGIN, LOGIN, LOGIN, MISSING, OK, MISSING, OK)),
    "admin:labeling_project_import_progress": Page("GET", row(LOGIN, LOGIN, LOGIN, MISSING, OK, MISSING, OK)),
}

# The admin's model pages: (changelist, add, change, history, delete) for each registered model.
ADMIN_VIEWS = ("changelist", "add", "change", "history", "delete")


# The history page looks the row up before it asks for permissions: staff without any find nothing.
SCOPED_HISTORY = row(LOGIN, LOGIN, LOGIN, MISSING, OK, MISSING, OK)


def scoped(*, add: dict[str, str], delete: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"changelist": SCOPED_LIST, "add": add, "change": SCOPED_ROW, "history": SCOPED_HISTORY, "delete": delete}


ADMINS_ADD = row(LOGIN, LOGIN, LOGIN, DENIED, DENIED, DENIED, OK)
MANAGERS_ADD = row(LOGIN, LOGIN, LOGIN, DENIED, OK, OK, OK)
ADMIN_ONLY_MODEL = dict.fromkeys(ADMIN_VIEWS, ADMIN_ONLY)
ADMIN_READS_ONLY = {**ADMIN_ONLY_MODEL, "add": NOBODY}  # axes' records: nobody adds them by hand

ADMIN_MODELS = {
    # Only admins create or delete projects; managers change theirs (settings, raters).
    "labeling.project": scoped(add=ADMINS_ADD, delete=ADMINS_ADD),
    # Prompts and responses come in through imports: nobody adds them here; admins may delete.
    "labeling.prompt": scoped(add=NOBODY, delete=ADMINS_ADD),
    "labeling.response": scoped(add=NOBODY, delete=ADMINS_ADD),
    # Managers may add a comparison to their projects (labeling.add_comparison is also the import's).
    "labeling.comparison": scoped(add=MANAGERS_ADD, delete=ADMINS_ADD),
    # Records of what raters did: nobody adds them; admins delete (to delete a project).
    "labeling.assignment": scoped(add=NOBODY, delete=ADMINS_ADD),
    "labeling.judgment": scoped(add=NOBODY, delete=ADMINS_ADD),
    # Records of what the pipeline did: read-only for everyone.
    "rewardmodel.rewardmodelversion": scoped(add=NOBODY, delete=NOBODY),
    "rewardmodel.projectloop": scoped(add=NOBODY, delete=NOBODY),
    # Accounts, tokens, schedules and sign-in records: admins only.
    "auth.user": ADMIN_ONLY_MODEL,
    "auth.group": ADMIN_ONLY_MODEL,
    "authtoken.tokenproxy": ADMIN_ONLY_MODEL,
    "django_celery_beat.periodictask": ADMIN_ONLY_MODEL,
    "django_celery_beat.clockedschedule": ADMIN_ONLY_MODEL,
    "django_celery_beat.crontabschedule": ADMIN_ONLY_MODEL,
    "django_celery_beat.solarschedule": ADMIN_ONLY_MODEL,
    "django_celery_beat.intervalschedule": ADMIN_ONLY_MODEL,
    "axes.accessattempt": ADMIN_READS_ONLY,
    "axes.accesslog": ADMIN_READS_ONLY,
    "axes.accessfailurelog": ADMIN_READS_ONLY,
}


@dataclass(frozen=True)
class Operation:
    expect: dict[str, str]
    data: dict | None = None


# Every operation of the OpenAPI schema, by (method, path).
OPERATIONS = {
    # Wrong credentials for everyone (a username per role, so that no lockout adds up): 400.
    ("POST", "/api/auth/token/"): Operation(EVERYONE, {"username": "nobody-{role}", "password": "wrong"}),
    ("GET", "/api/auth/tokens/"): Operation(SIGNED_IN),
    ("DELETE", "/api/auth/tokens/{prefix}/"): Operation(OWN),
    ("GET", "/api/projects/"): Operation(SIGNED_IN),
    ("GET", "/api/projects/{id}/"): Operation(LABEL),
    ("GET", "/api/projects/{id}/next/"): Operation(LABEL),
    ("POST", "/api/projects/{id}/skip/"): Operation(LABEL, {"comparison": "{comparison}"}),
    ("GET", "/api/judgments/"): Operation(SIGNED_IN),
    # P's comparison: stored (201) or refused for want of a lease (409) past the access check; anyone
    # who may not label P gets 404 (the comparison is not in a project they may label).
    ("POST", "/api/judgments/"): Operation(
        LABEL, {"comparison": "{comparison}", "outcome": "left", "strength": 2, "time_spent_ms": 4000}
    ),
    ("GET", "/api/judgments/{id}/"): Operation(OWN),
    ("PUT", "/api/comparisons/{id}/gold/"): Operation(MANAGE, {"gold_label": "a"}),
    ("DELETE", "/api/comparisons/{id}/gold/"): Operation(MANAGE),
    ("GET", "/api/projects/{id}/raters/"): Operation(SEE),  # raters get their own row only
    ("GET", "/api/projects/{id}/leaderboard/"): Operation(MANAGE),
    ("POST", "/api/projects/{id}/raters/{username}/pause/"): Operation(MANAGE, {"reason": "matrix"}),
    ("POST", "/api/projects/{id}/raters/{username}/resume/"): Operation(MANAGE, {"reason": "matrix"}),
    ("POST", "/api/projects/{id}/raters/{username}/exclude/"): Operation(MANAGE, {"reason": "matrix"}),
    ("POST", "/api/projects/{id}/raters/{username}/include/"): Operation(MANAGE, {"reason": "matrix"}),
    ("GET", "/api/projects/{id}/reward-models/"): Operation(SEE),
    ("GET", "/api/projects/{id}/status/"): Operation(SEE),
    ("GET", "/api/projects/{id}/training/"): Operation(SEE),
    # An empty body: 400 after the access check (scoring itself is tested in tests/rewardmodel).
    ("POST", "/api/projects/{id}/score/"): Operation(SEE, {}),
}


# -- enumerating ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name"; "admin:<catch-all>" for the admin's unnamed last pattern
    pattern: URLPattern

    @property
    def is_api(self) -> bool:
        view_class = getattr(self.pattern.callback, "cls", None)
        return isinstance(view_class, type) and issubclass(view_class, APIView) and self.name not in PAGES


def routes(resolver=None, namespace=None):
    """Every URL pattern, depth first, with its full name."""
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            inner = ":".join(part for part in (namespace, entry.namespace) if part) or None
            yield from routes(entry, inner)
        else:
            name = entry.name or "<catch-all>"
            yield Route(":".join(part for part in (namespace, name) if part), entry)


def schema_operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item]


def admin_model_names() -> dict[str, tuple[str, str]]:
    """URL name -> (model label, view) for the pages of every registered model admin."""
    names = {}
    for model in admin.site._registry:
        label = f"{model._meta.app_label}.{model._meta.model_name}"
        for view in ADMIN_VIEWS:
            names[f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}"] = (label, view)
    return names


def test_every_url_and_operation_is_classified():
    model_pages = admin_model_names()
    unclassified = [
        route.name
        for route in routes()
        if not route.is_api and route.name not in PAGES and route.name not in model_pages
    ]
    assert unclassified == [], "URL patterns without a row in PAGES (or ADMIN_MODELS): classify them"
    models = {label for label, _ in model_pages.values()}
    assert sorted(models - ADMIN_MODELS.keys()) == [], "admin models without a row in ADMIN_MODELS"
    operations = schema_operations()
    assert sorted(set(operations) - OPERATIONS.keys()) == [], "API operations without a row in OPERATIONS"
    # And no stale rows: a row for something that is gone would hide that its replacement has none.
    assert sorted(OPERATIONS.keys() - set(operations)) == []
    named = {route.name for route in routes()}
    assert sorted(PAGES.keys() - named) == []
    # Every API pattern has its operations in the schema (an API view left out of it would be unchecked).
    api_paths = {path for _, path in operations}
    api_routes = [route for route in routes() if route.is_api]
    assert api_routes and all(_schema_path(route) in api_paths for route in api_routes)


def _schema_path(route: Route) -> str:
    # /api/projects/<int:pk>/next/ -> /api/projects/{id}/next/ (drf-spectacular calls a pk "id").
    path = "/" + _route_string(route)
    path = re.sub(r"<(?:\w+:)?pk>", "{id}", path)
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)


def _route_string(route: Route) -> str:
    # The full route of a pattern, through its resolvers: reverse with placeholder names.
    for prefix, pattern in _with_prefixes():
        if pattern is route.pattern:
            return prefix + str(pattern.pattern)
    raise AssertionError(route.name)


def _with_prefixes(resolver=None, prefix=""):
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            yield from _with_prefixes(entry, prefix + str(entry.pattern))
        else:
            yield prefix, entry


# -- the world the requests run in ----------------------------------------------------------------------


@pytest.fixture
def world(db, tmp_path):
    """P and Q, each with a rater and a manager; a staff user; an admin; a judged and an open
    comparison of P, a lease, two ready reward-model versions, a token; rows for every admin page."""
    p = ProjectFactory(slug="p", name="P")
    q = ProjectFactory(slug="q", name="Q")
    managers, raters, admins = (Group.objects.get(name=name) for name in (roles.MANAGERS, roles.RATERS, roles.ADMINS))
    people = {
        "rater_p": UserFactory(username="rita"),
        "rater_q": UserFactory(username="quinn"),
        "staff": UserFactory(username="clerk", is_staff=True),
        "manager_p": UserFactory(username="maria", is_staff=True),
        "manager_q": UserFactory(username="mona", is_staff=True),
        "admin": UserFactory(username="ada", is_staff=True),
    }
    p.raters.add(people["rater_p"])
    q.raters.add(people["rater_q"])
    p.managers.add(people["manager_p"])
    q.managers.add(people["manager_q"])
    for role, group in [("rater_p", raters), ("rater_q", raters), ("manager_p", managers), ("manager_q", managers)]:
        people[role].groups.add(group)
    people["admin"].groups.add(admins)
    judged = ComparisonFactory(prompt__project=p)
    judgment = JudgmentFactory(comparison=judged, rater=people["rater_p"])
    open_one = ComparisonFactory(prompt__project=p)
    assignment = AssignmentFactory(comparison=open_one, rater=people["rater_p"])
    RaterStanding.objects.create(project=p, rater=people["rater_p"])
    version = RewardModelVersionFactory(project=p, version=1, status="ready")
    RewardModelVersionFactory(project=p, version=2, status="ready")
    loop = ProjectLoopFactory(project=p)
    token = Token.objects.create(user=people["rater_p"])
    import_job = ImportJob.objects.create(
        project=p, created_by=people["manager_p"], filename="pairs.jsonl", path=str(tmp_path / "gone.jsonl")
    )
    ClockedSchedule.objects.create(clocked_time="2030-01-01T00:00:00Z")
    SolarSchedule.objects.create(event="sunrise", latitude=0, longitude=0)
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog  # noqa: PLC0415 (axes' models, here only)

    base = {"user_agent": "matrix", "ip_address": "10.0.0.1", "username": "nobody", "http_accept": "*/*"}
    AccessAttempt.objects.create(**base, path_info="/login/", get_data="", post_data="", failures_since_start=1)
    AccessLog.objects.create(**base, path_info="/login/")
    AccessFailureLog.objects.create(**base, path_info="/login/")
    objects = {
        "labeling.project": p,
        "labeling.prompt": judged.prompt,
        "labeling.response": judged.response_a,
        "labeling.comparison": judged,
        "labeling.assignment": assignment,
        "labeling.judgment": judgment,
        "rewardmodel.rewardmodelversion": version,
        "rewardmodel.projectloop": loop,
        "auth.user": people["rater_p"],
        "auth.group": raters,
        "authtoken.tokenproxy": token.user,  # the proxy's pk is its user's
    }
    with use_broker("filesystem://", filesystem_transport_options(tmp_path / "broker")):
        yield {
            "people": people,
            "project": p,
            "comparison": open_one,
            "judgment": judgment,
            "version": version,
            "token": token,
            "import_job": import_job,
            "objects": objects,
        }


def _object_of(world, label: str):
    if label in world["objects"]:
        return world["objects"][label]
    app_label, model_name = label.split(".")
    found = ContentType.objects.get(app_label=app_label, model=model_name).model_class()._default_manager.first()
    assert found is not None, f"no {label} row for its admin pages"
    return found


def url_for(route: Route, world, *, view: str = "", label: str = "") -> str:
    p = world["project"]
    rater = world["people"]["rater_p"].username
    kwargs_by_name = {
        "labeling:label": {"slug": p.slug},
        "labeling:judge": {"slug": p.slug},
        "labeling:skip": {"slug": p.slug},
        "rewardmodel:status": {"slug": p.slug},
        "rewardmodel:retrain": {"slug": p.slug},
        "rewardmodel:refresh": {"slug": p.slug},
        "rewardmodel:activate": {"slug": p.slug, "version": world["version"].version},
        "admin:app_list": {"app_label": "labeling"},
        "admin:view_on_site": {"content_type_id": ContentType.objects.get_for_model(p).pk, "object_id": p.pk},
        "admin:auth_user_password_change": {"id": world["people"]["rater_p"].pk},
        "admin:labeling_project_export": {"project_id": p.pk, "format": "trl"},
        "admin:labeling_project_import_job": {"job_id": world["import_job"].pk},
        "admin:labeling_project_import_progress": {"job_id": world["import_job"].pk},
    }
    if route.name == "admin:<catch-all>":
        return "/admin/no-such-page/"
    if route.name.startswith("quality:"):
        kwargs = {"slug": p.slug}
        if "<str:username>" in str(route.pattern.pattern):
            kwargs["username"] = rater
        return reverse(route.name, kwargs=kwargs)
    if view:
        args = [] if view in ("changelist", "add") else [_object_of(world, label).pk]
        return reverse(route.name, args=args)
    return reverse(route.name, kwargs=kwargs_by_name.get(route.name, {}))


def api_path(path: str, world) -> str:
    return (
        path.replace("{id}", str(_api_id(path, world)))
        .replace("{prefix}", world["token"].key[:8])
        .replace("{username}", world["people"]["rater_p"].username)
    )


def _api_id(path: str, world) -> int:
    if path.startswith("/api/judgments/"):
        return world["judgment"].pk
    if path.startswith("/api/comparisons/"):
        return world["comparison"].pk
    return world["project"].pk


def classify(response, *, object_page: bool = False) -> str:
    status = response.status_code
    if status == 401:
        return LOGIN
    if status == 403:
        return DENIED
    if status == 404:
        return MISSING
    if status in (301, 302, 303):
        target = urlsplit(response["Location"]).path
        if target in (reverse("login"), reverse("admin:login")):
            return LOGIN
        if object_page and target == reverse("admin:index"):
            # The admin's answer to a row it cannot find in the user's queryset.
            return MISSING
        return OK
    if status in (405, 500) or status >= 500:
        return f"error {status}"
    return OK


LOGS_OUT = {"logout", "admin:logout"}


def _client(world, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(world["people"][role])
    return client


def send(client, world, role: str, method: str, url: str, data, *, object_page: bool = False) -> str:
    if data is None:
        response = getattr(client, method.lower())(url)
    elif url.startswith("/api/"):
        body = {key: _fill(value, world, role) for key, value in data.items()}
        response = getattr(client, method.lower())(url, body, content_type="application/json")
    else:
        response = getattr(client, method.lower())(url, data)
    return classify(response, object_page=object_page)


def _fill(value, world, role):
    if value == "{comparison}":
        return world["comparison"].pk
    if isinstance(value, str):
        return value.format(role=role)
    return value


def test_each_role_gets_the_declared_answer_from_every_url_and_operation(world, caplog):
    caplog.set_level(logging.CRITICAL, logger="django.request")  # a thousand 403s and 404s, each logged
    model_pages = admin_model_names()
    object_pages = {name for name, (_, view) in model_pages.items() if view in ("change", "history", "delete")}
    cells = []  # (what, role, expected, url, method, data)
    for route in routes():
        if route.is_api:
            continue
        if route.name in model_pages:
            label, view = model_pages[route.name]
            expected = ADMIN_MODELS[label][view]
            url, page = url_for(route, world, view=view, label=label), Page("GET", expected)
        else:
            page = PAGES[route.name]
            url = url_for(route, world)
        cells += [(route.name, role, page.expect[role], url, page.method, page.data) for role in ROLES]
    for (method, path), operation in OPERATIONS.items():
        url = api_path(path, world)
        what = f"{method} {path}"
        cells += [(what, role, operation.expect[role], url, method, operation.data) for role in ROLES]

    clients = {role: _client(world, role) for role in ROLES}
    wrong = []
    for what, role, expected, url, method, data in cells:
        # Signing out ends the session: those cells get a client of their own.
        client = _client(world, role) if what in LOGS_OUT else clients[role]
        got = send(client, world, role, method, url, data, object_page=what in object_pages)
        if got != expected:
            wrong.append(f"{what:55} {role:10} expected {expected:6} got {got:10} ({method} {url})")
    assert wrong == [], f"{len(wrong)} of {len(cells)} cells differ:\n" + "\n".join(wrong)
