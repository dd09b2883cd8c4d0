"""Gold answers set by people: the domain functions (labeling/comparisons.py) and the managers' API
(PUT / DELETE /api/comparisons/{id}/gold/). Gold from imports is in test_importing.py, from the admin in
test_admin.py."""

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from labeling.comparisons import mark_gold_by_reference_label, set_gold, unmark_gold, unset_gold
from labeling.models import Comparison
from tests.conftest import PASSWORD
from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def url(comparison_id) -> str:
    return f"/api/comparisons/{comparison_id}/gold/"


def stored(comparison) -> tuple[bool, str, str]:
    comparison.refresh_from_db()
    return comparison.is_gold, comparison.gold_label, comparison.status


@pytest.fixture
def comparison(project):
    return ComparisonFactory(prompt__project=project)


@pytest.fixture
def complete(project, alice, bob):
    """Judged by both raters the project's overlap of 2 asks for."""
    comparison = ComparisonFactory(prompt__project=project)
    JudgmentFactory(comparison=comparison, rater=alice)
    JudgmentFactory(comparison=comparison, rater=bob)
    assert comparison.status == Comparison.Status.COMPLETE
    return comparison


@pytest.fixture
def curator(db):
    """Not staff, but may change comparisons (of the projects they manage)."""
    user = UserFactory(username="curator")
    user.user_permissions.add(Permission.objects.get(codename="change_comparison"))
    return user


@pytest.fixture
def clerk(db):
    """Staff, without any permission or project."""
    return UserFactory(username="clerk", is_staff=True)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- the domain functions ---------------------------------------------------


def test_set_gold_stores_the_answer_and_opens_a_complete_comparison(complete):
    returned = set_gold(comparison=complete, gold_label="b")

    assert stored(complete) == (True, "b", Comparison.Status.OPEN)  # gold is served to every rater
    assert returned.pk == complete.pk and returned.is_gold


@pytest.mark.parametrize("label", ["tie", "", "A"])
def test_set_gold_refuses_an_answer_that_is_not_a_or_b(comparison, label):
    with pytest.raises(ValidationError) as error:
        set_gold(comparison=Comparison.objects.get(pk=comparison.pk), gold_label=label)

    assert "gold_label" in error.value.message_dict
    assert stored(comparison) == (False, "", Comparison.Status.OPEN)


def test_unset_gold_makes_it_ordinary_and_complete_again_when_it_has_its_judgments(complete, comparison):
    set_gold(comparison=complete, gold_label="a")
    set_gold(comparison=comparison, gold_label="a")

    unset_gold(comparison=complete)
    unset_gold(comparison=comparison)

    assert stored(complete) == (False, "", Comparison.Status.COMPLETE)
    assert stored(comparison) == (False, "", Comparison.Status.OPEN)


def test_retired_comparisons_stay_retired_through_gold_and_back(comparison):
    Comparison.objects.filter(pk=comparison.pk).update(status=Comparison.Status.RETIRED)

    set_gold(comparison=comparison, gold_label="a")
    assert stored(comparison) == (True, "a", Comparison.Status.RETIRED)
    unset_gold(comparison=comparison)
    assert stored(comparison) == (False, "", Comparison.Status.RETIRED)


def test_marking_by_reference_label_skips_ties_and_unlabelled_comparisons(project):
    by_label = {
        label: ComparisonFactory(prompt__project=project, reference_label=label) for label in ("a", "b", "tie", "")
    }

    marked = mark_gold_by_reference_label(comparison_ids=[c.pk for c in by_label.values()])

    assert marked == 2
    assert {label: stored(c)[:2] for label, c in by_label.items()} == {
        "a": (True, "a"),
        "b": (True, "b"),
        "tie": (False, ""),
        "": (False, ""),
    }
    assert unmark_gold(comparison_ids=[c.pk for c in by_label.values()]) == 2
    assert not Comparison.objects.filter(is_gold=True).exists()


