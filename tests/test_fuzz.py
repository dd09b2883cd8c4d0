"""Fuzzing the API from its own OpenAPI schema (schemathesis), as a rater and as an admin.

Every operation of the schema drf-spectacular serves at /api/schema/ is one test per caller
(test_api_as_rater[GET /api/projects/{id}/], test_api_as_admin[...]): schemathesis generates
requests from the schema, valid ones and invalid ones, sends them to the Django app in
process (its WSGI application: no server, no network) with the caller's token, and checks
that no response is a 5xx, and that every response has a status code, a content type and a
body that the schema declares for the operation.

Bounded and reproducible: derandomized generation from a fixed seed, no example database on
disk; per operation and caller, the schema's examples, the coverage phase's boundary values
(each parameter at its limits and just past them, wrong types, two undeclared methods) and
MAX_EXAMPLES generated cases.

Each test runs in its own transaction (pytest-django), rolled back after it: whatever one
operation's examples create or destroy (judgments, a revoked token, a paused or excluded
rater, a comparison made gold or ordinary) never reaches another operation's test, so no
operation needs excluding or ordering. Inside one operation's test the examples share the data:
- DELETE /api/auth/tokens/{prefix}/ is offered the callers' real prefixes; when an example
  revokes the caller's token, the next one gets it back (as a client would sign in again);
- the rater actions may pause alice or bob; a paused rater gets 204 from /next/, declared.
Ids in paths, bodies and queries are three times in four an object the fixture made (so that
examples reach real objects and the validation behind the lookup, not only 404s).
"""

import pytest
import schemathesis
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from labeling.api import tokens
from labeling.comparisons import set_gold
from labeling.quality.service import compute_quality
from rewardmodel.models import RewardModelVersion
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, ProjectFactory, UserFactory
from tests.rewardmodel.factories import RewardModelVersionFactory

# Generated cases per operation and caller (the fuzzing phase), on top of the ~25 coverage cases.
MAX_EXAMPLES = 20
SEED = 20261202  # schemathesis derives each operation's seed from it

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "all",  # valid requests and invalid ones
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # The test sends the caller's token itself.
            "with-security-parameters": False,
        },
        "phases": {
            # Methods an operation does not declare: two per operation show that they get 405, not a 5xx.
            # All eight schemathesis knows would be a quarter of the requests for no more code reached.
            "coverage": {"unexpected-methods": ["patch", "trace"]},
            # Sequences of calls following the schema's links: drf-spectacular declares none.
            "stateful": {"enabled": False},
        },
    }
)

# The schema as /api/schema/ serves it (same generator, no request needed).
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True), config=CONFIG)
schema.app = WSGIHandler()

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]

# The objects `world` makes get these ids, and the callers these tokens, so that the hooks below, which
# run while schemathesis collects the tests, can offer them. Far above what the sequences reach in a test
# database, so rows made with sequence ids never collide with them.
PROJECT_IDS = [900_001, 900_002]  # alice rates the first, not the second
COMPARISON_IDS = list(range(900_001, 900_008))  # the last one is in the second project
LEASED_ID = COMPARISON_IDS[3]  # alice holds a live lease on it: her POST /api/judgments/ can succeed
JUDGMENT_IDS = [900_001, 900_002, 900_003]
USERNAMES = ["alice", "bob", "carol", "admin"]
TOKEN_KEYS = {"rater": "a1" * 20, "admin": "ad" * 20}


def _ids_for(path: str) -> list[int]:
    if path.startswith("/api/comparisons/"):
        return COMPARISON_IDS
    if path.startswith("/api/judgments/"):
        return JUDGMENT_IDS
    return PROJECT_IDS


def _mostly(real: st.SearchStrategy, generated) -> st.SearchStrategy:
    """Three times in four a value the fixture made, else the one schemathesis generated."""
    return st.integers(0, 3).flatmap(lambda n: real if n else st.just(generated))


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    if not path_parameters:
        return st.just(path_parameters)
    real = {name: st.just(value) for name, value in path_parameters.items()}
    if "id" in real:
        real["id"] = st.sampled_from(_ids_for(context.operation.path))
    if "username" in real:
        real["username"] = st.sampled_from(USERNAMES)
    if "prefix" in real:
        real["prefix"] = st.sampled_from([key[: tokens.PREFIX_LENGTH] for key in TOKEN_KEYS.values()])
    return _mostly(st.fixed_dictionaries(real), path_parameters)


