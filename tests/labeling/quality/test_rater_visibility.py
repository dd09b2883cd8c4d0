"""Nothing a rater can reach tells them which tasks are gold, or what a gold item's answer is.

alice has been served a gold comparison and judged it; bob, in the same project, a plain one. Both then walk
every endpoint a rater can reach (the test below checks that the walk covers every URL pattern of the site,
so a new endpoint has to be added here or named as not for raters). For each one, alice's answer must:
- have exactly the status and the shape (JSON keys, or HTML tags and attribute names) of bob's, so nothing
  in it differs because her task was gold;
- hold no field named like the gold markers ("is_gold", "gold_label", "gold", "kind"), nor the words that
  would carry a known answer ("gold", "correct", "known answer", "reference");
and the raters API gives her only her own row, where her one gold answer is not yet a figure.
"""

import json
import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from labeling.assignment import next_comparison_for
from labeling.models import Assignment
from labeling.quality import service
from tests.factories import ComparisonFactory

pytestmark = pytest.mark.django_db

GOLD_NAMES = {"is_gold", "gold_label", "gold", "kind"}
# As words: "Preference labeling" is the site's name.
TELLING_WORDS = re.compile(r"\b(gold|correct|known answer|reference)", re.IGNORECASE)
# The raters API's public contract has two keys that merely look alike: a rater's own "gold_accuracy" figure
# and the "kind" of a flag. Their values are checked separately below.
CONTRACT_KEYS = {"[].gold_accuracy", "[].flags[].kind"}

# Every URL name a rater can reach, walked below. What is not for raters (or not about a project) is named here.
WALKED = {
    "api:token-list",
    "api:token-detail",
    "api:project-list",
    "api:project-detail",
    "api:project-next",
    "api:project-skip",
    "api:judgment-list",
    "api:judgment-detail",
    "api:comparison-gold",
    "api:project-raters",
    "api:project-leaderboard",
    "api:rater-pause",
    "api:rater-resume",
    "api:rater-exclude",
    "api:rater-include",
    "rewardmodel_api:versions",
    "rewardmodel_api:status",
    "rewardmodel_api:training",
    "rewardmodel_api:score",
    "labeling:projects",
    "labeling:label",
    "labeling:judge",
    "labeling:skip",
    "rewardmodel:status",
    "rewardmodel:retrain",
    "rewardmodel:refresh",
    "rewardmodel:activate",
    "quality:raters",
    "quality:raters-csv",
    "quality:compute",
    "quality:leaderboard",
    "quality:rater-pause",
    "quality:rater-resume",
    "quality:rater-exclude",
    "quality:rater-include",
}
NOT_WALKED = {
    "login": "the same form for everyone",
    "logout": "says nothing about tasks",
    "api:token": "answers with a token only",
    "api-schema": "the published contract, the same for everyone, signed in or not",
    "api-docs": "serves the schema",
}


