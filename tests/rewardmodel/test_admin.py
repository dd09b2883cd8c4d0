"""The rewardmodel admin: the loop's settings and buttons on the projects, read-only records, activation."""

import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from rewardmodel.models import LoopSettings, ProjectLoop, RewardModelVersion
from tests.factories import ProjectFactory, UserFactory
from tests.rewardmodel.conftest import published
from tests.rewardmodel.factories import LoopSettingsFactory, ProjectLoopFactory, RewardModelVersionFactory

pytestmark = pytest.mark.django_db

VERSIONS = reverse("admin:rewardmodel_rewardmodelversion_changelist")
LOOPS = reverse("admin:rewardmodel_projectloop_changelist")
PROJECTS = reverse("admin:labeling_project_changelist")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def act(client, changelist, action, objects):
    return client.post(changelist, {"action": action, "_selected_action": [o.pk for o in objects]}, follow=True)


def statuses(project):
    return dict(RewardModelVersion.objects.filter(project=project).values_list("version", "status"))


def as_posted(page) -> dict:
    """What an admin change page posts when saved as it stands: its form and every inline's forms."""
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not None and value is not False:
                data[form.add_prefix(name)] = "on" if value is True else value
    return data


def change_project(client, project, **loop):
    """Save the project's admin page with these loop settings changed."""
    url = reverse("admin:labeling_project_change", args=[project.pk])
    data = as_posted(client.get(url)) | {f"loop_settings-0-{name}": value for name, value in loop.items()}
    return client.post(url, data)


# -- the loop's settings on the project ------------------------------------------------------


def test_the_project_page_edits_the_loop_settings(admin_client, project):
    response = change_project(admin_client, project, retrain_every=7, acquisition="ensemble", exploration_share=0.3)

    assert response.status_code == 302, response.context["errors"]
    settings = LoopSettings.objects.get(project=project)
    assert (settings.retrain_every, settings.acquisition, settings.exploration_share) == (7, "ensemble", 0.3)


def test_saving_a_project_with_the_default_settings_creates_no_row(admin_client, project):
    assert change_project(admin_client, project).status_code == 302
    assert not LoopSettings.objects.exists()


def test_the_project_page_refuses_an_exploration_share_outside_0_1(admin_client, project):
    LoopSettingsFactory(project=project)
    response = change_project(admin_client, project, exploration_share=1.5)

    assert response.status_code == 200  # the form again, with the error
    assert LoopSettings.objects.get(project=project).exploration_share == 0.1


def test_a_new_project_gets_its_loop_settings_on_the_add_page(admin_client):
    html = admin_client.get(reverse("admin:labeling_project_add")).content.decode()
    assert 'name="loop_settings-0-acquisition"' in html


def test_the_project_page_shows_the_defaults_for_a_project_without_settings(admin_client, project):
    html = admin_client.get(reverse("admin:labeling_project_change", args=[project.pk])).content.decode()
    assert "Reward-model loop" in html
    assert 'name="loop_settings-0-retrain_every" value="50"' in html


# -- the loop's buttons on the project list ----------------------------------------------------


def test_retrain_now_hands_each_selected_project_to_the_broker(admin_client, project, broker):
    other = ProjectFactory(slug="other")

    response = act(admin_client, PROJECTS, "retrain_now", [project, other])

    assert "Retrain requested for 2 project(s)" in response.content.decode()
    for loop in ProjectLoop.objects.all():
        assert loop.retrain_pending and loop.pending_reason == "manual" and loop.enqueued_at is not None
    assert sorted(published(broker)) == sorted(
        ("rewardmodel.tasks.retrain", [p.pk], {"trigger": "manual"}) for p in (project, other)
    )


def test_retrain_now_merges_into_a_pending_retrain(admin_client, project, broker):
    ProjectLoopFactory(project=project, retrain_pending=True)

    response = act(admin_client, PROJECTS, "retrain_now", [project])

    assert "1 project(s) already had a retrain pending; merged." in response.content.decode()
    assert published(broker) == []


def test_retrain_now_with_the_broker_down_keeps_it_pending_and_says_why(admin_client, project, broker_down):
    response = act(admin_client, PROJECTS, "retrain_now", [project])

    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is None and loop.enqueue_error
    assert "stays pending" in response.content.decode()


def test_refresh_pairs_now_publishes_one_refresh_per_project(admin_client, project, broker):
    response = act(admin_client, PROJECTS, "refresh_pairs_now", [project])
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]
    assert "Refresh of the pairs requested for 1 project(s)" in response.content.decode()


