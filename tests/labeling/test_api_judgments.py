"""Recording and reading judgments through the API."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from labeling.assignment import next_comparison_for
from labeling.models import Assignment, Comparison, Judgment
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def logged_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def a_judgment(comparison_id, **fields):
    return {"comparison": comparison_id, "outcome": "left", "strength": 2, "time_spent_ms": 4200} | fields


def lease(client, project) -> dict:
    response = client.get(f"/api/projects/{project.pk}/next/")
    assert response.status_code == 200
    return response.json()


def test_it_records_a_judgment_as_a_and_b_in_the_order_the_rater_saw(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    client = logged_in(alice)
    task = lease(client, project)

    response = client.post(
        "/api/judgments/",
        a_judgment(
            task["comparison"],
            outcome="right",
            strength=3,
            criteria={"helpfulness": "right", "harmlessness": "tie"},
            rationale="The right one cites its source.",
            flags=["pii"],
        ),
        format="json",
    )

    assert response.status_code == 201
    judgment = Judgment.objects.get()
    shown_left = Assignment.objects.get().left
    right_stored = "b" if shown_left == "a" else "a"
    right_id = comparison.response_b_id if shown_left == "a" else comparison.response_a_id
    assert (judgment.rater, judgment.comparison_id, judgment.left) == (alice, comparison.pk, shown_left)
    assert judgment.outcome == right_stored
    assert judgment.criteria == {"helpfulness": right_stored, "harmlessness": "tie"}
    assert (judgment.strength, judgment.flags, judgment.time_spent_ms) == (3, ["pii"], 4200)
    assert task["right"]["id"] == right_id
    body = response.json()
    assert body == {
        "id": judgment.pk,
        "comparison": comparison.pk,
        "project": project.pk,
        "outcome": "right",
        "strength": 3,
        "criteria": {"helpfulness": "right", "harmlessness": "tie"},
        "rationale": "The right one cites its source.",
        "flags": ["pii"],
        "time_spent_ms": 4200,
        "left": shown_left,
        "outcome_stored": right_stored,
        "criteria_stored": {"helpfulness": right_stored, "harmlessness": "tie"},
        "response_left": task["left"]["id"],
        "response_right": right_id,
        "created_at": body["created_at"],
    }
    assert response["Location"].endswith(f"/api/judgments/{judgment.pk}/")
    assert Assignment.objects.get().state == Assignment.State.SUBMITTED
    comparison.refresh_from_db()
    assert comparison.judgments_count == 1


def test_a_second_post_returns_the_stored_judgment_with_200(project, alice):
    ComparisonFactory(prompt__project=project)
    client = logged_in(alice)
    task = lease(client, project)
    first = client.post("/api/judgments/", a_judgment(task["comparison"]), format="json")

    again = client.post("/api/judgments/", a_judgment(task["comparison"], outcome="tie", strength=None), format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert again.json()["outcome"] == "left"
    assert Judgment.objects.count() == 1
    assert Comparison.objects.get().judgments_count == 1


def test_it_ignores_strength_for_a_tie(project, alice):
    ComparisonFactory(prompt__project=project)
    client = logged_in(alice)
    task = lease(client, project)
    response = client.post("/api/judgments/", a_judgment(task["comparison"], outcome="tie"), format="json")
    assert response.status_code == 201
    assert response.json()["strength"] is None
    assert Judgment.objects.get().strength is None


def test_it_answers_409_for_every_comparison_the_rater_was_never_given(project, alice):
    comparisons = ComparisonFactory.create_batch(20, prompt__project=project)
    client = logged_in(alice)

    answers = [client.post("/api/judgments/", a_judgment(c.pk), format="json") for c in comparisons]

    assert [response.status_code for response in answers] == [409] * 20
    assert "You were not assigned this comparison" in answers[0].json()["detail"]
    assert not Judgment.objects.exists()
    assert set(Comparison.objects.values_list("judgments_count", flat=True)) == {0}


def test_it_answers_409_for_a_comparison_the_rater_skipped(project, alice):
    ComparisonFactory(prompt__project=project)
    client = logged_in(alice)
    task = lease(client, project)
    skipped = client.post(f"/api/projects/{project.pk}/skip/", {"comparison": task["comparison"]}, format="json")
    assert skipped.status_code == 204

    response = client.post("/api/judgments/", a_judgment(task["comparison"]), format="json")

    assert response.status_code == 409
    assert not Judgment.objects.exists()


def expired_lease(rater, comparison, *, ago, left="a"):
    """A lease of rater's on comparison that expired `ago` before now."""
    issued_at = timezone.now() - comparison.project.lease_duration - ago
    return AssignmentFactory(comparison=comparison, rater=rater, left=left, issued_at=issued_at)