@schema.hook
def flatmap_body(context, body):
    if not isinstance(body, dict) or "comparison" not in body:
        return st.just(body)
    real = st.one_of(st.just(LEASED_ID), st.sampled_from(COMPARISON_IDS))
    return _mostly(real.map(lambda pk: {**body, "comparison": pk}), body)


@schema.hook
def flatmap_query(context, query):
    if not isinstance(query, dict) or "project" not in query:
        return st.just(query)
    return _mostly(st.sampled_from(PROJECT_IDS).map(lambda pk: {**query, "project": pk}), query)


@schema.hook
def map_case(context, case):
    # The coverage phase (boundary values, one parameter at a time) takes no flatmap hook. Where it varies
    # the body, the query or the method, a generated path id would stop every case at the 404 before the
    # part under test: give those a real object instead. Cases that vary the path itself keep theirs.
    phase = case.meta.phase if case.meta else None
    if phase is None or phase.name != "coverage" or not case.path_parameters or phase.data.parameter_location == "path":
        return case
    real = {
        "id": _ids_for(case.operation.path)[0],
        "username": "bob",
        "prefix": TOKEN_KEYS["rater"][: tokens.PREFIX_LENGTH],
    }
    case.path_parameters = {name: real.get(name, value) for name, value in case.path_parameters.items()}
    return case


@pytest.fixture
def in_process_requests():
    """The WSGI handler closes the database connection at the end of each request, as a server must; here
    that would end the test's transaction. Django's test client turns this off the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(db, in_process_requests, request):
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    carol = UserFactory(username="carol")
    admin = UserFactory(username="admin", is_staff=True, is_superuser=True)
    project = ProjectFactory(id=PROJECT_IDS[0], slug="demo", name="Demo", allow_ties=True, allow_both_bad=True)
    project.raters.add(alice, bob)
    other = ProjectFactory(id=PROJECT_IDS[1], slug="other", name="Other")
    other.raters.add(carol)
    comparisons = [ComparisonFactory(id=pk, prompt__project=project) for pk in COMPARISON_IDS[:-1]]
    comparisons.append(ComparisonFactory(id=COMPARISON_IDS[-1], prompt__project=other))
    JudgmentFactory(id=JUDGMENT_IDS[0], comparison=comparisons[0], rater=alice, outcome="a")
    JudgmentFactory(id=JUDGMENT_IDS[1], comparison=comparisons[0], rater=bob, outcome="b", left="b")
    JudgmentFactory(id=JUDGMENT_IDS[2], comparison=comparisons[1], rater=bob, outcome="tie")
    set_gold(comparison=comparisons[2], gold_label="a")
    AssignmentFactory(comparison=comparisons[COMPARISON_IDS.index(LEASED_ID)], rater=alice, left="b")
    if "/raters/" in request.node.name or "/leaderboard/" in request.node.name:
        compute_quality(project=project, n_bootstrap=20)  # the figures they read; ~0.2 s, so only for them
    RewardModelVersionFactory(project=project, version=1, status=RewardModelVersion.Status.FAILED, error="OOM")
    RewardModelVersionFactory(project=project, version=2, status=RewardModelVersion.Status.TRAINING)
    return {"rater": alice, "admin": admin}


class Caller:
    """A user and their token, given back to them whenever an example revokes it."""

    def __init__(self, user, key):
        self.user, self.key = user, key
        self.sign_in()

    def sign_in(self):
        Token.objects.get_or_create(user=self.user, defaults={"key": self.key})

    def call_and_validate(self, case):
        try:
            case.call_and_validate(headers={"Authorization": f"Token {self.key}"}, checks=CHECKS)
        finally:
            self.sign_in()
            # Throttle counts (scoring: 30 a minute, token requests: 30 a minute per address) would answer
            # every later example 429 and hide the view behind it; tests/labeling/test_api.py and
            # tests/rewardmodel/test_api.py check the throttles themselves.
            cache.clear()


@pytest.fixture
def as_rater(world):
    return Caller(world["rater"], TOKEN_KEYS["rater"])


@pytest.fixture
def as_admin(world):
    return Caller(world["admin"], TOKEN_KEYS["admin"])


# The fixtures' data are made once per operation, not once per example, on purpose (see the docstring).
@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_as_rater(case, as_rater):
    as_rater.call_and_validate(case)


# POST /api/auth/token/ takes no token: the rater's test covers it.
@schema.exclude(path="/api/auth/token/").parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_as_admin(case, as_admin):
    as_admin.call_and_validate(case)
