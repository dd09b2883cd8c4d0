"""Password guessing is stopped at every door: the sign-in page, the admin's
and POST /api/auth/token/ (django-axes, config/security.py), and the counts
that stop it are shared by every process (the database for lockouts, a shared
cache for throttles).

The defaults are in force: LOGIN_FAILURE_LIMIT 5, LOGIN_COOLOFF_MINUTES 15.
"""

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.cache import FailOpenRedisCache
from config.security import client_address
from config.settings import _caches
from tests.conftest import PASSWORD
from tests.rewardmodel.test_publishing import SilentListener

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed sign-in attempts"
CSRF_TOKEN = re.compile(r'(csrfmiddlewaretoken" value="|"X-CSRFToken": ")[^"]+')


@pytest.fixture(autouse=True)
def fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


def sign_in(client, username, password, *, url="/login/", **extra):
    return client.post(url, {"username": username, "password": password}, **extra)


def ask_for_token(client, username, password, **extra):
    return client.post("/api/auth/token/", {"username": username, "password": password}, format="json", **extra)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


# -- the reproduction: 30 wrong passwords, then the right one --------------------------------------


def test_thirty_wrong_passwords_then_the_right_one_are_refused_on_the_sign_in_page(alice):
    client = Client()
    answers = [sign_in(client, "alice", f"guess {i}").status_code for i in range(30)]

    right = sign_in(client, "alice", PASSWORD)

    assert answers[:4] == [200] * 4  # the form again, with its error
    assert answers[4:] == [429] * 26  # the fifth failure locks the pair
    assert right.status_code == 429 and LOCKED in right.content.decode()
    assert right["Retry-After"] == "900"
    assert not signed_in(client)
    attempt = AccessAttempt.objects.get(username="alice")
    # The right password, refused, counted as one more failure.
    assert attempt.ip_address == "127.0.0.1" and attempt.failures_since_start == 31


def test_thirty_wrong_passwords_then_the_right_one_are_refused_on_the_admin_sign_in(admin_user):
    client = Client()
    for i in range(30):
        sign_in(client, "admin", f"guess {i}", url="/admin/login/")

    right = sign_in(client, "admin", PASSWORD, url="/admin/login/")

    assert right.status_code == 429 and LOCKED in right.content.decode()
    assert not signed_in(client)
    assert client.get("/admin/").status_code == 302  # still sent to the sign-in page


def test_thirty_wrong_passwords_then_the_right_one_get_no_token(alice):
    client = APIClient()
    answers = [ask_for_token(client, "alice", f"guess {i}") for i in range(30)]
    cache.clear()  # the per-address throttle (30/minute) is not what refuses the next one

    right = ask_for_token(client, "alice", PASSWORD)

    assert [a.status_code for a in answers[:4]] == [400] * 4
    assert {a.status_code for a in answers[4:]} == {429}
    assert right.status_code == 429
    assert right.json() == {"detail": right.json()["detail"]} and LOCKED in right.json()["detail"]
    assert right["Retry-After"] == "900"
    assert not Token.objects.exists()


def test_the_token_endpoint_answers_the_lockout_in_json_even_to_a_form_post(alice):
    client = APIClient()
    for i in range(5):
        client.post("/api/auth/token/", {"username": "alice", "password": f"guess {i}"})
    refused = client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429 and refused["Content-Type"] == "application/json"
    assert LOCKED in refused.json()["detail"]


# -- nothing tells a guesser whether the username exists ------------------------------------------


def test_an_unknown_username_gets_the_same_replies_on_the_sign_in_page(alice):
    known, unknown = Client(), Client(REMOTE_ADDR="10.0.0.9")
    known_answers = [sign_in(known, "alice", f"guess {i}") for i in range(6)]
    unknown_answers = [sign_in(unknown, "mallory", f"guess {i}") for i in range(6)]

    for mine, theirs in zip(known_answers, unknown_answers, strict=True):
        assert mine.status_code == theirs.status_code
        # The form echoes the username back, and CSRF tokens are new each time; nothing else differs.
        assert page_text(mine, "alice") == page_text(theirs, "mallory")


def page_text(response, username) -> str:
    text = CSRF_TOKEN.sub(r"\1", response.content.decode())
    return text.replace(username, "NAME")


def test_an_unknown_username_gets_the_same_replies_from_the_token_endpoint(alice):
    known, unknown = APIClient(), APIClient(REMOTE_ADDR="10.0.0.9")
    for i in range(6):
        mine, theirs = ask_for_token(known, "alice", f"guess {i}"), ask_for_token(unknown, "mallory", f"guess {i}")
        assert (mine.status_code, mine.json()) == (theirs.status_code, theirs.json())


def test_a_username_longer_than_any_is_a_field_error_not_a_server_error(alice):
    response = ask_for_token(APIClient(), "a" * 300, "guess")
    assert response.status_code == 400 and "username" in response.json()
    assert not AccessAttempt.objects.exists()


# -- the cool-off, and what is locked ---------------------------------------------------------------


def lock_out(client, username, **extra):
    for i in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, username, f"guess {i}", **extra)
    assert sign_in(client, username, PASSWORD, **extra).status_code == 429


def test_the_right_password_works_again_once_the_cool_off_has_passed(alice):
    client = Client()
    lock_out(client, "alice")

    # The cool-off counts from the last failure: move it back in time.
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    response = sign_in(client, "alice", PASSWORD)

    assert response.status_code == 302 and signed_in(client)
    assert not AccessAttempt.objects.filter(username="alice").exists()  # a success starts the count again


