"""API tokens (labeling/api/tokens.py): issued as before, they expire, a
password change or deactivation revokes them, and their owner lists and
revokes them without ever seeing a key again."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def token_for(username, password=PASSWORD) -> str:
    response = APIClient().post("/api/auth/token/", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def with_token(key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def age(key, *, hours):
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(hours=hours))


# -- issuing: the same request and answer as before ------------------------------------------------


def test_it_issues_the_same_token_until_it_expires(project, alice):
    first = token_for("alice")
    assert token_for("alice") == first
    assert with_token(first).get("/api/projects/").status_code == 200


def test_the_token_answer_has_only_the_token(alice):
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": PASSWORD})  # a form post
    assert response.status_code == 200 and list(response.json()) == ["token"]


# -- expiry --------------------------------------------------------------------------------------


def test_an_expired_token_is_refused_with_the_reason(project, alice):
    key = token_for("alice")
    age(key, hours=settings.API_TOKEN_TTL_HOURS + 1)

    response = with_token(key).get("/api/projects/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "Token expired" in response.json()["detail"] and "POST /api/auth/token/" in response.json()["detail"]


def test_a_token_just_inside_its_lifetime_still_works(project, alice):
    key = token_for("alice")
    age(key, hours=settings.API_TOKEN_TTL_HOURS - 1)
    assert with_token(key).get("/api/projects/").status_code == 200


def test_asking_again_after_expiry_gives_a_new_token_and_the_old_one_stays_dead(project, alice):
    old = token_for("alice")
    age(old, hours=settings.API_TOKEN_TTL_HOURS + 1)

    new = token_for("alice")

    assert new != old
    assert list(Token.objects.filter(user=alice).values_list("key", flat=True)) == [new]
    assert with_token(old).get("/api/projects/").status_code == 401
    assert with_token(new).get("/api/projects/").status_code == 200


def test_the_lifetime_is_a_setting(settings, project, alice):
    settings.API_TOKEN_TTL_HOURS = 1
    key = token_for("alice")
    age(key, hours=2)
    assert with_token(key).get("/api/projects/").status_code == 401


def test_a_malformed_token_is_refused_not_a_server_error(alice):
    for key in ("\x00" * 40, "a" * 41, "short", "é" * 40):
        assert with_token(key).get("/api/projects/").status_code == 401, repr(key)


# -- revocation ----------------------------------------------------------------------------------


def test_a_password_change_revokes_the_token(project, alice):
    key = token_for("alice")

    alice.set_password("a new passphrase for alice 7")
    alice.save()

    assert not Token.objects.filter(user=alice).exists()
    assert with_token(key).get("/api/projects/").status_code == 401
    assert token_for("alice", "a new passphrase for alice 7") != key


def test_a_password_changed_in_the_admin_revokes_the_token(admin_client, alice):
    key = token_for("alice")
    new = "an admin-chosen passphrase 9"

    response = admin_client.post(
        f"/admin/auth/user/{alice.pk}/password/", {"password1": new, "password2": new, "usable_password": "true"}
    )

    assert response.status_code == 302, response.content
    assert not Token.objects.filter(key=key).exists()


def test_signing_in_and_other_saves_keep_the_token(project, alice):
    key = token_for("alice")
    assert APIClient().post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302  # last_login
    alice.email = "alice@elsewhere.example"
    alice.save()
    assert with_token(key).get("/api/projects/").status_code == 200


def test_deactivation_revokes_the_token_and_reactivation_does_not_bring_it_back(project, alice):
    key = token_for("alice")

    alice.is_active = False
    alice.save()
    assert not Token.objects.filter(user=alice).exists()
    assert with_token(key).get("/api/projects/").status_code == 401

    alice.is_active = True
    alice.save()
    assert with_token(key).get("/api/projects/").status_code == 401


def test_a_user_deactivated_without_signals_is_still_refused(project, alice):
    key = token_for("alice")
    type(alice).objects.filter(pk=alice.pk).update(is_active=False)  # a bulk update sends no post_save
    assert with_token(key).get("/api/projects/").status_code == 401


# -- listing and revoking your own ---------------------------------------------------------------


def test_it_lists_your_token_by_prefix_without_its_key(alice, bob):
    key = token_for("alice")
    token_for("bob")

    response = with_token(key).get("/api/auth/tokens/")

    assert response.status_code == 200
    [listed] = response.json()
    assert listed["prefix"] == key[:8] and not listed["expired"]
    assert set(listed) == {"prefix", "created", "expires", "expired"}
    assert key not in response.content.decode()
    token = Token.objects.get(key=key)
    expected = token.created + timedelta(hours=settings.API_TOKEN_TTL_HOURS)
    assert listed["expires"].replace("Z", "+00:00") == expected.isoformat()


def test_a_session_user_without_a_token_lists_none(alice):
    client = APIClient()
    client.force_login(alice)
    assert client.get("/api/auth/tokens/").json() == []


def test_you_can_revoke_your_token_by_its_prefix(project, alice):
    key = token_for("alice")
    client = with_token(key)

    response = client.delete(f"/api/auth/tokens/{key[:8]}/")

    assert response.status_code == 204
    assert not Token.objects.filter(user=alice).exists()
    assert client.get("/api/projects/").status_code == 401


def test_you_cannot_revoke_someone_elses_token(alice, bob):
    mine, theirs = token_for("alice"), token_for("bob")
    for prefix in (theirs[:8], "zzzzzzzz", theirs[:3], theirs):
        assert with_token(mine).delete(f"/api/auth/tokens/{prefix}/").status_code == 404, prefix
    assert Token.objects.filter(key=theirs).exists()


def test_listing_and_revoking_need_a_login():
    assert APIClient().get("/api/auth/tokens/").status_code == 401
    assert APIClient().delete("/api/auth/tokens/abcdefgh/").status_code == 401
