"""The rewardmodel admin: read-only records, activation, and the loop's two actions."""

import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import connections
from django.test import Client
from django.urls import reverse

from rewardmodel.models import ProjectLoop, RewardModelVersion
from tests.factories import ProjectFactory, UserFactory
from tests.rewardmodel.test_status import broker, broker_down, make_version, published  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

VERSIONS = reverse("admin:rewardmodel_rewardmodelversion_changelist")
LOOPS = reverse("admin:rewardmodel_projectloop_changelist")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def act(client, changelist, action, objects):
    return client.post(changelist, {"action": action, "_selected_action": [o.pk for o in objects]}, follow=True)


def statuses(project):
    return dict(RewardModelVersion.objects.filter(project=project).values_list("version", "status"))


# -- versions -----------------------------------------------------------------------


def test_the_version_list_shows_the_loop_at_a_glance(admin_client, project):
    make_version(project, 1, "ready", accuracy=0.583, trigger="manual", device="cuda:0")
    make_version(project, 2, "active", accuracy=0.64)
    response = admin_client.get(VERSIONS, {"status__exact": "ready"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "58.3%" in html and "cuda:0" in html and "manual" in html
    assert "64.0%" not in html  # filtered out
    by_accuracy = admin_client.get(VERSIONS, {"o": "-4"}).content.decode()  # the accuracy column, descending
    assert by_accuracy.index("64.0%") < by_accuracy.index("58.3%")


def test_versions_cannot_be_added_changed_or_deleted(admin_client, project):
    version = make_version(project, 1, "ready", accuracy=0.6)
    change = reverse("admin:rewardmodel_rewardmodelversion_change", args=[version.pk])

    assert admin_client.get(reverse("admin:rewardmodel_rewardmodelversion_add")).status_code == 403
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(change, {"status": "active"}).status_code == 403
    assert (
        admin_client.post(reverse("admin:rewardmodel_rewardmodelversion_delete", args=[version.pk])).status_code == 403
    )
    assert "delete_selected" not in admin_client.get(VERSIONS).content.decode()
    assert statuses(project) == {1: "ready"}


def test_activating_a_ready_version_switches_the_active_one(admin_client, project, broker):  # noqa: F811
    old = make_version(project, 1, "active", accuracy=0.6)
    new = make_version(project, 2, "ready", accuracy=0.62)

    response = act(admin_client, VERSIONS, "activate_version", [new])

    assert statuses(project) == {1: "ready", 2: "active"}
    assert "v2 is now active" in response.content.decode()
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]
    assert old.pk != new.pk


@pytest.mark.parametrize(
    "chosen, message",
    [((1, 2), "Select exactly one version"), ((3,), "only a ready version can be activated")],
)
def test_activation_refuses_anything_but_one_ready_version(admin_client, project, broker, chosen, message):  # noqa: F811
    versions = {
        1: make_version(project, 1, "active", accuracy=0.6),
        2: make_version(project, 2, "ready", accuracy=0.62),
        3: make_version(project, 3, "failed", error="Only 2 judged comparisons to train on."),
    }

    response = act(admin_client, VERSIONS, "activate_version", [versions[n] for n in chosen])

    assert message in response.content.decode()
    assert statuses(project) == {1: "active", 2: "ready", 3: "failed"}
    assert published(broker) == []


def test_staff_without_the_change_permission_cannot_activate(client, project):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_rewardmodelversion"))
    ready = make_version(project, 1, "ready", accuracy=0.6)
    client.force_login(viewer)

    assert client.get(VERSIONS).status_code == 200
    act(client, VERSIONS, "activate_version", [ready])

    assert statuses(project) == {1: "ready"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_activations_leave_exactly_one_active_version(admin_user, broker):  # noqa: F811
    project = ProjectFactory(slug="race")
    versions = [make_version(project, n, "ready", accuracy=0.6) for n in range(1, 5)]
    barrier = threading.Barrier(len(versions))
    errors = []

    def activate(version):
        try:
            client = Client()
            client.force_login(admin_user)
            barrier.wait()
            act(client, VERSIONS, "activate_version", [version])
        except Exception as error:  # surfaced below: a thread's failure must fail the test
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=activate, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert list(statuses(project).values()).count("active") == 1
    assert list(statuses(project).values()).count("ready") == 3


# -- loops ----------------------------------------------------------------------------


def test_the_loop_list_has_a_row_for_every_project(admin_client, project):
    other = ProjectFactory(slug="other")
    ProjectLoop.objects.create(project=project, retrain_pending=True, enqueue_error="OperationalError: refused")

    html = admin_client.get(LOOPS).content.decode()

    assert set(ProjectLoop.objects.values_list("project_id", flat=True)) == {project.pk, other.pk}
    assert "OperationalError: refused" in html
    assert reverse("rewardmodel:status", args=[project.slug]) in html
    assert ProjectLoop.objects.get(project=project).retrain_pending  # listing changes nothing else


def test_loops_cannot_be_edited(admin_client, project):
    loop = ProjectLoop.objects.create(project=project)
    change = reverse("admin:rewardmodel_projectloop_change", args=[loop.pk])
    assert admin_client.post(change, {"retrain_pending": "on"}).status_code == 403
    assert not ProjectLoop.objects.get(pk=loop.pk).retrain_pending


def test_retrain_now_hands_each_selected_project_to_the_broker(admin_client, project, broker):  # noqa: F811
    other = ProjectFactory(slug="other")
    admin_client.get(LOOPS)  # creates the loop rows
    loops = list(ProjectLoop.objects.all())

    response = act(admin_client, LOOPS, "retrain_now", loops)

    assert "Retrain requested for 2 project(s)" in response.content.decode()
    for loop in ProjectLoop.objects.all():
        assert loop.retrain_pending and loop.pending_reason == "manual" and loop.enqueued_at is not None
    assert sorted(published(broker)) == sorted(
        ("rewardmodel.tasks.retrain", [p.pk], {"trigger": "manual"}) for p in (project, other)
    )


def test_retrain_now_with_the_broker_down_keeps_it_pending_and_says_why(admin_client, project, broker_down):  # noqa: F811
    loop = ProjectLoop.objects.create(project=project)

    response = act(admin_client, LOOPS, "retrain_now", [loop])

    loop.refresh_from_db()
    assert loop.retrain_pending and loop.enqueued_at is None and loop.enqueue_error
    assert "stays pending" in response.content.decode()


def test_refresh_pairs_now_publishes_one_refresh_per_project(admin_client, project, broker):  # noqa: F811
    loop = ProjectLoop.objects.create(project=project)
    response = act(admin_client, LOOPS, "refresh_pairs_now", [loop])
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]
    assert "Refresh of the pairs requested for 1 project(s)" in response.content.decode()


def test_refresh_pairs_now_with_the_broker_down_says_so(admin_client, project, broker_down):  # noqa: F811
    loop = ProjectLoop.objects.create(project=project)
    response = act(admin_client, LOOPS, "refresh_pairs_now", [loop])
    assert "could not be reached" in response.content.decode()