# --- the API ----------------------------------------------------------------


def test_staff_with_the_permission_set_a_gold_answer(admin_user, complete):
    response = client_for(admin_user).put(url(complete.pk), {"gold_label": "b"}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "id": complete.pk,
        "project": complete.project_id,
        "response_a": complete.response_a_id,
        "response_b": complete.response_b_id,
        "reference_label": "",
        "is_gold": True,
        "gold_label": "b",
        "status": "open",
    }
    assert stored(complete) == (True, "b", Comparison.Status.OPEN)


def test_the_permission_on_a_managed_project_is_what_counts_not_staff_or_rating_it(curator):
    comparison = ComparisonFactory(prompt__project=ProjectFactory(is_active=False))
    comparison.project.managers.add(curator)

    response = client_for(curator).put(url(comparison.pk), {"gold_label": "a"}, format="json")

    assert response.status_code == 200
    assert stored(comparison)[:2] == (True, "a")


def test_the_permission_without_managing_the_project_finds_nothing(curator, comparison):
    ComparisonFactory().project.managers.add(curator)  # another project's manager

    response = client_for(curator).put(url(comparison.pk), {"gold_label": "a"}, format="json")

    assert response.status_code == 404
    assert stored(comparison)[:2] == (False, "")


def test_delete_makes_it_ordinary_again(admin_user, comparison):
    set_gold(comparison=comparison, gold_label="a")

    response = client_for(admin_user).delete(url(comparison.pk))

    assert response.status_code == 204
    assert stored(comparison)[:2] == (False, "")
    assert client_for(admin_user).delete(url(comparison.pk)).status_code == 204  # not gold: nothing to do


@pytest.mark.parametrize(
    "body, message",
    [
        ({"gold_label": "tie"}, '"tie" is not a valid choice.'),
        ({"gold_label": ""}, '"" is not a valid choice.'),
        ({}, "This field is required."),
    ],
)
def test_it_answers_400_with_field_errors_for_a_bad_label(admin_user, comparison, body, message):
    response = client_for(admin_user).put(url(comparison.pk), body, format="json")

    assert response.status_code == 400
    assert response.json() == {"gold_label": [message]}
    assert stored(comparison)[:2] == (False, "")


@pytest.mark.parametrize("method", ["put", "delete"])
def test_those_who_may_see_the_project_but_not_change_comparisons_get_403_staff_alone_404(
    method, comparison, alice, clerk
):
    set_gold(comparison=comparison, gold_label="a")
    for user, status in ((alice, 403), (clerk, 404)):
        response = getattr(client_for(user), method)(url(comparison.pk), {"gold_label": "b"}, format="json")

        assert response.status_code == status
        assert "gold_label" not in response.content.decode()
    assert stored(comparison)[:2] == (True, "a")


@pytest.mark.parametrize("method", ["put", "delete"])
def test_a_comparison_outside_the_users_projects_or_nowhere_is_not_found(method, comparison, carol, admin_user):
    set_gold(comparison=comparison, gold_label="a")

    assert getattr(client_for(carol), method)(url(comparison.pk), {"gold_label": "b"}, format="json").status_code == 404
    assert getattr(client_for(admin_user), method)(url(999999), {"gold_label": "b"}, format="json").status_code == 404
    assert stored(comparison)[:2] == (True, "a")


@pytest.mark.parametrize("method", ["put", "delete"])
def test_it_requires_a_login(method, comparison):
    response = getattr(APIClient(), method)(url(comparison.pk), {"gold_label": "a"}, format="json")

    assert response.status_code == 401
    assert stored(comparison)[:2] == (False, "")


def test_a_session_request_must_carry_the_csrf_token(admin_user, comparison):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="admin", password=PASSWORD)

    response = client.put(url(comparison.pk), {"gold_label": "a"}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert stored(comparison)[:2] == (False, "")