def test_a_failure_during_the_cool_off_starts_it_again(alice):
    client = Client()
    lock_out(client, "alice")
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME + timedelta(minutes=1))

    sign_in(client, "alice", "one more guess")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=14))

    assert sign_in(client, "alice", PASSWORD).status_code == 429


def test_the_lock_holds_a_username_at_one_address_only(alice, bob):
    guesser = Client(REMOTE_ADDR="203.0.113.7")
    lock_out(guesser, "alice")

    at_home = Client(REMOTE_ADDR="198.51.100.20")
    assert sign_in(at_home, "alice", PASSWORD).status_code == 302 and signed_in(at_home)
    assert sign_in(Client(REMOTE_ADDR="203.0.113.7"), "bob", PASSWORD).status_code == 302


def test_fewer_failures_than_the_limit_are_forgotten_after_a_success(alice):
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "alice", f"guess {i}")
    assert sign_in(client, "alice", PASSWORD).status_code == 302
    client.post("/logout/")
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "alice", f"guess again {i}")
    assert sign_in(client, "alice", PASSWORD).status_code == 302


# -- X-Forwarded-For -----------------------------------------------------------------------------


def with_proxies(settings, count):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}


def test_x_forwarded_for_is_ignored_without_proxies(settings, alice):
    with_proxies(settings, 0)
    client = Client(REMOTE_ADDR="203.0.113.7")
    # A guesser who writes a new address in the header each time is still one address.
    for i in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "alice", f"guess {i}", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")

    refused = sign_in(client, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200")

    assert refused.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}


def test_x_forwarded_for_names_the_client_behind_one_proxy(settings, alice):
    with_proxies(settings, 1)
    proxy = Client(REMOTE_ADDR="10.0.0.2")  # every request comes from our proxy
    for i in range(settings.AXES_FAILURE_LIMIT):
        # The guesser's own header part ("192.0.2.x") is not believed; the proxy's entry is.
        sign_in(proxy, "alice", f"guess {i}", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}, 203.0.113.7")

    guesser = sign_in(proxy, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert guesser.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}

    alice_at_home = Client(REMOTE_ADDR="10.0.0.2")
    answer = sign_in(alice_at_home, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.20")
    assert answer.status_code == 302 and signed_in(alice_at_home)


@pytest.mark.parametrize(
    "proxies,forwarded,expected",
    [
        (0, "192.0.2.1", "10.0.0.2"),
        (1, "192.0.2.1", "192.0.2.1"),
        (1, "198.51.100.1, 192.0.2.1", "192.0.2.1"),
        (2, "198.51.100.1, 192.0.2.1, 10.0.0.1", "192.0.2.1"),
        (1, "not an address", "10.0.0.2"),
        (1, "", "10.0.0.2"),
    ],
)
def test_the_client_address_follows_num_proxies(settings, rf, proxies, forwarded, expected):
    with_proxies(settings, proxies)
    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected


# -- where the counts live ------------------------------------------------------------------------


def test_the_cache_is_redis_when_redis_url_is_set_and_files_under_var_otherwise(tmp_path):
    redis = _caches("redis://cache.internal:6379/0", tmp_path)["default"]
    assert redis["BACKEND"] == "config.cache.FailOpenRedisCache"
    assert redis["LOCATION"] == "redis://cache.internal:6379/0"
    files = _caches("", tmp_path)["default"]
    assert files["BACKEND"] == "django.core.cache.backends.filebased.FileBasedCache"
    assert files["LOCATION"] == str(tmp_path / "cache")
    assert "locmem" not in redis["BACKEND"] + files["BACKEND"]


def _in_a_web_process(env: dict, code: str) -> str:
    script = f"import django; django.setup()\n{code}"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_two_web_processes_share_the_embedded_cache(tmp_path):
    env = {"VAR_DIR": str(tmp_path)}
    written = "from django.core.cache import cache; cache.set('probe', 'from the first process', 60)"
    _in_a_web_process(env, written + "; print(type(cache).__name__)")
    read = _in_a_web_process(env, "from django.core.cache import cache; print(cache.get('probe'))")
    assert read == "from the first process"


def _redis_reachable() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_reachable(), reason="Redis is not running on 127.0.0.1:6379")
def test_two_web_processes_share_the_redis_cache(tmp_path):
    env = {"VAR_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:6379/13"}
    kind = _in_a_web_process(
        env,
        "from django.core.cache import cache, caches; cache.set('probe', 'over redis', 60); "
        "print(type(caches['default']).__name__)",
    )
    read = _in_a_web_process(env, "from django.core.cache import cache; print(cache.get('probe')); cache.clear()")
    assert (kind, read) == ("FailOpenRedisCache", "over redis")


def test_a_redis_that_is_down_turns_throttling_off_instead_of_failing_requests(monkeypatch):
    monkeypatch.setattr(FailOpenRedisCache, "_paused_until", 0.0)
    down = FailOpenRedisCache("redis://127.0.0.1:1/0", {"OPTIONS": {"socket_connect_timeout": 0.5}})
    assert down.get("history", []) == []
    down.set("history", [1, 2, 3], 60)  # no error


def test_a_silent_redis_costs_one_short_timeout_then_nothing(monkeypatch):
    import time

    monkeypatch.setattr(FailOpenRedisCache, "_paused_until", 0.0)
    listener = SilentListener()
    try:
        params = {"OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}
        silent = FailOpenRedisCache(f"redis://127.0.0.1:{listener.port}/0", params)
        started = time.monotonic()
        assert silent.get("history", "fallback") == "fallback"
        first = time.monotonic() - started
        started = time.monotonic()
        assert silent.get("history", "fallback") == "fallback"
        second = time.monotonic() - started
    finally:
        listener.close()
    assert first < 1.5 and second < 0.05, (first, second)