def test_it_accepts_an_answer_within_the_grace_in_the_order_of_the_lease(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    held = expired_lease(alice, comparison, ago=project.lease_grace / 2, left="b")

    response = logged_in(alice).post("/api/judgments/", a_judgment(comparison.pk, outcome="left"), format="json")

    assert response.status_code == 201
    assert (response.json()["left"], response.json()["outcome_stored"]) == ("b", "b")
    judgment = Judgment.objects.get()
    assert (judgment.left, judgment.outcome) == ("b", "b")
    held.refresh_from_db()
    assert held.state == Assignment.State.SUBMITTED


def test_it_answers_409_after_the_grace(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    expired_lease(alice, comparison, ago=project.lease_grace + timedelta(seconds=5))
    response = logged_in(alice).post("/api/judgments/", a_judgment(comparison.pk), format="json")
    assert response.status_code == 409
    assert not Judgment.objects.exists()


def test_it_answers_409_within_the_grace_once_others_took_the_comparison_to_its_overlap(project, alice, bob, carol):
    project.raters.add(carol)
    comparison = ComparisonFactory(prompt__project=project)  # overlap 2
    expired_lease(alice, comparison, ago=timedelta(seconds=30))
    JudgmentFactory(comparison=comparison, rater=bob)
    assert next_comparison_for(rater=carol, project=project).comparison_id == comparison.pk

    response = logged_in(alice).post("/api/judgments/", a_judgment(comparison.pk), format="json")

    assert response.status_code == 409
    assert not Judgment.objects.filter(rater=alice).exists()
    assert Comparison.objects.get().judgments_count == 1


def test_a_retry_gets_200_and_the_stored_judgment_even_after_the_grace(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    expired_lease(alice, comparison, ago=timedelta(seconds=30))
    client = logged_in(alice)
    first = client.post("/api/judgments/", a_judgment(comparison.pk), format="json")
    an_hour = timedelta(hours=1)
    Assignment.objects.update(issued_at=F("issued_at") - an_hour, expires_at=F("expires_at") - an_hour)

    again = client.post("/api/judgments/", a_judgment(comparison.pk, outcome="right"), format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert Judgment.objects.count() == 1


def test_it_answers_409_when_others_fill_the_overlap(project, alice, bob, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    JudgmentFactory(comparison=comparison, rater=bob, outcome="tie")
    next_comparison_for(rater=admin_user, project=project)  # the second slot, leased

    response = logged_in(alice).post("/api/judgments/", a_judgment(comparison.pk), format="json")

    assert response.status_code == 409
    assert "Ask for the next comparison" in response.json()["detail"]
    assert not Judgment.objects.filter(rater=alice).exists()
    assert Comparison.objects.get().judgments_count == 1


def test_it_answers_409_for_a_complete_comparison(project, alice, bob, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    for rater in (bob, admin_user):
        JudgmentFactory(comparison=comparison, rater=rater, outcome="tie")
    response = logged_in(alice).post("/api/judgments/", a_judgment(comparison.pk), format="json")
    assert response.status_code == 409
    assert Judgment.objects.count() == 2


def test_it_answers_404_for_a_comparison_in_someone_elses_project(project, alice):
    elsewhere = ComparisonFactory()  # a project alice is not a rater of
    client = logged_in(alice)
    assert client.post("/api/judgments/", a_judgment(elsewhere.pk), format="json").status_code == 404
    assert client.post("/api/judgments/", a_judgment(999999), format="json").status_code == 404
    assert not Judgment.objects.exists()


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"outcome": "tie", "strength": None}, "outcome"),  # the project allows no ties here
        ({"outcome": "a"}, "outcome"),  # stored terms are not the rater's terms
        ({"criteria": {"verbosity": "left"}}, "criteria"),
        ({"criteria": {"helpfulness": "a"}}, "criteria"),
        ({"criteria": ["helpfulness"]}, "criteria"),
        ({"flags": ["unsafe", "boring"]}, "flags"),
        ({"flags": "unsafe"}, "flags"),
        ({"time_spent_ms": -1}, "time_spent_ms"),
        ({"time_spent_ms": "soon"}, "time_spent_ms"),
        ({"strength": None}, "strength"),
        ({"strength": "abc"}, "strength"),
        ({"strength": 4}, "strength"),
        ({"comparison": None}, "comparison"),
        ({"rationale": "x" * 10_001}, "rationale"),
    ],
)
def test_it_rejects_a_bad_field_with_a_message_under_its_name(changes, field, project, alice):
    project.allow_ties = False
    project.save()
    ComparisonFactory(prompt__project=project)
    client = logged_in(alice)
    task = lease(client, project)

    response = client.post("/api/judgments/", a_judgment(task["comparison"]) | changes, format="json")

    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field]
    assert errors[field] and all(isinstance(message, str) for message in errors[field])
    assert not Judgment.objects.exists()
    assert Assignment.objects.get().state == Assignment.State.ACTIVE  # the lease survives the mistake


def test_it_reports_every_bad_field_at_once(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    response = logged_in(alice).post(
        "/api/judgments/",
        {"comparison": comparison.pk, "outcome": "left", "criteria": {"style": "left"}, "time_spent_ms": -5},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()) == {"strength", "criteria", "time_spent_ms"}


def test_it_reports_missing_fields(alice):
    response = logged_in(alice).post("/api/judgments/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"comparison", "outcome", "time_spent_ms"}


def test_it_accepts_json_only(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    response = logged_in(alice).post("/api/judgments/", a_judgment(comparison.pk))  # form-encoded
    assert response.status_code == 415
    assert not Judgment.objects.exists()


def test_raters_read_only_their_own_judgments_newest_first(project, alice, bob):
    other = ProjectFactory()
    other.raters.add(alice)
    mine = [
        JudgmentFactory(comparison__prompt__project=p, rater=alice, outcome="tie") for p in (project, other, project)
    ]
    bobs = JudgmentFactory(comparison=mine[0].comparison, rater=bob, outcome="tie")
    client = logged_in(alice)

    listed = client.get("/api/judgments/").json()
    assert listed["count"] == 3
    assert [j["id"] for j in listed["results"]] == [j.pk for j in reversed(mine)]

    in_project = client.get("/api/judgments/", {"project": project.pk}).json()
    assert [j["id"] for j in in_project["results"]] == [mine[2].pk, mine[0].pk]
    # Unknown parameters do nothing, and nothing reaches .filter() unvalidated.
    assert client.get("/api/judgments/", {"rater": bob.pk, "rater__username": "bob"}).json()["count"] == 3

    assert client.get(f"/api/judgments/{mine[1].pk}/").json()["id"] == mine[1].pk
    assert client.get(f"/api/judgments/{bobs.pk}/").status_code == 404
    assert bobs.pk not in {j["id"] for j in listed["results"]}


def test_the_project_filter_must_be_a_number(alice):
    response = logged_in(alice).get("/api/judgments/", {"project": "1 OR 1=1"})
    assert response.status_code == 400
    assert list(response.json()) == ["project"]


def test_staff_read_only_their_own_judgments_too(project, alice, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    judgment = JudgmentFactory(comparison=comparison, rater=alice, outcome="tie")
    client = logged_in(admin_user)
    assert client.get("/api/judgments/").json()["count"] == 0
    assert client.get(f"/api/judgments/{judgment.pk}/").status_code == 404


# Session + user, locked comparison (with the rater's paused flag), the rater's
# judgments of it, latest lease, insert, lease -> submitted, comparison count,
# the savepoint pair. A retry stops after the latest lease (it may be a repeat's)
# and reads the comparison of the stored judgment, for response ids.
POST_QUERIES = {"postgresql": 10, "sqlite": 10}


@pytest.mark.parametrize("size", [5, 50])
def test_posting_a_judgment_runs_a_small_constant_number_of_queries(size, alice, bob, django_assert_max_num_queries):
    project = ProjectFactory(overlap=2)
    project.raters.add(alice, bob)
    comparisons = ComparisonFactory.create_batch(size, prompt__project=project)
    for comparison in comparisons[:3]:
        JudgmentFactory(comparison=comparison, rater=bob, outcome="tie")
    client = logged_in(alice)
    task = lease(client, project)
    payload = a_judgment(task["comparison"], criteria={"helpfulness": "left"}, flags=["other"])

    with django_assert_max_num_queries(POST_QUERIES[connection.vendor]):
        with CaptureQueriesContext(connection) as captured:
            response = client.post("/api/judgments/", payload, format="json")
    assert response.status_code == 201
    assert len(captured) == POST_QUERIES[connection.vendor]

    with django_assert_max_num_queries(POST_QUERIES[connection.vendor]):
        assert client.post("/api/judgments/", payload, format="json").status_code == 200
