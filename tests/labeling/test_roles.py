"""The roles (labeling/roles.py, labeling/access.py): the groups and what they hold, the rule "permission
AND membership" on each project, and the Django admin scoped to a manager's projects. The whole grid of
URLs by role is tests/test_access_matrix.py."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.urls import reverse

from labeling import access, roles
from labeling.models import Comparison, Project
from rewardmodel.models import ProjectLoop
from tests.brokers import use_broker
from tests.factories import ComparisonFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

PROJECTS = reverse("admin:labeling_project_changelist")
COMPARISONS = reverse("admin:labeling_comparison_changelist")


def in_group(user, name):
    user.groups.add(Group.objects.get(name=name))
    return type(user).objects.get(pk=user.pk)  # permissions are cached on the instance


@pytest.fixture
def other(db):
    return ProjectFactory(slug="other", name="Other")


@pytest.fixture
def maria(project):
    """A manager of project (staff, to open the admin), not one of its raters."""
    user = UserFactory(username="maria", is_staff=True)
    project.managers.add(user)
    return in_group(user, roles.MANAGERS)


@pytest.fixture
def broker(tmp_path):
    from config.broker import filesystem_transport_options  # noqa: PLC0415 (only these tests publish)

    folder = tmp_path / "broker"
    with use_broker("filesystem://", filesystem_transport_options(folder)):
        yield folder / "queue"


# -- the groups -----------------------------------------------------------------------------------------


def test_the_three_groups_exist_with_their_permissions():
    managers = Group.objects.get(name=roles.MANAGERS)
    held = {(p.content_type.app_label, p.codename) for p in managers.permissions.select_related("content_type")}

    assert held == set(roles.MANAGER_PERMISSIONS)
    assert not Group.objects.get(name=roles.RATERS).permissions.exists()
    assert Group.objects.get(name=roles.ADMINS).permissions.count() == Permission.objects.count()
    assert Group.objects.get(name=roles.ADMINS).permissions.filter(codename="manage_every_project").exists()


def test_a_flush_leaves_the_groups_as_a_fresh_database_has_them():
    call_command("flush", interactive=False, verbosity=0)  # inside the test's transaction: rolled back

    managers = Group.objects.get(name=roles.MANAGERS)
    held = {(p.content_type.app_label, p.codename) for p in managers.permissions.select_related("content_type")}
    assert held == set(roles.MANAGER_PERMISSIONS)
    assert Group.objects.filter(name=roles.RATERS).exists()


def test_a_migrate_brings_a_deleted_group_back_and_keeps_what_an_operator_removed():
    managers = Group.objects.get(name=roles.MANAGERS)
    managers.permissions.remove(Permission.objects.get(codename="change_projectloop"))
    Group.objects.filter(name=roles.RATERS).delete()

    call_command("migrate", verbosity=0)  # the post_migrate receiver tops the groups up

    assert Group.objects.filter(name=roles.RATERS).exists()
    assert not managers.permissions.filter(codename="change_projectloop").exists()


# -- the rule -------------------------------------------------------------------------------------------


def test_staff_status_alone_grants_no_project(project):
    clerk = UserFactory(username="clerk", is_staff=True)

    assert list(access.projects_for(clerk)) == []
    assert list(access.visible_projects(clerk)) == []
    assert not access.may(clerk, access.VIEW_QUALITY, project)


def test_a_managers_permissions_count_on_their_projects_only(project, other, maria):
    assert access.may(maria, access.MANAGE_RATERS, project)
    assert not access.may(maria, access.MANAGE_RATERS, other)
    assert list(access.visible_projects(maria)) == [project]
    assert list(access.projects_for(maria)) == [], "managing is not labeling"


def test_a_member_without_the_permission_may_not(project, alice):
    project.managers.add(alice)  # a manager, but not in the managers' group

    assert not access.may(alice, access.MANAGE_RATERS, project)


@pytest.mark.parametrize("superuser", [False, True])
def test_admins_label_and_manage_every_project(project, other, superuser):
    ada = UserFactory(username="ada", is_staff=True, is_superuser=superuser)
    if not superuser:
        ada = in_group(ada, roles.ADMINS)

    assert access.is_admin(ada)
    assert set(access.projects_for(ada)) == {project, other}
    assert all(access.may(ada, "rewardmodel.change_projectloop", p) for p in (project, other))


def test_a_rater_who_is_also_in_the_admins_group_loses_nothing(project, alice):
    alice = in_group(alice, roles.ADMINS)

    assert list(access.projects_for(alice)) == [project]  # the project of the fixture is the only one


def test_imports_go_only_into_the_projects_one_manages(project, other, maria):
    assert access.import_refusal(maria, project_slug=project.slug) is None
    assert "you manage" in access.import_refusal(maria, project_slug=other.slug)
    assert "you manage" in access.import_refusal(maria, project_slug="brand-new")  # no labeling.add_project
    admin = UserFactory(username="ada", is_superuser=True)
    assert access.import_refusal(admin, project_slug="brand-new") is None


# -- the admin, scoped -----------------------------------------------------------------------------------


def test_a_manager_sees_only_their_projects_and_their_rows(client, project, other, maria):
    ComparisonFactory(prompt__project=project)
    theirs = ComparisonFactory(prompt__project=other)
    client.force_login(maria)

    projects = client.get(PROJECTS)
    comparisons = client.get(COMPARISONS)

    assert list(projects.context["cl"].result_list) == [project]
    assert theirs not in comparisons.context["cl"].result_list
    assert comparisons.context["cl"].result_count == 1
    # The project filter names no other project.
    assert "Other" not in comparisons.content.decode()
    assert client.get(reverse("admin:labeling_comparison_change", args=[theirs.pk])).status_code == 302


def test_a_managers_admin_actions_reach_only_their_projects(client, project, other, maria, broker):
    client.force_login(maria)
    theirs = ComparisonFactory(prompt__project=other)

    client.post(PROJECTS, {"action": "retrain_now", "_selected_action": [project.pk, other.pk]})
    client.post(COMPARISONS, {"action": "retire", "_selected_action": [theirs.pk]})

    assert list(ProjectLoop.objects.filter(retrain_pending=True).values_list("project_id", flat=True)) == [project.pk]
    theirs.refresh_from_db()
    assert theirs.status == Comparison.Status.OPEN


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


def test_a_manager_may_change_their_projects_raters_but_not_its_managers(client, project, maria, carol):
    client.force_login(maria)
    url = reverse("admin:labeling_project_change", args=[project.pk])
    page = client.get(url)
    assert "managers" not in page.context["adminform"].form.fields  # shown read-only

    data = as_posted(page) | {"raters": [u.pk for u in project.raters.all()] + [carol.pk], "managers": [carol.pk]}
    response = client.post(url, data)

    assert response.status_code == 302
    assert carol in project.raters.all()
    assert list(project.managers.all()) == [maria]


def test_a_manager_exports_only_their_projects(client, project, other, maria):
    client.force_login(maria)

    assert client.get(reverse("admin:labeling_project_export", args=[project.pk, "trl"])).status_code == 200
    assert client.get(reverse("admin:labeling_project_export", args=[other.pk, "trl"])).status_code == 404


def test_projects_keep_their_managers_when_a_manager_leaves_the_group(project, maria):
    maria.groups.clear()
    maria = type(maria).objects.get(pk=maria.pk)

    assert not access.may(maria, access.EXPORT, project)
    assert Project.objects.get(pk=project.pk).managers.filter(pk=maria.pk).exists()
