"""The broker never slows a rater: the judgment that crosses retrain_every is
answered at once whatever the broker does, and the retrain still reaches a
healthy broker within moments (rewardmodel.tasks' publisher thread).

The silent broker is a real socket server that accepts connections and never
answers: the worst broker there is (one that is down refuses at once).
Tests that go through the publisher thread commit their data
(transaction=True): the thread reads and writes the loop row on its own
connection, as it does in a web process.
"""

import socket
import threading
import time

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from rewardmodel import actions, tasks
from rewardmodel.actions import Handover
from rewardmodel.models import ProjectLoop, Trigger
from tests.brokers import use_broker
from tests.factories import ComparisonFactory
from tests.rewardmodel.conftest import published

LOCAL_REDIS = ("127.0.0.1", 6379)


class SilentListener:
    """Accepts TCP connections on a free local port and never sends a byte."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=32)
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for connection in self.accepted:
            connection.close()
        self._socket.close()


@pytest.fixture
def silent_broker():
    """The web side's Redis transport, with its production options, pointed at a server that never answers."""
    listener = SilentListener()
    try:
        with use_broker(f"redis://127.0.0.1:{listener.port}/0", settings.REDIS_BROKER_TRANSPORT_OPTIONS):
            yield listener
    finally:
        # use_broker waited for the publisher to give up (one socket timeout).
        listener.close()


def retrains_every_judgment(project, loop_settings):
    loop_settings.retrain_every = 1
    loop_settings.save()
    ComparisonFactory(prompt__project=project)


def judge_through_the_api(rater, project):
    """A rater's POST of the judgment that crosses retrain_every. Returns (response, seconds it took)."""
    client = APIClient()
    client.force_authenticate(rater)
    task = client.get(f"/api/projects/{project.pk}/next/").json()
    started = time.monotonic()
    response = client.post(
        "/api/judgments/",
        {"comparison": task["comparison"], "outcome": "left", "strength": 2, "time_spent_ms": 900},
        format="json",
    )
    return response, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_a_silent_broker_does_not_hold_up_the_judgment_that_crosses_retrain_every(
    project, loop_settings, alice, silent_broker
):
    retrains_every_judgment(project, loop_settings)

    response, seconds = judge_through_the_api(alice, project)

    assert response.status_code == 201, response.content
    # Publishing on the request took 5.3 s here (the broker's 5 s socket timeout).
    assert seconds < 0.5, seconds

    # The publisher thread checks the trigger, marks the retrain pending, waits
    # out the silent broker, then says why it failed; the retrain stays pending
    # for the reconcile.
    started = time.monotonic()
    assert tasks.wait_for_publisher(timeout=20)
    assert time.monotonic() - started < 10
    assert silent_broker.accepted, "the publisher never even tried the broker"
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is None
    assert "imeout" in loop.enqueue_error, loop.enqueue_error


@pytest.mark.django_db(transaction=True)
def test_with_a_healthy_broker_the_retrain_is_published_within_moments(project, loop_settings, alice, broker):
    retrains_every_judgment(project, loop_settings)

    response, seconds = judge_through_the_api(alice, project)
    started = time.monotonic()
    assert tasks.wait_for_publisher(timeout=10)
    publishing = time.monotonic() - started

    assert response.status_code == 201 and seconds < 0.5, seconds
    assert publishing < 2, publishing
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "threshold"})]
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is not None and loop.enqueue_error == ""


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(LOCAL_REDIS, timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_reachable(), reason="Redis is not running on 127.0.0.1:6379")
@pytest.mark.django_db(transaction=True)
def test_with_redis_the_retrain_is_on_the_gpu_queue_within_moments(project, loop_settings, alice):
    retrains_every_judgment(project, loop_settings)
    database = 12  # a database of its own: the loop-worker tests use 9
    client = redis.Redis(*LOCAL_REDIS, db=database)
    client.flushdb()
    try:
        with use_broker(f"redis://127.0.0.1:6379/{database}", settings.REDIS_BROKER_TRANSPORT_OPTIONS):
            response, seconds = judge_through_the_api(alice, project)
            started = time.monotonic()
            assert tasks.wait_for_publisher(timeout=10)
            publishing = time.monotonic() - started
        assert response.status_code == 201 and seconds < 0.5, seconds
        assert publishing < 2, publishing
        assert client.llen("gpu") == 1
    finally:
        client.flushdb()


@pytest.mark.django_db(transaction=True)
def test_a_rater_never_waits_even_while_the_publisher_is_stuck(project, loop_settings, alice, bob, silent_broker):
    # Two projects cross their threshold while the broker is silent: the
    # second rater does not queue behind the first one's publish.
    retrains_every_judgment(project, loop_settings)
    first, first_seconds = judge_through_the_api(alice, project)
    second, second_seconds = judge_through_the_api(bob, project)

    assert (first.status_code, second.status_code) == (201, 201)
    assert max(first_seconds, second_seconds) < 0.5, (first_seconds, second_seconds)


@pytest.mark.django_db
def test_a_full_publisher_queue_leaves_the_retrain_pending_for_the_reconcile(project, broker, monkeypatch):
    monkeypatch.setattr(tasks._publisher, "capacity", 0)

    requested = actions.request_retrain(project_id=project.pk, reason=Trigger.THRESHOLD, wait=False)

    assert requested.outcome == Handover.BROKER_DOWN and "publisher" in requested.broker_error
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is None and "publisher" in loop.enqueue_error
    assert published(broker) == []

    assert tasks.reconcile() == 1
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "threshold"})]