def url_names(resolver=None, namespace="") -> set[str]:
    names = set()
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":  # staff only: the admin's own login for anyone else
                continue
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= url_names(pattern, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(namespace + pattern.name)
    return names


def test_the_walk_covers_every_url_a_rater_can_reach():
    assert url_names() == WALKED | set(NOT_WALKED)


# -- the two raters and what they were served ---------------------------------------------------------


@pytest.fixture
def served(project, alice, bob):
    """alice was served a gold item and judged it; bob a plain one. Both now hold a plain task again."""
    gold = ComparisonFactory(prompt__project=project, is_gold=True, gold_label="a")
    plain = ComparisonFactory(prompt__project=project)
    ComparisonFactory.create_batch(4, prompt__project=project)
    first = {}
    for rater, rate in ((alice, 1.0), (bob, 0.0)):
        project.gold_rate = rate
        project.save()
        client = api(rater)
        task = client.get(f"/api/projects/{project.pk}/next/")
        judged = client.post("/api/judgments/", answer(task.json()["comparison"]), format="json")
        first[rater.username] = {"task": task, "judged": judged}
    project.gold_rate = 0.0
    project.save()
    assert first["alice"]["task"].json()["comparison"] == gold.pk
    assert first["bob"]["task"].json()["comparison"] == plain.pk
    assert Assignment.objects.get(rater=alice, comparison=gold).kind == Assignment.Kind.GOLD
    service.compute_quality(project=project, n_bootstrap=20)
    for rater in (alice, bob):
        next_comparison_for(rater=rater, project=project)  # a plain task held by each
    return {"project": project, "gold": gold, "plain": plain, "first": first}


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def page(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def answer(comparison_id, **fields):
    return {"comparison": comparison_id, "outcome": "left", "strength": 2, "time_spent_ms": 4000} | fields


def requests_for(rater, own: dict, project) -> list[tuple[str, str, object, str]]:
    """(name, method, path, body) of every walked endpoint, with rater's own objects."""
    p, slug, judged = project.pk, project.slug, own["judged"]
    held = next_comparison_for(rater=rater, project=project)
    form = {"comparison_id": held.comparison_id, "shown_left": held.left, "outcome": "left", "strength": "2"}
    name = rater.username
    return [
        ("api:token-list", "get", "/api/auth/tokens/", None),
        ("api:token-detail", "delete", "/api/auth/tokens/nosuchprefix/", None),
        ("api:project-list", "get", "/api/projects/", None),
        ("api:project-detail", "get", f"/api/projects/{p}/", None),
        ("api:project-next", "get", f"/api/projects/{p}/next/", None),
        ("api:judgment-list", "get", "/api/judgments/", None),
        ("api:judgment-list", "get", f"/api/judgments/?project={p}", None),
        ("api:judgment-list", "post", "/api/judgments/", answer(judged["comparison"])),  # again: the stored one
        ("api:judgment-detail", "get", f"/api/judgments/{judged['id']}/", None),
        ("api:comparison-gold", "put", f"/api/comparisons/{judged['comparison']}/gold/", {"gold_label": "b"}),
        ("api:comparison-gold", "delete", f"/api/comparisons/{judged['comparison']}/gold/", None),
        ("api:project-raters", "get", f"/api/projects/{p}/raters/", None),
        ("api:project-leaderboard", "get", f"/api/projects/{p}/leaderboard/", None),
        *(
            (f"api:rater-{action}", "post", f"/api/projects/{p}/raters/{name}/{action}/", {})
            for action in ("pause", "resume", "exclude", "include")
        ),
        ("rewardmodel_api:versions", "get", f"/api/projects/{p}/reward-models/", None),
        ("rewardmodel_api:status", "get", f"/api/projects/{p}/status/", None),
        ("rewardmodel_api:training", "get", f"/api/projects/{p}/training/", None),
        ("rewardmodel_api:score", "post", f"/api/projects/{p}/score/", {"prompt": "Hi?", "responses": ["Hello."]}),
        ("labeling:projects", "page", "/", None),
        ("labeling:label", "page", f"/projects/{slug}/label/", None),
        ("labeling:label", "htmx", f"/projects/{slug}/label/", None),
        ("rewardmodel:status", "page", f"/models/{slug}/", None),
        ("rewardmodel:retrain", "page-post", f"/models/{slug}/retrain/", {}),
        ("rewardmodel:refresh", "page-post", f"/models/{slug}/refresh/", {}),
        ("rewardmodel:activate", "page-post", f"/models/{slug}/versions/1/activate/", {}),
        ("quality:raters", "page", f"/projects/{slug}/raters/", None),
        ("quality:raters-csv", "page", f"/projects/{slug}/raters.csv", None),
        ("quality:leaderboard", "page", f"/projects/{slug}/leaderboard/", None),
        ("quality:compute", "page-post", f"/projects/{slug}/raters/compute/", {}),
        *(
            (f"quality:rater-{action}", "page-post", f"/projects/{slug}/raters/{name}/{action}/", {})
            for action in ("pause", "resume", "exclude", "include")
        ),
        ("labeling:judge", "htmx-post", f"/projects/{slug}/judge/", form),
        ("labeling:skip", "htmx-post", f"/projects/{slug}/skip/", {"comparison_id": "0"}),
        ("api:project-skip", "post", f"/api/projects/{p}/skip/", {"comparison": held.comparison_id}),
    ]


def send(rater, method, path, body):
    if method in ("get", "post", "put", "delete"):
        return (
            getattr(api(rater), method)(path, body, format="json")
            if body is not None
            else getattr(api(rater), method)(path)
        )
    client = page(rater)
    headers = {"HTTP_HX_REQUEST": "true"} if method.startswith("htmx") else {}
    if method.endswith("post"):
        return client.post(path, body, **headers)
    return client.get(path, **headers)


# -- shapes ------------------------------------------------------------------------------------------------


def key_paths(value, prefix="") -> set[str]:
    if isinstance(value, dict):
        return set().union(*(({f"{prefix}.{k}"} | key_paths(v, f"{prefix}.{k}")) for k, v in value.items()), set())
    if isinstance(value, list):
        return set().union(*(key_paths(item, f"{prefix}[]") for item in value), set())
    return set()


class _Markup(HTMLParser):
    def __init__(self):
        super().__init__()
        self.shape = []

    def handle_starttag(self, tag, attrs):
        self.shape.append((tag, tuple(sorted(name for name, _ in attrs))))


def shape(response):
    if response.get("Content-Type", "").startswith("application/json") and response.content:
        return sorted(key_paths(response.json()))
    parser = _Markup()
    parser.feed(response.content.decode())
    return parser.shape


def test_a_rater_served_a_gold_item_sees_exactly_what_one_served_a_plain_item_sees(served, alice, bob):
    project = served["project"]
    walks = {}
    for rater in (alice, bob):
        own = {"judged": served["first"][rater.username]["judged"].json()}
        walks[rater.username] = [
            (name, send(rater, method, path, body)) for name, method, path, body in requests_for(rater, own, project)
        ]
    assert {name for name, _ in walks["alice"]} == WALKED

    first = served["first"]
    pairs = [("first task", first["alice"]["task"], first["bob"]["task"])]
    pairs += [("first judgment", first["alice"]["judged"], first["bob"]["judged"])]
    pairs += [(name, a, b) for (name, a), (_, b) in zip(walks["alice"], walks["bob"], strict=True)]
    for name, a, b in pairs:
        assert a.status_code == b.status_code, name
        assert shape(a) == shape(b), name
        body = a.content.decode()
        if a.get("Content-Type", "").startswith("application/json") and a.content:
            paths = key_paths(a.json())
            named = {path for path in paths if path.rsplit(".", 1)[-1] in GOLD_NAMES | {"gold_accuracy"}}
            assert named <= (CONTRACT_KEYS if name == "api:project-raters" else set()), (name, named)
            body = json.dumps(_without_contract_keys(a.json()) if name == "api:project-raters" else a.json())
        if name == "api:comparison-gold":
            # The staff-only gold endpoint's refusal names what it is for, in the same words for every comparison.
            assert a.status_code == 403 and a.content == b.content, name
            continue
        assert not TELLING_WORDS.search(body), (name, TELLING_WORDS.findall(body))


def _without_contract_keys(rows):
    return [{k: v for k, v in row.items() if k not in ("gold_accuracy", "flags")} for row in rows]


def test_a_rater_gets_only_their_own_row_and_no_figure_of_a_single_gold_answer(served, alice):
    rows = api(alice).get(f"/api/projects/{served['project'].pk}/raters/").json()

    assert [row["rater"] for row in rows] == ["alice"]
    assert rows[0]["judgments"] == 1
    # One gold answer is far below the minimum: a figure would tell her whether her answer was right.
    assert rows[0]["gold_accuracy"] is None and rows[0]["agreement"] is None
    assert rows[0]["flags"] == []
    text = json.dumps(rows)
    assert "bob" not in text


def test_the_gold_items_answer_appears_nowhere_a_rater_looks(served, alice):
    """The stored answer of the gold item is "a" (response_a is better): no answer alice gets names that
    response as the better one, or sets the two responses apart at all."""
    gold = served["gold"]
    client = api(alice)
    judged = served["first"]["alice"]["judged"].json()
    detail = client.get(f"/api/judgments/{judged['id']}/").json()
    # Only her own answer, in her terms and as stored; nothing about what it should have been.
    assert set(detail) == {
        "id",
        "comparison",
        "project",
        "outcome",
        "strength",
        "criteria",
        "rationale",
        "flags",
        "time_spent_ms",
        "left",
        "outcome_stored",
        "criteria_stored",
        "response_left",
        "response_right",
        "created_at",
    }
    assert detail["comparison"] == gold.pk
    task = served["first"]["alice"]["task"].json()
    assert {task["left"]["id"], task["right"]["id"]} == {gold.response_a_id, gold.response_b_id}
    assert set(task) == {"comparison", "lease_expires_at", "conversation", "left", "right", "criteria"}