def test_refresh_pairs_now_with_the_broker_down_says_so(admin_client, project, broker_down):
    response = act(admin_client, PROJECTS, "refresh_pairs_now", [project])
    assert "could not be reached" in response.content.decode()


def test_staff_without_the_loop_permission_get_no_loop_buttons(client, project, broker):
    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_project", "change_project"]))
    client.force_login(clerk)

    html = client.get(PROJECTS).content.decode()
    act(client, PROJECTS, "retrain_now", [project])

    assert "retrain_now" not in html
    assert published(broker) == [] and not ProjectLoop.objects.exists()


# -- loops -----------------------------------------------------------------------------------


def test_the_loop_list_shows_the_loops_and_writes_nothing(admin_client, project):
    ProjectFactory(slug="other")  # never triggered: no loop row, and listing makes none
    ProjectLoopFactory(project=project, retrain_pending=True, enqueue_error="OperationalError: refused")

    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(LOOPS).content.decode()

    assert list(ProjectLoop.objects.values_list("project_id", flat=True)) == [project.pk]
    assert not [q for q in queries.captured_queries if q["sql"].upper().startswith("INSERT")]
    assert "OperationalError: refused" in html
    assert reverse("rewardmodel:status", args=[project.slug]) in html


def test_loops_cannot_be_edited(admin_client, project):
    loop = ProjectLoopFactory(project=project)
    change = reverse("admin:rewardmodel_projectloop_change", args=[loop.pk])
    assert admin_client.post(change, {"retrain_pending": "on"}).status_code == 403
    assert not ProjectLoop.objects.get(pk=loop.pk).retrain_pending


# -- versions --------------------------------------------------------------------------------


def test_the_version_list_shows_the_loop_at_a_glance(admin_client, project):
    RewardModelVersionFactory(
        project=project, version=1, status="ready", accuracy=0.583, trigger="manual", device="cuda:0"
    )
    RewardModelVersionFactory(project=project, version=2, status="active", accuracy=0.64)
    response = admin_client.get(VERSIONS, {"status__exact": "ready"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "58.3%" in html and "cuda:0" in html and "Manual" in html
    assert "64.0%" not in html  # filtered out
    by_accuracy = admin_client.get(VERSIONS, {"o": "-4"}).content.decode()  # the accuracy column, descending
    assert by_accuracy.index("64.0%") < by_accuracy.index("58.3%")


def test_versions_cannot_be_added_changed_or_deleted(admin_client, project):
    version = RewardModelVersionFactory(project=project, version=1, status="ready", accuracy=0.6)
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


def test_activating_a_ready_version_switches_the_active_one(admin_client, project, broker):
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6)
    new = RewardModelVersionFactory(project=project, version=2, status="ready", accuracy=0.62)

    response = act(admin_client, VERSIONS, "activate_version", [new])

    assert statuses(project) == {1: "ready", 2: "active"}
    assert "v2 is now active" in response.content.decode()
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]


@pytest.mark.parametrize(
    "chosen, message",
    [
        ((1, 2), "Select exactly one version"),
        ((3,), "only a ready version can be activated"),
        ((1,), "v1 is already active"),
    ],
)
def test_activation_refuses_anything_but_one_ready_version(admin_client, project, broker, chosen, message):
    versions = {
        1: RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6),
        2: RewardModelVersionFactory(project=project, version=2, status="ready", accuracy=0.62),
        3: RewardModelVersionFactory(
            project=project, version=3, status="failed", error="Only 2 judged comparisons to train on."
        ),
    }

    response = act(admin_client, VERSIONS, "activate_version", [versions[n] for n in chosen])

    assert message in response.content.decode()
    assert statuses(project) == {1: "active", 2: "ready", 3: "failed"}
    assert published(broker) == []


def test_staff_without_the_change_permission_cannot_activate(client, project):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_rewardmodelversion"))
    ready = RewardModelVersionFactory(project=project, version=1, status="ready", accuracy=0.6)
    client.force_login(viewer)

    assert client.get(VERSIONS).status_code == 200
    act(client, VERSIONS, "activate_version", [ready])

    assert statuses(project) == {1: "ready"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_activations_leave_exactly_one_active_version(admin_user, broker):
    project = ProjectFactory(slug="race")
    versions = RewardModelVersionFactory.create_batch(4, project=project, status="ready", accuracy=0.6)
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
