"""The server `make run` starts is the production one: `make serve` (gunicorn),
started here as people start it, against the test database.

And on PostgreSQL, however many requests arrive at once, the server never
holds more connections than its pools allow (WEB_CONCURRENCY x DB_POOL_SIZE).
"""

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from labeling.models import Assignment
from tests.factories import ComparisonFactory, ProjectFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "labeling-test-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@contextmanager
def make_serve(tmp_path, **env):
    """`make serve` on a free port against the test database; yields its base URL."""
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    environment = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "VAR_DIR": str(tmp_path),
        "PGAPPNAME": APP_NAME,  # libpq names the server's connections: pg_stat_activity shows them
        **env,
    }
    for name in ("DJANGO_SETTINGS_MODULE", "DEBUG", "DJANGO_ENV"):
        environment.pop(name, None)
    process = subprocess.Popen(
        ["make", "-s", "serve", "HOST=127.0.0.1", f"PORT={port}"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "make serve did not listen within 180 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_group(process)
        log.close()


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to make and gunicorn's master and workers; wait until all are gone
    (their database connections with them), SIGKILL after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait()
    deadline = time.monotonic() + 30
    while True:
        try:
            os.killpg(process.pid, signal.SIGKILL if time.monotonic() > deadline else 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _get(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def rater_with_token(db):
    project = ProjectFactory(overlap=1)
    alice = UserFactory(username="alice")
    project.raters.add(alice)
    ComparisonFactory.create_batch(3, prompt__project=project)
    return project, Token.objects.create(user=alice)


@pytest.mark.django_db(transaction=True)
def test_make_serve_is_gunicorn_with_debug_off_and_static_files(tmp_path, rater_with_token):
    project, token = rater_with_token
    with make_serve(tmp_path, WEB_CONCURRENCY="2") as base:
        status, headers, body = _get(f"{base}/login/")
        assert status == 200
        # Django's development server answers "Server: WSGIServer/0.2 CPython/3.x".
        assert headers["Server"] == "gunicorn"
        assert "WSGIServer" not in str(headers)

        # DEBUG is off: an unknown page is a plain 404, not Django's debug page listing the URL patterns.
        status, _, body = _get(f"{base}/no-such-page/")
        assert status == 404
        assert b"URLconf" not in body and b"Django tried these URL patterns" not in body

        # Static files come from whitenoise, byte for byte.
        status, headers, body = _get(f"{base}/static/labeling/label.js")
        assert status == 200
        assert body == (ROOT / "static" / "labeling" / "label.js").read_bytes()
        assert "javascript" in headers["Content-Type"]

        # And the hot path works through it.
        status, _, body = _get(f"{base}/api/projects/{project.pk}/next/", {"Authorization": f"Token {token.key}"})
        assert status == 200, body[:500]
    assert Assignment.objects.filter(project=project, rater=token.user, state=Assignment.State.ACTIVE).count() == 1


@pytest.mark.django_db(transaction=True)
def test_many_concurrent_requests_never_open_more_postgres_connections_than_the_pools_allow(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("connection pooling is PostgreSQL's")
    workers, threads, pool = 2, 4, 2
    bound = workers * pool
    project = ProjectFactory(overlap=1)
    raters = UserFactory.create_batch(16)
    project.raters.add(*raters)
    ComparisonFactory.create_batch(40, prompt__project=project)
    tokens = [Token.objects.create(user=rater).key for rater in raters]

    def server_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
            return cursor.fetchone()[0]

    env = {"WEB_CONCURRENCY": str(workers), "WEB_THREADS": str(threads), "DB_POOL_SIZE": str(pool)}
    with make_serve(tmp_path, **env) as base:
        statuses: Counter = Counter()
        seen: list[int] = []
        done = threading.Event()

        def rater(token):
            for _ in range(4):
                status, _, _ = _get(f"{base}/api/projects/{project.pk}/next/", {"Authorization": f"Token {token}"})
                statuses[status] += 1

        def sample():
            while not done.is_set():
                seen.append(server_connections())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [threading.Thread(target=rater, args=(token,)) for token in tokens for _ in range(4)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=300)
        done.set()
        sampler.join()

    # 64 clients at once (16 raters, 4 tabs each) against 8 threads: all answered, none refused.
    assert statuses == Counter({200: 256})
    assert 0 < max(seen) <= bound, seen
